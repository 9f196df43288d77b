/**
 * The relay speaks Postfix: every reply an existing client might parse has Postfix's code,
 * enhanced status code and text (the seed's transcript shows them). Every reply the relay sends
 * is built here: its own from the named constructors of `replies`, smtp-server's own replaced by
 * `rewriteReply` (keyed on the library's texts, which the adapter's contract lists). Each refusal
 * carries the reason smtp_rejections_total counts it under.
 */

import type { Refusal } from '../access/policy.ts';

/** The label of smtp_rejections_total: why a command or message was refused. */
export type RejectReason =
  | 'policy' // a policy's sender, recipient or From: header rule
  | 'rate' // a policy's rate limit
  | 'size'
  | 'recipients' // too many recipients
  | 'relay_denied' // client may not relay (access.allow, namespace opt-in)
  | 'lookup' // client not attributed yet (Kubernetes watches not synced)
  | 'non_fqdn'
  | 'syntax'
  | 'sequence' // command out of order (MAIL before EHLO, DATA before RCPT, ...)
  | 'storage'
  | 'queue_write'
  | 'shutdown'
  | 'connection_limit'
  | 'timeout'
  | 'too_many_errors'
  | 'pregreet'
  | 'bare_line_ending'
  | 'line_length'
  | 'header_size'
  | 'auth_failed'
  | 'auth_unavailable'
  | 'tls_required'
  | 'http'
  /** a library reply we do not map (its text passes as is) */
  | `code_${number}`;

export interface Reply {
  code: number;
  /** Text after the code, enhanced status code included; an array for multi-line replies. */
  text: string | string[];
  /** Set on refusals (4xx/5xx). */
  reason?: RejectReason;
  /** Send the library's own reply unchanged (a refusal we count but do not reword). */
  keep?: true;
}

/** A refusal, as smtp-server's callbacks take it: `responseCode` + message (carrying its enhanced code). */
export class SmtpReplyError extends Error {
  constructor(
    readonly responseCode: number,
    message: string,
    readonly reason: RejectReason,
  ) {
    super(message);
  }
}

/** "minute", "hour", "day" or "N s": how a rate limit's period reads in a reply. */
export function period(seconds: number): string {
  if (seconds === 60) return 'minute';
  if (seconds === 3600) return 'hour';
  if (seconds === 86_400) return 'day';
  return `${seconds} s`;
}

const refuse = (code: number, text: string, reason: RejectReason) => new SmtpReplyError(code, text, reason);

export const replies = {
  relayDenied: (rcpt: string) => refuse(554, `5.7.1 <${rcpt}>: Relay access denied`, 'relay_denied'),
  lookupFailure: (rcpt: string) => refuse(451, `4.3.0 <${rcpt}>: Temporary lookup failure`, 'lookup'),
  tooBig: () => refuse(552, '5.3.4 Message size exceeds fixed limit', 'size'),
  noStorage: () => refuse(452, '4.3.1 Insufficient system storage', 'storage'),
  tooManyRecipients: () => refuse(452, '4.5.3 Error: too many recipients', 'recipients'),
  shuttingDown: () => refuse(421, '4.3.2 Service shutting down', 'shutdown'),
  bareLineEnding: () =>
    refuse(
      550,
      '5.5.2 Error: bare <CR> or <LF> received; message lines must end in <CR><LF>',
      'bare_line_ending',
    ),
  tooManyConnections: (host: string) =>
    refuse(421, `4.7.0 ${host} Error: too many connections`, 'connection_limit'),
  /** No session slot left (for the client's class: inside or outside the allowed networks). */
  portsBusy: () => refuse(421, '4.3.2 All server ports are busy', 'connection_limit'),
  /** A command (or the DATA phase) not completed in time, however slowly the client trickled bytes. */
  timeout: () => refuse(421, '4.4.2 Error: timeout exceeded', 'timeout'),
  localError: () => refuse(451, '4.3.0 Error: queue file write error', 'queue_write'),
  lineTooLong: () => refuse(552, '5.3.4 Error: message line too long', 'line_length'),
  unsupportedParam: (param: string) =>
    refuse(555, `5.5.4 Unsupported option: ${param.slice(0, 100)}`, 'syntax'),
  headerTooLong: () => refuse(552, '5.3.4 Error: message header size exceeds limit', 'header_size'),
  nonFqdnSender: (addr: string) =>
    refuse(504, `5.5.2 <${addr}>: Sender address rejected: need fully-qualified address`, 'non_fqdn'),
  nonFqdnRecipient: (addr: string) =>
    refuse(504, `5.5.2 <${addr}>: Recipient address rejected: need fully-qualified address`, 'non_fqdn'),
  authFailed: () => refuse(535, '5.7.8 Error: authentication failed: authentication failure', 'auth_failed'),
  authUnavailable: () => refuse(454, '4.7.0 Temporary authentication failure', 'auth_unavailable'),
  tlsRequired: () => refuse(530, '5.7.0 Must issue a STARTTLS command first', 'tls_required'),
  etrnSyntax: () => refuse(501, '5.5.4 Syntax: ETRN domain', 'syntax'),
  etrnDenied: (arg: string) => refuse(554, `5.7.1 <${arg}>: Relay access denied`, 'relay_denied'),
  etrnStarted: (): Reply => ({ code: 250, text: '2.0.0 Queuing started' }),
  pregreet: (host: string) => refuse(421, `4.7.0 ${host} Error: SMTP protocol synchronization`, 'pregreet'),
  // Policy refusals name the policy (and the limit), as the README promises.
  senderRefused: (sender: string, detail: string, policy: string) =>
    refuse(553, `5.7.1 <${sender}>: Sender address rejected: ${detail} (policy ${policy})`, 'policy'),
  recipientRefused: (rcpt: string, detail: string, policy: string) =>
    refuse(550, `5.7.1 <${rcpt}>: Recipient address rejected: ${detail} (policy ${policy})`, 'policy'),
  messageRefused: (detail: string, policy: string) =>
    refuse(550, `5.7.1 Error: message refused: ${detail} (policy ${policy})`, 'policy'),
  senderRateLimited: (sender: string, what: string, policy: string) =>
    refuse(
      450,
      `4.7.1 <${sender}>: Sender address rejected: rate limit exceeded (${what}, policy ${policy}); try again later`,
      'rate',
    ),
  recipientRateLimited: (rcpt: string, what: string, policy: string) =>
    refuse(
      450,
      `4.7.1 <${rcpt}>: Recipient address rejected: rate limit exceeded (${what}, policy ${policy}); try again later`,
      'rate',
    ),
  /** The 250 text after DATA. */
  queued: (id: string) => `2.0.0 Ok: queued as ${id}`,
};

export interface EhloOptions {
  hostname: string;
  maxMessageSize: number;
  starttls: boolean;
  auth?: string[];
}

/** The EHLO reply: Postfix's order, with PIPELINING first and `250 DSN` last as in the seed. */
export function ehloLines(o: EhloOptions): string[] {
  return [
    o.hostname,
    'PIPELINING',
    `SIZE ${o.maxMessageSize}`,
    'VRFY',
    'ETRN',
    ...(o.starttls ? ['STARTTLS'] : []),
    ...(o.auth?.length ? [`AUTH ${o.auth.join(' ')}`] : []),
    'ENHANCEDSTATUSCODES',
    '8BITMIME',
    'SMTPUTF8',
    'DSN',
  ];
}

/** smtp-server's own texts that differ from Postfix's, keyed by `code text[ context]`. */
const TEXTS: Record<string, Reply> = {
  '250 Accepted MAIL_FROM_OK': { code: 250, text: '2.1.0 Ok' },
  '250 Accepted RCPT_TO_OK': { code: 250, text: '2.1.5 Ok' },
  '250 OK': { code: 250, text: '2.0.0 Ok' },
  '250 Flushed': { code: 250, text: '2.0.0 Ok' },
  '221 Bye': { code: 221, text: '2.0.0 Bye' },
  '354 End data with <CR><LF>.<CR><LF>': { code: 354, text: 'End data with <CR><LF>.<CR><LF>' },
  '252 Try to send something. No promises though': {
    code: 252,
    text: '2.0.0 Cannot VRFY user, but will accept message and attempt delivery',
  },
  '421 Timeout - closing connection': { code: 421, text: '4.4.2 Error: timeout exceeded', reason: 'timeout' },
  '421 Server shutting down': { code: 421, text: '4.3.2 Service shutting down', reason: 'shutdown' },
  '452 Error: too many recipients TOO_MANY_RECIPIENTS': {
    code: 452,
    text: '4.5.3 Error: too many recipients',
    reason: 'recipients',
  },
  '500 Error: command not recognized': {
    code: 500,
    text: '5.5.2 Error: command not recognized',
    reason: 'syntax',
  },
  '421 Error: too many unrecognized commands': {
    code: 421,
    text: '4.7.0 Error: too many errors',
    reason: 'too_many_errors',
  },
  '503 Error: need RCPT command': { code: 554, text: '5.5.1 Error: no valid recipients', reason: 'sequence' },
  '503 Error: need MAIL command': { code: 503, text: '5.5.1 Error: need MAIL command', reason: 'sequence' },
  '503 Error: nested MAIL command': {
    code: 503,
    text: '5.5.1 Error: nested MAIL command',
    reason: 'sequence',
  },
  '503 Error: send HELO/EHLO first': {
    code: 503,
    text: '5.5.1 Error: send HELO/EHLO first',
    reason: 'sequence',
  },
  '501 Error: Bad sender address syntax SENDER_SYNTAX_ERROR': {
    code: 501,
    text: '5.1.7 Bad sender address syntax',
    reason: 'syntax',
  },
  '501 Error: Bad recipient address syntax MAILBOX_SYNTAX_ERROR': {
    code: 501,
    text: '5.1.3 Bad recipient address syntax',
    reason: 'syntax',
  },
  '538 Error: Must issue a STARTTLS command first': {
    code: 530,
    text: '5.7.0 Must issue a STARTTLS command first',
    reason: 'tls_required',
  },
  '220 Ready to start TLS': { code: 220, text: '2.0.0 Ready to start TLS' },
  '421 HTTP requests not allowed': {
    code: 421,
    text: '4.7.0 Error: HTTP requests not allowed',
    reason: 'http',
  },
};

/** The enhanced-code contexts and texts of smtp-server we recognise, for its adapter's contract. */
export const smtpServerTexts: readonly { text: string; meaning: string }[] = [
  ...Object.entries(TEXTS).map(([key, r]) => ({
    // the library's text without the code in front and the context label behind
    text: key.replace(/^\d{3} /, '').replace(/ [A-Z_]+$/, ''),
    meaning: `answered as ${r.code} ${Array.isArray(r.text) ? r.text[0] : r.text}`,
  })),
  { text: 'MESSAGE_TOO_BIG', meaning: 'context of its SIZE refusal: answered with our 552 5.3.4' },
  { text: 'DATA_OK', meaning: 'context of the 250 after DATA: the text is ours (queued as ID)' },
  { text: ' You talk too soon', meaning: 'a command before the greeting: answered as Postfix pregreet 421' },
];

/**
 * Maps one reply smtp-server is about to send onto Postfix's wording. `context` is the label
 * smtp-server passes for enhanced codes (false: none). Returns undefined (or `keep`) to send the
 * library's reply as it is: texts we do not map, with smtp-server's own RFC 3463 code.
 */
export function rewriteReply(
  code: number,
  data: string | string[] | null | undefined,
  context: string | false | undefined,
  ehlo: EhloOptions,
): Reply | undefined {
  if (Array.isArray(data)) {
    // EHLO: replace smtp-server's capability list with ours (it lists what it implements).
    // AUTH only inside TLS: smtp-server lists STARTTLS exactly while the session is not secure.
    if (code !== 250) return undefined;
    const auth = data.find((l) => l.startsWith('AUTH '));
    const secure = !data.includes('STARTTLS');
    return {
      code,
      text: ehloLines({
        ...ehlo,
        starttls: ehlo.starttls && !secure,
        ...(auth && secure ? { auth: auth.split(' ').slice(1) } : {}),
      }),
    };
  }
  const text = data ?? '';
  if (context === 'MESSAGE_TOO_BIG') return replyOf(replies.tooBig());
  if (context === 'DATA_OK') return { code, text };
  if (code === 421 && / You talk too soon$/.test(text)) return replyOf(replies.pregreet(ehlo.hostname));
  const key =
    typeof context === 'string' && context !== '' ? `${code} ${text} ${context}` : `${code} ${text}`;
  const hit = TEXTS[key] ?? TEXTS[`${code} ${text}`];
  if (hit) return hit;
  // Our own refusals already carry an enhanced code ("5.7.1 ..."): sent as they are, without a
  // second code in front; counted where they were made.
  if (isOurs(text)) return { code, text };
  // Anything else: smtp-server's text with its own RFC 3463 code (its mapping is sound).
  return code >= 400 ? { code, text, reason: `code_${code}`, keep: true } : undefined;
}

/** Our replies start with their enhanced status code; smtp-server's never do (it adds its own). */
export function isOurs(text: string): boolean {
  return /^[245]\.\d{1,3}\.\d{1,3} /.test(text);
}

export function replyOf(e: SmtpReplyError): Reply {
  return { code: e.responseCode, text: e.message, reason: e.reason };
}

/** The reply to a policy's refusal at MAIL FROM (`address`: the sender), RCPT TO (the recipient) or DATA. */
export function policyReply(r: Refusal, step: 'mail' | 'rcpt' | 'data', address = ''): SmtpReplyError {
  switch (r.rule) {
    case 'sender':
      return replies.senderRefused(address, r.detail, r.policy);
    case 'recipient-allow':
    case 'recipient-deny':
      return replies.recipientRefused(address, r.detail, r.policy);
    case 'recipients':
      return replies.tooManyRecipients();
    case 'size':
      return replies.tooBig();
    case 'rate':
      return step === 'rcpt'
        ? replies.recipientRateLimited(address, r.detail, r.policy)
        : replies.senderRateLimited(address, r.detail, r.policy);
    case 'from-header':
      return replies.messageRefused(r.detail, r.policy);
  }
}
