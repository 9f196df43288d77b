/**
 * What an upstream reply (or a failure to get one) means for a recipient: sent, deferred or
 * bounced, with the RFC 3463 status a DSN reports. Pure functions.
 */

export type Outcome = 'sent' | 'deferred' | 'bounced';
/** Label of `email_upstream_replies_total`. */
export type ReplyClass = '2xx' | '4xx' | '5xx' | 'network';

export interface RecipientResult {
  address: string;
  outcome: Outcome;
  /** The upstream's reply on one line ("550 5.1.1 <x>: user unknown"), or a local error text. */
  reply: string;
  /** RFC 3463 enhanced status, e.g. 5.1.1. */
  status: string;
  /** The SMTP command the reply answered (MAIL FROM, RCPT TO, DATA...), for the DSN's text. */
  command?: string;
  /** The reply came from the upstream server: Diagnostic-Code `smtp;` and Remote-MTA apply. */
  remote: boolean;
  class: ReplyClass;
}

export type Verdict = Omit<RecipientResult, 'address'>;

/** Multi-line replies become one line, as Postfix logs them; control characters never reach logs or DSNs. */
export function oneLine(reply: string): string {
  return reply
    .replace(/\r?\n/g, ' ')
    .replace(/[\x00-\x1f\x7f]/g, ' ')
    .trim();
}

export function replyCode(reply: string): number | undefined {
  const m = /^([2-5]\d\d)(?:[ -]|$)/.exec(reply);
  return m ? Number(m[1]) : undefined;
}

export function classOf(code: number | undefined): ReplyClass {
  if (code === undefined) return 'network';
  if (code < 400) return '2xx';
  return code < 500 ? '4xx' : '5xx';
}

/** The enhanced status code in a reply ("550 5.1.1 ..."), else one derived from the basic code. */
export function statusOf(reply: string): string {
  const m = /^([245])\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply);
  if (m?.[2] && m[2][0] === m[1]) return m[2];
  const code = replyCode(reply);
  if (code === undefined) return '4.0.0';
  return `${Math.floor(code / 100)}.0.0`;
}

/**
 * A reply to one of our transaction's commands. 4xx defers; 5xx bounces, except 503 (bad
 * sequence of commands: the session was in the wrong state, not the message refused) and 421
 * (the server is closing the connection).
 */
export function verdictOfReply(raw: string, command?: string): Verdict {
  const reply = oneLine(raw);
  const code = replyCode(reply);
  let outcome: Outcome;
  if (code !== undefined && code < 400) outcome = 'sent';
  else if (code !== undefined && code >= 500 && code !== 503) outcome = 'bounced';
  else outcome = 'deferred';
  return { outcome, reply, status: statusOf(reply), command, remote: true, class: classOf(code) };
}

/** A nodemailer error, possibly carrying the reply that caused it. */
export interface SmtpErrorLike {
  message: string;
  code?: string;
  originalCode?: string;
  response?: string;
  responseCode?: number;
  command?: string;
}

/** Errors raised while setting up the session: never the message's fault, always deferred. */
const SESSION_COMMANDS = new Set(['CONN', 'EHLO', 'HELO', 'LHLO', 'STARTTLS', 'API']);

const LOCAL_STATUS: Record<string, string> = {
  ECONNECTION: '4.4.1', // no answer from host
  ESOCKET: '4.4.2', // bad connection
  ETIMEDOUT: '4.4.2',
  EDNS: '4.4.3', // routing server failure
  ETLS: '4.7.5', // cryptographic failure
  EAUTH: '4.7.0', // our credentials: a configuration problem, not the message's
  EPROTOCOL: '4.5.0',
  ESTREAM: '4.3.0', // reading our own spool failed
};

export function verdictOfError(err: SmtpErrorLike): Verdict {
  const command = err.command && err.command !== 'API' ? err.command : undefined;
  if (err.response && replyCode(oneLine(err.response)) !== undefined) {
    const v = verdictOfReply(err.response, command);
    // Postfix soft-bounces session failures (a 5xx greeting, a refused AUTH): the next try may
    // reach a healthy server or use rotated credentials.
    if (v.outcome === 'bounced' && (err.code === 'EAUTH' || SESSION_COMMANDS.has(err.command ?? ''))) {
      return { ...v, outcome: 'deferred', status: `4${v.status.slice(1)}` };
    }
    return v;
  }
  const reply = oneLine(err.message);
  if (err.code === 'EMESSAGE' && /size/i.test(err.message)) {
    // nodemailer refuses locally a message larger than the upstream's advertised SIZE.
    return { outcome: 'bounced', reply, status: '5.3.4', command, remote: false, class: 'network' };
  }
  if (err.code === 'EENVELOPE') {
    // Local validation of an address (CR/LF or angle brackets in it): retrying cannot help.
    return { outcome: 'bounced', reply, status: '5.1.3', command, remote: false, class: 'network' };
  }
  // A certificate that does not verify surfaces as a socket error during connect.
  const tlsFailure = /certificate|\bTLS\b|\bSSL\b/i.test(err.message);
  const status = tlsFailure ? '4.7.5' : (LOCAL_STATUS[err.code ?? ''] ?? '4.4.0');
  return { outcome: 'deferred', reply, status, command, remote: false, class: 'network' };
}

/** A local reason to defer without having talked to the upstream (open circuit breaker, shutdown). */
export function localDeferral(reply: string, status = '4.4.1'): Verdict {
  return { outcome: 'deferred', reply: oneLine(reply), status, remote: false, class: 'network' };
}
