import { describe, expect, it } from 'vitest';
import { greetedSession, outboxMessages, relaysPerTest, type TestRelay } from '../../helpers/relay.ts';
import { SmtpDialog } from '../../helpers/smtp-dialog.ts';

const relayWith = relaysPerTest();
const session = greetedSession;
async function outbox(relay: TestRelay, n: number): Promise<string[]> {
  return [...(await outboxMessages(relay, n)).values()];
}

describe('who may relay', () => {
  it('refuses a client outside the allowed networks with Postfix reply 554 5.7.1, and queues nothing', async () => {
    const relay = await relayWith({ access: { allow: ['127.0.0.1/32'] } });
    const c = await session(relay.port, '127.0.0.2');
    expect(await c.cmd('MAIL FROM:<a@example.com>')).toEqual(['250 2.1.0 Ok']);
    expect(await c.cmd('RCPT TO:<victim@example.com>')).toEqual([
      '554 5.7.1 <victim@example.com>: Relay access denied',
    ]);
    expect(await c.cmd('DATA')).toEqual(['554 5.5.1 Error: no valid recipients']);
    c.close();
    expect(relay.spool.stats().messages).toBe(0);
    const metrics = await relay.metrics.registry.metrics();
    expect(metrics).toMatch(/smtp_rejections_total\{reason="relay_denied"\} 1/);
  });

  it('admits a client inside the allowed networks', async () => {
    const relay = await relayWith({ access: { allow: ['127.0.0.2/32'] } });
    const c = await session(relay.port, '127.0.0.2');
    await c.cmd('MAIL FROM:<a@example.com>');
    expect(await c.cmd('RCPT TO:<b@example.com>')).toEqual(['250 2.1.5 Ok']);
    c.close();
  });

  it('with an empty allow list nobody may relay (never an open relay)', async () => {
    const relay = await relayWith({ access: { allow: [] } });
    const c = await session(relay.port);
    await c.cmd('MAIL FROM:<a@example.com>');
    expect((await c.cmd('RCPT TO:<b@example.com>'))[0]).toMatch(/^554 5\.7\.1 /);
    c.close();
  });
});

describe('size, recipients, storage', () => {
  it('refuses SIZE= over the limit at MAIL FROM', async () => {
    const relay = await relayWith({ smtp: { maxMessageSize: 1000 } });
    const c = await session(relay.port);
    expect(await c.cmd('MAIL FROM:<a@example.com> SIZE=5000')).toEqual([
      '552 5.3.4 Message size exceeds fixed limit',
    ]);
    c.close();
  });

  it('refuses an oversized message by its real DATA size (no SIZE=), stores nothing, and the session goes on', async () => {
    const relay = await relayWith({ smtp: { maxMessageSize: 1000 } });
    const c = await session(relay.port);
    await c.cmd('MAIL FROM:<a@example.com>');
    await c.cmd('RCPT TO:<b@example.com>');
    await c.cmd('DATA');
    c.write(`Subject: big\r\n\r\n${'x'.repeat(70)}\r\n`.repeat(100));
    expect(await c.cmd('.')).toEqual(['552 5.3.4 Message size exceeds fixed limit']);
    expect(relay.spool.stats().messages).toBe(0);
    expect(await c.cmd('MAIL FROM:<a@example.com>')).toEqual(['250 2.1.0 Ok']);
    c.close();
  });

  it('limits recipients per message', async () => {
    const relay = await relayWith({ smtp: { maxRecipients: 2 } });
    const c = await session(relay.port);
    await c.cmd('MAIL FROM:<a@example.com>');
    expect(await c.cmd('RCPT TO:<b1@example.com>')).toEqual(['250 2.1.5 Ok']);
    expect(await c.cmd('RCPT TO:<b2@example.com>')).toEqual(['250 2.1.5 Ok']);
    expect(await c.cmd('RCPT TO:<b3@example.com>')).toEqual(['452 4.5.3 Error: too many recipients']);
    c.close();
  });

  it('answers 452 4.3.1 when the spool filesystem is short of space', async () => {
    const relay = await relayWith({ spool: { minFreeBytes: Number.MAX_SAFE_INTEGER } });
    const c = await session(relay.port);
    expect(await c.cmd('MAIL FROM:<a@example.com>')).toEqual(['452 4.3.1 Insufficient system storage']);
    c.close();
  });
});

describe('bare line endings (SMTP smuggling)', () => {
  const smuggle =
    'Subject: s\r\n\r\nhello\n.\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<x@example.com>\r\nbare\rcr\r\n';

  it('normalizes bare LF and CR to CRLF and relays one message only', async () => {
    const relay = await relayWith({});
    const c = await session(relay.port);
    await c.cmd('MAIL FROM:<a@example.com>');
    await c.cmd('RCPT TO:<b@example.com>');
    await c.cmd('DATA');
    c.write(smuggle);
    expect((await c.cmd('.'))[0]).toMatch(/^250 2\.0\.0 Ok: queued as /);
    c.close();
    const [eml] = await outbox(relay, 1);
    expect(eml!.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
    expect(eml).toContain('hello\r\n.\r\nMAIL FROM:<evil@example.com>\r\n');
    expect(relay.spool.stats().messages).toBe(0);
  });

  it('in reject mode refuses the message with 550 5.5.2', async () => {
    const relay = await relayWith({ smtp: { bareLineEndings: 'reject' } });
    const c = await session(relay.port);
    await c.cmd('MAIL FROM:<a@example.com>');
    await c.cmd('RCPT TO:<b@example.com>');
    await c.cmd('DATA');
    c.write(smuggle);
    expect((await c.cmd('.'))[0]).toMatch(/^550 5\.5\.2 /);
    c.close();
    expect(relay.spool.stats().messages).toBe(0);
  });
});

describe('connections and timeouts', () => {
  it('limits connections per client address with 421', async () => {
    const relay = await relayWith({ smtp: { maxClientsPerAddress: 2 } });
    const a = await session(relay.port);
    const b = await session(relay.port);
    const c = await SmtpDialog.open(relay.port);
    expect((await c.reply())[0]).toMatch(
      /^421 4\.7\.0 mail\.bionicaisolutions\.com Error: too many connections/,
    );
    await c.closedByServer();
    a.close();
    b.close();
  });

  it('closes an idle session with 421 4.4.2', async () => {
    const relay = await relayWith({ smtp: { idleTimeoutSeconds: 0.3 } });
    const c = await session(relay.port);
    expect(await c.reply(5000)).toEqual(['421 4.4.2 Error: timeout exceeded']);
    await c.closedByServer();
  });

  it('bounds the whole DATA phase: a client trickling bytes gets 421 4.4.2 and nothing is queued', async () => {
    const relay = await relayWith({ smtp: { dataTimeoutSeconds: 0.5, idleTimeoutSeconds: 10 } });
    const c = await session(relay.port);
    await c.cmd('MAIL FROM:<a@example.com>');
    await c.cmd('RCPT TO:<b@example.com>');
    await c.cmd('DATA');
    const trickle = setInterval(() => c.write('x'), 100);
    try {
      expect(await c.reply(5000)).toEqual(['421 4.4.2 Error: timeout exceeded']);
      await c.closedByServer();
    } finally {
      clearInterval(trickle);
    }
    expect(relay.spool.stats().messages).toBe(0);
  });

  it('a client that vanishes mid-DATA leaves nothing queued and the relay keeps working', async () => {
    const relay = await relayWith({ upstream: { url: 'smtp://127.0.0.1:1' } });
    const c = await session(relay.port);
    await c.cmd('MAIL FROM:<a@example.com>');
    await c.cmd('RCPT TO:<b@example.com>');
    await c.cmd('DATA');
    c.write('Subject: half\r\n\r\nonly half of it');
    await new Promise((r) => setTimeout(r, 100));
    c.close();
    await new Promise((r) => setTimeout(r, 200));
    expect(relay.spool.stats().messages).toBe(0);
    const d = await session(relay.port);
    await d.cmd('MAIL FROM:<a@example.com>');
    await d.cmd('RCPT TO:<b@example.com>');
    await d.cmd('DATA');
    d.write('Subject: whole\r\n\r\nall of it\r\n');
    expect((await d.cmd('.'))[0]).toMatch(/^250 /);
    d.close();
    expect(relay.spool.stats().messages).toBe(1);
    // Nothing is left in flight: a drain finishes at once.
    const t0 = Date.now();
    await relay.stop('test');
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('refuses an over-long command line', async () => {
    const relay = await relayWith({ smtp: { maxCommandLength: 512 } });
    const c = await session(relay.port);
    const r = await c.cmd(`MAIL FROM:<${'a'.repeat(600)}@example.com>`);
    expect(r[0]).toMatch(/^(421|500) /);
    c.close();
  });
});

describe('draining on SIGTERM', () => {
  it('finishes a transaction in flight, then refuses new sessions with 421 4.3.2', async () => {
    const relay = await relayWith({ upstream: { url: 'smtp://127.0.0.1:1' } });
    const busy = await session(relay.port);
    const idle = await session(relay.port);
    await busy.cmd('MAIL FROM:<a@example.com>');
    await busy.cmd('RCPT TO:<b@example.com>');
    await busy.cmd('DATA');
    busy.write('Subject: in flight\r\n\r\nhalf');
    const stopping = relay.stop('test');
    expect(await idle.reply()).toEqual(['421 4.3.2 Service shutting down']);
    const late = await SmtpDialog.open(relay.port);
    expect(await late.reply()).toEqual(['421 4.3.2 Service shutting down']);
    busy.write(' done\r\n.\r\n');
    expect((await busy.reply())[0]).toMatch(/^250 2\.0\.0 Ok: queued as /);
    expect(await busy.reply()).toEqual(['421 4.3.2 Service shutting down']);
    await stopping;
  });
});
