/**
 * Group commit: callers submit items and wait; one `flush` runs at a time over everything that
 * was submitted before it started. While a flush (an fsync, typically) is in flight, new items
 * gather for the next one, so N concurrent callers cost far fewer than N flushes and nobody
 * waits for more than two.
 *
 * A *lazy* item (a journal DEL: nobody waits for it to answer a client) does not start a flush
 * by itself at once: for up to `lazyMs` it waits for an eager item (a PUT, whose client waits
 * for its 250) to go out with. At one session a DEL would otherwise take its own fdatasync just
 * when the next message's final dot arrives, and that PUT would wait for two. It waits only
 * while eager items keep coming (one in the last 100 ms): when the queue drains with no mail
 * coming in, removes go out at once, as before. The lazy caller still resolves only once its
 * item is durable.
 */
/** Eager items this recent mean more are coming (mail is arriving). */
const TRAFFIC_MS = 100;

export class GroupCommit<T = void> {
  private queue: Array<{ item: T; lazy: boolean; resolve: () => void; reject: (e: unknown) => void }> = [];
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  private lastEagerAt = Number.NEGATIVE_INFINITY;
  private idleWaiters: Array<() => void> = [];
  /** Flushes run so far. */
  flushes = 0;
  /** Items flushed so far. */
  items = 0;
  /** Largest batch seen. */
  maxBatch = 0;

  constructor(
    private readonly flush: (items: T[]) => Promise<void>,
    private readonly lazyMs = 0,
  ) {}

  /** Resolves once a flush that started after this call has completed (rejects if it failed). */
  submit(item: T, lazy = false): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ item, lazy: lazy && this.lazyMs > 0, resolve, reject });
      if (!lazy) this.lastEagerAt = performance.now();
      if (!this.running) this.schedule();
    });
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Resolves when nothing is queued or flushing (lazy items go out now). */
  idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    if (!this.running) this.start();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Not running: flush now if an eager item waits, else once the lazy ones have waited enough. */
  private schedule(): void {
    if (this.queue.length === 0) return;
    if (this.queue.some((q) => !q.lazy) || performance.now() - this.lastEagerAt > TRAFFIC_MS) this.start();
    else this.timer ??= setTimeout(() => this.start(), this.lazyMs);
  }

  private start(): void {
    if (this.running) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.running = true;
    // Callers woken in the same tick join the first batch.
    queueMicrotask(() => void this.drain());
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
      // Only lazy items came meanwhile: they wait for company again (unless someone is waiting for idle).
      if (this.idleWaiters.length === 0 && this.queue.length > 0 && this.queue.every((q) => q.lazy)) break;
    }
    this.running = false;
    if (this.queue.length > 0) {
      this.schedule();
      return;
    }
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
