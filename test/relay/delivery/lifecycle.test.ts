import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type SmtpSink, startSmtpSink } from '../../helpers/smtp-sink.ts';
import { type Harness, makeMessage, startHarness } from './harness.ts';

/** Outbox mode, start-up from a non-empty spool, retry/delete/flush, and SIGTERM (stop). */

let h: Harness | undefined;
let sink: SmtpSink | undefined;
afterEach(async () => {
  await h?.dispose();
  await sink?.dispose();
  h = undefined;
  sink = undefined;
});

describe('outbox mode (no upstream.url)', () => {
  it('writes <id>.eml with the envelope on top, logs where mail goes once, empties the spool', async () => {
    h = await startHarness({});
    const body = makeMessage({ subject: 'To the outbox' });
    const a = await h.submit({ from: 'app@example.com', to: ['a@example.net', 'b@example.net'], body });
    const b = await h.submit({ from: '', to: ['c@example.net'] });
    await h.waitEmpty();
    const dir = h.config.upstream.outboxDir;
    expect((await readdir(dir)).sort()).toEqual([`${a.id}.eml`, `${b.id}.eml`].sort());
    const eml = await readFile(join(dir, `${a.id}.eml`), 'utf8');
    expect(eml).toBe(
      `X-Envelope-From: <app@example.com>\r\nX-Envelope-To: <a@example.net>\r\nX-Envelope-To: <b@example.net>\r\n${body}`,
    );
    expect(await readFile(join(dir, `${b.id}.eml`), 'utf8')).toMatch(/^X-Envelope-From: <>\r\n/);
    const startup = h.logs.filter((l) => String(l.msg).startsWith('no upstream configured'));
    expect(startup).toHaveLength(1);
    expect(startup[0]!['outbox']).toBe(dir);
    expect(h.attempts().map((l) => l['outcome'])).toEqual(['sent', 'sent']);
    expect(await h.metric('emails_sent_total', { status: 'success' })).toBe(3);
  });
});

describe('queue control', () => {
  it('start() picks up what is already in the spool', async () => {
    h = await startHarness({}, { start: false });
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await h.submit({ to: [`u${i}@example.net`], quiet: true })).id);
    expect(h.spool.stats().messages).toBe(5);
    h.agent.start();
    await h.waitEmpty();
    expect((await readdir(h.config.upstream.outboxDir)).sort()).toEqual(ids.map((id) => `${id}.eml`).sort());
  });

  it('queue gauges follow the spool', async () => {
    h = await startHarness({ upstream: { url: 'smtp://127.0.0.1:1' } }, { start: false });
    await h.submit({ to: ['a@example.net'], quiet: true, body: makeMessage({ size: 1000 }) });
    await h.submit({ to: ['b@example.net'], quiet: true, body: makeMessage({ size: 1000 }) });
    expect(await h.metric('email_queue_size')).toBe(2);
    expect(await h.metric('email_queue_bytes')).toBeGreaterThanOrEqual(2000);
    expect(await h.metric('email_queue_oldest_message_age_seconds')).toBeGreaterThanOrEqual(0);
  });

  it('retry(id) and delete(id) on deferred messages; unknown ids answer false', async () => {
    h = await startHarness({
      upstream: { url: 'smtp://127.0.0.1:1' },
      queue: { retryInitialSeconds: 3600, retryJitter: 0 },
    });
    const a = await h.submit({ to: ['a@example.net'] });
    const b = await h.submit({ to: ['b@example.net'] });
    await h.waitFor(() => h!.attempts().length >= 2);
    expect(h.agent.retry(a.id)).toBe(true);
    await h.waitFor(
      () => h!.attempts().filter((l) => l['queueId'] === a.id).length >= 2,
      5000,
      'a second attempt',
    );
    expect(h.agent.retry('nope')).toBe(false);
    expect(await h.agent.delete(b.id)).toBe(true);
    expect(await h.spool.get(b.id)).toBeUndefined();
    expect(await h.agent.delete(b.id)).toBe(false);
    expect(await h.metric('email_deliveries_total', { outcome: 'deleted' })).toBe(1);
    expect(h.spool.stats().messages).toBe(1);
  });
});

describe('in-flight attempts', () => {
  it('delete(id) while the attempt is in flight waits for it, then removes the message', async () => {
    sink = await startSmtpSink(['-w', '1']); // 1 s before answering DATA
    h = await startHarness({ upstream: { url: sink.url } });
    const m = await h.submit({ to: ['a@example.net'] });
    await h.waitFor(() => h!.agent.inFlight() === 1);
    const deleted = await h.agent.delete(m.id);
    expect(deleted).toBe(true);
    expect(h.agent.inFlight()).toBe(0);
    expect(await h.spool.get(m.id)).toBeUndefined();
    expect(h.spool.stats().messages).toBe(0);
  });

  it('stop(deadline): no new attempts, the in-flight one is aborted at the deadline, mail stays queued', async () => {
    sink = await startSmtpSink(['-w', '5']);
    h = await startHarness({ upstream: { url: sink.url, maxConnections: 1 }, queue: { retryJitter: 0 } });
    const a = await h.submit({ to: ['a@example.net'] });
    const b = await h.submit({ to: ['b@example.net'] });
    await h.waitFor(() => h!.agent.inFlight() === 1);
    const t0 = Date.now();
    await h.agent.stop(Date.now() + 500);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(h.agent.inFlight()).toBe(0);
    const [qa, qb] = [await h.spool.get(a.id), await h.spool.get(b.id)];
    expect(qa?.recipients[0]?.status).toBe('pending');
    expect(qb?.recipients[0]?.status).toBe('pending');
    expect(qb?.attempts).toBe(0);
    expect(h.attempts().map((l) => [l['queueId'], l['outcome']])).toEqual([[a.id, 'deferred']]);
    expect(h.attempts()[0]!['reply']).toMatch(/shutting down/);
  });

  it('stop(deadline) lets an attempt finish before the deadline', async () => {
    sink = await startSmtpSink(['-w', '1']);
    h = await startHarness({ upstream: { url: sink.url } });
    await h.submit({ to: ['a@example.net'] });
    await h.waitFor(() => h!.agent.inFlight() === 1);
    await h.agent.stop(Date.now() + 10_000);
    expect(h.spool.stats().messages).toBe(0);
    expect(await sink.messages()).toHaveLength(1);
  });
});
