/**
 * Group commit: callers submit items and wait; one `flush` runs at a time over everything that
 * was submitted before it started. While a flush (an fsync, typically) is in flight, new items
 * gather for the next one, so N concurrent callers cost far fewer than N flushes and nobody
 * waits for more than two.
 */
export class GroupCommit<T = void> {
  private queue: Array<{ item: T; resolve: () => void; reject: (e: unknown) => void }> = [];
  private running = false;
  private idleWaiters: Array<() => void> = [];
  /** Flushes run so far. */
  flushes = 0;
  /** Items flushed so far. */
  items = 0;
  /** Largest batch seen. */
  maxBatch = 0;

  constructor(private readonly flush: (items: T[]) => Promise<void>) {}

  /** Resolves once a flush that started after this call has completed (rejects if it failed). */
  submit(item: T): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.running) {
        this.running = true;
        // Callers woken in the same tick join the first batch.
        queueMicrotask(() => void this.drain());
      }
    });
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Resolves when nothing is queued or flushing. */
  idle(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue;
      this.queue = [];
      this.flushes++;
      this.items += batch.length;
      if (batch.length > this.maxBatch) this.maxBatch = batch.length;
      try {
        await this.flush(batch.map((b) => b.item));
        for (const b of batch) b.resolve();
      } catch (e) {
        for (const b of batch) b.reject(e);
      }
    }
    this.running = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
