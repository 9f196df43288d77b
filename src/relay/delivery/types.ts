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

export type CreateDeliveryAgent = (deps: DeliveryDeps) => DeliveryAgent;
