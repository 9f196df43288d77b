import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import { type ConnectionOptions, rootCertificates } from 'node:tls';
import SMTPConnection, { type SMTPEnvelope } from 'nodemailer/lib/smtp-connection';
import XOAuth2 from 'nodemailer/lib/xoauth2';
import type { RelayConfig } from '../../config/schema.ts';
import { readCredentials, type UpstreamCredentials } from './credentials.ts';
import { interruption, watchDeadlines } from './deadlines.ts';
import { envelopeRejections } from './nodemailer-adapter.ts';
import {
  localDeferral,
  type ReplyClass,
  type SmtpErrorLike,
  type Verdict,
  verdictOfError,
  verdictOfReply,
} from './reply.ts';
import type { UpstreamTarget } from './upstream-url.ts';

/**
 * One upstream SMTP session on the wire, built on nodemailer's smtp-connection (not its pool
 * transport): we need per-recipient replies, DSN parameters per transaction, the null sender,
 * and credentials read afresh for every new session. smtp-connection already sets TCP_NODELAY,
 * pipelines MAIL/RCPT/DATA in one corked write when the server offers PIPELINING, and streams
 * the body through its dot-stuffing transform. The pool (transport.ts) decides which session a
 * message gets; this module only talks SMTP, in this thread or in the delivery thread
 * (wire-thread.ts), whichever dialed it.
 */

/** What a session needs to be dialed: plain data, so it can cross to the delivery thread. */
export interface WireOptions {
  target: UpstreamTarget;
  /** FQDN for EHLO (Google answers 421 to "localhost"). */
  hostname: string;
  upstream: RelayConfig['upstream'];
  /** Where the credentials' environment variables are read (credentials.ts). */
  env?: NodeJS.ProcessEnv;
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

/** The pool's view of a session, wherever its socket lives. */
export interface Wire {
  /** The upstream advertised DSN (RFC 3461): NOTIFY/ORCPT/RET/ENVID go with the transaction. */
  readonly supportsDsn: boolean;
  /** AUTH succeeded on this session. */
  readonly authenticated: boolean;
  readonly secure: boolean;
  /** The connection is still open (the server may close an idle one). */
  readonly alive: boolean;
  /** One transaction; never throws (every failure is a verdict); aborting closes the session. */
  send(
    env: TransactionEnvelope,
    body: Readable,
    signal: AbortSignal,
  ): Promise<TransactionResult & { usable: boolean }>;
  quit(): Promise<void>;
}

export interface WireLog {
  debug(obj: object, msg: string): void;
  warn(msg: string): void;
  /** The "upstream does not offer AUTH" warning was given: once per log, not per session. */
  warnedNoAuth?: boolean;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

interface RejectedError extends SmtpErrorLike {
  recipient?: string;
}

/** An SMTP session in this thread. */
export class LocalWire implements Wire {
  private broken = false;

  constructor(
    readonly conn: SMTPConnection,
    readonly supportsDsn: boolean,
    readonly authenticated: boolean,
  ) {}

  get secure(): boolean {
    return this.conn.secure;
  }

  get alive(): boolean {
    return !this.conn.destroyed;
  }

  async send(
    env: TransactionEnvelope,
    body: Readable,
    signal: AbortSignal,
  ): Promise<TransactionResult & { usable: boolean }> {
    const envelope: SMTPEnvelope = {
      from: env.from,
      to: env.to,
      size: env.size,
      use8BitMime: env.eightBit,
      ...(env.dsn ? { dsn: env.dsn } : {}),
    };
    const conn = this.conn;
    const { err, info } = await new Promise<{ err?: SmtpErrorLike; info?: SMTPConnection.SentMessageInfo }>(
      (resolve) => {
        const onAbort = () => {
          this.broken = true;
          conn.close(); // drops the pending send without calling back
          resolve({ err: { message: interruption(signal).text, code: 'EABORT' } });
        };
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        conn.send(envelope, body, (e, i) => {
          signal.removeEventListener('abort', onAbort);
          resolve(e ? { err: e as SmtpErrorLike } : { info: i });
        });
      },
    );
    const untouched = body.readableDidRead === false;
    body.destroy();
    const usable = () => !this.broken && !conn.destroyed;
    if (info)
      return {
        verdicts: successVerdicts(env.to, info),
        replies: replyClasses(info),
        untouched,
        usable: usable(),
      };
    const failure = err as SmtpErrorLike & { rejectedErrors?: RejectedError[] };
    if (failure.code === 'EABORT') {
      const v = localDeferral(failure.message, interruption(signal).status);
      return { verdicts: new Map(env.to.map((a) => [a, v])), replies: [], untouched, usable: false };
    }
    if (failure.code === 'ESTREAM') {
      // Reading the spool failed mid-DATA: the session is in an unknown state.
      this.broken = true;
      conn.close();
    }
    const { verdicts, replies } = failureVerdicts(conn, env.to, failure);
    if (usable()) {
      // The server refused this transaction but the session is fine: RSET and keep it.
      await reset(conn).catch(() => {
        this.broken = true;
      });
    } else {
      this.broken = true;
    }
    return { verdicts, replies, untouched, usable: usable() };
  }

  quit(): Promise<void> {
    const conn = this.conn;
    if (conn.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = setTimeout(() => {
        conn.close();
        resolve();
      }, 2000);
      done.unref();
      conn.once('end', () => {
        clearTimeout(done);
        resolve();
      });
      try {
        conn.quit();
      } catch {
        conn.close();
      }
    });
  }
}

function successVerdicts(to: string[], info: SMTPConnection.SentMessageInfo): Map<string, Verdict> {
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
function failureVerdicts(
  conn: SMTPConnection,
  to: string[],
  err: SmtpErrorLike & { rejectedErrors?: RejectedError[] },
): { verdicts: Map<string, Verdict>; replies: ReplyClass[] } {
  const verdicts = new Map<string, Verdict>();
  const replies: ReplyClass[] = [];
  const rejected = err.command === 'MAIL FROM' ? [] : (err.rejectedErrors ?? envelopeRejections(conn));
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

function replyClasses(info: SMTPConnection.SentMessageInfo): ReplyClass[] {
  const classes: ReplyClass[] = ['2xx'];
  for (const e of (info.rejectedErrors ?? []) as RejectedError[]) classes.push(verdictOfError(e).class);
  return classes;
}

/**
 * A new session set up as for mail: connect, EHLO with our name, STARTTLS and AUTH as
 * configured. Throws the setup's error (an SmtpErrorLike).
 */
export async function dialLocal(opts: WireOptions, signal: AbortSignal, log: WireLog): Promise<LocalWire> {
  const { target, upstream, hostname } = opts;
  const creds = await readCredentials(upstream.auth, opts.env);
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
    const authenticated = creds ? await login(opts, conn, creds, signal, log) : false;
    return new LocalWire(conn, /^250[ -]DSN\b/im.test(ehlo), authenticated);
  } catch (err) {
    conn.close();
    throw err;
  }
}

async function login(
  opts: WireOptions,
  conn: SMTPConnection,
  creds: UpstreamCredentials,
  signal: AbortSignal,
  log: WireLog,
): Promise<boolean> {
  if (!conn.allowsAuth) {
    if (!log.warnedNoAuth) log.warn('upstream does not offer AUTH: sending without authentication');
    log.warnedNoAuth = true;
    return false;
  }
  if (!conn.secure && !isLoopback(opts.target.host)) {
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
      reject(abortError(signal));
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

/** The error a dial aborted by `signal` fails with. */
export function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error(interruption(signal).text), { code: 'EABORT' });
}

function reset(conn: SMTPConnection): Promise<void> {
  return new Promise((resolve, reject) => conn.reset((err) => (err ? reject(err) : resolve())));
}
