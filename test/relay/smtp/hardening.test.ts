import { describe, expect, it } from 'vitest';
import { greetedSession, outboxMessages, relaysPerTest, type TestRelay } from '../../helpers/relay.ts';
import { SmtpDialog } from '../../helpers/smtp-dialog.ts';

const relayWith = relaysPerTest();
const session = greetedSession;
async function outboxFiles(relay: TestRelay): Promise<string[]> {
  return [...(await outboxMessages(relay, 0, 0)).values()];
}
async function settle(relay: TestRelay, n: number): Promise<string[]> {
  return [...(await outboxMessages(relay, n)).values()];
}

/**
 * The end-of-data variants of the 2023 SMTP smuggling research: a receiver that took any of them
 * for the end of DATA would run the smuggled MAIL FROM as a second transaction.
 */
const ENDINGS: [string, string][] = [
  ['<LF>.<LF>', '\n.\n'],
  ['<LF>.<CR><LF>', '\n.\r\n'],
  ['<CR><LF>.<LF>', '\r\n.\n'],
  ['<CR>.<CR>', '\r.\r'],
  ['<CR><LF>.<CR>', '\r\n.\r'],
  ['<CR>.<LF>', '\r.\n'],
  ['<LF>.<CR>', '\n.\r'],
  ['<CR>.<CR><LF>', '\r.\r\n'],
  ['<CR><LF>\\0.<CR><LF>', '\r\n\0.\r\n'],
];

describe('SMTP smuggling: nothing smuggled, nothing relayed with a bare CR or LF', () => {
  for (const mode of ['normalize', 'reject'] as const) {
    it.each(ENDINGS)(`${mode}: %s`, async (_name, ending) => {
      const relay = await relayWith({ smtp: { bareLineEndings: mode } });
      const c = await session(relay.port);
      await c.cmd('MAIL FROM:<a@example.com>');
      await c.cmd('RCPT TO:<b@example.com>');
      await c.cmd('DATA');
      c.write(
        `Subject: outer\r\n\r\nouter body${ending}MAIL FROM:<admin@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n`,
      );
      const final = await c.cmd('.');
      expect(final).toHaveLength(1);
      // One reply to the one real end of data, and no further reply: the smuggled commands were data.
      expect(await c.cmd('NOOP')).toEqual(['250 2.0.0 Ok']);
      c.close();
      if (mode === 'reject' && /[\r\n]/.test(ending.replace(/\r\n/g, ''))) {
        expect(final[0]).toMatch(/^550 5\.5\.2 /);
        expect(relay.spool.stats().messages).toBe(0);
        expect(await outboxFiles(relay)).toHaveLength(0);
        return;
      }
      expect(final[0]).toMatch(/^250 2\.0\.0 Ok: queued as /);
      const files = await settle(relay, 1);
      expect(files).toHaveLength(1);
      const eml = files[0]!;
      expect(eml.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
      expect(eml).toContain('smuggled body'); // inside the one message, never a message of its own
      expect(eml.match(/^X-Envelope-To: /gm)).toHaveLength(1);
    });
  }
});

describe('never an open relay', () => {
  it('for random allow lists, exactly the clients inside them may relay', async () => {
    let seed = 42;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 6; round++) {
      const allow = Array.from({ length: rand(3) }, () => `127.0.0.${1 + rand(6)}/32`);
      if (rand(2)) allow.push('10.0.0.0/8', '::1/128');
      const relay = await relayWith({ access: { allow } });
      for (let host = 1; host <= 6; host++) {
        const addr = `127.0.0.${host}`;
        const c = await session(relay.port, addr);
        await c.cmd('MAIL FROM:<a@example.com>');
        const r = (await c.cmd('RCPT TO:<b@example.org>'))[0];
        if (allow.includes(`${addr}/32`)) expect(r).toBe('250 2.1.5 Ok');
        else expect(r).toBe('554 5.7.1 <b@example.org>: Relay access denied');
        c.close();
      }
      await relay.dispose();
    }
  });

  it('refuses ETRN from outside the allowed networks', async () => {
    const relay = await relayWith({ access: { allow: ['127.0.0.1/32'] } });
    const c = await session(relay.port, '127.0.0.2');
    expect(await c.cmd('ETRN example.com')).toEqual(['554 5.7.1 <example.com>: Relay access denied']);
    c.close();
  });
});

describe('protocol abuse', () => {
  it('refuses a client that talks before the greeting (pregreet)', async () => {
    const relay = await relayWith({ smtp: { greetDelaySeconds: 0.3 } });
    const c = await SmtpDialog.open(relay.port);
    c.write('EHLO eager.example.com\r\nMAIL FROM:<a@example.com>\r\n');
    expect((await c.reply())[0]).toMatch(
      /^421 4\.7\.0 mail\.bionicaisolutions\.com Error: SMTP protocol synchronization/,
    );
    await c.closedByServer();
  });

  it('greets a patient client after the delay', async () => {
    const relay = await relayWith({ smtp: { greetDelaySeconds: 0.2 } });
    const c = await SmtpDialog.open(relay.port);
    expect(await c.reply()).toEqual(['220 mail.bionicaisolutions.com ESMTP']);
    c.close();
  });

  it('limits sessions in total', async () => {
    const relay = await relayWith({ smtp: { maxClients: 2 } });
    const a = await session(relay.port);
    const b = await session(relay.port, '127.0.0.2');
    const c = await SmtpDialog.open(relay.port, '127.0.0.1', '127.0.0.3');
    expect((await c.reply())[0]).toMatch(/^421 4\.3\.2 /);
    await c.closedByServer();
    a.close();
    b.close();
  });

  it('refuses a header section over the limit with 552 and stores nothing', async () => {
    const relay = await relayWith({ smtp: { maxHeaderBytes: 2000 } });
    const c = await session(relay.port);
    await c.cmd('MAIL FROM:<a@example.com>');
    await c.cmd('RCPT TO:<b@example.com>');
    await c.cmd('DATA');
    c.write(`${'X-Filler: 0123456789012345678901234567890123456789\r\n'.repeat(100)}\r\nbody\r\n`);
    expect(await c.cmd('.')).toEqual(['552 5.3.4 Error: message header size exceeds limit']);
    c.close();
    expect(relay.spool.stats().messages).toBe(0);
  });

  it('refuses a message line over the limit with 552', async () => {
    const relay = await relayWith({ smtp: { maxLineLength: 1000 } });
    const c = await session(relay.port);
    await c.cmd('MAIL FROM:<a@example.com>');
    await c.cmd('RCPT TO:<b@example.com>');
    await c.cmd('DATA');
    c.write(`Subject: x\r\n\r\n${'y'.repeat(5000)}\r\n`);
    expect(await c.cmd('.')).toEqual(['552 5.3.4 Error: message line too long']);
    c.close();
  });

  it.each([
    ['MAIL FROM:<a b@example.com>', /^501 5\.1\.7 /],
    ['MAIL FROM:<user>', /^501 5\.1\.7 Bad sender address syntax$/],
    [
      'MAIL FROM:<user@localhost>',
      /^504 5\.5\.2 <user@localhost>: Sender address rejected: need fully-qualified address$/,
    ],
    // RFC 5321 requires the angle brackets (smtp-server is strict here; Postfix is lenient)
    ['MAIL FROM:a@example.com', /^501 5\.1\.7 /],
    ['MAIL FROM:<>', /^250 2\.1\.0 Ok$/],
    ['MAIL FROM:<a@example.com> BOGUS=1', /^555 5\.5\.4 Unsupported option: BOGUS=1$/],
    ['MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME', /^250 2\.1\.0 Ok$/],
  ])('answers %s deliberately', async (command, expected) => {
    const relay = await relayWith({});
    const c = await session(relay.port);
    expect((await c.cmd(command))[0]).toMatch(expected);
    c.close();
  });

  it.each([
    ['RCPT TO:<>', /^501 5\.1\.3 /],
    [
      'RCPT TO:<postmaster@localhost>',
      /^504 5\.5\.2 <postmaster@localhost>: Recipient address rejected: need fully-qualified address$/,
    ],
    ['RCPT TO:<b@example.com> XYZ', /^555 5\.5\.4 Unsupported option: XYZ$/],
    ['RCPT TO:<x@[127.0.0.1]>', /^250 2\.1\.5 Ok$/],
    ['RCPT TO:<"quoted.local"@example.com>', /^250 2\.1\.5 Ok$/],
    ['RCPT TO:<a@@example.com>', /^50\d /],
  ])('answers %s deliberately', async (command, expected) => {
    const relay = await relayWith({});
    const c = await session(relay.port);
    await c.cmd('MAIL FROM:<a@example.com>');
    expect((await c.cmd(command))[0]).toMatch(expected);
    c.close();
  });

  it('leaks no internal detail in any reply (no paths, stack frames or library names)', async () => {
    const relay = await relayWith({});
    const c = await session(relay.port);
    const replies: string[] = [];
    for (const cmd of [
      'HELP',
      'AUTH PLAIN AAAA',
      'XCLIENT ADDR=1.2.3.4',
      'WIZ',
      'SHELL',
      'KILL',
      'STARTTLS',
      'BDAT 10 LAST',
      'DATA',
      'GET / HTTP/1.0',
    ]) {
      replies.push(...(await c.cmd(cmd)));
      if (replies.at(-1)?.startsWith('421')) break;
    }
    c.close();
    for (const r of replies) {
      expect(r).toMatch(/^\d{3}[ -]/);
      expect(r).not.toMatch(
        /\/(work|home|usr|node_modules)\/|at \w+ \(|smtp-server|nodemailer|wizard|mortal/i,
      );
    }
  });
});
