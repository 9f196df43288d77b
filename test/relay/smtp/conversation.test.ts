import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestRelay, type TestRelay } from '../../helpers/relay.ts';
import { SmtpDialog } from '../../helpers/smtp-dialog.ts';

async function waitForOutbox(dir: string, n: number, timeoutMs = 10_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.eml'));
    if (files.length >= n) return files;
    if (Date.now() > deadline) throw new Error(`outbox has ${files.length} of ${n} messages`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('the seed conversation, byte for byte', () => {
  let relay: TestRelay;
  beforeAll(async () => {
    relay = await startTestRelay();
  });
  afterAll(() => relay.dispose());

  it('answers exactly as the Postfix relay in the seed', async () => {
    const c = await SmtpDialog.open(relay.port);
    expect(await c.reply()).toEqual(['220 mail.bionicaisolutions.com ESMTP']);
    // The seed's capability list in its order and ending in "250 DSN"; PIPELINING and SMTPUTF8
    // added as Postfix does; STARTTLS only with a certificate (none here).
    expect(await c.cmd('EHLO client.example.com')).toEqual([
      '250-mail.bionicaisolutions.com',
      '250-PIPELINING',
      '250-SIZE 10240000',
      '250-VRFY',
      '250-ETRN',
      '250-ENHANCEDSTATUSCODES',
      '250-8BITMIME',
      '250-SMTPUTF8',
      '250 DSN',
    ]);
    expect(await c.cmd('MAIL FROM:<sender@bionicaisolutions.com>')).toEqual(['250 2.1.0 Ok']);
    expect(await c.cmd('RCPT TO:<recipient@example.com>')).toEqual(['250 2.1.5 Ok']);
    expect(await c.cmd('DATA')).toEqual(['354 End data with <CR><LF>.<CR><LF>']);
    c.write(
      'Subject: Test Email\r\nFrom: sender@bionicaisolutions.com\r\nTo: recipient@example.com\r\n\r\nThis is a test email.\r\n',
    );
    const queued = await c.cmd('.');
    expect(queued).toHaveLength(1);
    expect(queued[0]).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-Za-z]+$/);
    expect(await c.cmd('QUIT')).toEqual(['221 2.0.0 Bye']);
    await c.closedByServer();

    const id = queued[0]!.split(' ').pop()!;
    const files = await waitForOutbox(join(relay.dir, 'outbox'), 1);
    expect(files.some((f) => f.startsWith(id))).toBe(true);
    const eml = await readFile(join(relay.dir, 'outbox', files[0]!), 'latin1');
    expect(eml).toMatch(
      /^Received: from client\.example\.com \(unknown \[127\.0\.0\.1\]\)\r\n\tby mail\.bionicaisolutions\.com/m,
    );
    // the queue id of the 250 reply is in the trace header, as Postfix's is
    expect(eml).toContain(`(email-relay) with ESMTP id ${id}\r\n\tfor <recipient@example.com>;`);
    expect(eml).toContain('Subject: Test Email\r\n');
    expect(eml).toMatch(/\r\nMessage-ID: <[^>]+@mail\.bionicaisolutions\.com>\r\n/);
    expect(eml).toMatch(/\r\nDate: \w{3}, \d{1,2} \w{3} \d{4} /);
    expect(eml).toContain('\r\n\r\nThis is a test email.\r\n');
  });

  it('answers VRFY with 252 and reveals nothing, NOOP/RSET like Postfix, unknown commands with 500', async () => {
    const c = await SmtpDialog.open(relay.port);
    await c.reply();
    await c.cmd('EHLO client.example.com');
    expect(await c.cmd('VRFY root')).toEqual([
      '252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery',
    ]);
    expect(await c.cmd('VRFY nobody-here@example.com')).toEqual([
      '252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery',
    ]);
    expect(await c.cmd('NOOP')).toEqual(['250 2.0.0 Ok']);
    expect(await c.cmd('RSET')).toEqual(['250 2.0.0 Ok']);
    expect(await c.cmd('WIZ')).toEqual(['500 5.5.2 Error: command not recognized']);
    expect(await c.cmd('DATA')).toEqual(['554 5.5.1 Error: no valid recipients']);
    expect(await c.cmd('RCPT TO:<a@example.com>')).toEqual(['503 5.5.1 Error: need MAIL command']);
    expect(await c.cmd('ETRN example.com')).toEqual(['250 2.0.0 Queuing started']);
    expect(await c.cmd('ETRN')).toEqual(['501 5.5.4 Syntax: ETRN domain']);
    c.close();
  });

  it('pipelines a whole transaction in one write (PIPELINING)', async () => {
    const c = await SmtpDialog.open(relay.port);
    await c.reply();
    await c.cmd('EHLO pipeliner.example.com');
    c.write('MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n');
    expect(await c.reply()).toEqual(['250 2.1.0 Ok']);
    expect(await c.reply()).toEqual(['250 2.1.5 Ok']);
    expect(await c.reply()).toEqual(['250 2.1.5 Ok']);
    expect(await c.reply()).toEqual(['354 End data with <CR><LF>.<CR><LF>']);
    c.write('Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n');
    expect((await c.reply())[0]).toMatch(/^250 2\.0\.0 Ok: queued as /);
    expect(await c.reply()).toEqual(['221 2.0.0 Bye']);
  });

  it('accepts and stores DSN parameters, SMTPUTF8 and BODY', async () => {
    // An upstream that refuses connections keeps the message queued, so its envelope can be read.
    const held = await startTestRelay({ upstream: { url: 'smtp://127.0.0.1:1' } });
    const c = await SmtpDialog.open(held.port);
    await c.reply();
    await c.cmd('EHLO dsn.example.com');
    expect(
      await c.cmd('MAIL FROM:<sender@example.com> RET=HDRS ENVID=abc123 SMTPUTF8 BODY=8BITMIME'),
    ).toEqual(['250 2.1.0 Ok']);
    expect(await c.cmd('RCPT TO:<r@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;r@example.com')).toEqual([
      '250 2.1.5 Ok',
    ]);
    expect(await c.cmd('RCPT TO:<s@example.com> NOTIFY=BOGUS')).toEqual([
      '501 5.5.4 Error: NOTIFY parameter must be NEVER, SUCCESS, FAILURE, or DELAY',
    ]);
    expect(await c.cmd('DATA')).toEqual(['354 End data with <CR><LF>.<CR><LF>']);
    c.write('Subject: dsn\r\n\r\nx\r\n');
    const r = await c.cmd('.');
    const id = r[0]!.split(' ').pop()!;
    c.close();
    const msg = await held.spool.get(id);
    await held.dispose();
    expect(msg?.dsn).toEqual({ ret: 'HDRS', envid: 'abc123' });
    expect(msg?.recipients).toHaveLength(1);
    expect(msg?.recipients[0]).toMatchObject({
      address: 'r@example.com',
      notify: ['FAILURE', 'DELAY'],
      orcpt: 'rfc822;r@example.com',
    });
    expect(msg?.smtputf8).toBe(true);
    expect(msg?.bodyType).toBe('8BITMIME');
  });
});
