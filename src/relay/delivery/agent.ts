import { resolve } from 'node:path';
import { isFqdn, type RelayConfig } from '../../config/schema.ts';
import { domainMatches } from '../access/policy.ts';
import type { QueuedMessage, QueuedRecipient, QueueEntry } from '../spool/types.ts';
import { type AttemptResult, attemptUpstream, type TransactionReport } from './attempt.ts';
import { queueNotice } from './bounce.ts';
import { CircuitBreaker } from './breaker.ts';
import { authConfigured } from './credentials.ts';
import { AttemptDeadline } from './deadlines.ts';
import type { DsnAction } from './dsn.ts';
import { writeOutbox } from './outbox.ts';
import { QUIET_LOCAL, SessionPlacement } from './placement.ts';
import { localDeferral, type Outcome, type RecipientResult, replyCode, verdictOfError } from './reply.ts';
import {
  type CompiledRule,
  classify,
  compileReplyClasses,
  type RelayReason,
  replyText,
} from './reply-classes.ts';
import { type Refusal, ROUTE_STATES, RouteGate, type RouteStateName } from './route-state.ts';
import { retryDelayMs } from './schedule.ts';
import { Scheduler } from './scheduler.ts';
import { type Notices, type Settlement, settle } from './settle.ts';
import { UpstreamPool } from './transport.ts';
import type { DeliveryAgent, DeliveryDeps, RouteHealth, RouteState } from './types.ts';
import { describeTarget, parseUpstreamUrl, type UpstreamTarget } from './upstream-url.ts';
import { dialLocal, LocalWire, type Wire, type WireLog, type WireOptions } from './wire.ts';
import { DELIVERY_THREAD, WireThread } from './wire-thread.ts';

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
  /** Its reply table: which refusals are about the relay rather than the recipient. */
  rules: CompiledRule[];
  /** Held / backed-off / resuming: what this route lets through. */
  route: RouteGate;
  /** Due messages waiting for one of the route's connections (not in the scheduler meanwhile). */
  parked: string[];
  /** When the circuit breaker last opened (0: closed). */
  unreachableSince: number;
  preflight?: { ok: boolean; at: number; detail: string };
  probeTimer?: NodeJS.Timeout;
}

/** What a person has to do about a relay-level refusal, for the log line and the summary. */
const HINTS: Record<RelayReason, string> = {
  identity:
    "the upstream does not recognise this relay: register the relay's egress IP or the sender domain with it (Google: Admin console > Gmail > SMTP relay service), or check IP mode against SMTP AUTH",
  auth: 'the upstream refuses our credentials: check upstream.auth and the mounted Secret',
  config:
    'the upstream refuses our session setup: check hostname (sent in EHLO, must be a FQDN) and TLS settings',
  quota: 'the upstream says a quota is used up: mail waits until it resets',
  rate: 'the upstream says we send too fast: backing off, then resuming slowly',
};

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
  private readonly preflights = new Set<AbortController>();
  private started = false;
  /** Where the upstream sessions live (wire-thread.ts); none: on this thread. */
  private readonly wireThread: WireThread | undefined;
  private readonly wireLog: WireLog;
  /** With the thread: whether new sessions go there or stay here (placement.ts). */
  private readonly placement = new SessionPlacement();

  constructor(private readonly deps: DeliveryDeps) {
    const { config } = deps;
    this.wireThread = DELIVERY_THREAD ? new WireThread(deps.logger) : undefined;
    this.wireLog = { debug: (o, m) => deps.logger.debug(o, m), warn: (m) => deps.logger.warn(m) };
    const q = config.queue;
    this.now = deps.now ?? Date.now;
    for (const route of config.upstream.routes) {
      // A route's credentials are its own: never the default ones from the environment.
      const upstream = { ...config.upstream, url: route.url, auth: route.auth };
      const classes = route.replyClasses ?? config.upstream.replyClasses;
      this.routes.push({
        ...this.makeUpstream(route.url, upstream, {}, classes),
        senderDomains: route.senderDomains,
      });
    }
    if (config.upstream.url)
      this.fallback = this.makeUpstream(
        config.upstream.url,
        config.upstream,
        process.env,
        config.upstream.replyClasses,
      );
    // Every route gets maxConnections of its own: a slow or held smarthost never takes another's.
    this.scheduler = new Scheduler({
      concurrency: config.upstream.maxConnections * Math.max(1, this.upstreams().length),
      now: this.now,
      run: (id, signal) => this.deliver(id, signal),
      onError: (id, err) => {
        deps.logger.error({ queueId: id, err }, 'delivery attempt failed unexpectedly');
        return this.now() + retryDelayMs(1, q);
      },
    });
    this.watchQueueGauges();
    this.watchRouteGauges();
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
    if (this.fallback && !isFqdn(config.hostname)) {
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
    if (config.upstream.preflight) for (const up of this.upstreams()) void this.preflight(up);
  }

  /** A route's state, since when, the upstream's last relay-level refusal, and what waits for it. */
  private health(up: Upstream): RouteHealth {
    const iso = (ms: number) => new Date(ms).toISOString();
    {
      const state = this.stateOf(up);
      const refusal = up.route.lastRefusal;
      const since = state === 'unreachable' ? up.unreachableSince : up.route.since;
      return {
        upstream: describeTarget(up.target),
        state,
        since: iso(since),
        ...(up.route.heldUntil ? { retryAt: iso(up.route.heldUntil) } : {}),
        ...(state === 'unreachable' && up.breaker.reopenAt ? { retryAt: iso(up.breaker.reopenAt) } : {}),
        ...(state === 'unreachable' ? { lastError: up.breaker.lastError } : {}),
        ...(refusal
          ? {
              lastRefusal: {
                ...(refusal.code !== undefined ? { code: refusal.code } : {}),
                status: refusal.status,
                text: refusal.text,
                reason: refusal.reason,
                ...(refusal.command ? { command: refusal.command } : {}),
                at: iso(refusal.at),
              },
            }
          : {}),
        held: up.suspended.size,
        waiting: up.parked.length,
        inFlight: up.route.inFlight,
        connections: up.route.window(),
        ...(up.preflight
          ? { preflight: { ok: up.preflight.ok, at: iso(up.preflight.at), detail: up.preflight.detail } }
          : {}),
      };
    }
  }

  private stateOf(up: Upstream): RouteStateName {
    const s = up.route.state();
    if ((s === 'ok' || s === 'resuming') && up.breaker.state() === 'open') return 'unreachable';
    return s;
  }

  /**
   * Preflight (at start; a changed config restarts the relay): a session set up as for mail, then
   * QUIT. A relay-level refusal (a 421 to our EHLO name, a refused AUTH) holds the route before
   * any message meets it.
   */
  private async preflight(up: Upstream): Promise<void> {
    const { logger, metrics, config } = this.deps;
    const ctrl = new AbortController();
    this.preflights.add(ctrl);
    const seconds = config.upstream.deadlines.attempt;
    const timer = setTimeout(() => ctrl.abort(new AttemptDeadline(seconds)), seconds * 1000);
    timer.unref();
    const at = this.now();
    try {
      const info = await up.pool.probe(ctrl.signal);
      const detail = `EHLO ${config.hostname} accepted${info.secure ? ', TLS' : ''}${info.auth ? ', AUTH accepted' : ''}`;
      up.preflight = { ok: true, at, detail };
      metrics.upstreamPreflight.set({ route: up.name }, 1);
      up.route.cleared();
      logger.info({ relay: up.name, ehlo: config.hostname, ...info }, `preflight: ${detail}`);
    } catch (err) {
      if (ctrl.signal.aborted && !(ctrl.signal.reason instanceof AttemptDeadline)) return; // stopping
      const v = ctrl.signal.aborted
        ? localDeferral((ctrl.signal.reason as Error).message, '4.4.2')
        : verdictOfError(err as Parameters<typeof verdictOfError>[0]);
      const c = classify(v, up.rules);
      up.preflight = { ok: false, at, detail: v.reply };
      metrics.upstreamPreflight.set({ route: up.name }, 0);
      logger.error(
        {
          relay: up.name,
          ehlo: config.hostname,
          reply: v.reply,
          ...(v.command ? { command: v.command } : {}),
          level: c.level,
          ...(c.reason ? { reason: c.reason, hint: HINTS[c.reason] } : {}),
        },
        `preflight failed: ${v.reply}`,
      );
      up.lastRefusal = { reply: replyText(v.reply), at };
      if (c.level === 'relay' && c.reason) {
        up.route.refuse({
          text: replyText(v.reply),
          status: v.status,
          reason: c.reason,
          ...(replyCode(v.reply) !== undefined ? { code: replyCode(v.reply) } : {}),
          ...(v.command ? { command: v.command } : {}),
        });
      }
    } finally {
      clearTimeout(timer);
      this.preflights.delete(ctrl);
    }
  }

  enqueue(entry: QueueEntry): void {
    this.scheduler.schedule(entry.id, Math.min(entry.nextAttemptAt, this.now()));
  }

  flush(): void {
    for (const up of this.upstreams()) {
      up.breaker.reset();
      up.suspended.clear();
      up.route.reset();
    }
    this.scheduler.makeAllDue();
  }

  retry(id: string): boolean {
    // A person asked for this one now: if an open breaker held it back (upstream unreachable),
    // the breaker lets this attempt dial instead of deferring it again without trying.
    for (const up of this.upstreams()) {
      const waited = up.suspended.delete(id);
      if (waited || up.breaker.state() === 'open') up.breaker.reset();
      // Likewise a held route: this message probes now rather than at the end of the hold.
      if (waited && up.route.heldUntil) up.route.reset();
    }
    // A parked message runs as soon as its route has a free connection.
    return this.scheduler.makeDue(id) || this.upstreams().some((up) => up.parked.includes(id));
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
      for (const up of this.upstreams()) {
        up.suspended.delete(id);
        up.parked = up.parked.filter((p) => p !== id);
      }
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
      health: this.health(up),
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
    for (const ctrl of this.preflights) ctrl.abort(new Error('shutting down'));
    for (const up of this.upstreams()) {
      up.route.dispose();
      clearTimeout(up.probeTimer);
      up.parked = [];
    }
    await this.scheduler.stop(deadline);
    await Promise.all(this.upstreams().map((up) => up.pool.close()));
    await this.wireThread?.close();
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

  private makeUpstream(
    url: string,
    upstream: RelayConfig['upstream'],
    env: NodeJS.ProcessEnv,
    classes: RelayConfig['upstream']['replyClasses'],
  ): Upstream {
    const { config, logger, metrics } = this.deps;
    const q = config.queue;
    const target = parseUpstreamUrl(url);
    let name = `${target.host}:${target.port}`;
    // Two routes to one smarthost (different credentials) stay apart in metrics and the summary.
    if (this.upstreams().some((u) => u.name === name)) name = `${name}#${this.routes.length}`;
    const suspended = new Set<string>();
    const rules = compileReplyClasses(classes, url);
    // The record is filled in below; the hooks only run once it is complete.
    const self = {} as Upstream;
    const breaker = new CircuitBreaker(
      {
        threshold: BREAKER_THRESHOLD,
        initialMs: q.retryInitialSeconds * 1000,
        multiplier: q.retryMultiplier,
        maxMs: q.retryMaxSeconds * 1000,
      },
      this.now,
      {
        onTrip: (until, reason) => {
          if (!self.unreachableSince) self.unreachableSince = this.now();
          logger.warn(
            { relay: name, reason, suspendedSeconds: Math.round((until - this.now()) / 1000) },
            'upstream unreachable: delivery suspended',
          );
        },
        onRecover: () => {
          self.unreachableSince = 0;
          logger.info({ relay: name, waiting: suspended.size }, 'upstream reachable again');
          for (const id of suspended) this.scheduler.makeDue(id);
          suspended.clear();
        },
      },
    );
    const route = new RouteGate(upstream.maxConnections, upstream.hold, this.now, {
      onHold: (until, refusal, again) => {
        metrics.upstreamRefusals.inc({ route: name, reason: refusal.reason });
        logger.warn(
          {
            relay: name,
            state: self.route.state(),
            reason: refusal.reason,
            reply: refusal.text,
            ...(refusal.command ? { command: refusal.command } : {}),
            since: new Date(self.route.since).toISOString(),
            retryAt: new Date(until).toISOString(),
            held: suspended.size,
            hint: HINTS[refusal.reason],
          },
          `${target.host} refuses this relay: ${refusal.text}${again ? ' (again)' : ''}; holding its mail, bouncing none`,
        );
        // At the end of the hold one waiting message probes, even if its own retry is later.
        clearTimeout(self.probeTimer);
        self.probeTimer = setTimeout(() => this.probe(self), Math.max(0, until - this.now()));
        self.probeTimer.unref();
        this.unpark(self);
      },
      onRelease: (heldSince, refusal) => {
        logger.info(
          {
            relay: name,
            state: self.route.state(),
            reason: refusal.reason,
            heldSeconds: Math.round((this.now() - heldSince) / 1000),
            released: suspended.size,
          },
          `${target.host} takes mail again`,
        );
        clearTimeout(self.probeTimer);
        for (const id of suspended) this.scheduler.makeDue(id);
        suspended.clear();
      },
      onCapacity: () => this.unpark(self),
    });
    const wireOpts: WireOptions = { target, hostname: config.hostname, upstream, env };
    const thread = this.wireThread;
    const local = (signal: AbortSignal) => dialLocal(wireOpts, signal, this.wireLog);
    const here = () => !thread || (QUIET_LOCAL && this.placement.local);
    const pool = new UpstreamPool({
      connect: (signal) => (here() ? local(signal) : thread!.dial(wireOpts, signal)),
      // A session on the wrong side since the load changed is closed when released.
      retire: (wire: Wire) => wire instanceof LocalWire !== here(),
      upstream,
      breaker,
      logger,
      isRelayRefusal: (err) =>
        classify(verdictOfError(err as Parameters<typeof verdictOfError>[0]), rules).level === 'relay',
    });
    return Object.assign(self, {
      name,
      target,
      breaker,
      pool,
      suspended,
      config: upstream,
      env,
      rules,
      route,
      parked: [],
      unreachableSince: 0,
    });
  }

  /** Parked messages back into the scheduler: as many as the route may start now, or all of them when it is held (they are deferred). */
  private unpark(up: Upstream): void {
    if (!up.parked.length) return;
    const state = up.route.state();
    const held = state === 'held' || state === 'backoff';
    const room = held ? up.parked.length : up.route.window() - up.route.inFlight;
    if (room <= 0) return;
    const now = this.now();
    for (const id of up.parked.splice(0, room)) this.scheduler.schedule(id, now);
  }

  /** The hold ended: make the longest-waiting held message due, to find out whether the upstream takes mail again. */
  private probe(up: Upstream): void {
    const first = up.suspended.values().next();
    if (!first.done) this.scheduler.makeDue(first.value);
    // No mail waits (held by the preflight, say): a preflight session probes instead.
    else if (!up.parked.length && this.deps.config.upstream.preflight) void this.preflight(up);
    this.unpark(up);
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
    let attempt: AttemptResult;
    if (!up) attempt = await this.deliverToOutbox(msg);
    else {
      const admission = up.route.admit();
      if (admission.kind === 'park') {
        // The route's connections are all busy (or a probe is out): wait outside the scheduler,
        // so a slow or held smarthost never takes the slots of the others.
        up.parked.push(id);
        return undefined;
      }
      attempt =
        admission.kind === 'hold'
          ? this.held(msg, up, admission.until, admission.refusal)
          : await this.attempt(msg, up, signal);
    }
    if (this.deleting.has(id)) return undefined;
    // Refused as a relay: the message waits with its route, and is woken when the route is.
    if (up && attempt.refusal && up.route.heldUntil) attempt.suspendedUntil = up.route.heldUntil;

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

  /** One admitted attempt, under the whole-attempt deadline; the route hears how it went. */
  private async attempt(msg: QueuedMessage, up: Upstream, signal: AbortSignal): Promise<AttemptResult> {
    const { config, spool, metrics } = this.deps;
    const seconds = config.upstream.deadlines.attempt;
    if (this.placement.sample(this.scheduler.inFlight) && this.wireThread)
      this.deps.logger.debug(
        { attemptsUnderWay: this.placement.average, local: this.placement.local },
        this.placement.local
          ? 'new upstream sessions on the main thread'
          : 'new upstream sessions in the delivery thread',
      );
    // One controller for the deadline and the scheduler's signal. AbortSignal.any costs 25-30 µs
    // per call in Node 20 (weak references, a FinalizationRegistry): per message, that added up.
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(new AttemptDeadline(seconds)), seconds * 1000);
    const forward = () => ctrl.abort(signal.reason);
    if (signal.aborted) forward();
    else signal.addEventListener('abort', forward, { once: true });
    let attempt: AttemptResult | undefined;
    try {
      attempt = await attemptUpstream(
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
          rules: up.rules,
        },
        ctrl.signal,
      );
      // A relay-level refusal is the upstream refusing the relay, whichever command it answered.
      if (attempt.refusal) up.lastRefusal = { reply: attempt.refusal.text, at: this.now() };
      if (attempt.deadline) {
        metrics.upstreamTimeouts.inc({ route: up.name });
        // A tarpit answers, but too slowly to be of use: count it like a failed dial, so the
        // breaker stops sending it mail after a few.
        if (up.breaker.state() !== 'open')
          up.breaker.failure(`${up.name}: attempt deadline (${seconds} s) exceeded`);
      }
      return attempt;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', forward);
      up.route.finished({
        ...(attempt?.refusal ? { refusal: attempt.refusal } : {}),
        accepted: attempt?.accepted ?? false,
      });
    }
  }

  /** A message for a held route: deferred without dialing until the hold ends (never bounced for it). */
  private held(msg: QueuedMessage, up: Upstream, until: number, refusal: Refusal): AttemptResult {
    const pending = msg.recipients.filter((r) => r.status === 'pending');
    const since = new Date(up.route.since).toISOString();
    const v = localDeferral(
      `route held since ${since}: ${up.target.host} refuses this relay: ${refusal.text}`,
      `4${refusal.status.slice(1)}`,
    );
    const recipients = pending.map((r) => ({ ...v, address: r.address }));
    this.report(msg, { recipients, seconds: 0, replies: [] }, up.name);
    return {
      results: new Map(recipients.map((r) => [r.address, r])),
      dsnPassed: new Set(),
      accepted: false,
      deadline: false,
      suspendedUntil: Math.max(until, this.now()),
    };
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
    return {
      results: new Map(recipients.map((r) => [r.address, r])),
      dsnPassed: new Set(),
      accepted: verdict.outcome === 'sent',
      deadline: false,
    };
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

  /** email_upstream_state and email_upstream_held_messages, from the routes when Prometheus scrapes. */
  private watchRouteGauges(): void {
    const { metrics } = this.deps;
    Object.assign(metrics.upstreamState, {
      collect: () => {
        for (const up of this.upstreams()) {
          const current = this.stateOf(up);
          for (const state of ROUTE_STATES)
            metrics.upstreamState.set({ route: up.name, state }, state === current ? 1 : 0);
        }
      },
    });
    Object.assign(metrics.upstreamHeld, {
      collect: () => {
        for (const up of this.upstreams()) metrics.upstreamHeld.set({ route: up.name }, up.suspended.size);
      },
    });
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
