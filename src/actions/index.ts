/**
 * Built-in actions: what a step can do on a host that a shell command cannot (a step's `call:` with its `with:`
 * parameters, instead of `run:`). They work through the host's Transport only. Each answers like a command: an
 * exit code and lines of output (a register keeps them), so when/unless/verify/rollback stay shell.
 */
import { TransportError, type Transport } from '../transport/types.js';
import { pruneWithoutCriMetadata, SandboxStore } from './containerd-sandboxes.js';
import { grpcOver } from './grpc.js';
import type { ActionName } from './specs.js';

export interface ActionContext {
  transport: Transport;
  /** undefined: the host's ansible_become applies. */
  become?: boolean;
  becomeUser?: string;
  timeoutMs: number;
}

export interface ActionResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Rejects only with TransportError (the connection); anything else is its result's exit code and stderr. */
export type ActionRun = (ctx: ActionContext, args: Record<string, string>) => Promise<ActionResult>;

const sandboxPrune: ActionRun = async (ctx, args) => {
  if (!ctx.transport.openSocket) return { code: 2, stdout: '', stderr: 'this connection cannot reach a unix socket on the host\n' };
  let open: Awaited<ReturnType<NonNullable<Transport['openSocket']>>>;
  try {
    open = await ctx.transport.openSocket(args.socket, { become: ctx.become, becomeUser: ctx.becomeUser });
  } catch (e) {
    if (e instanceof TransportError && e.code === 'E_SOCKET') return { code: 1, stdout: '', stderr: `${e.message}\n` };
    throw e;
  }
  const ch = grpcOver(open.stream);
  try {
    const r = await pruneWithoutCriMetadata(new SandboxStore(ch, args.namespace, ctx.timeoutMs));
    const lines = [...r.deleted.map((id) => `deleted ${id}`), ...r.kept.map((id) => `kept ${id}`)];
    return { code: 0, stdout: lines.length ? `${lines.join('\n')}\n` : '', stderr: '' };
  } catch (e) {
    return { code: 1, stdout: '', stderr: `containerd's sandbox store at ${args.socket}: ${(e as Error).message}\n` };
  } finally {
    ch.close();
  }
};

export const ACTIONS: Readonly<Record<ActionName, ActionRun>> = {
  'containerd.sandboxes.prune': sandboxPrune,
};
