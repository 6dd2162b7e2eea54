/**
 * A byte stream to a unix socket on the host (containerd's API), over a command channel of the connection we
 * already have: no port forwarding (often disabled on nodes), nothing installed, and under become the socket is
 * reached as the become user (root), through the same sudo wrapping as every command (shell.ts prepareRun).
 *
 * On the host, a small bridge copies stdin to the socket and the socket to stdout: perl (in every Debian and in
 * most distributions' base) or python3. It prints an open marker on stderr once connected; only then does the
 * caller write, so the shell that started it cannot have read any of the stream.
 */
import { randomBytes } from 'node:crypto';
import { Duplex, type Readable, type Writable } from 'node:stream';
import { StderrMarkerFilter, type PreparedRun, shQuote } from './shell.js';

/** What the transport hands over: the bridge's output is the socket's, its input goes to the socket. */
export interface StreamIO {
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  /** Resolves once the process ended (exit code, null when killed or lost). */
  exited: Promise<{ code: number | null }>;
  /** Ends the process (its channel), e.g. when the caller is done or gave up waiting. */
  destroy(): void;
}

export interface OpenStream {
  /** The socket's byte stream; ending it ends the bridge. */
  stream: Duplex;
  /** What the bridge printed on stderr (its errors), and how it ended, once it did. */
  closed: Promise<{ code: number | null; stderr: string }>;
}

const PERL = `use strict; use Socket; use IO::Socket::UNIX; use IO::Select;
my ($path, $mark) = @ARGV;
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $path) or do { print STDERR "cannot connect to $path: $!\\n"; exit 69 };
binmode STDIN; binmode STDOUT; $| = 1; syswrite(STDERR, "$mark\\n");
sub put { my ($fh, $b) = @_; while (length $b) { my $w = syswrite($fh, $b); exit 0 unless defined $w; substr($b, 0, $w) = "" } }
my $sel = IO::Select->new(\\*STDIN, $s);
while (my @r = $sel->can_read) { for my $h (@r) {
  my $n = sysread($h, my $b, 65536);
  if ($h == $s) { exit 0 unless $n; put(\\*STDOUT, $b) }
  elsif ($n) { put($s, $b) } else { $sel->remove(\\*STDIN); shutdown($s, 1) }
} }`;

const PYTHON = `import os, select, socket, sys
path, mark = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(path)
except OSError as e:
    sys.stderr.write("cannot connect to %s: %s\\n" % (path, e.strerror)); sys.exit(69)
os.write(2, (mark + "\\n").encode())
fds = [0, s.fileno()]
while fds:
    for fd in select.select(fds, [], [])[0]:
        b = os.read(fd, 65536)
        if fd == 0:
            if b: s.sendall(b)
            else: fds.remove(0); s.shutdown(socket.SHUT_WR)
        else:
            if not b: sys.exit(0)
            while b: b = b[os.write(1, b):]`;

/** The host-side script of a bridge to `path`; `mark` is printed on stderr once connected. */
export function bridgeScript(path: string, mark: string): string {
  const args = `${shQuote(path)} ${shQuote(mark)}`;
  return [
    `if command -v perl >/dev/null 2>&1; then exec perl -e ${shQuote(PERL)} ${args}`,
    `elif command -v python3 >/dev/null 2>&1; then exec python3 -c ${shQuote(PYTHON)} ${args}`,
    `else echo "runbook: this host has neither perl nor python3, which reach a unix socket over the connection" >&2; exit 127; fi`,
  ].join('\n');
}

export function openMarker(): string {
  return `<<rb-open-${randomBytes(9).toString('hex')}>>`;
}

/**
 * Drives a bridge started with `prep` (prepareRun with keepStdin) until it is connected: writes the wrapper
 * (after READY with a sudo password), answers sudo's prompt, and resolves once `mark` is on stderr. Rejects
 * with what the bridge said when it ends first, or after `timeoutMs`.
 */
export function driveStream(io: StreamIO, prep: PreparedRun, mark: string, timeoutMs: number): Promise<OpenStream> {
  const filter = new StderrMarkerFilter(prep, io.stdin);
  let stderr = '';
  let open = false;
  const closed = io.exited.then(({ code }) => ({ code, stderr: (stderr + filter.flush().toString()).trim() }));
  io.stdin.on('error', () => {
    /* the bridge is gone: closed says why */
  });
  return new Promise<OpenStream>((resolve, reject) => {
    const timer = setTimeout(() => {
      io.destroy();
      reject(new Error(`no answer from the socket bridge within ${timeoutMs} ms${stderr ? `: ${stderr.trim()}` : ''}`));
    }, timeoutMs);
    io.stderr.on('data', (chunk: Buffer) => {
      const { out, events } = filter.push(chunk);
      if (events.length && prep.waitForReady) io.stdin.write(prep.wrapper);
      stderr += out.toString();
      if (!open && stderr.includes(mark)) {
        open = true;
        stderr = stderr.replace(`${mark}\n`, '');
        clearTimeout(timer);
        const stream = Duplex.from({ readable: io.stdout, writable: io.stdin });
        stream.on('close', () => io.destroy());
        resolve({ stream, closed });
      }
    });
    if (!prep.waitForReady) io.stdin.write(prep.wrapper);
    void closed.then(({ code, stderr: said }) => {
      if (open) return;
      clearTimeout(timer);
      reject(new Error(said ? said.split('\n').pop() : `the socket bridge ended (exit ${code ?? 'unknown'})`));
    });
  });
}
