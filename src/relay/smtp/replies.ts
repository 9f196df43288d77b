/**
 * The relay speaks Postfix: every reply an existing client might parse has Postfix's code,
 * enhanced status code and text (the seed's transcript shows them). smtp-server has its own
 * texts; `rewriteReply` maps each of its replies onto Postfix's, and the relay's own refusals
 * are built here too, so all reply texts live in one file.
 */

export interface Reply {
  code: number;
  /** Text after the code, enhanced status code included; an array for multi-line replies. */
  text: string | string[];
}

/** An error smtp-server turns into a reply: `responseCode` + message (already carrying its enhanced code). */
export class SmtpReplyError extends Error {
  constructor(
    readonly responseCode: number,
    message: string,
    /** Short label for the rejections metric and the log. */
    readonly reason: string,
  ) {
    super(message);
  }
}

export const replies = {
  relayDenied: (rcpt: string) =>
    new SmtpReplyError(554, `5.7.1 <${rcpt}>: Relay access denied`, 'relay_denied'),
  lookupFailure: (rcpt: string) =>
    new SmtpReplyError(451, `4.3.0 <${rcpt}>: Temporary lookup failure`, 'lookup'),
  tooBig: () => new SmtpReplyError(552, '5.3.4 Message size exceeds fixed limit', 'size'),
  noStorage: () => new SmtpReplyError(452, '4.3.1 Insufficient system storage', 'storage'),
  tooManyRecipients: () => new SmtpReplyError(452, '4.5.3 Error: too many recipients', 'recipients'),
  shuttingDown: () => new SmtpReplyError(421, '4.3.2 Service shutting down', 'shutdown'),
  /** No session slot left (for the client's class: inside or outside the allowed networks). */
  portsBusy: () => new SmtpReplyError(421, '4.3.2 All server ports are busy', 'connection_limit'),
  /** A command (or the DATA phase) not completed in time, however slowly the client trickled bytes. */
  timeout: () => new SmtpReplyError(421, '4.4.2 Error: timeout exceeded', 'timeout'),
  bareLineEnding: () =>
    new SmtpReplyError(
      550,
      '5.5.2 Error: bare <CR> or <LF> received; message lines must end in <CR><LF>',
      'bare_line_ending',
    ),
  tooManyConnections: (host: string) =>
    new SmtpReplyError(421, `4.7.0 ${host} Error: too many connections`, 'connection_limit'),
  localError: () => new SmtpReplyError(451, '4.3.0 Error: queue file write error', 'queue_write'),
  lineTooLong: () => new SmtpReplyError(552, '5.3.4 Error: message line too long', 'line_length'),
  unsupportedParam: (param: string) =>
    new SmtpReplyError(555, `5.5.4 Unsupported option: ${param.slice(0, 100)}`, 'syntax'),
  headerTooLong: () =>
    new SmtpReplyError(552, '5.3.4 Error: message header size exceeds limit', 'header_size'),
  nonFqdnSender: (addr: string) =>
    new SmtpReplyError(
      504,
      `5.5.2 <${addr}>: Sender address rejected: need fully-qualified address`,
      'non_fqdn',
    ),
  nonFqdnRecipient: (addr: string) =>
    new SmtpReplyError(
      504,
      `5.5.2 <${addr}>: Recipient address rejected: need fully-qualified address`,
      'non_fqdn',
    ),
  authFailed: () =>
    new SmtpReplyError(535, '5.7.8 Error: authentication failed: authentication failure', 'auth_failed'),
  tlsRequired: () => new SmtpReplyError(530, '5.7.0 Must issue a STARTTLS command first', 'tls_required'),
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

/** smtp-server's own texts that differ from Postfix's, keyed by `code text`. */
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
  '421 Timeout - closing connection': { code: 421, text: '4.4.2 Error: timeout exceeded' },
  '421 Server shutting down': { code: 421, text: '4.3.2 Service shutting down' },
  '452 Error: too many recipients TOO_MANY_RECIPIENTS': {
    code: 452,
    text: '4.5.3 Error: too many recipients',
  },
  '500 Error: command not recognized': { code: 500, text: '5.5.2 Error: command not recognized' },
  '421 Error: too many unrecognized commands': { code: 421, text: '4.7.0 Error: too many errors' },
  '503 Error: need RCPT command': { code: 554, text: '5.5.1 Error: no valid recipients' },
  '503 Error: need MAIL command': { code: 503, text: '5.5.1 Error: need MAIL command' },
  '503 Error: nested MAIL command': { code: 503, text: '5.5.1 Error: nested MAIL command' },
  '503 Error: send HELO/EHLO first': { code: 503, text: '5.5.1 Error: send HELO/EHLO first' },
  '501 Error: Bad sender address syntax SENDER_SYNTAX_ERROR': {
    code: 501,
    text: '5.1.7 Bad sender address syntax',
  },
  '501 Error: Bad recipient address syntax MAILBOX_SYNTAX_ERROR': {
    code: 501,
    text: '5.1.3 Bad recipient address syntax',
  },
  '538 Error: Must issue a STARTTLS command first': {
    code: 530,
    text: '5.7.0 Must issue a STARTTLS command first',
  },
  '220 Ready to start TLS': { code: 220, text: '2.0.0 Ready to start TLS' },
  '421 HTTP requests not allowed': { code: 421, text: '4.7.0 Error: HTTP requests not allowed' },
};

/**
 * Maps one reply smtp-server is about to send onto Postfix's wording. `context` is the label
 * smtp-server passes for enhanced codes (false: none). Returns undefined to keep the reply.
 */
export function rewriteReply(
  code: number,
  data: unknown,
  context: unknown,
  ehlo: EhloOptions,
): Reply | undefined {
  if (Array.isArray(data)) {
    // EHLO: replace smtp-server's capability list with ours (it lists what it implements).
    // AUTH only inside TLS: smtp-server lists STARTTLS exactly while the session is not secure.
    if (code !== 250) return undefined;
    const lines = data.map(String);
    const auth = lines.find((l) => l.startsWith('AUTH '));
    const secure = !lines.includes('STARTTLS');
    return {
      code,
      text: ehloLines({
        ...ehlo,
        starttls: ehlo.starttls && !secure,
        ...(auth && secure ? { auth: auth.split(' ').slice(1) } : {}),
      }),
    };
  }
  const text = typeof data === 'string' ? data : '';
  if (context === 'MESSAGE_TOO_BIG') return { code: 552, text: '5.3.4 Message size exceeds fixed limit' };
  if (context === 'DATA_OK') return { code, text };
  if (code === 421 && / You talk too soon$/.test(text)) {
    return { code: 421, text: `4.7.0 ${ehlo.hostname} Error: SMTP protocol synchronization` };
  }
  const key =
    typeof context === 'string' && context !== '' ? `${code} ${text} ${context}` : `${code} ${text}`;
  const hit = TEXTS[key] ?? TEXTS[`${code} ${text}`];
  if (hit) return hit;
  // Our own refusals already carry an enhanced code ("5.7.1 ..."): keep them as they are.
  if (/^[245]\.\d{1,3}\.\d{1,3} /.test(text)) return { code, text };
  // Anything else: smtp-server's text with its own RFC 3463 code (its mapping is sound).
  return undefined;
}
