// A scripted fake transport for pure unit tests of the engine (no I/O): every exec is logged as
// "host:script" and answered by a Behaviour. Real transports are tested in transport.contract.test.ts.
import { TransportError, type ExecOptions, type ExecResult, type Transport } from '../../src/transport/types.js';

export type Behaviour = (
  host: string,
  script: string,
  call: number,
) => Partial<ExecResult> | 'lost' | Promise<Partial<ExecResult> | 'lost'>;

export class FakeTransport implements Transport {
  calls: string[] = [];
  connected = false;
  constructor(
    readonly host: string,
    private b: Behaviour,
    private log: string[],
    private opts: { unreachable?: boolean; reconnectFails?: boolean } = {},
  ) {}
  async connect() {
    if (this.opts.unreachable) throw new TransportError('E_UNREACHABLE', this.host, `cannot connect to ${this.host}`);
    this.connected = true;
  }
  async exec(script: string, _o?: ExecOptions): Promise<ExecResult> {
    this.calls.push(script);
    this.log.push(`${this.host}:${script}`);
    const r = await this.b(this.host, script, this.calls.filter((c) => c === script).length);
    if (r === 'lost') throw new TransportError('E_CONN_LOST', this.host, 'connection lost');
    return { code: 0, signal: null, stdout: '', stderr: '', timedOut: false, durationMs: 1, ...r };
  }
  async put() {}
  async get() {
    return Buffer.alloc(0);
  }
  async reconnect() {
    if (this.opts.reconnectFails) throw new TransportError('E_UNREACHABLE', this.host, 'still down');
  }
  async close() {}
}
