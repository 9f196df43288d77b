/**
 * A work queue of object keys with client-go's semantics: a key is queued at most once however
 * often it is added, is never processed by two workers at once (added while processing, it is
 * queued again when done), and failures come back after a per-key exponential backoff.
 */

export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
}

export class ExponentialBackoff {
  private readonly failures = new Map<string, number>();
  constructor(private readonly opts: BackoffOptions = { baseMs: 100, maxMs: 5 * 60_000 }) {}

  /** Delay before the next retry of key; each call counts one more failure. */
  next(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    return Math.min(this.opts.maxMs, this.opts.baseMs * 2 ** n);
  }

  retries(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  forget(key: string): void {
    this.failures.delete(key);
  }
}

export interface Clock {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realClock: Clock = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly waiting = new Map<string, { at: number; handle: unknown }>();
  private readonly getters: ((key: string | undefined) => void)[] = [];
  private shuttingDown = false;
  readonly backoff: ExponentialBackoff;

  constructor(opts: { backoff?: BackoffOptions; clock?: Clock; onDepth?: (depth: number) => void } = {}) {
    this.backoff = new ExponentialBackoff(opts.backoff);
    this.clock = opts.clock ?? realClock;
    this.onDepth = opts.onDepth;
  }
  private readonly clock: Clock;
  private readonly onDepth: ((depth: number) => void) | undefined;

  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return; // re-queued by done()
    const getter = this.getters.shift();
    if (getter) getter(key);
    else this.queue.push(key);
    this.onDepth?.(this.queue.length);
  }

  /** Adds key after ms; an earlier pending add for the same key wins. */
  addAfter(key: string, ms: number): void {
    if (this.shuttingDown) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const at = Date.now() + ms;
    const pending = this.waiting.get(key);
    if (pending && pending.at <= at) return;
    if (pending) this.clock.clearTimeout(pending.handle);
    const handle = this.clock.setTimeout(() => {
      this.waiting.delete(key);
      this.add(key);
    }, ms);
    this.waiting.set(key, { at, handle });
  }

  /** After a failure: back off per key, exponentially. */
  addRateLimited(key: string): number {
    const delay = this.backoff.next(key);
    this.addAfter(key, delay);
    return delay;
  }

  /** After a success: the next failure starts from the base delay again. */
  forget(key: string): void {
    this.backoff.forget(key);
  }

  /** The next key to process; undefined once shut down. Call done(key) when finished. */
  get(): Promise<string | undefined> {
    const key = this.queue.shift();
    if (key !== undefined) {
      this.start(key);
      this.onDepth?.(this.queue.length);
      return Promise.resolve(key);
    }
    if (this.shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) =>
      this.getters.push((k) => {
        if (k !== undefined) this.start(k);
        resolve(k);
      }),
    );
  }

  private start(key: string): void {
    this.processing.add(key);
    this.dirty.delete(key);
  }

  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key)) {
      this.dirty.delete(key);
      this.add(key);
    }
  }

  get length(): number {
    return this.queue.length;
  }

  shutDown(): void {
    this.shuttingDown = true;
    for (const { handle } of this.waiting.values()) this.clock.clearTimeout(handle);
    this.waiting.clear();
    for (const g of this.getters.splice(0)) g(undefined);
  }
}
