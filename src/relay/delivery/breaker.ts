/**
 * Circuit breaker over dialing the upstream, so a dead smarthost costs a handful of connection
 * attempts instead of one per queued message (Postfix marks such a destination "dead" and defers
 * its mail without connecting).
 *
 * - closed: dial freely; `threshold` consecutive failures open it.
 * - open: no dials until `reopenAt`; the caller defers instead. Each trip in a row doubles the
 *   wait (the queue's retry policy: initial, multiplier, max).
 * - half-open (also the state at start, before anything is known): one probe dial at a time;
 *   others wait for its result. Success closes the breaker, failure opens it again.
 */

export interface BreakerPolicy {
  threshold: number;
  initialMs: number;
  multiplier: number;
  maxMs: number;
}

export type DialPermit = 'dial' | 'wait' | 'open';
export type BreakerState = 'closed' | 'open' | 'half-open';

export class CircuitBreaker {
  private failures = 0;
  private trips = 0;
  private openUntil = 0;
  /** A dial succeeded since start or since the last trip. */
  private healthy = false;
  private probing = false;
  private waiters: (() => void)[] = [];
  /** Why the last dial failed, for the deferral reason of messages not dialed for. */
  lastError = '';

  constructor(
    private readonly policy: BreakerPolicy,
    private readonly now: () => number,
    private readonly hooks: {
      /** The breaker opened: no dials until `until`. */
      onTrip?: (until: number, reason: string) => void;
      /** The upstream answers again after the breaker was open. */
      onRecover?: () => void;
    } = {},
  ) {}

  state(): BreakerState {
    if (this.now() < this.openUntil) return 'open';
    return this.healthy ? 'closed' : 'half-open';
  }

  /** When an open breaker lets a probe through (ms epoch); 0 when not open. */
  get reopenAt(): number {
    return this.now() < this.openUntil ? this.openUntil : 0;
  }

  /** Ask before dialing. 'dial' obliges the caller to report success() or failure(). */
  permit(): DialPermit {
    const state = this.state();
    if (state === 'open') return 'open';
    if (state === 'closed') return 'dial';
    if (this.probing) return 'wait';
    this.probing = true;
    return 'dial';
  }

  /** Resolves when the probe in flight (or any dial) reports; then ask permit() again. */
  settled(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  success(): void {
    const recovered = !this.healthy && this.trips > 0;
    this.healthy = true;
    this.failures = 0;
    this.trips = 0;
    this.openUntil = 0;
    this.probing = false;
    this.wake();
    if (recovered) this.hooks.onRecover?.();
  }

  failure(reason: string): void {
    this.lastError = reason;
    const wasProbe = this.probing;
    this.probing = false;
    // Dials that were already under way when the breaker opened add nothing.
    if (this.state() !== 'open') {
      this.failures++;
      if (wasProbe || !this.healthy || this.failures >= this.policy.threshold) this.trip();
    }
    this.wake();
  }

  /** A dial given permission was abandoned (shutdown) without a result. */
  abandon(): void {
    this.probing = false;
    this.wake();
  }

  /** ETRN / `queue flush`: forget the outage; the next dial is a probe. */
  reset(): void {
    this.failures = 0;
    this.trips = 0;
    this.openUntil = 0;
    this.wake();
  }

  private trip(): void {
    this.trips++;
    this.healthy = false;
    this.failures = 0;
    const wait = Math.min(
      this.policy.initialMs * this.policy.multiplier ** (this.trips - 1),
      this.policy.maxMs,
    );
    this.openUntil = this.now() + wait;
    this.hooks.onTrip?.(this.openUntil, this.lastError);
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
