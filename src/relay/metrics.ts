import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Every metric the relay exports, in one place so names stay a stable contract.
 * `emails_sent_total`, `email_send_duration_seconds` and `email_queue_size` are the seed's names
 * (dashboards built for the Postfix relay keep working); the rest is what a mail operator needs.
 * One registry per relay instance, so tests can run several relays in one process.
 */
export function createRelayMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  // prom-client's event-loop-delay timer (10 ms) wakes an idle relay 100 times a second. It stays:
  // the histogram records the whole interval between two ticks, so nodejs_eventloop_lag_* would
  // read 100 ms on a relay doing nothing at a coarser resolution, and dashboards read 10 ms as idle.
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    /** One per recipient and attempt. status: success | deferred | bounced. */
    emailsSent: new Counter({
      name: 'emails_sent_total',
      help: 'Recipient delivery attempts by outcome (success, deferred, bounced)',
      labelNames: ['status'] as const,
      registers,
    }),
    /** One upstream transaction, from connection checkout to the final reply. */
    sendDuration: new Histogram({
      name: 'email_send_duration_seconds',
      help: 'Time spent delivering one message to the upstream',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    }),
    queueSize: new Gauge({ name: 'email_queue_size', help: 'Messages in the queue', registers }),
    queueBytes: new Gauge({ name: 'email_queue_bytes', help: 'Bytes of queued messages', registers }),
    queueOldestAge: new Gauge({
      name: 'email_queue_oldest_message_age_seconds',
      help: 'Age of the oldest queued message',
      registers,
    }),
    ready: new Gauge({
      name: 'email_relay_ready',
      help: '1 while /readyz answers 200 (not draining, attribution synced, spool writable and not full)',
      registers,
    }),
    spoolFreeBytes: new Gauge({
      name: 'email_spool_filesystem_free_bytes',
      help: 'Bytes available to the relay on the spool filesystem (452 4.3.1 below spool.minFreeBytes)',
      registers,
    }),
    spoolSizeBytes: new Gauge({
      name: 'email_spool_filesystem_size_bytes',
      help: 'Size of the spool filesystem',
      registers,
    }),
    deliveries: new Counter({
      name: 'email_deliveries_total',
      help: 'Messages that left the queue, by outcome (sent, bounced, expired, deleted)',
      labelNames: ['outcome'] as const,
      registers,
    }),
    upstreamReplies: new Counter({
      name: 'email_upstream_replies_total',
      help: 'Upstream replies by class (2xx, 4xx, 5xx, network)',
      labelNames: ['class'] as const,
      registers,
    }),
    /** 1 for the state each route is in (ok, held, backoff, probing, resuming, unreachable), 0 for the others. */
    upstreamState: new Gauge({
      name: 'email_upstream_state',
      help: 'State of each upstream route (1 = current): ok, held, backoff, probing, resuming, unreachable',
      labelNames: ['route', 'state'] as const,
      registers,
    }),
    upstreamHeld: new Gauge({
      name: 'email_upstream_held_messages',
      help: 'Messages waiting for a held, backed-off or unreachable route',
      labelNames: ['route'] as const,
      registers,
    }),
    upstreamRefusals: new Counter({
      name: 'email_upstream_refusals_total',
      help: 'Relay-level refusals (the route is held, nothing bounced), by reason: identity, auth, config, quota, rate',
      labelNames: ['route', 'reason'] as const,
      registers,
    }),
    upstreamPreflight: new Gauge({
      name: 'email_upstream_preflight_ok',
      help: 'Result of the last preflight session (connect, EHLO, STARTTLS, AUTH, QUIT): 1 ok, 0 failed',
      labelNames: ['route'] as const,
      registers,
    }),
    upstreamTimeouts: new Counter({
      name: 'email_upstream_timeouts_total',
      help: 'Attempts cut short by a deadline (a command reply or the whole attempt took too long)',
      labelNames: ['route'] as const,
      registers,
    }),
    bouncesGenerated: new Counter({
      name: 'email_bounces_generated_total',
      help: 'Delivery status notifications generated',
      registers,
    }),
    connections: new Counter({
      name: 'smtp_connections_total',
      help: 'Inbound SMTP connections accepted',
      registers,
    }),
    connectionsActive: new Gauge({
      name: 'smtp_connections_active',
      help: 'Inbound SMTP sessions open now',
      registers,
    }),
    messagesReceived: new Counter({
      name: 'smtp_messages_received_total',
      help: 'Messages accepted and queued (250 sent)',
      registers,
    }),
    bytesReceived: new Counter({
      name: 'smtp_received_bytes_total',
      help: 'Bytes of accepted messages',
      registers,
    }),
    rejections: new Counter({
      name: 'smtp_rejections_total',
      help: 'Inbound commands or messages refused, by reason',
      labelNames: ['reason'] as const,
      registers,
    }),
    policyRejections: new Counter({
      name: 'smtp_policy_rejections_total',
      help: 'Commands or messages refused by a policy, by policy and rule',
      labelNames: ['policy', 'rule'] as const,
      registers,
    }),
    /** Damage the spool found in its own files (each also logged with the queue id). */
    spoolDamage: new Counter({
      name: 'email_spool_damage_total',
      help: 'Messages the spool found damaged, by outcome (lost: no copy left; quarantined: kept out of delivery; recovered: from another copy)',
      labelNames: ['outcome'] as const,
      registers,
    }),
    spoolQuarantined: new Gauge({
      name: 'email_spool_quarantined_messages',
      help: "Messages kept in the spool's quarantine/ directory (not delivered; see email-relay queue list)",
      registers,
    }),
    acceptDuration: new Histogram({
      name: 'smtp_accept_duration_seconds',
      help: 'From the end of DATA to the 250 reply (includes the durable write)',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    }),
  };
}

export type RelayMetrics = ReturnType<typeof createRelayMetrics>;
