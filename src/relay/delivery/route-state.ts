import type { RelayConfig } from '../../config/schema.ts';
import type { RelayReason } from './reply-classes.ts';

/**
 * The health of one route (one smarthost) as delivery sees it, and what it lets through:
 *
 * - ok: up to maxConnections attempts at once.
 * - held: a relay-level refusal (identity, auth, config, quota) came back; no attempt until the
 *   hold ends, then one message probes. A refused probe holds again, for longer (its own schedule,
 *   not the messages' retry schedule); an accepted one reopens the route.
 * - backoff: the same for a rate refusal (Google's "450 4.2.1 Peak SMTP relay limit exceeded"),
 *   after which the route resumes slowly: one connection, growing linearly back to maxConnections
 *   over hold.resumeSeconds.
 * - probing: the hold is over and one attempt is finding out whether the upstream takes mail again.
 * - resuming: after a back-off, the window grows.
 * (unreachable, from the circuit breaker, is reported alongside by the agent.)
 *
 * Knows nothing of messages or sockets; the agent asks admit() before an attempt and reports
 * finished(). Time comes from an injected clock.
 */

export type RouteStateName = 'ok' | 'held' | 'backoff' | 'probing' | 'resuming' | 'unreachable';
export const ROUTE_STATES: readonly RouteStateName[] = [
  'ok',
  'held',
  'backoff',
  'probing',
  'resuming',
  'unreachable',
];

export interface Refusal {
  /** The upstream's reply, one line, as it sent it. */
  text: string;
  code?: number;
  status: string;
  command?: string;
  reason: RelayReason;
  at: number;
}

export type Admission = { kind: 'go' } | { kind: 'park' } | { kind: 'hold'; until: number; refusal: Refusal };

export interface RouteHooks {
  /** The route was held (or held again after a refused probe). */
  onHold?: (until: number, refusal: Refusal, again: boolean) => void;
  /** A probe got through: the route takes mail again. */
  onRelease?: (heldSince: number, refusal: Refusal) => void;
  /** More attempts may start (window grew, an attempt ended, a hold ended). */
  onCapacity?: () => void;
}

type HoldPolicy = RelayConfig['upstream']['hold'];

export class RouteGate {
  private stateName: 'ok' | 'held' | 'resuming' = 'ok';
  private sinceAt: number;
  private until = 0;
  private holds = 0;
  private probing = false;
  private resumedAt = 0;
  private running = 0;
  private capacityTimer: NodeJS.Timeout | undefined;
  lastRefusal: Refusal | undefined;

  constructor(
    private readonly maxConnections: number,
    private readonly policy: HoldPolicy,
    private readonly now: () => number,
    private readonly hooks: RouteHooks = {},
  ) {
    this.sinceAt = now();
  }

  /** The state as reported (metrics, summary). */
  state(): Exclude<RouteStateName, 'unreachable'> {
    if (this.stateName === 'held') {
      if (this.probing) return 'probing';
      return this.lastRefusal?.reason === 'rate' ? 'backoff' : 'held';
    }
    if (this.stateName === 'resuming') return this.window() >= this.maxConnections ? 'ok' : 'resuming';
    return 'ok';
  }

  /** When the state began (ms epoch). */
  get since(): number {
    return this.sinceAt;
  }

  /** When a held route lets a probe through (ms epoch); 0 when not held. */
  get heldUntil(): number {
    return this.stateName === 'held' ? this.until : 0;
  }

  get inFlight(): number {
    return this.running;
  }

  /** Attempts allowed at once now. */
  window(): number {
    if (this.stateName === 'held') return 1;
    if (this.stateName === 'ok') return this.maxConnections;
    const ramp = this.policy.resumeSeconds * 1000;
    if (ramp <= 0) return this.maxConnections;
    const grown = 1 + Math.floor(((this.now() - this.resumedAt) / ramp) * (this.maxConnections - 1));
    return Math.min(this.maxConnections, grown);
  }

  /** Before an attempt: go (the caller must report finished()), wait for a slot, or defer. */
  admit(): Admission {
    if (this.stateName === 'held') {
      const refusal = this.lastRefusal!;
      if (this.now() < this.until || this.probing) return { kind: 'hold', until: this.until, refusal };
      if (this.running > 0) return { kind: 'park' }; // attempts from before the hold still finishing
      this.probing = true;
      this.running++;
      return { kind: 'go' };
    }
    if (this.running >= this.window()) {
      if (this.stateName === 'resuming') this.armCapacity();
      return { kind: 'park' };
    }
    this.running++;
    return { kind: 'go' };
  }

  /**
   * An admitted attempt ended. `refusal`: it met a relay-level refusal; `delivered`: the upstream
   * took at least one recipient (or otherwise answered without a relay-level refusal).
   */
  finished(result: { refusal?: Omit<Refusal, 'at'>; accepted: boolean }): void {
    this.running = Math.max(0, this.running - 1);
    const wasProbe = this.probing;
    this.probing = false;
    if (result.refusal) this.hold({ ...result.refusal, at: this.now() }, wasProbe);
    // Only the probe's answer ends a hold: an attempt admitted before the refusal may still be
    // accepted (it passed MAIL before a peak limit hit), which says nothing about now.
    else if (result.accepted && this.stateName === 'held' && wasProbe) this.release();
    else if (wasProbe) {
      // The probe neither got through nor was refused (a network failure): hold on, try later.
      this.until = this.now() + this.holdMs(this.lastRefusal!.reason, this.holds);
    }
    this.hooks.onCapacity?.();
  }

  /** A relay-level refusal outside a message attempt (preflight). */
  refuse(refusal: Omit<Refusal, 'at'>): void {
    this.hold({ ...refusal, at: this.now() }, false);
  }

  /** A session outside any message attempt (the preflight) got through: a hold with nothing in flight ends. */
  cleared(): void {
    if (this.stateName === 'held' && !this.probing && this.running === 0) {
      this.release();
      this.hooks.onCapacity?.();
    }
  }

  /** ETRN / `queue flush`: end any hold now (the next attempt probes). */
  reset(): void {
    if (this.stateName === 'held') this.until = 0;
    this.hooks.onCapacity?.();
  }

  private hold(refusal: Refusal, wasProbe: boolean): void {
    const again = this.stateName === 'held';
    // Attempts already under way when the route was held report the same refusal: they neither
    // restart the hold nor lengthen it; a refused probe does.
    if (again && !wasProbe) {
      this.lastRefusal = refusal;
      return;
    }
    if (!again) {
      this.holds = 0;
      this.sinceAt = this.now();
    } else this.holds++;
    this.stateName = 'held';
    this.lastRefusal = refusal;
    this.until = this.now() + this.holdMs(refusal.reason, this.holds);
    this.hooks.onHold?.(this.until, refusal, again);
  }

  private release(): void {
    const refusal = this.lastRefusal!;
    const heldSince = this.sinceAt;
    this.sinceAt = this.now();
    this.holds = 0;
    this.until = 0;
    if (refusal.reason === 'rate' || refusal.reason === 'quota') {
      this.stateName = 'resuming';
      this.resumedAt = this.now();
    } else {
      this.stateName = 'ok';
    }
    this.hooks.onRelease?.(heldSince, refusal);
  }

  private holdMs(reason: RelayReason, holds: number): number {
    const p = this.policy;
    const [initial, max] =
      reason === 'quota'
        ? [p.quotaInitialSeconds, p.quotaMaxSeconds]
        : reason === 'rate'
          ? [p.rateInitialSeconds, p.rateMaxSeconds]
          : [p.initialSeconds, p.maxSeconds];
    return Math.round(Math.min(initial * p.multiplier ** holds, Math.max(max, initial)) * 1000);
  }

  /** While resuming, the window grows with time: wake parked attempts when it does. */
  private armCapacity(): void {
    if (this.capacityTimer) return;
    const step = (this.policy.resumeSeconds * 1000) / Math.max(1, this.maxConnections - 1);
    this.capacityTimer = setTimeout(
      () => {
        this.capacityTimer = undefined;
        this.hooks.onCapacity?.();
      },
      Math.max(10, step),
    );
    this.capacityTimer.unref();
  }

  /** Clear timers (shutdown). */
  dispose(): void {
    clearTimeout(this.capacityTimer);
    this.capacityTimer = undefined;
  }
}
