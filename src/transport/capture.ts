/**
 * What is kept of one stream of a command: its first `head` bytes and its last `tail` bytes, and how many
 * there were. A command may print gigabytes; only a tail (events, reports) and a bounded `register` are ever
 * used, so the controller holds at most head + tail bytes per stream, whatever it prints.
 */
export const CAPTURE_HEAD = 64 * 1024;
export const CAPTURE_TAIL = 64 * 1024;

export class Capture {
  private readonly first: Buffer[] = [];
  private firstLen = 0;
  private last: Buffer[] = [];
  private lastLen = 0;
  private total = 0;

  constructor(
    private readonly head = CAPTURE_HEAD,
    private readonly tail = CAPTURE_TAIL,
  ) {}

  /** Prepends what came before the command's own output (a failed start's leftovers), counted like it. */
  unshift(bufs: Buffer[]): void {
    const rest = this.drain();
    for (const b of [...bufs, ...rest]) this.push(b);
  }

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.total += b.length;
    let chunk = b;
    if (this.firstLen < this.head) {
      const take = Math.min(this.head - this.firstLen, chunk.length);
      this.first.push(Buffer.from(chunk.subarray(0, take)));
      this.firstLen += take;
      chunk = chunk.subarray(take);
      if (chunk.length === 0) return;
    }
    this.last.push(Buffer.from(chunk.subarray(Math.max(0, chunk.length - this.tail))));
    this.lastLen += Math.min(chunk.length, this.tail);
    while (this.lastLen - this.last[0].length >= this.tail) this.lastLen -= this.last.shift()!.length;
  }

  /** Bytes the command printed (all of them, kept or not). */
  get bytes(): number {
    return this.total;
  }

  /** The text: whole, or head + `… output truncated (N bytes not kept) …` + tail. */
  text(): string {
    const head = Buffer.concat(this.first).toString('utf8');
    let tail = Buffer.concat(this.last);
    if (tail.length > this.tail) tail = tail.subarray(tail.length - this.tail);
    const dropped = this.total - this.firstLen - tail.length;
    if (dropped <= 0) return head + tail.toString('utf8');
    return `${head}\n… output truncated (${dropped} of ${this.total} bytes not kept) …\n${tail.toString('utf8')}`;
  }

  /** Whether bytes were dropped. */
  get cut(): boolean {
    return this.total > this.firstLen + Math.min(this.lastLen, this.tail);
  }

  private drain(): Buffer[] {
    const all = [...this.first, ...this.last];
    this.first.length = 0;
    this.last = [];
    this.firstLen = this.lastLen = this.total = 0;
    return all;
  }
}

/** ExecResult.truncated for two captures: the byte counts of the streams that were cut. */
export function truncation(out: Capture, err: Capture): { truncated?: { stdout?: number; stderr?: number } } {
  if (!out.cut && !err.cut) return {};
  return { truncated: { ...(out.cut ? { stdout: out.bytes } : {}), ...(err.cut ? { stderr: err.bytes } : {}) } };
}
