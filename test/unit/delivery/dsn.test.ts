import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import {
  buildDsn,
  type DsnInput,
  fold,
  headerSection,
  rfc5322Date,
} from '../../../src/relay/delivery/dsn.ts';
import { parseDsn } from '../../helpers/dsn-parse.ts';

const ORIGINAL =
  'Received: from app (app [10.0.0.5])\r\n\tby mail.example.com\r\n' +
  'From: app@example.com\r\nTo: a@example.net\r\nSubject: Hello\r\nMessage-ID: <m1@example.com>\r\n' +
  '\r\nLine one\r\n.line two\r\n\r\nEnd\r\n';

const T0 = Date.UTC(2026, 10, 25, 5, 20, 50);

function input(over: Partial<DsnInput> = {}): DsnInput {
  return {
    reportingMta: 'mail.example.com',
    sender: 'app@example.com',
    queueId: 'Q1',
    arrivalDate: T0,
    recipients: [
      {
        address: 'gone@example.net',
        orcpt: 'rfc822;Gone@Example.NET',
        action: 'failed',
        status: '5.1.1',
        remoteMta: 'smtp-relay.gmail.com',
        diagnostic: '550 5.1.1 The email account that you tried to reach does not exist.',
        remote: true,
        command: 'RCPT TO',
        lastAttemptAt: T0 + 1000,
      },
    ],
    original: Readable.from([Buffer.from(ORIGINAL)]),
    headersOnly: false,
    eightBit: false,
    date: T0 + 2000,
    messageId: '<Q1.abc@mail.example.com>',
    boundary: 'Q1.abc/mail.example.com',
    ...over,
  };
}

/** A source that hands out its bytes in tiny chunks, like a file stream under backpressure. */
function chunked(s: string, size: number): Readable {
  const buf = Buffer.from(s);
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) parts.push(buf.subarray(i, i + size));
  return Readable.from(parts);
}

describe('buildDsn', () => {
  it('builds a failure report: multipart/report with text, delivery-status and message/rfc822', async () => {
    const raw = await text(buildDsn(input()));
    const dsn = parseDsn(raw);
    expect(dsn.headers.get('from')).toBe('MAILER-DAEMON@mail.example.com (Mail Delivery System)');
    expect(dsn.headers.get('to')).toBe('<app@example.com>');
    expect(dsn.headers.get('subject')).toBe('Undelivered Mail Returned to Sender');
    expect(dsn.headers.get('auto-submitted')).toBe('auto-replied');
    expect(dsn.headers.get('date')).toBe('Wed, 25 Nov 2026 05:20:52 +0000');
    expect(dsn.headers.get('message-id')).toBe('<Q1.abc@mail.example.com>');
    expect(dsn.parts).toHaveLength(3);

    expect(dsn.status.message.get('reporting-mta')).toBe('dns; mail.example.com');
    expect(dsn.status.message.get('arrival-date')).toBe('Wed, 25 Nov 2026 05:20:50 +0000');
    expect(dsn.status.message.has('original-envelope-id')).toBe(false);
    expect(dsn.status.recipients).toHaveLength(1);
    const r = dsn.status.recipients[0]!;
    expect(Object.fromEntries(r)).toEqual({
      'final-recipient': 'rfc822; gone@example.net',
      'original-recipient': 'rfc822; Gone@Example.NET',
      action: 'failed',
      status: '5.1.1',
      'remote-mta': 'dns; smtp-relay.gmail.com',
      'diagnostic-code': 'smtp; 550 5.1.1 The email account that you tried to reach does not exist.',
      'last-attempt-date': 'Wed, 25 Nov 2026 05:20:51 +0000',
    });

    expect(dsn.human).toContain('could not be delivered');
    expect(dsn.human).toContain('<gone@example.net>: host smtp-relay.gmail.com said: 550 5.1.1');
    expect(dsn.human).toContain('(in reply to RCPT TO command)');
    expect(dsn.original?.headers.get('content-type')).toBe('message/rfc822');
    expect(dsn.original?.body).toBe(ORIGINAL);
  });

  it('uses CRLF only, and every line of the generated parts is short', async () => {
    const raw = await text(buildDsn(input({ original: undefined })));
    expect(raw.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
    for (const line of raw.split('\r\n')) expect(line.length).toBeLessThanOrEqual(998);
  });

  it('carries ENVID and reports several recipients', async () => {
    const base = input().recipients[0]!;
    const raw = await text(
      buildDsn(
        input({
          envid: 'QQ314159',
          recipients: [
            base,
            {
              address: 'x@example.net',
              action: 'failed',
              status: '4.4.7',
              diagnostic: 'connect to relay: refused',
              remote: false,
            },
          ],
        }),
      ),
    );
    const dsn = parseDsn(raw);
    expect(dsn.status.message.get('original-envelope-id')).toBe('QQ314159');
    expect(dsn.status.recipients.map((r) => r.get('final-recipient'))).toEqual([
      'rfc822; gone@example.net',
      'rfc822; x@example.net',
    ]);
    const local = dsn.status.recipients[1]!;
    expect(local.get('diagnostic-code')).toBe('X-Email-Relay; connect to relay: refused');
    expect(local.has('remote-mta')).toBe(false);
    expect(local.has('original-recipient')).toBe(false);
  });

  it('RET=HDRS attaches only the header section as text/rfc822-headers', async () => {
    const raw = await text(buildDsn(input({ headersOnly: true, original: chunked(ORIGINAL, 7) })));
    const dsn = parseDsn(raw);
    expect(dsn.original?.headers.get('content-type')).toBe('text/rfc822-headers');
    expect(dsn.original?.body).toBe(ORIGINAL.slice(0, ORIGINAL.indexOf('\r\n\r\n') + 2));
    expect(raw).not.toContain('Line one');
  });

  it('streams the original: a large body passes through in chunks, unchanged', async () => {
    const body = `Subject: big\r\n\r\n${'0123456789abcdef'.repeat(64 * 1024)}\r\n`;
    const out = buildDsn(input({ original: chunked(body, 16 * 1024) }));
    let chunks = 0;
    let max = 0;
    const bufs: Buffer[] = [];
    for await (const c of out) {
      chunks++;
      max = Math.max(max, (c as Buffer).length);
      bufs.push(c as Buffer);
    }
    expect(chunks).toBeGreaterThan(60);
    expect(max).toBeLessThanOrEqual(16 * 1024 + 4096);
    expect(parseDsn(Buffer.concat(bufs).toString()).original?.body).toBe(body);
  });

  it('ends the attached message with CRLF before the closing boundary', async () => {
    const raw = await text(
      buildDsn(input({ original: Readable.from([Buffer.from('Subject: x\r\n\r\nno newline')]) })),
    );
    expect(raw).toContain('no newline\r\n\r\n--Q1.abc/mail.example.com--\r\n');
  });

  it('delay notices say so and carry Will-Retry-Until', async () => {
    const r = {
      ...input().recipients[0]!,
      action: 'delayed' as const,
      status: '4.4.1',
      willRetryUntil: T0 + 5 * 86_400_000,
    };
    const dsn = parseDsn(await text(buildDsn(input({ recipients: [r], headersOnly: true }))));
    expect(dsn.headers.get('subject')).toBe('Delayed Mail (still being retried)');
    expect(dsn.human).toContain('THIS IS A WARNING ONLY');
    expect(dsn.human).toContain('It will be retried until it is 5 days old.');
    expect(dsn.status.recipients[0]!.get('will-retry-until')).toBe('Mon, 30 Nov 2026 05:20:50 +0000');
  });

  it('success notices for a relayed message', async () => {
    const r = {
      ...input().recipients[0]!,
      action: 'relayed' as const,
      status: '2.0.0',
      diagnostic: '250 2.0.0 OK',
    };
    const dsn = parseDsn(await text(buildDsn(input({ recipients: [r], headersOnly: true }))));
    expect(dsn.headers.get('subject')).toBe('Successful Mail Delivery Report');
    expect(dsn.status.recipients[0]!.get('action')).toBe('relayed');
  });

  it('never lets a reply break a header line (folding, no CR/LF injection)', async () => {
    const long = `550 5.7.1 ${'word '.repeat(40)}\r\nInjected: yes`;
    const r = { ...input().recipients[0]!, diagnostic: long };
    const raw = await text(buildDsn(input({ recipients: [r] })));
    expect(raw).not.toMatch(/^Injected:/m);
    const code = parseDsn(raw).status.recipients[0]!.get('diagnostic-code')!;
    expect(code.startsWith('smtp; 550 5.7.1 word word')).toBe(true);
    expect(code).toContain('Injected: yes');
  });

  it('declares 8bit for an 8-bit original', async () => {
    const raw = await text(buildDsn(input({ eightBit: true })));
    expect(parseDsn(raw).original?.headers.get('content-transfer-encoding')).toBe('8bit');
  });
});

describe('headerSection', () => {
  const collect = async (src: Readable) => {
    const out: Buffer[] = [];
    for await (const c of headerSection(src)) out.push(c);
    return Buffer.concat(out).toString();
  };

  it('finds the empty line across chunk boundaries of any size', async () => {
    const headers = ORIGINAL.slice(0, ORIGINAL.indexOf('\r\n\r\n') + 2);
    for (const size of [1, 2, 3, 5, 64, 4096]) expect(await collect(chunked(ORIGINAL, size))).toBe(headers);
  });

  it('returns everything when there is no body, nothing when there are no headers', async () => {
    expect(await collect(chunked('Subject: x\r\n', 3))).toBe('Subject: x\r\n');
    expect(await collect(chunked('\r\nbody only\r\n', 4))).toBe('');
  });

  it('stops reading the source once the headers are out', async () => {
    const src = chunked(`Subject: x\r\n\r\n${'y'.repeat(100_000)}`, 1000);
    await collect(src);
    expect(src.destroyed).toBe(true);
  });
});

describe('helpers', () => {
  it('formats RFC 5322 dates in UTC', () => {
    expect(rfc5322Date(0)).toBe('Thu, 01 Jan 1970 00:00:00 +0000');
  });
  it('folds long lines at spaces', () => {
    const folded = fold(`Diagnostic-Code: smtp; ${'abcdefghi '.repeat(20)}`);
    for (const l of folded.split('\r\n')) expect(l.length).toBeLessThanOrEqual(78);
    expect(folded.replace(/\r\n/g, '')).toBe(`Diagnostic-Code: smtp; ${'abcdefghi '.repeat(20)}`);
  });
});
