import { resolve } from 'node:path';
import type { RelayConfig } from '../../config/schema.ts';
import { domainMatches } from '../access/policy.ts';
import type { QueuedMessage, QueuedRecipient, QueueEntry } from '../spool/types.ts';
import { type AttemptResult, attemptUpstream, type TransactionReport } from './attempt.ts';
import { queueNotice } from './bounce.ts';
import { CircuitBreaker } from './breaker.ts';
import { authConfigured } from './credentials.ts';
import type { DsnAction } from './dsn.ts';
import { writeOutbox } from './outbox.ts';
import { localDeferral, type Outcome, type RecipientResult } from './reply.ts';
import { retryDelayMs } from './schedule.ts';
import { Scheduler } from './scheduler.ts';
import { type Notices, type Settlement, settle } from './settle.ts';
import { UpstreamPool } from './transport.ts';
import type { DeliveryAgent, DeliveryDeps, RouteState } from './types.ts';
import { describeTarget, parseUpstreamUrl, type UpstreamTarget } from './upstream-url.ts';

/** One smarthost: its session pool, circuit breaker, and the messages its open breaker holds back. */
interface Upstream {
  name: string;
  target: UpstreamTarget;
  breaker: CircuitBreaker;
  pool: UpstreamPool;
  /** Messages deferred without dialing (open breaker): retried as soon as the upstream answers again. */
  suspended: Set<string>;
  config: RelayConfig['upstream'];
  env: NodeJS.ProcessEnv;
  /** A route: mail of these sender domains only. */
  senderDomains?: string[];
  /** What /summary reports (RouteState). */
  lastSuccessAt?: number;
  lastRefusal?: { reply: string; at: number };
}

/** Consecutive connection failures that open the circuit breaker while the upstream was healthy. */
const BREAKER_THRESHOLD = 3;

const METRIC_STATUS: Record<Outcome, 'success' | 'deferred' | 'bounced'> = {
  sent: 'success',
  deferred: 'deferred',
  bounced: 'bounced',
};

/**
 * The delivery agent: Postfix's qmgr (scheduler.ts), smtp client (attempt.ts, transport.ts) and
 * bounce daemon (settle.ts, bounce.ts, dsn.ts) behind the DeliveryAgent contract.
 */
export class Agent implements DeliveryAgent {
  private readonly scheduler: Scheduler;
  /** Per-sender-domain routes first, then the default upstream (none: the outbox). */
  private readonly routes: Upstream[] = [];
  private readonly fallback: Upstream | undefined;
  private readonly now: () => number;
  /** Ids an administrator is deleting: their in-flight attempt must not write anything back. */
  private readonly deleting = new Set<string>();
  private started = false;

  constructor(private readonly deps: DeliveryDeps) {
    const { config } = deps;
    const q = config.queue;
    this.now = deps.now ?? Date.now;
    for (const route of config.upstream.routes) {
      // A route's credentials are its own: never the default ones from the environment.
      const upstream = { ...config.upstream, url: route.url, auth: route.auth };
      this.routes.push({ ...this.makeUpstream(route.url, upstream, {}), senderDomains: route.senderDomains });
    }
    if (config.upstream.url)
      this.fallback = this.makeUpstream(config.upstream.url, config.upstream, process.env);
    this.scheduler = new Scheduler({
      concurrency: config.upstream.maxConnections,
      now: this.now,
      run: (id, signal) => this.deliver(id, signal),
      onError: (id, err) => {
        deps.logger.error({ queueId: id, err }, 'delivery attempt failed unexpectedly');
        return this.now() + retryDelayMs(1, q);
      },
    });
    this.watchQueueGauges();
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    const { config, logger, spool } = this.deps;
    for (const up of this.upstreams()) {
      logger.info(
        {
          upstream: describeTarget(up.target),
          ...(up.senderDomains ? { senderDomains: up.senderDomains } : {}),
          ehlo: config.hostname,
          auth: authConfigured(up.config.auth, up.env) ? (up.config.auth?.method ?? 'PLAIN') : 'none',
          maxConnections: config.upstream.maxConnections,
        },
        up.senderDomains
          ? 'delivering mail of these sender domains through upstream'
          : 'delivering through upstream',
      );
    }
    if (this.fallback && (config.hostname === 'localhost' || !config.hostname.includes('.'))) {
      logger.warn(
        { hostname: config.hostname },
        'hostname is not a FQDN: smarthosts such as smtp-relay.gmail.com refuse EHLO localhost (set hostname)',
      );
    }
    if (!this.fallback) {
      logger.info(
        { outbox: resolve(config.upstream.outboxDir) },
        'no upstream configured (upstream.url unset): mail is written as .eml files into the outbox directory',
      );
    }
    const entries = spool.entries();
    this.scheduler.scheduleMany(entries.map((e) => ({ id: e.id, due: e.nextAttemptAt })));
  }

  enqueue(entry: QueueEntry): void {
    this.scheduler.schedule(entry.id, Math.min(entry.nextAttemptAt, this.now()));
  }

  flush(): void {
    for (const up of this.upstreams()) {
      up.breaker.reset();
      up.suspended.clear();
    }
    this.scheduler.makeAllDue();
  }

  retry(id: string): boolean {
    return this.scheduler.makeDue(id);
  }

  async delete(id: string): Promise<boolean> {
    const { spool, metrics, logger } = this.deps;
    this.deleting.add(id);
    try {
      const known = this.scheduler.has(id);
      await this.scheduler.forget(id); // waits for an attempt in flight
      if (!known && !(await spool.get(id))) return false;
      await spool.remove(id).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
      for (const up of this.upstreams()) up.suspended.delete(id);
      metrics.deliveries.inc({ outcome: 'deleted' });
      logger.info({ queueId: id }, 'message deleted from the queue');
      return true;
    } finally {
      this.deleting.delete(id);
    }
  }

  inFlight(): number {
    return this.scheduler.inFlight;
  }

  routeStates(): RouteState[] {
    return this.upstreams().map((up) => ({
      name: up.name,
      ...(up.senderDomains ? { senderDomains: up.senderDomains } : {}),
      state: up.breaker.state(),
      ...(up.lastSuccessAt ? { lastSuccessAt: up.lastSuccessAt } : {}),
      ...(up.lastRefusal ? { lastRefusal: up.lastRefusal } : {}),
      ...(up.breaker.reopenAt ? { reopenAt: up.breaker.reopenAt } : {}),
    }));
  }

  /**
   * Upstream health from one transaction: any recipient taken is a success; the same refusal
   * for every recipient of a command other than RCPT TO (the dial, EHLO, AUTH, MAIL FROM, DATA)
   * is the upstream refusing the relay itself, e.g. Google's "550 5.7.0 Mail relay denied".
   */
  private track(up: Upstream, t: TransactionReport): void {
    if (!t.replies.length) return; // not dialed (open breaker) or shutting down
    if (t.recipients.some((r) => r.outcome === 'sent')) {
      up.lastSuccessAt = this.now();
      return;
    }
    const first = t.recipients[0];
    if (!first || first.command === 'RCPT TO' || first.outcome === 'sent') return;
    if (t.recipients.every((r) => r.reply === first.reply))
      up.lastRefusal = { reply: first.reply, at: this.now() };
  }

  async stop(deadline: number): Promise<void> {
    await this.scheduler.stop(deadline);
    await Promise.all(this.upstreams().map((up) => up.pool.close()));
  }

  private upstreams(): Upstream[] {
    return this.fallback ? [...this.routes, this.fallback] : this.routes;
  }

  /** The upstream for a message: the first route naming its sender's domain, else the default. */
  private upstreamFor(msg: QueuedMessage): Upstream | undefined {
    const domain = msg.from.slice(msg.from.lastIndexOf('@') + 1);
    if (msg.from) {
      for (const r of this.routes) if (r.senderDomains?.some((d) => domainMatches(domain, d))) return r;
    }
    return this.fallback;
  }

  private makeUpstream(url: string, upstream: RelayConfig['upstream'], env: NodeJS.ProcessEnv): Upstream {
    const { config, logger } = this.deps;
    const q = config.queue;
    const target = parseUpstreamUrl(url);
    const name = `${target.host}:${target.port}`;
    const suspended = new Set<string>();
    const breaker = new CircuitBreaker(
      {
        threshold: BREAKER_THRESHOLD,
        initialMs: q.retryInitialSeconds * 1000,
        multiplier: q.retryMultiplier,
        maxMs: q.retryMaxSeconds * 1000,
      },
      this.now,
      {
        onTrip: (until, reason) =>
          logger.warn(
            { relay: name, reason, suspendedSeconds: Math.round((until - this.now()) / 1000) },
            'upstream unreachable: delivery suspended',
          ),
        onRecover: () => {
          logger.info({ relay: name, waiting: suspended.size }, 'upstream reachable again');
          for (const id of suspended) this.scheduler.makeDue(id);
          suspended.clear();
        },
      },
    );
    const pool = new UpstreamPool({ target, hostname: config.hostname, upstream, breaker, logger, env });
    return { name, target, breaker, pool, suspended, config: upstream, env };
  }

  /** One attempt of one message; resolves with when to try again, undefined when it left the queue. */
  private async deliver(id: string, signal: AbortSignal): Promise<number | undefined> {
    const { spool, config } = this.deps;
    const msg = await spool.get(id);
    if (!msg) return undefined; // removed behind our back (queue delete from the CLI)
    if (!msg.recipients.some((r) => r.status === 'pending')) {
      await spool.remove(id); // finished before a crash, not yet removed
      return undefined;
    }
    const up = this.upstreamFor(msg);
    const attempt = up
      ? await attemptUpstream(
          msg,
          {
            pool: up.pool,
            spool,
            maxRecipients: config.upstream.maxRecipientsPerTransaction,
            now: this.now,
            onTransaction: (t) => {
              this.track(up, t);
              this.report(msg, t, up.name);
            },
          },
          signal,
        )
      : await this.deliverToOutbox(msg);
    if (this.deleting.has(id)) return undefined;

    if (up && attempt.suspendedUntil) up.suspended.add(id);
    else up?.suspended.delete(id);
    let s = settle({
      msg,
      results: attempt.results,
      dsnPassed: attempt.dsnPassed,
      now: this.now(),
      policy: config.queue,
      random: Math.random(),
      ...(attempt.suspendedUntil ? { notBefore: attempt.suspendedUntil } : {}),
    });
    s = await this.notify(s, up);
    if (s.done) {
      await spool.remove(id);
      this.deps.metrics.deliveries.inc({ outcome: s.outcome });
      return undefined;
    }
    await spool.update(s.msg);
    return s.msg.nextAttemptAt;
  }

  /** Queue the DSNs a settlement owes. If that fails (spool full), the bounced recipients stay pending to bounce again later. */
  private async notify(s: Settlement, up: Upstream | undefined): Promise<Settlement> {
    const { spool, config, logger, metrics } = this.deps;
    const { msg } = s;
    if (s.expired.length) {
      logger.warn(
        {
          queueId: msg.id,
          messageId: msg.messageId,
          from: msg.from,
          to: s.expired.map((r) => r.address),
          outcome: 'bounced',
          reason: 'expired',
          delay: this.age(msg),
          attempts: msg.attempts,
        },
        'message expired: giving up',
      );
    }
    if (s.suppressed) {
      logger.warn(
        {
          queueId: msg.id,
          to: msg.recipients.filter((r) => s.bouncedNow.includes(r.address)).map((r) => r.address),
        },
        'undeliverable notification dropped (a bounce is never bounced)',
      );
    }
    const kinds: [DsnAction, keyof Notices][] = [
      ['failed', 'failed'],
      ['delayed', 'delayed'],
      ['relayed', 'relayed'],
    ];
    try {
      for (const [action, key] of kinds) {
        const notices = s.notices[key];
        if (!notices.length) continue;
        const bounce = await queueNotice(action, msg, notices, {
          spool,
          hostname: config.hostname,
          policy: config.queue,
          ...(up ? { remoteMta: up.target.host } : {}),
          now: this.now(),
        });
        metrics.bouncesGenerated.inc();
        logger.info(
          {
            queueId: msg.id,
            dsn: bounce.id,
            action,
            to: msg.from,
            recipients: notices.map((n) => n.rcpt.address),
          },
          'delivery status notification queued',
        );
        this.enqueue(bounce);
      }
      return s;
    } catch (err) {
      logger.error({ queueId: msg.id, err }, 'cannot queue a delivery status notification: will retry');
      const recipients = msg.recipients.map(
        (r): QueuedRecipient => (s.bouncedNow.includes(r.address) ? { ...r, status: 'pending' } : r),
      );
      const retry: QueuedMessage = {
        ...msg,
        recipients,
        nextAttemptAt: this.now() + retryDelayMs(msg.attempts, config.queue),
      };
      return { ...s, msg: retry, done: false };
    }
  }

  private async deliverToOutbox(msg: QueuedMessage): Promise<AttemptResult> {
    const { spool, config } = this.deps;
    const pending = msg.recipients.filter((r) => r.status === 'pending');
    const started = this.now();
    let verdict: Omit<RecipientResult, 'address'>;
    try {
      const file = await writeOutbox(
        config.upstream.outboxDir,
        msg,
        pending.map((r) => r.address),
        spool.openBody(msg.id),
        config.spool.fsync,
      );
      verdict = {
        outcome: 'sent',
        reply: `250 2.0.0 written to ${file}`,
        status: '2.0.0',
        remote: false,
        class: '2xx',
      };
    } catch (err) {
      verdict = localDeferral(`cannot write to outbox: ${(err as Error).message}`, '4.3.0');
    }
    const recipients = pending.map((r) => ({ ...verdict, address: r.address }));
    this.report(msg, { recipients, seconds: (this.now() - started) / 1000, replies: [] }, 'outbox', true);
    return { results: new Map(recipients.map((r) => [r.address, r])), dsnPassed: new Set() };
  }

  private age(msg: QueuedMessage): number {
    return Math.round((this.now() - msg.receivedAt) / 1000);
  }

  /** Metrics and one log line per transaction and outcome (a transaction's recipients can differ). */
  private report(msg: QueuedMessage, t: TransactionReport, relay: string, local = false): void {
    const { metrics, logger } = this.deps;
    if (t.replies.length || local) metrics.sendDuration.observe(t.seconds);
    for (const c of t.replies) metrics.upstreamReplies.inc({ class: c });
    const groups = new Map<string, RecipientResult[]>();
    for (const r of t.recipients) {
      metrics.emailsSent.inc({ status: METRIC_STATUS[r.outcome] });
      const key = `${r.outcome}\0${r.reply}`;
      const g = groups.get(key);
      if (g) g.push(r);
      else groups.set(key, [r]);
    }
    for (const g of groups.values()) {
      const first = g[0]!;
      logger.info(
        {
          queueId: msg.id,
          messageId: msg.messageId,
          from: msg.from,
          to: g.map((r) => r.address),
          size: msg.size,
          client: msg.client.address,
          ...(msg.client.namespace ? { namespace: msg.client.namespace } : {}),
          ...(msg.client.pod ? { pod: msg.client.pod } : {}),
          relay,
          reply: first.reply,
          status: first.status,
          delay: this.age(msg),
          seconds: Math.round(t.seconds * 1000) / 1000,
          outcome: first.outcome,
          attempt: msg.attempts + 1,
          ...(msg.isBounce ? { bounce: true } : {}),
        },
        first.outcome,
      );
    }
  }

  /** The queue gauges are computed from the spool when Prometheus scrapes (prom-client `collect`). */
  private watchQueueGauges(): void {
    const { metrics, spool } = this.deps;
    const stats = () => {
      try {
        return spool.stats();
      } catch {
        return undefined;
      }
    };
    Object.assign(metrics.queueSize, { collect: () => metrics.queueSize.set(stats()?.messages ?? 0) });
    Object.assign(metrics.queueBytes, { collect: () => metrics.queueBytes.set(stats()?.bytes ?? 0) });
    Object.assign(metrics.queueOldestAge, {
      collect: () => {
        const oldest = stats()?.oldestReceivedAt;
        metrics.queueOldestAge.set(oldest === undefined ? 0 : Math.max(0, (this.now() - oldest) / 1000));
      },
    });
  }
}
