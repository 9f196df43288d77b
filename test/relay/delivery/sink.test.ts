import { afterEach, describe, expect, it } from 'vitest';
import type { RelayConfigInput } from '../../../src/config/schema.ts';
import { QUIET_LOCAL } from '../../../src/relay/delivery/placement.ts';
import { type SmtpSink, startSmtpSink } from '../../helpers/smtp-sink.ts';
import { type Harness, makeMessage, startHarness } from './harness.ts';

/** Delivery to Postfix's smtp-sink: a real, fast SMTP server that dumps what it receives. */

const fast = { retryInitialSeconds: 0.2, retryMaxSeconds: 0.5, retryJitter: 0 };

describe('delivery to smtp-sink', () => {
  let sink: SmtpSink | undefined;
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.dispose();
    await sink?.dispose();
    h = undefined;
    sink = undefined;
  });

  async function setup(sinkArgs: string[] = [], input: RelayConfigInput = {}) {
    sink = await startSmtpSink(sinkArgs);
    h = await startHarness({
      ...input,
      upstream: { url: sink.url, ...input.upstream },
      queue: { ...fast, ...input.queue },
    });
    return { sink, h };
  }

  it('delivers a message: envelope, EHLO name and body arrive intact, the queue empties', async () => {
    const { sink, h } = await setup();
    const body = makeMessage({ subject: 'Hello sink', size: 2000 }).replace(
      '0123456789',
      '.0123456789\r\n.leading',
    );
    await h.submit({ from: 'app@example.com', to: ['a@example.net', 'b@example.net'], body });
    const [m] = await sink.waitForMessages(1);
    await h.waitEmpty();
    expect(m!.helo).toBe('mail.example.com');
    expect(m!.from).toBe('app@example.com');
    expect(m!.to).toEqual(['a@example.net', 'b@example.net']);
    expect(m!.data).toBe(body.replace(/\r\n/g, '\n'));
    expect(await h.metric('emails_sent_total', { status: 'success' })).toBe(2);
    expect(await h.metric('email_deliveries_total', { outcome: 'sent' })).toBe(1);
    expect(await h.metric('email_upstream_replies_total', { class: '2xx' })).toBe(1);
    expect(await h.histogramCount('email_send_duration_seconds')).toBe(1);
    const [line] = h.attempts();
    expect(line).toMatchObject({
      outcome: 'sent',
      from: 'app@example.com',
      to: ['a@example.net', 'b@example.net'],
      client: '10.0.0.5',
      attempt: 1,
      messageId: '<test@example.com>',
    });
    expect(line!['reply']).toMatch(/^250 /);
    expect(typeof line!['delay']).toBe('number');
    expect(typeof line!['size']).toBe('number');
  });

  it('logs namespace and pod of the client when known', async () => {
    const { sink, h } = await setup();
    await h.submit({
      to: ['a@example.net'],
      client: { address: '10.1.2.3', namespace: 'shop', pod: 'shop-7d9' },
    });
    await sink.waitForMessages(1);
    await h.waitEmpty();
    expect(h.attempts()[0]).toMatchObject({ client: '10.1.2.3', namespace: 'shop', pod: 'shop-7d9' });
  });

  it('reuses upstream connections: 200 messages over at most maxConnections sessions', async () => {
    const maxConnections = 4;
    const { sink, h } = await setup([], { upstream: { maxConnections } });
    for (let i = 0; i < 200; i++) await h.submit({ to: [`u${i}@example.net`] });
    await sink.waitForMessages(200, 30_000);
    await h.waitEmpty();
    await h.agent.stop(Date.now() + 2000); // QUIT the pooled sessions so smtp-sink counts them
    await h.waitFor(() => sink!.sessions() > 0, 5000, 'session counters');
    // With quiet sessions on the main thread (QUIET_LOCAL, placement.ts) the burst moves new ones
    // into the delivery thread: each main-thread session is closed when released and dialed again
    // there, once. Without reuse this would be 200.
    expect(sink.sessions()).toBeLessThanOrEqual(QUIET_LOCAL ? 2 * maxConnections : maxConnections);
  });

  it('splits more than maxRecipientsPerTransaction recipients into several transactions', async () => {
    const { sink, h } = await setup();
    const to = Array.from({ length: 250 }, (_, i) => `r${i}@example.net`);
    await h.submit({ to });
    const msgs = await sink.waitForMessages(3);
    await h.waitEmpty();
    expect(msgs.map((m) => m.to.length).sort((a, b) => b - a)).toEqual([100, 100, 50]);
    expect(msgs.flatMap((m) => m.to).sort()).toEqual([...to].sort());
    expect(await h.metric('emails_sent_total', { status: 'success' })).toBe(250);
    expect(await h.metric('email_deliveries_total', { outcome: 'sent' })).toBe(1);
  });

  it('4xx on RCPT: deferred, then retried with backoff and delivered once the sink accepts', async () => {
    const { sink, h } = await setup(['-r', 'RCPT']);
    const msg = await h.submit({ to: ['later@example.net'] });
    await h.waitFor(() => h!.attempts().some((l) => l['outcome'] === 'deferred'), 10_000, 'a deferral');
    const deferred = h.attempts().find((l) => l['outcome'] === 'deferred')!;
    expect(deferred['reply']).toMatch(/^450 4\.3\.0/);
    // The attempt's log line comes before its outcome is written to the spool.
    await h.waitFor(async () => (await h!.spool.get(msg.id))?.attempts === 1, 10_000, 'the deferral stored');
    const queued = await h.spool.get(msg.id);
    expect(queued?.recipients[0]).toMatchObject({
      status: 'pending',
      lastReply: expect.stringMatching(/^450/),
    });
    expect(queued?.attempts).toBeGreaterThanOrEqual(1);
    await sink.restart([]);
    await sink.waitForMessages(1, 10_000);
    await h.waitEmpty();
    expect(await h.metric('emails_sent_total', { status: 'deferred' })).toBeGreaterThanOrEqual(1);
    expect(await h.metric('email_upstream_replies_total', { class: '4xx' })).toBeGreaterThanOrEqual(1);
    const sent = h.attempts().find((l) => l['outcome'] === 'sent')!;
    expect(sent['attempt']).toBeGreaterThanOrEqual(2);
  });

  it('a connection dropped after DATA is a deferral, retried on a new connection', async () => {
    const { sink, h } = await setup(['-q', 'DATA']);
    await h.submit({ to: ['a@example.net'] });
    await h.waitFor(() => h!.attempts().some((l) => l['outcome'] === 'deferred'), 10_000, 'a deferral');
    expect(await h.metric('email_upstream_replies_total', { class: 'network' })).toBeGreaterThanOrEqual(1);
    await sink.restart([]);
    await sink.waitForMessages(1, 10_000);
    await h.waitEmpty();
  });

  it('421 (service shutting down) after MAIL defers', async () => {
    const { sink, h } = await setup(['-Q', 'MAIL']);
    await h.submit({ to: ['a@example.net'] });
    await h.waitFor(() => h!.attempts().some((l) => l['outcome'] === 'deferred'), 10_000, 'a deferral');
    expect(h.attempts()[0]!['reply']).toMatch(/^421/);
    await sink.restart([]);
    await sink.waitForMessages(1, 10_000);
    await h.waitEmpty();
  });

  it('5xx on RCPT bounces at once; the DSN to the sender is refused too and dropped, not bounced', async () => {
    const { sink, h } = await setup(['-f', 'RCPT']);
    await h.submit({ from: 'app@example.com', to: ['gone@example.net'] });
    await h.waitFor(
      () => h!.logs.some((l) => l.msg === 'undeliverable notification dropped (a bounce is never bounced)'),
      10_000,
      'the dropped bounce',
    );
    await h.waitEmpty();
    const lines = h.attempts();
    expect(lines.map((l) => [l['outcome'], l['from'], l['to']])).toEqual([
      ['bounced', 'app@example.com', ['gone@example.net']],
      ['bounced', '', ['app@example.com']],
    ]);
    expect(lines[1]!['bounce']).toBe(true);
    expect(await h.metric('email_bounces_generated_total')).toBe(1);
    expect(await h.metric('email_deliveries_total', { outcome: 'bounced' })).toBe(2);
    expect(await h.metric('email_upstream_replies_total', { class: '5xx' })).toBe(2);
    expect(await sink.messages()).toEqual([]);
  });

  it('passes DSN parameters upstream (RET, ENVID, NOTIFY, ORCPT), one NOTIFY set per transaction', async () => {
    const { sink, h } = await setup();
    await h.submit({
      to: [
        { address: 'a@example.net', notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;a@example.net' },
        { address: 'b@example.net', notify: ['NEVER'] },
        { address: 'c@example.net', notify: ['SUCCESS', 'FAILURE'] },
        { address: 'd@example.net', orcpt: 'rfc822;alias@example.org' },
      ],
      dsn: { ret: 'HDRS', envid: 'ENV123' },
    });
    const msgs = await sink.waitForMessages(3);
    await h.waitEmpty();
    for (const m of msgs) expect(m.mailArgs).toMatch(/RET=HDRS ENVID=ENV123/);
    const byRcpt = Object.fromEntries(msgs.flatMap((m) => m.rcptArgs.map((a) => [a.split(' ')[0], a])));
    expect(byRcpt['<a@example.net>']).toBe('<a@example.net> NOTIFY=SUCCESS,FAILURE');
    expect(byRcpt['<c@example.net>']).toBe('<c@example.net> NOTIFY=SUCCESS,FAILURE');
    expect(byRcpt['<b@example.net>']).toBe('<b@example.net> NOTIFY=NEVER');
    expect(byRcpt['<d@example.net>']).toBe('<d@example.net> ORCPT=rfc822;alias@example.org');
    expect(msgs.map((m) => m.to.length).sort()).toEqual([1, 1, 2]);
    // the upstream took NOTIFY=SUCCESS: it reports delivery, we do not
    expect(await h.metric('email_bounces_generated_total')).toBe(0);
  });

  it('NOTIFY=SUCCESS through an upstream without DSN: we send a "relayed" notice', async () => {
    const { sink, h } = await setup(['-N']);
    await h.submit({ from: 'app@example.com', to: [{ address: 'a@example.net', notify: ['SUCCESS'] }] });
    const msgs = await sink.waitForMessages(2);
    await h.waitEmpty();
    expect(msgs.every((m) => !/NOTIFY/.test(m.rcptArgs.join(' ')))).toBe(true);
    const notice = msgs.find((m) => m.from === '')!;
    expect(notice.to).toEqual(['app@example.com']);
    expect(notice.data).toMatch(/^Action: relayed$/m);
    expect(notice.data).toMatch(/^Subject: Successful Mail Delivery Report$/m);
  });

  it('smtp+starttls:// to a server without STARTTLS defers instead of sending in clear', async () => {
    sink = await startSmtpSink();
    h = await startHarness({ upstream: { url: `smtp+starttls://127.0.0.1:${sink.port}` }, queue: fast });
    await h.submit({ to: ['a@example.net'] });
    await h.waitFor(() => h!.attempts().length > 0, 10_000, 'an attempt');
    expect(h.attempts()[0]).toMatchObject({ outcome: 'deferred' });
    expect(await sink.messages()).toEqual([]);
  });
});
