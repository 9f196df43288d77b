import type { RelayConfig } from '../../config/schema.ts';
import type { Logger } from '../../lib/logger.ts';
import type { RelayMetrics } from '../metrics.ts';
import type { QueueEntry, Spool } from '../spool/types.ts';

export interface DeliveryDeps {
  config: RelayConfig;
  spool: Spool;
  metrics: RelayMetrics;
  logger: Logger;
  /** Injected clock for tests of the schedule; defaults to Date.now. */
  now?: () => number;
}

/** What one upstream (the default smarthost or a route) is doing, for the relay's /summary. */
export interface RouteState {
  /** host:port */
  name: string;
  senderDomains?: string[];
  /** The circuit breaker over dialing it. */
  state: 'closed' | 'open' | 'half-open';
  /** ms epoch: last transaction that delivered at least one recipient. */
  lastSuccessAt?: number;
  /** Last refusal of a whole transaction by the upstream (its reply as given), or a failed dial. */
  lastRefusal?: { reply: string; at: number };
  /** ms epoch when an open breaker lets a probe through. */
  reopenAt?: number;
  /** Delivery's own reading of the route: held, backed off, resuming... (route-state.ts). */
  health: RouteHealth;
}

/**
 * Takes due messages from the spool and delivers them upstream (Postfix's qmgr + smtp client):
 * per-recipient outcomes, retry with backoff, bounces (DSN) and expiry.
 */
export interface DeliveryAgent {
  /** Load the spool's entries and begin delivering what is due. */
  start(): void;
  /** A message was just committed: deliver it as soon as a connection is free. */
  enqueue(entry: QueueEntry): void;
  /** ETRN / `queue flush`: every deferred message becomes due now. */
  flush(): void;
  /** `queue retry ID`: make one message due now; false if unknown. */
  retry(id: string): boolean;
  /** `queue delete ID`: drop a message (waits for an in-flight attempt on it); false if unknown. */
  delete(id: string): Promise<boolean>;
  /** State of each upstream (routes first, then the default); empty when writing to the outbox. */
  routeStates(): RouteState[];
  /** Messages being delivered right now. */
  inFlight(): number;
  /** Stop starting attempts; wait for in-flight ones until the deadline (ms epoch), then abort them. */
  stop(deadline: number): Promise<void>;
}

/**
 * A route as delivery sees it (the `state` label of email_upstream_state). Times are ISO 8601.
 * state: ok | held (a relay-level refusal: identity, auth, config, quota) | backoff (a rate
 * refusal) | probing (the hold ended, one attempt is testing) | resuming (after a back-off, the
 * connections grow back) | unreachable (the circuit breaker is open).
 */
export interface RouteHealth {
  /** The upstream URL's target, e.g. "smtp-relay.gmail.com:587 (STARTTLS required)". */
  upstream: string;
  state: 'ok' | 'held' | 'backoff' | 'probing' | 'resuming' | 'unreachable';
  since: string;
  /** When a held route next probes, or an open breaker next dials. */
  retryAt?: string;
  /** Why the breaker opened (state unreachable). */
  lastError?: string;
  /** The upstream's own words, the last time it refused this relay. */
  lastRefusal?: {
    code?: number;
    status: string;
    text: string;
    reason: 'identity' | 'auth' | 'quota' | 'rate' | 'config';
    command?: string;
    at: string;
  };
  /** Messages deferred because the route is held or unreachable. */
  held: number;
  /** Due messages waiting for one of the route's connections. */
  waiting: number;
  inFlight: number;
  /** Connections the route may use now (1 while probing, growing while resuming). */
  connections: number;
  preflight?: { ok: boolean; at: string; detail: string };
}

export type CreateDeliveryAgent = (deps: DeliveryDeps) => DeliveryAgent;
