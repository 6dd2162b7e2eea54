/** A counting semaphore: at most `max` turns are held at once, the rest wait in order. */
export class Limiter {
  private active = 0;
  private queue: Array<() => void> = [];
  constructor(readonly max: number) {}

  /** Waits for a turn; the function it resolves to gives the turn back (once; later calls do nothing). */
  async acquire(): Promise<() => void> {
    if (this.active >= this.max) await new Promise<void>((r) => this.queue.push(r));
    this.active++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.active--;
      this.queue.shift()?.();
    };
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
