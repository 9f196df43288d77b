import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import { type ConnectionOptions, rootCertificates } from 'node:tls';
import SMTPConnection, { type SMTPEnvelope } from 'nodemailer/lib/smtp-connection';
import XOAuth2 from 'nodemailer/lib/xoauth2';
import type { RelayConfig } from '../../config/schema.ts';
import type { Logger } from '../../lib/logger.ts';
import type { CircuitBreaker } from './breaker.ts';
import { readCredentials, type UpstreamCredentials } from './credentials.ts';
import { interruption, watchDeadlines } from './deadlines.ts';
import { envelopeRejections } from './nodemailer-adapter.ts';
import {
  localDeferral,
  oneLine,
  type ReplyClass,
  type SmtpErrorLike,
  type Verdict,
  verdictOfError,
  verdictOfReply,
} from './reply.ts';
import type { UpstreamTarget } from './upstream-url.ts';

/**
 * A pool of upstream SMTP sessions built on nodemailer's smtp-connection (not its pool transport):
 * we need per-recipient replies, DSN parameters per transaction, the null sender, our own count
 * of dials for the circuit breaker, and credentials read afresh for every new session.
 * smtp-connection already sets TCP_NODELAY, pipelines MAIL/RCPT/DATA in one corked write when the
 * server offers PIPELINING, and streams the body through its dot-stuffing transform.
 */

/** A pooled session closes after this long unused (Postfix caches sessions for seconds, not minutes). */
const IDLE_MS = 10_000;

export interface PoolOptions {
  target: UpstreamTarget;
  /** FQDN for EHLO (Google answers 421 to "localhost"). */
  hostname: string;
  upstream: RelayConfig['upstream'];
  breaker: CircuitBreaker;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  /**
   * A failed dial that is a relay-level refusal (a 421 to our EHLO name, a refused AUTH): the
   * upstream answered, so it is not the breaker's business; the route's hold takes over.
   */
  isRelayRefusal?: (err: unknown) => boolean;
}

export interface TransactionEnvelope {
  from: string;
  to: string[];
  size: number;
  eightBit: boolean;
  dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string; notify?: string[]; orcpt?: string };
}

export interface TransactionResult {
  /** One verdict per recipient of the transaction, by address. */
  verdicts: Map<string, Verdict>;
  /** The replies the upstream gave, by class, for `email_upstream_replies_total`. */
  replies: ReplyClass[];
  /** No byte of the message left: it may go out over another session without risk of a duplicate. */
  untouched: boolean;
}

/** A session lent to one message's attempt. */
export class Session {
  transactions = 0;
  broken = false;
  /** AUTH succeeded on this session. */
  authenticated = false;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly conn: SMTPConnection,
    /** The upstream advertised DSN (RFC 3461): NOTIFY/ORCPT/RET/ENVID go with the transaction. */
    readonly supportsDsn: boolean,
    readonly id: number,
  ) {}

  get usable(): boolean {
    return !this.broken && !this.conn.destroyed;
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

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

function errorText(err: unknown): string {
  const e = err as SmtpErrorLike;
  return oneLine(e?.message ?? String(err));
}

export class UpstreamPool {
  private idle: Session[] = [];
  private closed = false;
  private nextId = 1;
  private warnedNoAuth = false;

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
      session.transactions >= this.opts.upstream.maxMessagesPerConnection
    ) {
      this.quit(session);
      return;
    }
    // LIFO: the most recently used session goes out first, so surplus sessions idle out.
    this.idle.push(session);
    session.idle(() => {
      this.idle = this.idle.filter((s) => s !== session);
      this.quit(session);
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
    const envelope: SMTPEnvelope = {
      from: env.from,
      to: env.to,
      size: env.size,
      use8BitMime: env.eightBit,
      ...(env.dsn ? { dsn: env.dsn } : {}),
    };
    const { err, info } = await new Promise<{ err?: SmtpErrorLike; info?: SMTPConnection.SentMessageInfo }>(
      (resolve) => {
        const onAbort = () => {
          session.broken = true;
          session.conn.close(); // drops the pending send without calling back
          resolve({ err: { message: interruption(signal).text, code: 'EABORT' } });
        };
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        session.conn.send(envelope, body, (e, i) => {
          signal.removeEventListener('abort', onAbort);
          resolve(e ? { err: e as SmtpErrorLike } : { info: i });
        });
      },
    );
    const untouched = body.readableDidRead === false;
    body.destroy();
    if (info) return { verdicts: this.successVerdicts(env.to, info), replies: replyClasses(info), untouched };
    const failure = err as SmtpErrorLike & { rejectedErrors?: RejectedError[] };
    if (failure.code === 'EABORT') {
      const v = localDeferral(failure.message, interruption(signal).status);
      return { verdicts: new Map(env.to.map((a) => [a, v])), replies: [], untouched };
    }
    if (failure.code === 'ESTREAM') {
      // Reading the spool failed mid-DATA: the session is in an unknown state.
      session.broken = true;
      session.conn.close();
    }
    const { verdicts, replies } = this.failureVerdicts(session, env.to, failure);
    if (session.usable) {
      // The server refused this transaction but the session is fine: RSET and keep it.
      await reset(session.conn).catch(() => {
        session.broken = true;
      });
    } else {
      session.broken = true;
    }
    return { verdicts, replies, untouched };
  }

  /**
   * Preflight: a session set up exactly as for mail (connect, EHLO with our name, STARTTLS and
   * AUTH as configured), then QUIT. Not counted by the breaker. Throws the setup's error.
   */
  async probe(signal: AbortSignal): Promise<{ secure: boolean; dsn: boolean; auth: boolean }> {
    const session = await this.dial(signal);
    const info = { secure: session.conn.secure, dsn: session.supportsDsn, auth: session.authenticated };
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

  private successVerdicts(to: string[], info: SMTPConnection.SentMessageInfo): Map<string, Verdict> {
    const verdicts = new Map<string, Verdict>();
    const accepted = verdictOfReply(info.response, 'end of DATA');
    for (const e of (info.rejectedErrors ?? []) as RejectedError[]) {
      if (e.recipient) verdicts.set(e.recipient, verdictOfError(e));
    }
    for (const a of to) if (!verdicts.has(a)) verdicts.set(a, accepted);
    return verdicts;
  }

  /**
   * Recipients refused at RCPT keep their own reply even when the transaction then failed as a
   * whole (DATA refused, connection lost): nodemailer puts those on the error only when every
   * recipient was refused, otherwise they are still on the session's envelope. After a refused
   * MAIL FROM, pipelined RCPTs only got "503 need MAIL command", which is no verdict of theirs.
   */
  private failureVerdicts(
    session: Session,
    to: string[],
    err: SmtpErrorLike & { rejectedErrors?: RejectedError[] },
  ): { verdicts: Map<string, Verdict>; replies: ReplyClass[] } {
    const verdicts = new Map<string, Verdict>();
    const replies: ReplyClass[] = [];
    const rejected =
      err.command === 'MAIL FROM' ? [] : (err.rejectedErrors ?? envelopeRejections(session.conn));
    for (const e of rejected) {
      if (!e.recipient || !to.includes(e.recipient) || e.responseCode === 503) continue;
      const v = verdictOfError(e);
      verdicts.set(e.recipient, v);
      replies.push(v.class);
    }
    const rest = verdictOfError(err);
    if (to.some((a) => !verdicts.has(a))) replies.push(rest.class);
    for (const a of to) if (!verdicts.has(a)) verdicts.set(a, rest);
    return { verdicts, replies };
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
    if (session.conn.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = setTimeout(() => {
        session.conn.close();
        resolve();
      }, 2000);
      done.unref();
      session.conn.once('end', () => {
        clearTimeout(done);
        resolve();
      });
      try {
        session.conn.quit();
      } catch {
        session.conn.close();
      }
    });
  }

  private async dial(signal: AbortSignal): Promise<Session> {
    const { target, upstream, hostname, logger } = this.opts;
    const creds = await readCredentials(upstream.auth, this.opts.env);
    const tls: ConnectionOptions = {
      rejectUnauthorized: upstream.tlsRejectUnauthorized,
      minVersion: 'TLSv1.2',
      // Added to the public roots rather than replacing them (what Node's `ca` alone would do).
      ...(upstream.caFile ? { ca: [...rootCertificates, await readFile(upstream.caFile, 'utf8')] } : {}),
    };
    const conn = new SMTPConnection({
      host: target.host,
      port: target.port,
      secure: target.tls === 'implicit',
      requireTLS: target.tls === 'required',
      name: hostname,
      connectionTimeout: upstream.connectTimeoutSeconds * 1000,
      greetingTimeout: upstream.greetingTimeoutSeconds * 1000,
      socketTimeout: upstream.socketTimeoutSeconds * 1000,
      tls,
      logger: false,
    });
    // Failures reach us through the connect/login/send callbacks; an unhandled 'error' event would
    // crash the process.
    conn.on('error', () => {});
    const disarm = watchDeadlines(conn, upstream.deadlines);
    conn.once('end', disarm);
    try {
      await step(conn, signal, (cb) => conn.connect(cb));
      // The last reply before 'connect' is the EHLO response (after STARTTLS, the second one).
      const ehlo = String(conn.lastServerResponse || '');
      const authenticated = creds ? await this.login(conn, creds, signal) : false;
      const session = new Session(conn, /^250[ -]DSN\b/im.test(ehlo), this.nextId++);
      session.authenticated = authenticated;
      logger.debug(
        { session: session.id, secure: conn.secure, dsn: session.supportsDsn },
        'upstream session open',
      );
      return session;
    } catch (err) {
      conn.close();
      throw err;
    }
  }

  private async login(
    conn: SMTPConnection,
    creds: UpstreamCredentials,
    signal: AbortSignal,
  ): Promise<boolean> {
    if (!conn.allowsAuth) {
      if (!this.warnedNoAuth)
        this.opts.logger.warn('upstream does not offer AUTH: sending without authentication');
      this.warnedNoAuth = true;
      return false;
    }
    if (!conn.secure && !isLoopback(this.opts.target.host)) {
      throw Object.assign(
        new Error(
          'refusing to send credentials over an unencrypted connection (use smtp+starttls:// or smtps://)',
        ),
        { code: 'EAUTH', command: 'AUTH' },
      );
    }
    const auth =
      creds.method === 'XOAUTH2'
        ? {
            method: 'XOAUTH2',
            user: creds.user,
            oauth2: new XOAuth2({ user: creds.user, accessToken: creds.secret }),
          }
        : { method: creds.method, user: creds.user, pass: creds.secret };
    await step(conn, signal, (cb) => conn.login(auth, (e) => cb(e ?? undefined)));
    return true;
  }
}

interface RejectedError extends SmtpErrorLike {
  recipient?: string;
}

function replyClasses(info: SMTPConnection.SentMessageInfo): ReplyClass[] {
  const classes: ReplyClass[] = ['2xx'];
  for (const e of (info.rejectedErrors ?? []) as RejectedError[]) classes.push(verdictOfError(e).class);
  return classes;
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

/**
 * Runs one callback-style step of session setup. smtp-connection reports some failures (a refused
 * connection, a timeout) only as 'error'/'end' events and never calls the step's callback, so
 * those settle the promise too.
 */
function step(
  conn: SMTPConnection,
  signal: AbortSignal,
  run: (cb: (err?: Error) => void) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      conn.off('error', onError);
      conn.off('end', onEnd);
      signal.removeEventListener('abort', onAbort);
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onEnd = () => {
      cleanup();
      reject(Object.assign(new Error('connection closed during session setup'), { code: 'ECONNECTION' }));
    };
    const onAbort = () => {
      cleanup();
      conn.close();
      reject(Object.assign(new Error(interruption(signal).text), { code: 'EABORT' }));
    };
    conn.once('error', onError);
    conn.once('end', onEnd);
    signal.addEventListener('abort', onAbort, { once: true });
    run((err) => {
      cleanup();
      if (err) reject(err);
      else resolve();
    });
  });
}

function reset(conn: SMTPConnection): Promise<void> {
  return new Promise((resolve, reject) => conn.reset((err) => (err ? reject(err) : resolve())));
}
