import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestRelay, type TestRelay } from '../../helpers/relay.ts';
import { type SmtpSink, startSmtpSink } from '../../helpers/smtp-sink.ts';

/** Per-sender-domain smarthosts: each message leaves through the route of its sender's domain. */
describe('upstream routes', () => {
  let main: SmtpSink;
  let billing: SmtpSink;
  let relay: TestRelay;

  beforeAll(async () => {
    [main, billing] = await Promise.all([startSmtpSink(), startSmtpSink()]);
    relay = await startTestRelay({
      upstream: {
        url: main.url,
        routes: [
          { senderDomains: ['billing.example.com', '*.invoices.example.com'], url: billing.url },
          // A dead route must not hold back mail for the others.
          { senderDomains: ['dead.example.com'], url: 'smtp://127.0.0.1:1' },
        ],
      },
      queue: { retryInitialSeconds: 30 },
    });
  });
  afterAll(async () => {
    await relay?.dispose();
    await Promise.all([main?.dispose(), billing?.dispose()]);
  });

  it('sends each sender domain through its route, everything else through the default', async () => {
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, secure: false });
    for (const from of [
      'app@dead.example.com',
      'a@billing.example.com',
      'b@eu.invoices.example.com',
      'c@example.com',
      'd@invoices.example.com',
    ]) {
      await t.sendMail({ from, to: 'x@example.org', subject: from, text: 'x' });
    }
    t.close();
    const viaBilling = await billing.waitForMessages(2);
    const viaMain = await main.waitForMessages(2);
    expect(viaBilling.map((m) => m.from).sort()).toEqual([
      'a@billing.example.com',
      'b@eu.invoices.example.com',
    ]);
    // *.invoices.example.com is subdomains only: the bare domain takes the default route.
    expect(viaMain.map((m) => m.from).sort()).toEqual(['c@example.com', 'd@invoices.example.com']);
    // The message for the dead route waits in the queue; the others are gone.
    await expect.poll(() => relay.spool.stats().messages, { timeout: 5000 }).toBe(1);
    const [held] = relay.spool.entries();
    expect((await relay.spool.get(held!.id))?.from).toBe('app@dead.example.com');
  });
});
