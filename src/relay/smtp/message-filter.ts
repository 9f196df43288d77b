/**
 * Everything the relay does to a message's bytes between smtp-server's DATA stream and the spool,
 * in one synchronous, streaming pass (no whole message in memory):
 *  - line endings: a bare CR or bare LF is never relayed as is (SMTP smuggling, 2023). In
 *    `normalize` mode each becomes CRLF, as Postfix's smtpd_forbid_bare_newline=normalize does;
 *    in `reject` mode the message is flagged and the caller refuses it.
 *  - a Received: trace header is prepended; Message-ID:, Date: and (when asked) From: are added
 *    when missing. A first line that is no header field starts the body (a blank line is put
 *    before it), so text sent without headers still gets a well-formed header section.
 *  - over-long lines are flagged.
 */

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n');

export interface FilterOptions {
  bareLineEndings: 'normalize' | 'reject';
  maxLineLength: number;
  /** A header section longer than this is flagged (and passed on without further scanning). */
  maxHeaderBytes: number;
  /** Full `Received: ...\r\n` header to prepend. */
  received: string;
  /** Called only when the message has no Message-ID; returns the value with angle brackets. */
  makeMessageId: () => string;
  /** Sees the header block (latin1, CRLF) before it is stored and returns the block to store. */
  onHeaders?: (block: string) => string;
  /**
   * Called only when the message has no From: header; returns the address to add it with
   * (Gmail refuses mail without From:), or undefined to add none. Postfix always_add_missing_headers.
   */
  missingFrom?: () => string | undefined;
  now?: () => Date;
}

export class MessageFilter {
  /** A bare CR or LF was seen. */
  bareLineEnding = false;
  lineTooLong = false;
  headerTooLong = false;
  /** Message-ID of the message (found or added), for logs. */
  messageId: string | undefined;
  /** Bytes emitted so far. */
  size = 0;

  private pendingCR = false;
  private lineLength = 0;
  private inHeaders = true;
  private header: Buffer[] = [];
  private headerBytes = 0;
  private started = false;

  constructor(private readonly opts: FilterOptions) {}

  /** Feed received bytes; returns the bytes to store (possibly none yet). */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    if (!this.started) {
      this.started = true;
      out.push(Buffer.from(this.opts.received));
    }
    const normalized = this.normalize(chunk);
    if (normalized.length) this.route(normalized, out);
    return this.count(out);
  }

  /** End of DATA; returns the remaining bytes. The stored message always ends in CRLF. */
  end(): Buffer[] {
    const out: Buffer[] = [];
    if (!this.started) {
      this.started = true;
      out.push(Buffer.from(this.opts.received));
    }
    let tail = Buffer.alloc(0);
    if (this.pendingCR) {
      this.pendingCR = false;
      this.bareLineEnding = true;
      tail = CRLF;
    } else if (this.lineLength > 0) {
      tail = CRLF; // last line without a line ending
    }
    if (tail.length) this.route(tail, out);
    if (this.inHeaders) this.finishHeaders(out);
    return this.count(out);
  }

  private count(out: Buffer[]): Buffer[] {
    for (const b of out) this.size += b.length;
    return out;
  }

  /** Rewrites bare CR and bare LF to CRLF, tracking line length across chunks. */
  private normalize(chunk: Buffer): Buffer {
    const parts: Buffer[] = [];
    let start = 0;
    let i = 0;
    if (this.pendingCR) {
      this.pendingCR = false;
      if (chunk[0] === LF) {
        parts.push(CRLF);
        start = i = 1;
        this.lineLength = 0;
      } else {
        parts.push(CRLF); // bare CR at the previous chunk's end
        this.bareLineEnding = true;
        this.lineLength = 0;
      }
    }
    const n = chunk.length;
    while (i < n) {
      const lf = chunk.indexOf(LF, i);
      const cr = chunk.indexOf(CR, i);
      const next = lf === -1 ? cr : cr === -1 ? lf : Math.min(lf, cr);
      if (next === -1) {
        this.lineLength += n - i;
        break;
      }
      this.lineLength += next - i;
      if (this.lineLength > this.opts.maxLineLength) this.lineTooLong = true;
      if (chunk[next] === CR) {
        if (next + 1 === n) {
          // CR as the last byte: decided by the next chunk
          parts.push(chunk.subarray(start, next));
          start = i = n;
          this.pendingCR = true;
          break;
        }
        if (chunk[next + 1] === LF) {
          i = next + 2;
          this.lineLength = 0;
          continue;
        }
        // bare CR
        this.bareLineEnding = true;
        parts.push(chunk.subarray(start, next), CRLF);
        start = i = next + 1;
        this.lineLength = 0;
        continue;
      }
      // bare LF
      this.bareLineEnding = true;
      parts.push(chunk.subarray(start, next), CRLF);
      start = i = next + 1;
      this.lineLength = 0;
    }
    if (this.lineLength > this.opts.maxLineLength) this.lineTooLong = true;
    if (start === 0 && parts.length === 0) return chunk;
    if (start < n) parts.push(chunk.subarray(start));
    return Buffer.concat(parts);
  }

  /** Sends normalized bytes to the header buffer until the header/body boundary, then straight out. */
  private route(buf: Buffer, out: Buffer[]): void {
    if (!this.inHeaders) {
      out.push(buf);
      return;
    }
    this.header.push(buf);
    this.headerBytes += buf.length;
    const all = this.header.length === 1 ? buf : Buffer.concat(this.header);
    this.header = [all];
    // The header ends at the first empty line; a message may also start with one (no header).
    const boundary = all.subarray(0, 2).equals(CRLF) ? 0 : all.indexOf('\r\n\r\n');
    if (boundary !== -1) {
      const cut = boundary === 0 ? 0 : boundary + 2;
      if (cut > this.opts.maxHeaderBytes) this.headerTooLong = true;
      this.header = [all.subarray(0, cut)];
      this.finishHeaders(out);
      out.push(all.subarray(cut));
    } else if (this.headerBytes > this.opts.maxHeaderBytes) {
      this.headerTooLong = true;
      this.inHeaders = false;
      out.push(all);
      this.header = [];
    }
  }

  /** Emits the buffered header block plus whatever it lacks. */
  private finishHeaders(out: Buffer[]): void {
    this.inHeaders = false;
    let block = Buffer.concat(this.header);
    this.header = [];
    let text = block.toString('latin1');
    if (this.opts.onHeaders) {
      const edited = this.opts.onHeaders(text);
      if (edited !== text) {
        text = edited;
        block = Buffer.from(edited, 'latin1');
      }
    }
    // Text that is no header field ("message", the seed's smtplib example) is body: what follows
    // must not be read as part of the header section, so a blank line is put in front of it.
    const cut = headerSectionEnd(text);
    let rest: Buffer | undefined;
    if (cut < text.length) {
      rest = block.subarray(cut);
      block = block.subarray(0, cut);
      text = text.slice(0, cut);
    }
    const found = headerValue(text, 'message-id');
    this.messageId = found;
    const extra: string[] = [];
    if (!found) {
      this.messageId = this.opts.makeMessageId();
      extra.push(`Message-ID: ${this.messageId}\r\n`);
    }
    if (headerValue(text, 'date') === undefined) {
      extra.push(`Date: ${rfc5322Date(this.opts.now?.() ?? new Date())}\r\n`);
    }
    if (this.opts.missingFrom && headerValue(text, 'from') === undefined) {
      const from = this.opts.missingFrom()?.replace(/[\r\n]/g, '');
      if (from) extra.push(`From: ${from}\r\n`);
    }
    out.push(block);
    if (extra.length) out.push(Buffer.from(extra.join('')));
    if (rest) out.push(CRLF, rest);
  }
}

/** A header field line (RFC 5322 field-name, then colon; obsolete WSP before it allowed). */
const FIELD_LINE = /^[!-9;-~]+[ \t]*:/;

/**
 * Where the header section of a CRLF block ends: at its end, or at the first line that is neither
 * a header field nor the folded continuation of one.
 */
export function headerSectionEnd(block: string): number {
  let at = 0;
  while (at < block.length) {
    const eol = block.indexOf('\r\n', at);
    const line = block.slice(at, eol === -1 ? block.length : eol);
    if (line === '') return at; // the blank separator line itself (kept as it is)
    const folded = at > 0 && (line[0] === ' ' || line[0] === '\t');
    if (!folded && !FIELD_LINE.test(line)) return at;
    if (eol === -1) return block.length;
    at = eol + 2;
  }
  return block.length;
}

/** Unfolded value of the first header `name` in a CRLF header block, or undefined. */
export function headerValue(block: string, name: string): string | undefined {
  const re = new RegExp(`(?:^|\\r\\n)${name}[ \\t]*:([^\\r]*(?:\\r\\n[ \\t][^\\r]*)*)`, 'i');
  const m = re.exec(block);
  if (!m) return undefined;
  return (m[1] ?? '').replace(/\r\n[ \t]+/g, ' ').trim();
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** RFC 5322 date in UTC, e.g. "Wed, 25 Nov 2026 05:15:53 +0000". */
export function rfc5322Date(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

export interface ReceivedInfo {
  heloName?: string;
  clientHostname?: string;
  clientAddress: string;
  hostname: string;
  protocol: string;
  id?: string;
  /** Named only for a single recipient, as Postfix does (more would leak Bcc lists). */
  recipient?: string;
  date: Date;
}

/** A Received: header in Postfix's layout. */
export function receivedHeader(r: ReceivedInfo): string {
  const from = `${r.heloName ?? 'unknown'} (${r.clientHostname ?? 'unknown'} [${r.clientAddress}])`;
  const id = r.id ? ` id ${r.id}` : '';
  const forPart = r.recipient ? `\r\n\tfor <${r.recipient}>` : '';
  return `Received: from ${from}\r\n\tby ${r.hostname} (email-relay) with ${r.protocol}${id}${forPart}; ${rfc5322Date(r.date)}\r\n`;
}
