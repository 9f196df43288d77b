/** What the other replicas counted for a key over the same window (relay/peers/rate-share.ts). */
export interface RemoteCounts {
  count(windowMs: number, key: string): number;
  /** `key`'s count here changed (the peers are told soon, not at the next periodic report). */
  touched?(counter: RateCounter, key: string): void;
}

/**
 * Sliding-window counters per key (a namespace or a client address): the window is cut into
 * buckets, so memory per key is fixed and old counts fall off bucket by bucket. Alone, counts are
 * per relay replica (N replicas: up to N times the limit); with `remote`, count() adds what the
 * peers reported, so the limit holds for the relay (error bound in relay/peers/rate-share.ts).
 */
export class RateCounter {
  private readonly bucketMs: number;
  private readonly keys = new Map<string, { start: number; counts: number[] }>();

  constructor(
    readonly windowMs: number,
    private readonly buckets = 12,
    private readonly now: () => number = Date.now,
    private readonly remote?: RemoteCounts,
  ) {
    this.bucketMs = Math.max(1, Math.ceil(windowMs / buckets));
  }

  /** Events counted for `key` over the last window, here and (with `remote`) on the peers. */
  count(key: string): number {
    return this.localCount(key) + (this.remote?.count(this.windowMs, key) ?? 0);
  }

  /** Events counted here only. */
  localCount(key: string): number {
    const e = this.advance(key, false);
    return e ? e.counts.reduce((a, b) => a + b, 0) : 0;
  }

  /** Every key with a count here, for the reports to peers. */
  localCounts(): [string, number][] {
    const out: [string, number][] = [];
    for (const key of [...this.keys.keys()]) {
      const n = this.localCount(key);
      if (n > 0) out.push([key, n]);
    }
    return out;
  }

  add(key: string, n = 1): void {
    const e = this.advance(key, true)!;
    e.counts[e.counts.length - 1]! += n;
    if (this.keys.size > 10_000) this.prune();
    this.remote?.touched?.(this, key);
  }

  /** Moves a key's buckets up to now; drops the key once its whole window is empty. */
  private advance(key: string, create: boolean) {
    const bucket = Math.floor(this.now() / this.bucketMs);
    let e = this.keys.get(key);
    if (!e) {
      if (!create) return undefined;
      e = { start: bucket, counts: [0] };
      this.keys.set(key, e);
      return e;
    }
    const last = e.start + e.counts.length - 1;
    if (bucket > last) {
      for (let b = last + 1; b <= bucket; b++) e.counts.push(0);
      const excess = e.counts.length - this.buckets;
      if (excess > 0) {
        e.counts.splice(0, excess);
        e.start += excess;
      }
      if (!create && e.counts.every((c) => c === 0)) {
        this.keys.delete(key);
        return undefined;
      }
    }
    return e;
  }

  private prune(): void {
    for (const key of [...this.keys.keys()]) this.localCount(key);
  }
}
