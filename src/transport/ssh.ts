/**
 * SSH transport on ssh2: one connection per host for the whole run, many channels on it.
 *
 * - Settings: ConnectionSpec (inventory ansible_* + CLI overrides) > ansible_ssh_common_args (-o Key=Value, -J,
 *   -p, -l, -i) > ssh config file (~/.ssh/config or SshOptions.sshConfigFile; 'none' = no file) > defaults.
 *   HostName, User, Port, IdentityFile (~, %h %r %p %u %d), IdentitiesOnly, ProxyJump (a chain: each hop is
 *   an ssh2 connection, the next one runs over forwardOut of the previous), ServerAliveInterval/CountMax.
 * - Host keys (known-hosts.ts): SshOptions.knownHostsFiles, else UserKnownHostsFile from the config, else
 *   ~/.ssh/known_hosts(2) + /etc/ssh/ssh_known_hosts(2). Policies: strict (unknown -> E_HOSTKEY_UNKNOWN, with
 *   the ssh-keyscan command to fix it), accept-new (unknown keys appended to the first known_hosts file,
 *   changed keys refused), off (anything but a @revoked key, with a warning). CHANGED -> E_HOSTKEY_CHANGED,
 *   revoked -> E_HOSTKEY_REVOKED. Never a prompt.
 * - Auth, in order: ssh-agent (SSH_AUTH_SOCK, unless IdentitiesOnly or SshOptions.agent === false), keys
 *   (explicit key, then IdentityFile, else ~/.ssh/id_ed25519, id_ecdsa, id_rsa; encrypted keys use
 *   RUNBOOK_KEY_PASSPHRASE or a TTY prompt, never argv), password (also answered to keyboard-interactive).
 *   Exhausted -> E_AUTH, one attempt (no retry storm).
 * - Socket: TCP_NODELAY from the first handshake packet (direct hops: the socket is opened here); keepalive every keepaliveIntervalMs (default 5 s), the connection is declared
 *   lost after keepaliveCountMax (default 2) unanswered ones (a cut link is noticed in ~10-15 s);
 *   connectTimeoutMs covers TCP connect + handshake + auth.
 * - exec: commands run in a long-lived shell session per become user (shell.ts prepareSession/prepareStep,
 *   session.ts): script and env over the session's stdin, sudo wrapping (the sudo password is answered once per
 *   session), each command in a subshell with START/END markers; no new channel or login shell per command.
 *   Timeout/abort: a second channel runs the kill script (TERM, KILL after 2 s, same become) on the processes of
 *   the session's group started by the command. At most maxChannels (default 8) commands at once per host (each
 *   in its own session; up to 2 idle sessions per become user are kept; OpenSSH MaxSessions defaults to 10, one
 *   more for SFTP, one for kills); the rest queue.
 * - Errors: never connected -> E_UNREACHABLE; connection lost while a command runs -> E_CONN_LOST (its effect
 *   is unknown). reconnect(): bounded retries with exponential backoff (not for auth / host key errors).
 * - put/get: SFTP (put writes a temp file then renames it into place atomically).
 */
import { readFileSync, existsSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createInterface } from 'node:readline';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import ssh2 from 'ssh2';
import type { Client as ClientT, ClientChannel, ConnectConfig, SFTPWrapper, AnyAuthMethod, AuthenticationType, ParsedKey } from 'ssh2';
import { Limiter } from '../core/limiter.js';
import type { JumpPool } from './jump-pool.js';
import type { ConnectionSpec } from '../inventory/types.js';
import { prepareRun, prepareSession, prepareStep, type PreparedStep, sessionKillScript } from './shell.js';
import { bridgeScript, driveStream, openMarker } from './stream.js';
import { type Orphan, ShellSession } from './session.js';
import { driveRun } from './run-driver.js';
import { TransportError, type ExecOptions, type ExecResult, type OpenStream, type SocketOptions, type Transport } from './types.js';
import {
  algorithmsForKeyTypes,
  appendKnownHost,
  checkHostKey,
  fingerprint,
  hostEntryName,
  keyTypeOf,
  knownKeyTypes,
  loadKnownHosts,
  type HostKeyPolicy,
  type HostKeyVerdict,
} from './known-hosts.js';
import { expandTokens, loadSshConfig, parseJumpHop, parseSshArgs, resolveSshConfig, type SshConfigBlock } from './ssh-config.js';

const { Client, utils } = ssh2;

export interface SshOptions {
  /** known_hosts files to use instead of ~/.ssh/known_hosts + /etc/ssh/ssh_known_hosts (--known-hosts). */
  knownHostsFiles?: string[];
  hostKeyChecking: HostKeyPolicy;
  /** TCP connect, then handshake + auth, each (--connect-timeout, default 10 s in the CLI) counted from its own admitted start. */
  connectTimeoutMs: number;
  /**
   * Connections (TCP connect + handshake) in flight at once, shared by every transport given the same Limiter
   * (--connect-concurrency). A handshake is mostly CPU (key exchange, signatures): hundreds at once on a few
   * cores make each one slow, and their timeouts would run out while they wait for CPU, not for the host.
   */
  handshakes?: Limiter;
  /** One connection per jump host for every transport given the same pool (the CLI gives one per run). */
  jumpPool?: JumpPool;
  /** ssh config file (--ssh-config); default ~/.ssh/config; 'none' reads no file. */
  sshConfigFile?: string;
  /** Login user when the inventory has none (--user). */
  user?: string;
  /** Private key when the inventory has none (--private-key). */
  privateKeyFile?: string;
  /** Keepalive interval (default: ServerAliveInterval from the config, else 5000). */
  keepaliveIntervalMs?: number;
  /** Unanswered keepalives before the connection counts as lost (default: ServerAliveCountMax, else 2). */
  keepaliveCountMax?: number;
  /** ssh-agent socket; false disables the agent (default SSH_AUTH_SOCK). */
  agent?: string | false;
  /** Key passphrase (default RUNBOOK_KEY_PASSPHRASE, then a TTY prompt if stdin is a TTY). */
  passphrase?: string;
  /** Ask for a key passphrase (default: prompt on the TTY, only when stdin is a TTY). */
  promptPassphrase?: (keyFile: string) => Promise<string | undefined>;
  /** Concurrent commands per connection (default 8). */
  maxChannels?: number;
  /** reconnect(): attempts (default 6) and first backoff (default 500 ms, doubling, max 4 s): about 12 s of waiting. */
  reconnectAttempts?: number;
  reconnectBackoffMs?: number;
  /** Grace between SIGTERM and SIGKILL of a timed-out command's process group (default 2000). */
  killGraceMs?: number;
}

interface Hop {
  /** For messages. */
  label: string;
  host: string;
  port: number;
  user: string;
  identityFiles: string[];
  explicitIdentity?: string;
  password?: string;
  useAgent: boolean;
}

const DEFAULT_HOST_KEY_ALGOS = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
];
/** A connect that failed below SSH (the socket's error): what happened, then what to check. */
export function connectFailure(hop: Pick<Hop, 'label' | 'host' | 'port'>, err: Error & { code?: string }): string {
  const at = `cannot connect to ${hop.label}`;
  switch (err.code) {
    case 'ECONNREFUSED':
      return `${at}: connection refused on port ${hop.port}. Check that sshd runs on ${hop.host} and that the port (ansible_port) is right.`;
    case 'ENOTFOUND':
      return `${at}: the name ${hop.host} does not resolve. Check ansible_host (or the host's name in the inventory) and DNS.`;
    case 'EAI_AGAIN':
      return `${at}: the name ${hop.host} could not be resolved now (DNS did not answer). Check the resolver and retry.`;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `${at}: no route to ${hop.host}. Check the address (ansible_host) and the network.`;
    case 'ETIMEDOUT':
      return `${at}: the TCP connection to port ${hop.port} timed out. Check the address, port and firewall.`;
    case 'ECONNRESET':
      return `${at}: the connection was reset during the handshake. Check that port ${hop.port} is an SSH server and that it accepts this client.`;
    default:
      return `${at}: ${err.code && !err.message.includes(err.code) ? `${err.code} ` : ''}${err.message}`;
  }
}

/** A chain of jumps as the pool knows it: every hop's address, login and keys. */
function jumpKey(hops: Hop[]): string {
  return JSON.stringify(hops.map((h) => [h.user, h.host, h.port, [...new Set(h.identityFiles)], h.useAgent]));
}

const passphraseCache = new Map<string, string>();
/** The TCP socket under a client of a direct hop. */
const ownSockets = new WeakMap<ClientT, Socket>();
/** Private keys parsed (and decrypted) once per process, by file content: a fleet shares one key, parsing is ~1 ms. */
const parsedKeys = new Map<string, ParsedKey>();
/** Idle shell sessions kept per become user (the rest are closed). */
const IDLE_SESSIONS = 2;
/** How long a TCP connection that has not opened keeps its connect turn (openClient). */
const TURN_HOLD_MS = 250;

async function ttyPrompt(question: string): Promise<string | undefined> {
  if (!process.stdin.isTTY || !process.stderr.isTTY) return undefined;
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  const out = rl as unknown as { _writeToOutput: (s: string) => void; output: NodeJS.WriteStream };
  let asked = false;
  out._writeToOutput = (s: string) => {
    if (!asked) {
      asked = true;
      process.stderr.write(s);
    }
  };
  try {
    return await new Promise<string>((resolve) => rl.question(question, resolve));
  } finally {
    process.stderr.write('\n');
    rl.close();
  }
}

export class SshTransport implements Transport {
  readonly host: string;
  readonly warnings: string[] = [];
  readonly gates = true;
  private client?: ClientT;
  private jumpClients: ClientT[] = [];
  /** Jump connections held in opts.jumpPool (by key), and the 'close' listener on the last of them. */
  private jumpKeys: string[] = [];
  private unlistenJump?: () => void;
  private connecting?: Promise<void>;
  private ready = false;
  private closed = false;
  private lostWaiters = new Set<(e: TransportError) => void>();
  /** Commands whose end is not known (lost link, unconfirmed kill), with the become they ran under. */
  private orphans: Array<Orphan & { become: boolean; becomeUser: string | undefined }> = [];
  private sftpP?: Promise<SFTPWrapper>;
  private readonly channels: Limiter;
  private readonly idle = new Map<string, ShellSession[]>();
  private resolved?: {
    target: Hop;
    jumps: Hop[];
    knownHostsFiles: string[];
    acceptNewFile: string;
    keepaliveMs: number;
    keepaliveCount: number;
    notes: string[];
  };

  constructor(
    private readonly conn: ConnectionSpec,
    private readonly opts: SshOptions,
  ) {
    this.host = conn.name;
    this.channels = new Limiter(opts.maxChannels ?? 8);
  }

  // ------------------------------------------------------------------ settings

  private settings(): NonNullable<SshTransport['resolved']> {
    if (this.resolved) return this.resolved;
    const o = this.opts;
    const blocks: SshConfigBlock[] = o.sshConfigFile === 'none' ? [] : loadSshConfig(o.sshConfigFile ?? join(homedir(), '.ssh', 'config'));
    const args = parseSshArgs(this.conn.sshArgs);
    const notes: string[] = [];
    if (args.unknown.length) notes.push(`ignored ssh args for ${this.host}: ${args.unknown.join(' ')}`);
    const cfg = resolveSshConfig(blocks, this.conn.address, args.lines);
    const localUser = userInfo().username;
    const port = this.conn.port ?? cfg.port ?? 22;
    const user = this.conn.user ?? o.user ?? cfg.user ?? localUser;
    const hostName = cfg.hostName ? expandTokens(cfg.hostName, { host: this.conn.address, port, user }) : this.conn.address;
    const tok = { host: hostName, port, user };
    const explicit = this.conn.privateKeyFile ?? o.privateKeyFile;
    const fromCfg = cfg.identityFiles.map((f) => expandTokens(f, tok));
    const defaults = ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((f) => join(homedir(), '.ssh', f));
    const identityFiles = [...(explicit ? [expandTokens(explicit, tok)] : []), ...fromCfg];
    const useAgent = o.agent !== false && !cfg.identitiesOnly;
    const target: Hop = {
      label: `${this.host} (${user}@${hostName}:${port})`,
      host: hostName,
      port,
      user,
      identityFiles: identityFiles.length ? identityFiles : defaults,
      explicitIdentity: explicit,
      password: this.conn.password,
      useAgent,
    };
    const jumps: Hop[] = [];
    if (cfg.proxyJump) {
      for (const hopSpec of cfg.proxyJump.split(',')) {
        const hop = parseJumpHop(hopSpec);
        const hc = resolveSshConfig(blocks, hop.host);
        const hPort = hop.port ?? hc.port ?? 22;
        const hUser = hop.user ?? hc.user ?? localUser;
        const hHost = hc.hostName ? expandTokens(hc.hostName, { host: hop.host, port: hPort, user: hUser }) : hop.host;
        const hTok = { host: hHost, port: hPort, user: hUser };
        const ids = hc.identityFiles.map((f) => expandTokens(f, hTok));
        jumps.push({
          label: `jump host ${hUser}@${hHost}:${hPort} (for ${this.host})`,
          host: hHost,
          port: hPort,
          user: hUser,
          identityFiles: [...ids, ...identityFiles, ...(ids.length || identityFiles.length ? [] : defaults)],
          useAgent: o.agent !== false && !hc.identitiesOnly,
        });
      }
    }
    const userFiles = cfg.userKnownHostsFiles?.map((f) => expandTokens(f, tok)) ?? [
      join(homedir(), '.ssh', 'known_hosts'),
      join(homedir(), '.ssh', 'known_hosts2'),
    ];
    const knownHostsFiles = o.knownHostsFiles ?? [...userFiles, '/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'];
    const acceptNewFile = o.knownHostsFiles?.[0] ?? userFiles[0];
    if (cfg.ignored.length) notes.push(`ssh config options not supported by runbook (ignored) for ${this.host}: ${cfg.ignored.join(', ')}`);
    if (cfg.strictHostKeyChecking !== undefined)
      notes.push(
        `StrictHostKeyChecking ${cfg.strictHostKeyChecking} (ssh config / ansible_ssh_common_args) is not applied to ${this.host}: runbook uses --host-key-checking (${o.hostKeyChecking})`,
      );
    if (cfg.connectTimeoutSec !== undefined)
      notes.push(
        `ConnectTimeout ${cfg.connectTimeoutSec} (ssh config / ansible_ssh_common_args) is not applied to ${this.host}: runbook uses --connect-timeout (${o.connectTimeoutMs} ms)`,
      );
    this.resolved = {
      target,
      jumps,
      knownHostsFiles,
      acceptNewFile,
      keepaliveMs: o.keepaliveIntervalMs ?? (cfg.serverAliveIntervalSec ? cfg.serverAliveIntervalSec * 1000 : 5000),
      keepaliveCount: o.keepaliveCountMax ?? cfg.serverAliveCountMax ?? 2,
      notes,
    };
    return this.resolved;
  }

  // ------------------------------------------------------------------ connecting

  async connect(): Promise<void> {
    if (this.ready) return;
    if (this.connecting !== undefined) return this.connecting;
    this.closed = false;
    this.connecting = this.doConnect().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async doConnect(): Promise<void> {
    const s = this.settings();
    const pool = this.opts.jumpPool;
    const opened: ClientT[] = [];
    const held: string[] = [];
    try {
      // Each jump over the one before it; with a pool, a jump host already connected for another target is
      // used as it is (and no channel is opened to it).
      let prev: ClientT | undefined;
      for (let i = 0; i < s.jumps.length; i++) {
        const hop = s.jumps[i];
        const before = prev;
        const open = async () => this.openClient(hop, before ? await this.forward(before, s.jumps[i - 1], hop) : undefined);
        if (pool) {
          const key = jumpKey(s.jumps.slice(0, i + 1));
          prev = await pool.acquire(key, open);
          held.push(key);
        } else {
          prev = await open();
          opened.push(prev);
        }
      }
      const sock = prev ? await this.forward(prev, s.jumps[s.jumps.length - 1], s.target) : undefined;
      const client = await this.openClient(s.target, sock);
      // settings that were not applied: surfaced once, as warnings (the engine emits them after connect)
      for (const n of s.notes) if (!this.warnings.includes(n)) this.warnings.push(n);
      this.client = client;
      this.jumpClients = opened;
      this.jumpKeys = held;
      this.ready = true;
      this.sftpP = undefined;
      const onGone = (why: string): void => {
        if (this.client !== client) return;
        this.ready = false;
        this.client = undefined;
        this.sftpP = undefined;
        const err = new TransportError(
          'E_CONN_LOST',
          this.host,
          `connection to ${s.target.label} lost (${why}); the effect of a running command is unknown`,
        );
        for (const w of [...this.lostWaiters]) w(err);
        this.dropJumps();
      };
      let lastErr = 'closed';
      client.on('error', (e: Error) => {
        lastErr = e.message;
      });
      client.on('close', () => onGone(lastErr));
      const jumpGone = (): void => {
        if (this.client === client) client.end();
        onGone('jump host connection closed');
      };
      // (A pooled jump connection outlives this target: its listener goes when the target lets go of it.)
      for (const j of [...opened, ...(prev && held.length ? [prev] : [])]) j.on('close', jumpGone);
      if (held.length && prev) this.unlistenJump = () => prev.removeListener('close', jumpGone);
    } catch (e) {
      for (const c of opened) c.end();
      for (const k of held) pool?.release(k);
      throw e;
    }
  }

  /** A channel from `via` (connected to `hop`) to the next hop. */
  private forward(via: ClientT, hop: Hop, next: Hop): Promise<Duplex> {
    return new Promise<Duplex>((resolve, reject) => {
      via.forwardOut('127.0.0.1', 0, next.host, next.port, (err, ch) => {
        if (err)
          reject(
            new TransportError('E_UNREACHABLE', this.host, `${hop.label} cannot reach ${next.host}:${next.port}: ${err.message}`, {
              cause: err,
            }),
          );
        else resolve(ch);
      });
    });
  }

  /** Lets go of the jump hosts: its own connections end, pooled ones are released. */
  private dropJumps(): void {
    for (const j of this.jumpClients) j.end();
    this.jumpClients = [];
    this.unlistenJump?.();
    this.unlistenJump = undefined;
    for (const k of this.jumpKeys) this.opts.jumpPool?.release(k);
    this.jumpKeys = [];
  }

  private async loadKeys(hop: Hop): Promise<{ methods: AnyAuthMethod[]; notes: string[] }> {
    const methods: AnyAuthMethod[] = [];
    const notes: string[] = [];
    const agent = this.opts.agent === undefined ? process.env.SSH_AUTH_SOCK : this.opts.agent;
    if (hop.useAgent && agent) methods.push({ type: 'agent', username: hop.user, agent });
    for (const file of [...new Set(hop.identityFiles)]) {
      let data: Buffer;
      try {
        data = readFileSync(file);
      } catch (e) {
        if (file === hop.explicitIdentity || existsSync(file))
          notes.push(`cannot read key ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
        continue;
      }
      const known = parsedKeys.get(data.toString('latin1'));
      if (known) {
        methods.push({ type: 'publickey', username: hop.user, key: known } as AnyAuthMethod);
        continue;
      }
      let parsed = utils.parseKey(data);
      let passphrase: string | undefined;
      if (parsed instanceof Error && /encrypt|passphrase/i.test(parsed.message)) {
        passphrase = this.opts.passphrase ?? process.env.RUNBOOK_KEY_PASSPHRASE ?? passphraseCache.get(file);
        if (passphrase === undefined) {
          passphrase = await (this.opts.promptPassphrase ?? ((f: string) => ttyPrompt(`Enter passphrase for key '${f}': `)))(file);
          if (passphrase === undefined) {
            notes.push(`key ${file} is encrypted: set RUNBOOK_KEY_PASSPHRASE or run from a terminal`);
            continue;
          }
        }
        parsed = utils.parseKey(data, passphrase);
        if (parsed instanceof Error) {
          notes.push(`key ${file}: wrong passphrase (${parsed.message})`);
          continue;
        }
        passphraseCache.set(file, passphrase);
      }
      if (parsed instanceof Error) {
        notes.push(`key ${file} unusable: ${parsed.message}`);
        continue;
      }
      // ssh2 takes the parsed key as it is (a file of several keys parses to a list: ssh2 gets the file).
      if (!Array.isArray(parsed)) parsedKeys.set(data.toString('latin1'), parsed);
      methods.push({ type: 'publickey', username: hop.user, key: Array.isArray(parsed) ? data : parsed, passphrase } as AnyAuthMethod);
    }
    if (!methods.length && !notes.length)
      notes.push(`no private key found (looked for ${[...new Set(hop.identityFiles)].join(', ')}) and no ssh-agent or password`);
    if (hop.password !== undefined) {
      const password = hop.password;
      methods.push({ type: 'password', username: hop.user, password });
      methods.push({
        type: 'keyboard-interactive',
        username: hop.user,
        prompt: (_n, _i, _l, prompts, finish) => finish(prompts.map(() => password)),
      });
    }
    return { methods, notes };
  }

  /**
   * One hop: the TCP connection (a direct hop; behind a jump host `sock` is the forwarded channel), then the SSH
   * handshake, both admitted by opts.handshakes, each with its own --connect-timeout started when it starts: a
   * host waiting for its turn is not timing out. A TCP connection that has not opened within TURN_HOLD_MS gives
   * its turn back and waits for another one once it has opened, so a silent address holds a turn only briefly.
   * (Admitting the TCP connections too matters when the hosts share the controller's CPU, as in the bench: every
   * accepted connection makes sshd fork and re-exec, and a thousand at once starve everything else.)
   */
  private async openClient(hop: Hop, sock: Duplex | undefined): Promise<ClientT> {
    const turns = this.opts.handshakes;
    if (sock) return turns ? turns.run(() => this.handshake(hop, sock, undefined)) : this.handshake(hop, sock, undefined);
    if (!turns) {
      const conn = await this.tcp(hop);
      return this.handshake(hop, conn, conn);
    }
    let release: (() => void) | undefined = await turns.acquire();
    const hold = setTimeout(() => {
      release?.();
      release = undefined;
    }, TURN_HOLD_MS);
    hold.unref();
    let conn: Socket;
    try {
      conn = await this.tcp(hop);
    } catch (e) {
      release?.();
      throw e;
    } finally {
      clearTimeout(hold);
    }
    release ??= await turns.acquire();
    try {
      return await this.handshake(hop, conn, conn);
    } finally {
      release();
    }
  }

  private tcp(hop: Hop): Promise<Socket> {
    const ms = this.opts.connectTimeoutMs;
    return new Promise((resolve, reject) => {
      // TCP_NODELAY from the first handshake packet: with Nagle, each handshake round trip waits for the peer's delayed ACK.
      const s = netConnect({ host: hop.host, port: hop.port });
      s.setNoDelay(true);
      s.setMaxListeners(0);
      let settled = false;
      // The timeout is decided after one more turn of the event loop: when a busy loop held back both the timer and
      // the connect event, the connect event (I/O, polled before setImmediate callbacks) wins.
      const timer = setTimeout(
        () =>
          setImmediate(() => {
            if (settled) return;
            settled = true;
            s.destroy();
            const why = `cannot connect to ${hop.label}: no SSH handshake within ${ms} ms (--connect-timeout): the TCP connection did not open. Check the address, port and firewall.`;
            reject(new TransportError('E_UNREACHABLE', this.host, why));
          }),
        ms,
      );
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        if (settled) return;
        settled = true;
        resolve(s);
      });
      s.once('error', (err: Error & { code?: string }) => {
        clearTimeout(timer);
        if (settled) return;
        settled = true;
        reject(new TransportError('E_UNREACHABLE', this.host, connectFailure(hop, err), { cause: err }));
      });
    });
  }

  /** The SSH handshake and authentication on a connected socket (`own`: ours, destroyed on failure). */
  private async handshake(hop: Hop, sock: Duplex, own: Socket | undefined): Promise<ClientT> {
    const s = this.settings();
    const entries = loadKnownHosts(s.knownHostsFiles);
    const names = [hostEntryName(hop.host, hop.port)];
    const known = algorithmsForKeyTypes(knownKeyTypes(entries, names));
    const policy = this.opts.hostKeyChecking;
    const { methods, notes } = await this.loadKeys(hop);
    const tried: string[] = [];
    let verdict: HostKeyVerdict | undefined;
    let offered: Buffer | undefined;

    const authHandler = (left: AuthenticationType[] | null, _partial: boolean | null, next: (m: AnyAuthMethod | false) => void): void => {
      while (methods.length) {
        const m = methods.shift()!;
        const wire = m.type === 'agent' ? 'publickey' : m.type;
        if (left && !left.includes(wire as AuthenticationType)) continue;
        tried.push(m.type === 'publickey' ? `publickey` : m.type);
        next(m);
        return;
      }
      next(false);
    };

    const client = new Client();
    if (own) ownSockets.set(client, own);
    const cfg: ConnectConfig = {
      host: hop.host,
      port: hop.port,
      username: hop.user,
      sock: sock as ConnectConfig['sock'],
      readyTimeout: this.opts.connectTimeoutMs,
      keepaliveInterval: s.keepaliveMs,
      keepaliveCountMax: s.keepaliveCount,
      algorithms: { serverHostKey: [...new Set([...known, ...DEFAULT_HOST_KEY_ALGOS])] as never },
      authHandler: authHandler as unknown as ConnectConfig['authHandler'],
      hostVerifier: (key: Buffer): boolean => {
        offered = key;
        verdict = checkHostKey(entries, names, key);
        if (verdict.status === 'ok') return true;
        if (verdict.status === 'revoked') return false;
        if (policy === 'off') {
          this.warnings.push(
            `host key checking is off: the identity of ${hop.label} (${keyTypeOf(key)} ${fingerprint(key)}) was NOT verified${verdict.status === 'changed' ? `, and it DIFFERS from ${verdict.entry.file}:${verdict.entry.line}` : ''}`,
          );
          return true;
        }
        if (verdict.status === 'unknown' && policy === 'accept-new') {
          try {
            appendKnownHost(s.acceptNewFile, names[0], key);
            this.warnings.push(`added the host key of ${hop.label} (${keyTypeOf(key)} ${fingerprint(key)}) to ${s.acceptNewFile}`);
            return true;
          } catch (e) {
            notes.push(`cannot add the host key to ${s.acceptNewFile}: ${(e as Error).message}`);
            return false;
          }
        }
        return false;
      },
    };
    return new Promise<ClientT>((resolve, reject) => {
      let settled = false;
      const fail = (e: TransportError): void => {
        if (settled) return;
        settled = true;
        client.removeAllListeners('ready');
        client.end();
        own?.destroy();
        reject(e);
      };
      client.once('ready', () => {
        if (settled) return;
        settled = true;
        client.setNoDelay(true);
        resolve(client);
      });
      client.on('error', (err: Error & { level?: string; code?: string }) => {
        if (settled) return;
        if (
          verdict &&
          verdict.status !== 'ok' &&
          offered &&
          !(policy === 'off' && verdict.status !== 'revoked') &&
          !(policy === 'accept-new' && verdict.status === 'unknown' && !notes.length)
        ) {
          fail(this.hostKeyError(hop, verdict, offered, s.knownHostsFiles, notes));
          return;
        }
        if (err.level === 'client-authentication') {
          fail(
            new TransportError(
              'E_AUTH',
              this.host,
              `authentication failed for ${hop.label} (tried: ${tried.join(', ') || 'no usable method'}${notes.length ? `; ${notes.join('; ')}` : ''}). Check ansible_user, the private key (ansible_ssh_private_key_file / --private-key), ssh-agent, or ansible_password.`,
              { cause: err },
            ),
          );
          return;
        }
        if (err.level === 'client-timeout') {
          fail(
            new TransportError(
              'E_UNREACHABLE',
              this.host,
              `cannot connect to ${hop.label}: no SSH handshake within ${this.opts.connectTimeoutMs} ms (--connect-timeout). Check the address, port and firewall.`,
              { cause: err },
            ),
          );
          return;
        }
        fail(new TransportError('E_UNREACHABLE', this.host, connectFailure(hop, err), { cause: err }));
      });
      client.on('close', () =>
        fail(new TransportError('E_UNREACHABLE', this.host, `cannot connect to ${hop.label}: connection closed during the handshake`)),
      );
      try {
        client.connect(cfg);
      } catch (e) {
        own?.destroy();
        fail(new TransportError('E_UNREACHABLE', this.host, `cannot connect to ${hop.label}: ${(e as Error).message}`, { cause: e }));
      }
    });
  }

  private hostKeyError(hop: Hop, v: HostKeyVerdict, key: Buffer, files: string[], notes: string[]): TransportError {
    const type = keyTypeOf(key);
    const fp = fingerprint(key);
    const name = hostEntryName(hop.host, hop.port);
    if (v.status === 'revoked') {
      return new TransportError(
        'E_HOSTKEY_REVOKED',
        this.host,
        `the host key of ${hop.label} (${type} ${fp}) is marked @revoked in ${v.entry.file}:${v.entry.line}; refusing to connect. Replace the host's key.`,
      );
    }
    if (v.status === 'changed') {
      return new TransportError(
        'E_HOSTKEY_CHANGED',
        this.host,
        `WARNING: THE HOST KEY OF ${hop.label} HAS CHANGED. It now offers ${type} ${fp}, which differs from ${v.entry.file}:${v.entry.line}. ` +
          `This can be a man-in-the-middle attack, or the host was reinstalled. Refusing to connect. If the change is expected, ` +
          `remove the old key (ssh-keygen -R '${name}' -f ${v.entry.file}) and add the verified new one.`,
      );
    }
    return new TransportError(
      'E_HOSTKEY_UNKNOWN',
      this.host,
      `the host key of ${hop.label} (${type} ${fp}) is not in known_hosts (${files.join(', ')}). ` +
        `Verify the fingerprint, then add it: ssh-keyscan -p ${hop.port} -t ${type} ${hop.host} >> ${files[0] ?? '~/.ssh/known_hosts'} ` +
        `(or run once with --host-key-checking accept-new).${notes.length ? ` ${notes.join('; ')}` : ''}`,
    );
  }

  async settleOrphans(): Promise<{ ok: boolean; detail?: string }> {
    while (this.orphans.length) {
      const o = this.orphans[0];
      const grace = this.opts.killGraceMs ?? 2000;
      let code: number | null;
      try {
        const client = await this.ensure();
        code = await this.runAside(
          client,
          sessionKillScript(o.pgid, o.pid, o.ticks, o.keep, grace, o.centis),
          o.become,
          o.becomeUser,
          grace + 10_000,
        );
      } catch (e) {
        return { ok: false, detail: `could not make sure its command ended (process group ${o.pgid}): ${(e as Error).message}` };
      }
      if (code !== 0)
        return {
          ok: false,
          detail: `its command (process group ${o.pgid}, pid ${o.pid}) could not be shown dead: the kill ${code === null ? 'timed out' : `exited ${code}`}`,
        };
      this.orphans.shift();
    }
    return { ok: true };
  }

  async reconnect(): Promise<void> {
    this.dropClient();
    const attempts = this.opts.reconnectAttempts ?? 6;
    let delay = this.opts.reconnectBackoffMs ?? 500;
    let last: unknown;
    for (let i = 0; i < attempts; i++) {
      try {
        await this.connect();
        return;
      } catch (e) {
        last = e;
        if (e instanceof TransportError && (e.code === 'E_AUTH' || e.code.startsWith('E_HOSTKEY'))) throw e;
        if (i + 1 < attempts) {
          await sleep(delay);
          delay = Math.min(delay * 2, 4000);
        }
      }
    }
    if (last instanceof TransportError) {
      throw new TransportError(last.code, this.host, `${last.message} (after ${attempts} attempts)`, { cause: last.cause });
    }
    throw last;
  }

  private dropClient(): void {
    const c = this.client;
    this.ready = false;
    this.client = undefined;
    this.sftpP = undefined;
    this.idle.clear(); // their shells end with the connection (no packets to send per session)
    if (c) {
      const err = new TransportError(
        'E_CONN_LOST',
        this.host,
        `connection to ${this.host} was closed while a command was running; its effect is unknown`,
      );
      for (const w of [...this.lostWaiters]) w(err);
      c.end();
      // Our side is done: the process need not wait for the host to close its side (sshd first ends the session,
      // its PAM session and logs: a whole fleet of that at the end of a run is seconds at 1,000 hosts).
      ownSockets.get(c)?.unref();
    }
    this.dropJumps();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.dropClient();
  }

  // ------------------------------------------------------------------ exec

  private async ensure(): Promise<ClientT> {
    if (this.closed) throw new TransportError('E_CONN_LOST', this.host, `transport for ${this.host} is closed`);
    if (!this.ready || !this.client) await this.connect();
    return this.client!;
  }

  async exec(script: string, opts: ExecOptions = {}): Promise<ExecResult> {
    opts.gate?.catch(() => {
      /* awaited below; a rejection before that must not be unhandled */
    });
    const become = opts.become ?? this.conn.become ?? false;
    const becomeUser = opts.becomeUser ?? this.conn.becomeUser;
    let step: PreparedStep;
    try {
      step = prepareStep({ script, env: opts.env, stdin: opts.stdin }, opts.leavesShell);
    } catch (e) {
      throw new TransportError('E_INVALID', this.host, (e as Error).message);
    }
    const key = become ? `sudo:${becomeUser || 'root'}` : '';
    return this.channels.run(() => this.execIn(key, step, opts, become, becomeUser));
  }

  /** One command in a session of `key` (a channel slot is held). */
  private async execIn(
    key: string,
    step: PreparedStep,
    opts: ExecOptions,
    become: boolean,
    becomeUser: string | undefined,
  ): Promise<ExecResult> {
    let session: ShellSession | undefined;
    try {
      const client = await this.ensure();
      session = this.takeIdle(key) ?? (await this.openSession(client, become, becomeUser));
      if (opts.gate !== undefined) {
        // Nothing is written to the session before the gate settles: the command does not start if it rejects.
        try {
          await opts.gate;
        } catch (e) {
          this.putIdle(key, session);
          session = undefined;
          throw e;
        }
      }
      let r: ExecResult;
      try {
        r = await session.run(step, opts);
      } catch (e) {
        // The link went while the command ran: it may still run on the host (settleOrphans).
        if (session.lastCommand) this.orphans.push({ ...session.lastCommand, become, becomeUser });
        throw e;
      }
      if (r.killUnconfirmed && session.lastCommand) this.orphans.push({ ...session.lastCommand, become, becomeUser });
      this.putIdle(key, session);
      session = undefined;
      return r;
    } finally {
      if (session) session.close();
    }
  }

  // ------------------------------------------------------------------ sessions

  private takeIdle(key: string): ShellSession | undefined {
    const list = this.idle.get(key);
    while (list?.length) {
      const s = list.pop()!;
      if (s.usable) return s;
      s.close();
    }
    return undefined;
  }

  private putIdle(key: string, s: ShellSession): void {
    if (!s.usable || this.closed) {
      s.close();
      return;
    }
    const list = this.idle.get(key) ?? [];
    if (list.length >= IDLE_SESSIONS) {
      s.close();
      return;
    }
    list.push(s);
    this.idle.set(key, list);
  }

  private closeIdle(): void {
    for (const list of this.idle.values()) for (const s of list) s.close();
    this.idle.clear();
  }

  private async openSession(client: ClientT, become: boolean, becomeUser: string | undefined): Promise<ShellSession> {
    const launch = prepareSession({ become, becomeUser, becomePassword: become ? this.conn.becomePassword : undefined });
    const ch = await this.openChannelRetry(client, launch.command);
    let onLost!: (e: TransportError) => void;
    let destroyed = false;
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve, reject) => {
      let code: number | null = null;
      let signal: string | null = null;
      let gotExit = false;
      let settled = false;
      onLost = (e) => {
        settled = true;
        this.lostWaiters.delete(onLost);
        reject(e);
      };
      this.lostWaiters.add(onLost);
      ch.on('exit', (c: number | null, sig?: string) => {
        gotExit = true;
        code = c ?? null;
        signal = sig ?? null;
      });
      ch.on('close', () => {
        const done = (): void => {
          settled = true;
          this.lostWaiters.delete(onLost);
          resolve({ code, signal });
        };
        if (settled) return;
        if (gotExit || destroyed) {
          done();
          return;
        }
        // closed without an exit status: normally the connection is going away; give it a moment to say so
        setTimeout(() => {
          if (!this.ready || this.client !== client)
            onLost(
              new TransportError(
                'E_CONN_LOST',
                this.host,
                `connection to ${this.host} lost while a command was running; its effect is unknown`,
              ),
            );
          else done();
        }, 200);
      });
    });
    exited.catch(() => {
      /* reported by the session to a running command */
    });
    return new ShellSession(
      {
        stdin: ch,
        stdout: ch,
        stderr: ch.stderr,
        exited,
        runAside: (script, timeoutMs) => this.runAside(client, script, become, becomeUser, timeoutMs),
        destroy: () => {
          if (destroyed) return;
          destroyed = true;
          try {
            ch.signal('KILL');
          } catch {
            /* not supported / closed */
          }
          ch.close();
        },
      },
      launch,
      this.opts.killGraceMs ?? 2000,
    );
  }

  /** A one-off script on a channel of its own (the kill of a command), with the given become: its exit code (null: timed out). */
  private async runAside(
    client: ClientT,
    script: string,
    become: boolean,
    becomeUser: string | undefined,
    timeoutMs: number,
  ): Promise<number | null> {
    const prep = prepareRun({ script, become, becomeUser, becomePassword: become ? this.conn.becomePassword : undefined });
    const ch = await this.openChannelRetry(client, prep.command);
    let code: number | null = null;
    ch.on('exit', (c: number | null) => {
      code = c ?? null;
    });
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
      ch.on('close', () => resolve({ code, signal: null })),
    );
    const r = await Promise.race([
      driveRun(
        {
          stdin: ch,
          stdout: ch,
          stderr: ch.stderr,
          exited,
          killGroup: async () => {
            ch.close();
          },
        },
        prep,
        { timeoutMs },
      ),
      // unref'd: once the script ended, this deadline must not keep the process alive
      sleep(timeoutMs, undefined, { ref: false }).then(() => undefined),
    ]);
    return r && !r.timedOut ? r.code : null;
  }

  private openChannel(client: ClientT, command: string): Promise<ClientChannel> {
    return new Promise((resolve, reject) => {
      const onLost = (e: TransportError): void => reject(e);
      this.lostWaiters.add(onLost);
      try {
        client.exec(command, (err, ch) => {
          this.lostWaiters.delete(onLost);
          if (err) {
            reject(
              this.ready && this.client === client
                ? new TransportError(
                    'E_CHANNEL',
                    this.host,
                    `${this.host} refused a new command channel: ${err.message} (too many parallel commands? MaxSessions)`,
                    { cause: err },
                  )
                : new TransportError('E_CONN_LOST', this.host, `connection to ${this.host} lost while starting a command: ${err.message}`, {
                    cause: err,
                  }),
            );
          } else resolve(ch);
        });
      } catch (e) {
        this.lostWaiters.delete(onLost);
        reject(new TransportError('E_CONN_LOST', this.host, `connection to ${this.host} lost: ${(e as Error).message}`, { cause: e }));
      }
    });
  }

  /** Opens a channel; a refused open (the server's session limit, freed a moment after a close) is retried. */
  private async openChannelRetry(client: ClientT, command: string): Promise<ClientChannel> {
    for (let i = 0; ; i++) {
      try {
        return await this.openChannel(client, command);
      } catch (e) {
        if (!(e instanceof TransportError) || e.code !== 'E_CHANNEL' || i >= 40) throw e;
        this.closeIdle(); // idle sessions hold channels too
        await sleep(25 + i * 10);
      }
    }
  }

  // ------------------------------------------------------------------ sockets

  async openSocket(path: string, opts: SocketOptions = {}): Promise<OpenStream> {
    const become = opts.become ?? this.conn.become ?? false;
    const becomeUser = opts.becomeUser ?? this.conn.becomeUser;
    const mark = openMarker();
    const prep = prepareRun({
      script: bridgeScript(path, mark),
      become,
      becomeUser,
      becomePassword: become ? this.conn.becomePassword : undefined,
      keepStdin: true,
    });
    const client = await this.ensure();
    const ch = await this.openChannelRetry(client, prep.command);
    let code: number | null = null;
    ch.on('exit', (c: number | null) => {
      code = c ?? null;
    });
    // 'exit' comes even while nobody reads the channel (a bridge that could not connect); 'close' when it was lost
    const exited = new Promise<{ code: number | null }>((resolve) => {
      ch.on('exit', (c: number | null) => resolve({ code: c ?? null }));
      ch.on('close', () => resolve({ code }));
    });
    const io = { stdin: ch, stdout: ch, stderr: ch.stderr, exited, destroy: () => ch.close() };
    try {
      return await driveStream(io, prep, mark, opts.timeoutMs ?? 15_000);
    } catch (e) {
      throw new TransportError('E_SOCKET', this.host, `${this.host}: cannot reach ${path}: ${(e as Error).message}`, { cause: e });
    }
  }

  // ------------------------------------------------------------------ files

  private sftp(): Promise<SFTPWrapper> {
    if (this.sftpP) return this.sftpP;
    const p = this.ensure().then(
      (client) =>
        new Promise<SFTPWrapper>((resolve, reject) => {
          client.sftp((err, sftp) => {
            if (err)
              reject(
                new TransportError(this.ready ? 'E_FILE' : 'E_CONN_LOST', this.host, `cannot open SFTP on ${this.host}: ${err.message}`, {
                  cause: err,
                }),
              );
            else {
              sftp.on('close', () => {
                if (this.sftpP === p) this.sftpP = undefined;
              });
              resolve(sftp);
            }
          });
        }),
    );
    this.sftpP = p;
    p.catch(() => {
      if (this.sftpP === p) this.sftpP = undefined;
    });
    return p;
  }

  private fileOp<T>(
    what: string,
    path: string,
    fn: (sftp: SFTPWrapper, cb: (err: Error | null | undefined, v?: T) => void) => void,
  ): Promise<T> {
    return this.sftp().then(
      (sftp) =>
        new Promise<T>((resolve, reject) => {
          const onLost = (e: TransportError): void => reject(e);
          this.lostWaiters.add(onLost);
          fn(sftp, (err, v) => {
            this.lostWaiters.delete(onLost);
            if (err)
              reject(
                new TransportError(
                  this.ready ? 'E_FILE' : 'E_CONN_LOST',
                  this.host,
                  `cannot ${what} ${path} on ${this.host}: ${err.message}`,
                  { cause: err },
                ),
              );
            else resolve(v as T);
          });
        }),
    );
  }

  async put(content: string | Buffer, remotePath: string, opts: { mode?: number } = {}): Promise<void> {
    const slash = remotePath.lastIndexOf('/');
    const tmp = `${remotePath.slice(0, slash + 1)}.${remotePath.slice(slash + 1)}.rbtmp-${randomBytes(4).toString('hex')}`;
    const mode = opts.mode ?? 0o644;
    await this.fileOp<void>('write', remotePath, (s, cb) => s.writeFile(tmp, content, { mode }, (e) => cb(e)));
    try {
      await this.fileOp<void>('chmod', remotePath, (s, cb) => s.chmod(tmp, mode, (e) => cb(e)));
      await this.fileOp<void>('rename into', remotePath, (s, cb) => s.ext_openssh_rename(tmp, remotePath, (e) => cb(e)));
    } catch (e) {
      await this.fileOp<void>('remove', tmp, (s, cb) => s.unlink(tmp, (er) => cb(er))).catch(() => undefined);
      throw e;
    }
  }

  async get(remotePath: string): Promise<Buffer> {
    return this.fileOp<Buffer>('read', remotePath, (s, cb) => s.readFile(remotePath, (e: Error | null | undefined, b: Buffer) => cb(e, b)));
  }
}
