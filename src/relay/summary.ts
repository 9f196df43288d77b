import type { DeliveryAgent, RouteState } from './delivery/types.ts';
import type { RelayMetrics } from './metrics.ts';
import type { Spool } from './spool/types.ts';

/**
 * The relay's read-only summary (GET /summary on its HTTP port), which the operator gathers
 * into the EmailRelay's status: queue totals, deliveries of the last hour, and what each
 * upstream last said. Mutations stay on the control socket.
 */
export interface RelaySummary {
  version: 1;
  hostname: string;
  /** Taking new mail (false while draining or not ready). */
  accepting: boolean;
  draining: boolean;
  queue: {
    messages: number;
    bytes: number;
    /** Messages waiting for a retry (deferred at least once, not due yet). */
    deferred: number;
    /** ISO time of the oldest queued message; absent when empty. */
    oldestReceivedAt?: string;
    oldestAgeSeconds: number;
  };
  lastHour: { delivered: number; bounced: number };
  upstreams: (Omit<RouteState, 'lastSuccessAt' | 'lastRefusal' | 'reopenAt'> & {
    lastSuccessAt?: string;
    lastRefusal?: { reply: string; at: string };
    reopenAt?: string;
    /** false: the last word of this upstream was a refusal (or it is unreachable). */
    healthy: boolean;
  })[];
  /** Peer hand-offs since start (a draining relay reports its progress here). */
  handoff?: { handedOff: number; received: number };
}

const MINUTE = 60_000;
const iso = (ms: number) => new Date(ms).toISOString();

export interface SummaryDeps {
  hostname: string;
  spool: Spool;
  delivery: () => DeliveryAgent | undefined;
  metrics: RelayMetrics;
  draining: () => boolean;
  accepting: () => boolean;
  handoff?: () => { handedOff: number; received: number };
  now?: () => number;
}

/**
 * "Last hour" from the deliveries counter: one sample a minute in a ring of 61; the count is the
 * counter now minus the sample an hour ago (or at start). So it lags by at most a minute.
 */
export class SummarySource {
  private readonly samples: { at: number; delivered: number; bounced: number }[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly now: () => number;

  constructor(private readonly deps: SummaryDeps) {
    this.now = deps.now ?? Date.now;
    this.samples.push({ at: this.now(), delivered: 0, bounced: 0 });
    this.timer = setInterval(() => void this.sample(), MINUTE);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async counts(): Promise<{ delivered: number; bounced: number }> {
    const { values } = await this.deps.metrics.deliveries.get();
    let delivered = 0;
    let bounced = 0;
    for (const v of values) {
      if (v.labels.outcome === 'sent') delivered += v.value;
      else if (v.labels.outcome === 'bounced' || v.labels.outcome === 'expired') bounced += v.value;
    }
    return { delivered, bounced };
  }

  private async sample(): Promise<void> {
    this.samples.push({ at: this.now(), ...(await this.counts()) });
    while (this.samples.length > 61) this.samples.shift();
  }

  async summary(): Promise<RelaySummary> {
    const { spool, hostname } = this.deps;
    const now = this.now();
    const stats = spool.stats();
    let deferred = 0;
    for (const e of spool.entries()) if (e.nextAttemptAt > now) deferred++;
    const hourAgo = this.samples.find((s) => s.at >= now - 60 * MINUTE - MINUTE / 2) ?? this.samples[0]!;
    const c = await this.counts();
    const oldest = stats.oldestReceivedAt;
    return {
      version: 1,
      hostname,
      accepting: this.deps.accepting(),
      draining: this.deps.draining(),
      queue: {
        messages: stats.messages,
        bytes: stats.bytes,
        deferred,
        ...(oldest !== undefined ? { oldestReceivedAt: iso(oldest) } : {}),
        oldestAgeSeconds: oldest === undefined ? 0 : Math.max(0, Math.round((now - oldest) / 1000)),
      },
      lastHour: { delivered: c.delivered - hourAgo.delivered, bounced: c.bounced - hourAgo.bounced },
      upstreams: (this.deps.delivery()?.routeStates() ?? []).map((r) => ({
        name: r.name,
        ...(r.senderDomains ? { senderDomains: r.senderDomains } : {}),
        state: r.state,
        ...(r.lastSuccessAt ? { lastSuccessAt: iso(r.lastSuccessAt) } : {}),
        ...(r.lastRefusal ? { lastRefusal: { reply: r.lastRefusal.reply, at: iso(r.lastRefusal.at) } } : {}),
        ...(r.reopenAt ? { reopenAt: iso(r.reopenAt) } : {}),
        // Held, backed off, probing or unreachable: the upstream does not take this relay's mail now.
        healthy:
          (r.health.state === 'ok' || r.health.state === 'resuming') &&
          r.state !== 'open' &&
          (r.lastRefusal === undefined || (r.lastSuccessAt ?? 0) > r.lastRefusal.at),
        health: r.health,
      })),
      ...(this.deps.handoff ? { handoff: this.deps.handoff() } : {}),
    };
  }
}
