/**
 * connectionFor(): how to reach a host, from its merged Ansible variables.
 * ansible_host/port/user/connection/ssh_private_key_file/password/become*, ansible_ssh_common_args +
 * ansible_ssh_extra_args, and the older ansible_ssh_host/ansible_ssh_port/ansible_ssh_user aliases.
 */
import { RunbookError } from '../core/errors.js';
import type { ConnectionSpec, InventoryHost } from './types.js';

function first(vars: Record<string, unknown>, keys: string[]): unknown {
  for (const k of keys) if (vars[k] !== undefined && vars[k] !== null) return vars[k];
  return undefined;
}

/** Ansible's boolean(): true/yes/on/1/y/t (any case), else false. */
export function ansibleBool(v: unknown): boolean {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') return v === 1;
  if (typeof v === 'string') return ['y', 'yes', 'on', '1', 'true', 't'].includes(v.trim().toLowerCase());
  return false;
}

export interface ConnectionOverrides {
  /** --user: used when the inventory sets no ansible_user (Ansible: inventory wins over -u). */
  user?: string;
  /** --private-key: used when the inventory sets no key file. */
  privateKeyFile?: string;
}

export function connectionFor(host: InventoryHost, overrides: ConnectionOverrides = {}): ConnectionSpec {
  const v = host.vars;
  const connRaw = first(v, ['ansible_connection']);
  const conn = connRaw === undefined ? (host.implicit ? 'local' : 'ssh') : String(connRaw);
  let kind: 'ssh' | 'local';
  if (conn === 'local') kind = 'local';
  else if (conn === 'ssh' || conn === 'smart' || conn === 'paramiko' || conn === 'paramiko_ssh') kind = 'ssh';
  else {
    throw new RunbookError('E_CONNECTION', `host ${host.name}: ansible_connection '${conn}' is not supported; use ssh or local.`);
  }
  const spec: ConnectionSpec = { kind, name: host.name, address: host.name };
  const addr = first(v, ['ansible_host', 'ansible_ssh_host']);
  if (addr !== undefined) spec.address = String(addr);
  const portRaw = first(v, ['ansible_port', 'ansible_ssh_port']);
  if (portRaw !== undefined) {
    const port = typeof portRaw === 'number' ? portRaw : /^\s*\d+\s*$/.test(String(portRaw)) ? parseInt(String(portRaw), 10) : NaN;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RunbookError('E_CONNECTION', `host ${host.name}: ansible_port '${String(portRaw)}' is not a port number (1-65535).`);
    }
    spec.port = port;
  }
  const user = first(v, ['ansible_user', 'ansible_ssh_user']) ?? overrides.user;
  if (user !== undefined) spec.user = String(user);
  const key = first(v, ['ansible_ssh_private_key_file', 'ansible_private_key_file']) ?? overrides.privateKeyFile;
  if (key !== undefined) spec.privateKeyFile = String(key);
  const pw = first(v, ['ansible_password', 'ansible_ssh_pass', 'ansible_ssh_password']);
  if (pw !== undefined) spec.password = String(pw);
  const become = first(v, ['ansible_become', 'ansible_sudo']);
  if (become !== undefined) spec.become = ansibleBool(become);
  const method = first(v, ['ansible_become_method']);
  if (method !== undefined && String(method) !== 'sudo') {
    throw new RunbookError(
      'E_CONNECTION',
      `host ${host.name}: ansible_become_method '${String(method)}' is not supported, runbook becomes with sudo only (README: become); install sudo on the host or log in as the become user.`,
    );
  }
  const bu = first(v, ['ansible_become_user', 'ansible_sudo_user']);
  if (bu !== undefined) spec.becomeUser = String(bu);
  const bp = first(v, ['ansible_become_password', 'ansible_become_pass', 'ansible_sudo_pass', 'ansible_sudo_password']);
  if (bp !== undefined) spec.becomePassword = String(bp);
  const args = [first(v, ['ansible_ssh_common_args']), first(v, ['ansible_ssh_extra_args'])]
    .filter((x) => x !== undefined && String(x).trim() !== '')
    .map((x) => String(x).trim());
  if (args.length) spec.sshArgs = args.join(' ');
  return spec;
}
