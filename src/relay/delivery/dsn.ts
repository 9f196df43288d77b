import { Readable } from 'node:stream';

/**
 * RFC 3464 delivery status notifications, built as a stream: a multipart/report with a
 * human-readable part, a message/delivery-status part, and the original message (message/rfc822,
 * RET=FULL) or its header section (text/rfc822-headers, RET=HDRS) streamed from the spool, never
 * buffered whole. Pure: everything variable (dates, ids, boundary) comes in the input.
 */

export type DsnAction = 'failed' | 'delayed' | 'delivered' | 'relayed';

export interface DsnRecipient {
  address: string;
  /** ORCPT as received (xtext already decoded), e.g. "rfc822;user@example.com". */
  orcpt?: string;
  action: DsnAction;
  /** RFC 3463 status, e.g. 5.1.1. */
  status: string;
  /** The upstream that gave the reply (Remote-MTA: dns; host). */
  remoteMta?: string;
  /** The upstream's reply (Diagnostic-Code: smtp; ...) or, with remote false, a local reason. */
  diagnostic?: string;
  remote?: boolean;
  /** The command the reply answered, for the human-readable text. */
  command?: string;
  lastAttemptAt?: number;
  /** Delayed: when we give up. */
  willRetryUntil?: number;
}

export interface DsnInput {
  /** Our FQDN: Reporting-MTA and the MAILER-DAEMON address. */
  reportingMta: string;
  /** The original envelope sender: the DSN's recipient. */
  sender: string;
  queueId: string;
  /** When we received the original (ms epoch). */
  arrivalDate: number;
  /** RFC 3461 ENVID of the original. */
  envid?: string;
  recipients: DsnRecipient[];
  /** The original message, to attach. */
  original?: NodeJS.ReadableStream;
  /** Attach only the header section (RET=HDRS). */
  headersOnly: boolean;
  /** The original (and so the DSN) may carry 8-bit data. */
  eightBit: boolean;
  /** The DSN's Date (ms epoch). */
  date: number;
  /** The DSN's Message-ID, with angle brackets. */
  messageId: string;
  boundary: string;
}

const CRLF = '\r\n';

/** RFC 5322 date in UTC: "Wed, 25 Nov 2026 05:20:50 +0000". */
export function rfc5322Date(ms: number): string {
  return new Date(ms).toUTCString().replace(/GMT$/, '+0000');
}

/** Header/field values never carry line breaks or control characters. */
function clean(v: string): string {
  return v.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
}

/** Folds a field at spaces to keep lines under ~78 characters (RFC 5322 2.2.3). */
export function fold(line: string, width = 78): string {
  if (line.length <= width) return line;
  const out: string[] = [];
  let rest = line;
  while (rest.length > width) {
    const cut = rest.lastIndexOf(' ', width);
    if (cut <= 0) break;
    out.push(rest.slice(0, cut));
    rest = rest.slice(cut); // the space starts the continuation line
  }
  out.push(rest);
  return out.join(CRLF);
}

function field(name: string, value: string): string {
  return fold(`${name}: ${clean(value)}`) + CRLF;
}

/** "rfc822;a@b" → "rfc822; a@b"; a bare address is taken as rfc822. */
function typedAddress(v: string): string {
  const i = v.indexOf(';');
  return i < 0 ? `rfc822; ${v}` : `${v.slice(0, i).trim()}; ${v.slice(i + 1).trim()}`;
}

function kindOf(input: DsnInput): DsnAction {
  const actions = new Set(input.recipients.map((r) => r.action));
  if (actions.has('failed')) return 'failed';
  if (actions.has('delayed')) return 'delayed';
  return actions.has('delivered') ? 'delivered' : 'relayed';
}

const SUBJECTS: Record<DsnAction, string> = {
  failed: 'Undelivered Mail Returned to Sender',
  delayed: 'Delayed Mail (still being retried)',
  delivered: 'Successful Mail Delivery Report',
  relayed: 'Successful Mail Delivery Report',
};

function humanDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  const units: [number, string][] = [
    [86400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
    [1, 'second'],
  ];
  for (const [size, name] of units) {
    if (s >= size) {
      const n = Math.floor(s / size);
      return `${n} ${name}${n === 1 ? '' : 's'}`;
    }
  }
  return '0 seconds';
}

function reasonLine(r: DsnRecipient): string {
  const what = r.diagnostic ? clean(r.diagnostic) : `status ${r.status}`;
  if (r.remote && r.remoteMta) {
    const after = r.command ? ` (in reply to ${r.command} command)` : '';
    return `<${r.address}>: host ${r.remoteMta} said: ${what}${after}`;
  }
  return `<${r.address}>: ${what}`;
}

function humanText(input: DsnInput, kind: DsnAction): string {
  const lines = [`This is the mail system at host ${input.reportingMta}.`, ''];
  if (kind === 'failed') {
    lines.push(
      'Your message could not be delivered to one or more recipients.',
      input.original ? 'It is attached below.' : '',
      '',
      'For further assistance, send mail to postmaster and include this report.',
    );
  } else if (kind === 'delayed') {
    const first = input.recipients[0];
    lines.push(
      '####################################################################',
      '# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #',
      '####################################################################',
      '',
      `Your message could not be delivered for ${humanDuration(input.date - input.arrivalDate)} to one or more recipients.`,
      first?.willRetryUntil
        ? `It will be retried until it is ${humanDuration(first.willRetryUntil - input.arrivalDate)} old.`
        : 'It will be retried.',
    );
  } else {
    lines.push(
      'Your message was successfully delivered to the destinations listed below.',
      kind === 'relayed'
        ? 'It was relayed to a server that does not report delivery status further: you will not be told about delivery to the final mailbox.'
        : '',
    );
  }
  lines.push('', '                   The mail system', '');
  for (const r of input.recipients) lines.push(fold(reasonLine(r)));
  return `${lines.join(CRLF)}${CRLF}`;
}

function statusPart(input: DsnInput): string {
  let s = field('Reporting-MTA', `dns; ${input.reportingMta}`);
  s += field('X-Email-Relay-Queue-ID', input.queueId);
  if (input.envid) s += field('Original-Envelope-Id', input.envid);
  s += field('Arrival-Date', rfc5322Date(input.arrivalDate));
  for (const r of input.recipients) {
    s += CRLF;
    s += field('Final-Recipient', `rfc822; ${r.address}`);
    if (r.orcpt) s += field('Original-Recipient', typedAddress(r.orcpt));
    s += field('Action', r.action);
    s += field('Status', r.status);
    if (r.remoteMta) s += field('Remote-MTA', `dns; ${r.remoteMta}`);
    if (r.diagnostic)
      s += field('Diagnostic-Code', `${r.remote ? 'smtp' : 'X-Email-Relay'}; ${r.diagnostic}`);
    if (r.lastAttemptAt) s += field('Last-Attempt-Date', rfc5322Date(r.lastAttemptAt));
    if (r.willRetryUntil) s += field('Will-Retry-Until', rfc5322Date(r.willRetryUntil));
  }
  return s;
}

function isAscii(s: string): boolean {
  return !/[^\x00-\x7f]/.test(s);
}

export function buildDsn(input: DsnInput): Readable {
  const kind = kindOf(input);
  const b = input.boundary;
  const text = humanText(input, kind);
  const status = statusPart(input);
  const eightBit = input.eightBit || !isAscii(text) || !isAscii(status) || !isAscii(input.sender);
  const cte = eightBit ? `Content-Transfer-Encoding: 8bit${CRLF}` : '';

  let head =
    field('From', `MAILER-DAEMON@${input.reportingMta} (Mail Delivery System)`) +
    field('To', `<${input.sender}>`) +
    field('Subject', SUBJECTS[kind]) +
    field('Date', rfc5322Date(input.date)) +
    field('Message-ID', input.messageId) +
    // RFC 3834: automatic replies must not be answered automatically.
    field('Auto-Submitted', 'auto-replied') +
    `MIME-Version: 1.0${CRLF}` +
    `Content-Type: multipart/report; report-type=delivery-status;${CRLF}\tboundary="${b}"${CRLF}` +
    cte +
    CRLF +
    `This is a MIME-encapsulated message.${CRLF}${CRLF}`;
  head +=
    `--${b}${CRLF}Content-Description: Notification${CRLF}` +
    `Content-Type: text/plain; charset=${isAscii(text) ? 'us-ascii' : 'utf-8'}${CRLF}` +
    (isAscii(text) ? '' : `Content-Transfer-Encoding: 8bit${CRLF}`) +
    `${CRLF}${text}${CRLF}`;
  head += `--${b}${CRLF}Content-Description: Delivery report${CRLF}Content-Type: message/delivery-status${CRLF}${CRLF}${status}${CRLF}`;
  const original = input.original;
  if (original) {
    head +=
      `--${b}${CRLF}` +
      (input.headersOnly
        ? `Content-Description: Undelivered Message Headers${CRLF}Content-Type: text/rfc822-headers${CRLF}`
        : `Content-Description: Undelivered Message${CRLF}Content-Type: message/rfc822${CRLF}`) +
      (input.eightBit ? `Content-Transfer-Encoding: 8bit${CRLF}` : '') +
      CRLF;
  }
  const tail = `${CRLF}--${b}--${CRLF}`;

  async function* chunks(): AsyncGenerator<Buffer> {
    yield Buffer.from(head, 'utf8');
    if (original) {
      let last: Buffer | undefined;
      for await (const c of input.headersOnly ? headerSection(original) : asBuffers(original)) {
        if (c.length) last = c;
        yield c;
      }
      // The boundary must start a line of its own.
      if (last && !last.subarray(-2).equals(Buffer.from(CRLF))) yield Buffer.from(CRLF);
    }
    yield Buffer.from(tail);
  }
  return Readable.from(chunks(), { objectMode: false });
}

async function* asBuffers(src: NodeJS.ReadableStream): AsyncGenerator<Buffer> {
  for await (const c of src) yield typeof c === 'string' ? Buffer.from(c) : (c as Buffer);
}

const BLANK_CRLF = Buffer.from('\r\n\r\n');
const BLANK_LF = Buffer.from('\n\n');

/**
 * The header section of a streamed message: everything up to the first empty line, which may be
 * split across chunks. Stops reading (and so closes the spool file) once it is found.
 */
export async function* headerSection(src: NodeJS.ReadableStream): AsyncGenerator<Buffer> {
  // The last bytes of what was read are held back until the next chunk shows whether they
  // begin the empty line.
  let held: Buffer = Buffer.alloc(0);
  let emitted = false;
  for await (const c of asBuffers(src)) {
    const joined = held.length ? Buffer.concat([held, c]) : c;
    // A message that starts with the empty line has no header section.
    if (!emitted && (joined[0] === 0x0a || (joined[0] === 0x0d && joined[1] === 0x0a))) return;
    const crlf = joined.indexOf(BLANK_CRLF);
    const lf = joined.indexOf(BLANK_LF);
    const at = crlf >= 0 && (lf < 0 || crlf < lf) ? crlf + 2 : lf >= 0 ? lf + 1 : -1;
    if (at >= 0) {
      yield joined.subarray(0, at);
      return;
    }
    const keep = Math.min(3, joined.length);
    if (joined.length > keep) {
      yield joined.subarray(0, joined.length - keep);
      emitted = true;
    }
    held = joined.subarray(joined.length - keep);
  }
  if (held.length) yield held;
}
