/** A counting semaphore: at most `max` of the functions given to run() are in flight at once, the rest wait in order. */
export class Limiter {
  private active = 0;
  private queue: Array<() => void> = [];
  constructor(readonly max: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((r) => this.queue.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.queue.shift()?.();
    }
  }
}
