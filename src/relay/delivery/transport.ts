import type { Readable } from 'node:stream';
import type { RelayConfig } from '../../config/schema.ts';
import type { Logger } from '../../lib/logger.ts';
import type { CircuitBreaker } from './breaker.ts';
import { interruption } from './deadlines.ts';
import { oneLine, type SmtpErrorLike } from './reply.ts';
import type { TransactionEnvelope, TransactionResult, Wire } from './wire.ts';

export type { TransactionEnvelope, TransactionResult } from './wire.ts';

/**
 * A pool of upstream SMTP sessions: which session a message gets, how many are dialed (our own
 * count of dials for the circuit breaker), how long an unused one is kept. The sessions
 * themselves (wire.ts) live in the delivery thread (wire-thread.ts) or in this one; the pool
 * dials them through `connect` and does not care which.
 */

/** A pooled session closes after this long unused (Postfix caches sessions for seconds, not minutes). */
const IDLE_MS = 10_000;

export interface PoolOptions {
  /** Dials a new session (connect, EHLO, STARTTLS and AUTH as configured); throws the setup's error. */
  connect: (signal: AbortSignal) => Promise<Wire>;
  upstream: Pick<RelayConfig['upstream'], 'maxMessagesPerConnection'>;
  breaker: CircuitBreaker;
  logger: Logger;
  /**
   * A failed dial that is a relay-level refusal (a 421 to our EHLO name, a refused AUTH): the
   * upstream answered, so it is not the breaker's business; the route's hold takes over.
   */
  isRelayRefusal?: (err: unknown) => boolean;
  /** A session to close when released rather than keep (one on the main thread once the relay is busy). */
  retire?: (wire: Wire) => boolean;
}

/** A session lent to one message's attempt. */
export class Session {
  transactions = 0;
  broken = false;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly wire: Wire,
    readonly id: number,
  ) {}

  /** The upstream advertised DSN (RFC 3461): NOTIFY/ORCPT/RET/ENVID go with the transaction. */
  get supportsDsn(): boolean {
    return this.wire.supportsDsn;
  }

  get usable(): boolean {
    return !this.broken && this.wire.alive;
  }

  idle(onTimeout: () => void): void {
    this.idleTimer = setTimeout(onTimeout, IDLE_MS);
    this.idleTimer.unref();
  }

  busy(): void {
    clearTimeout(this.idleTimer);
  }
}

/** The upstream was not dialed: the breaker is open. */
export class UpstreamSuspended extends Error {
  constructor(
    reason: string,
    readonly until: number,
  ) {
    super(`delivery temporarily suspended: ${reason}`);
  }
}

function errorText(err: unknown): string {
  const e = err as SmtpErrorLike;
  return oneLine(e?.message ?? String(err));
}

export class UpstreamPool {
  private idle: Session[] = [];
  private closed = false;
  private nextId = 1;

  constructor(private readonly opts: PoolOptions) {}

  /**
   * A session for one message: an idle one if any, else a new one if the breaker allows.
   * Throws UpstreamSuspended (not dialed) or the dial's error.
   */
  async acquire(signal: AbortSignal): Promise<{ session: Session; reused: boolean }> {
    for (;;) {
      signal.throwIfAborted();
      const session = this.takeIdle();
      if (session) return { session, reused: true };
      const permit = this.opts.breaker.permit();
      if (permit === 'open') {
        throw new UpstreamSuspended(
          this.opts.breaker.lastError || 'upstream unreachable',
          this.opts.breaker.reopenAt,
        );
      }
      if (permit === 'wait') {
        // Another attempt is probing the upstream; its result decides for us.
        await untilSettledOrAborted(this.opts.breaker.settled(), signal);
        continue;
      }
      try {
        const fresh = await this.dial(signal);
        this.opts.breaker.success();
        return { session: fresh, reused: false };
      } catch (err) {
        if (signal.aborted && !interruption(signal).deadline) this.opts.breaker.abandon();
        else if (this.opts.isRelayRefusal?.(err)) this.opts.breaker.success();
        else this.opts.breaker.failure(signal.aborted ? interruption(signal).text : errorText(err));
        throw err;
      }
    }
  }

  /** Back to the pool, or closed when broken, worn out (maxMessagesPerConnection) or the pool is closing. */
  release(session: Session): void {
    if (
      this.closed ||
      !session.usable ||
      session.transactions >= this.opts.upstream.maxMessagesPerConnection ||
      this.opts.retire?.(session.wire)
    ) {
      void this.quit(session);
      return;
    }
    // LIFO: the most recently used session goes out first, so surplus sessions idle out.
    this.idle.push(session);
    session.idle(() => {
      this.idle = this.idle.filter((s) => s !== session);
      void this.quit(session);
    });
  }

  /**
   * One SMTP transaction (MAIL, RCPT..., DATA) on a session, with a verdict per recipient.
   * Never throws: every failure is a verdict. Aborting closes the session.
   */
  async send(
    session: Session,
    env: TransactionEnvelope,
    body: Readable,
    signal: AbortSignal,
  ): Promise<TransactionResult> {
    session.transactions++;
    const { usable, ...result } = await session.wire.send(env, body, signal);
    if (!usable) session.broken = true;
    return result;
  }

  /**
   * Preflight: a session set up exactly as for mail (connect, EHLO with our name, STARTTLS and
   * AUTH as configured), then QUIT. Not counted by the breaker. Throws the setup's error.
   */
  async probe(signal: AbortSignal): Promise<{ secure: boolean; dsn: boolean; auth: boolean }> {
    const session = await this.dial(signal);
    const w = session.wire;
    const info = { secure: w.secure, dsn: w.supportsDsn, auth: w.authenticated };
    await this.quit(session);
    return info;
  }

  /** QUIT every idle session; leased ones close when released. */
  async close(): Promise<void> {
    this.closed = true;
    const idle = this.idle;
    this.idle = [];
    await Promise.all(idle.map((s) => this.quit(s)));
  }

  private takeIdle(): Session | undefined {
    while (this.idle.length) {
      const s = this.idle.pop()!;
      s.busy();
      if (s.usable) return s;
    }
    return undefined;
  }

  private quit(session: Session): Promise<void> {
    session.busy();
    return session.wire.quit();
  }

  private async dial(signal: AbortSignal): Promise<Session> {
    const wire = await this.opts.connect(signal);
    const session = new Session(wire, this.nextId++);
    this.opts.logger.debug(
      { session: session.id, secure: wire.secure, dsn: wire.supportsDsn },
      'upstream session open',
    );
    return session;
  }
}

/** Waits for `p`, or throws the abort reason as soon as the signal fires. */
function untilSettledOrAborted(p: Promise<void>, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}
