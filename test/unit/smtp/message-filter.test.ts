import { describe, expect, it } from 'vitest';
import { headerValue, MessageFilter, receivedHeader } from '../../../src/relay/smtp/message-filter.ts';

const RECEIVED = 'Received: test\r\n';
function run(
  chunks: string[],
  mode: 'normalize' | 'reject' = 'normalize',
  maxLineLength = 1000,
  missingFrom?: () => string | undefined,
) {
  const f = new MessageFilter({
    ...(missingFrom ? { missingFrom } : {}),
    bareLineEndings: mode,
    maxLineLength,
    maxHeaderBytes: 4096,
    received: RECEIVED,
    makeMessageId: () => '<generated@relay.test>',
    now: () => new Date(Date.UTC(2026, 10, 25, 5, 15, 53)),
  });
  const out: Buffer[] = [];
  for (const c of chunks) out.push(...f.push(Buffer.from(c, 'latin1')));
  out.push(...f.end());
  const text = Buffer.concat(out).toString('latin1');
  expect(f.size).toBe(Buffer.byteLength(text, 'latin1'));
  return { f, text };
}

const HDRS = 'Message-ID: <a@b>\r\nDate: Tue, 1 Jan 2030 00:00:00 +0000\r\nSubject: x\r\n';

describe('MessageFilter line endings', () => {
  it('passes a clean CRLF message through, with Received prepended', () => {
    const { f, text } = run([`${HDRS}\r\nhello\r\nworld\r\n`]);
    expect(text).toBe(`${RECEIVED}${HDRS}\r\nhello\r\nworld\r\n`);
    expect(f.bareLineEnding).toBe(false);
    expect(f.messageId).toBe('<a@b>');
  });

  it('rewrites bare LF and bare CR to CRLF and flags them', () => {
    const { f, text } = run([`${HDRS}\r\nline1\nline2\rline3\r\n`]);
    expect(text).toBe(`${RECEIVED}${HDRS}\r\nline1\r\nline2\r\nline3\r\n`);
    expect(f.bareLineEnding).toBe(true);
    expect(text.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
  });

  it('handles CRLF split across chunks without flagging it', () => {
    const { f, text } = run([`${HDRS}\r\nab\r`, '\ncd\r', '\n']);
    expect(text).toBe(`${RECEIVED}${HDRS}\r\nab\r\ncd\r\n`);
    expect(f.bareLineEnding).toBe(false);
  });

  it('treats a CR at a chunk end followed by text as bare', () => {
    const { f, text } = run([`${HDRS}\r\nab\r`, 'cd\r\n']);
    expect(text).toBe(`${RECEIVED}${HDRS}\r\nab\r\ncd\r\n`);
    expect(f.bareLineEnding).toBe(true);
  });

  it('neutralises the smuggling payload "\\n.\\r\\n" (it can only be data)', () => {
    const { text } = run([`${HDRS}\r\nbody\n.\r\nMAIL FROM:<evil@x>\r\n`]);
    expect(text).toContain('body\r\n.\r\nMAIL FROM');
    expect(text.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
  });

  it('ends an unterminated last line with CRLF', () => {
    const { text } = run([`${HDRS}\r\nno newline`]);
    expect(text.endsWith('no newline\r\n')).toBe(true);
  });

  it('flags lines longer than the limit, also across chunks', () => {
    expect(
      run([`${HDRS}\r\n${'a'.repeat(50)}`, `${'a'.repeat(60)}\r\n`], 'normalize', 100).f.lineTooLong,
    ).toBe(true);
    expect(run([`${HDRS}\r\n${'a'.repeat(99)}\r\n`], 'normalize', 100).f.lineTooLong).toBe(false);
  });
});

describe('MessageFilter headers', () => {
  it('adds Message-ID and Date when missing, before the blank line', () => {
    const { f, text } = run(['Subject: hi\r\n', '\r\nbody\r\n']);
    expect(text).toBe(
      `${RECEIVED}Subject: hi\r\nMessage-ID: <generated@relay.test>\r\nDate: Wed, 25 Nov 2026 05:15:53 +0000\r\n\r\nbody\r\n`,
    );
    expect(f.messageId).toBe('<generated@relay.test>');
  });

  it('finds headers case-insensitively and folded, and keeps them', () => {
    const { text, f } = run([
      'message-id:\r\n <folded@x>\r\nDATE: Mon, 1 Jan 2029 00:00:00 +0000\r\n\r\nb\r\n',
    ]);
    expect(f.messageId).toBe('<folded@x>');
    expect(text).not.toContain('generated');
    expect(text.match(/^date:/gim)).toHaveLength(1);
  });

  it('does not take a header-like body line for a header', () => {
    const { text } = run(['Subject: x\r\n\r\nMessage-ID: <in-body@x>\r\n']);
    expect(text).toContain('Message-ID: <generated@relay.test>\r\n');
  });

  it('handles a header block split over many chunks and a message with no body', () => {
    const { text } = run(['Sub', 'ject: a\r', '\nFrom: b@c\r\n']);
    expect(text).toBe(
      `${RECEIVED}Subject: a\r\nFrom: b@c\r\nMessage-ID: <generated@relay.test>\r\nDate: Wed, 25 Nov 2026 05:15:53 +0000\r\n`,
    );
  });
});

describe('MessageFilter From: and headerless text', () => {
  const from = () => 'app@example.com';

  it('adds From: from the envelope sender when the message has none', () => {
    const { text } = run([`${HDRS}\r\nbody\r\n`], 'normalize', 1000, from);
    expect(text).toBe(`${RECEIVED}${HDRS}From: app@example.com\r\n\r\nbody\r\n`);
  });

  it('never touches a present From:, however it is spelled or folded', () => {
    for (const h of [
      'From: Boss <boss@example.org>',
      'FROM:boss@example.org',
      'from:\r\n boss@example.org',
    ]) {
      const { text } = run([`${HDRS}${h}\r\n\r\nbody\r\n`], 'normalize', 1000, from);
      expect(text).toBe(`${RECEIVED}${HDRS}${h}\r\n\r\nbody\r\n`);
    }
  });

  it('adds no From: when not asked to, or when the callback declines', () => {
    expect(run([`${HDRS}\r\nb\r\n`]).text).not.toMatch(/^From:/im);
    expect(run([`${HDRS}\r\nb\r\n`], 'normalize', 1000, () => undefined).text).not.toMatch(/^From:/im);
  });

  it('takes a first line that is no header field for the body (smtplib sendmail(..., "message"))', () => {
    const { text, f } = run(['message'], 'normalize', 1000, from);
    expect(text).toBe(
      `${RECEIVED}Message-ID: <generated@relay.test>\r\nDate: Wed, 25 Nov 2026 05:15:53 +0000\r\nFrom: app@example.com\r\n\r\nmessage\r\n`,
    );
    expect(f.messageId).toBe('<generated@relay.test>');
  });

  it('ends the header section at a non-header line in the middle, keeping everything after it', () => {
    const { text } = run(
      ['Subject: hi\r\nnot a header\r\nFrom: late@x\r\n\r\nbody\r\n'],
      'normalize',
      1000,
      from,
    );
    expect(text).toBe(
      `${RECEIVED}Subject: hi\r\nMessage-ID: <generated@relay.test>\r\nDate: Wed, 25 Nov 2026 05:15:53 +0000\r\nFrom: app@example.com\r\n\r\nnot a header\r\nFrom: late@x\r\n\r\nbody\r\n`,
    );
  });

  it('strips CR/LF from the address it adds', () => {
    const { text } = run([`${HDRS}\r\nb\r\n`], 'normalize', 1000, () => 'a@b\r\nBcc: x@y');
    expect(text).toContain('From: a@bBcc: x@y\r\n\r\nb');
  });
});

describe('MessageFilter header size', () => {
  it('flags a header section over the limit and stops buffering it', () => {
    const { f, text } = run([`Subject: x\r\n${'X-Pad: aaaaaaaaaaaaaaaaaaaa\r\n'.repeat(300)}\r\nbody\r\n`]);
    expect(f.headerTooLong).toBe(true);
    expect(text).toContain('body\r\n');
  });
  it('flags a header section over the limit that arrives in one chunk with its end', () => {
    const { f } = run([`${'X-Pad: aaaaaaaaaaaaaaaaaaaa\r\n'.repeat(300)}\r\nbody\r\n`]);
    expect(f.headerTooLong).toBe(true);
  });
  it('does not flag a header section under the limit', () => {
    expect(run([`${HDRS}\r\nbody\r\n`]).f.headerTooLong).toBe(false);
  });
});

describe('header helpers', () => {
  it('headerValue unfolds', () => {
    expect(headerValue('A: 1\r\nB: two\r\n  parts\r\n', 'b')).toBe('two parts');
    expect(headerValue('A: 1\r\n', 'b')).toBeUndefined();
  });
  it('receivedHeader has the Postfix layout', () => {
    const h = receivedHeader({
      heloName: 'client.example.com',
      clientAddress: '127.0.0.1',
      hostname: 'mail.example.com',
      protocol: 'ESMTP',
      id: 'ABC',
      recipient: 'r@example.com',
      date: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)),
    });
    expect(h).toBe(
      'Received: from client.example.com (unknown [127.0.0.1])\r\n\tby mail.example.com (email-relay) with ESMTP id ABC\r\n\tfor <r@example.com>; Fri, 2 Jan 2026 03:04:05 +0000\r\n',
    );
  });
});
