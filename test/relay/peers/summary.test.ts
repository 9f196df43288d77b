import { describe, expect, it } from 'vitest';
import type { RelaySummary } from '../../../src/relay/summary.ts';
import { relaysPerTest, type TestRelay } from '../../helpers/relay.ts';
import { SmtpDialog } from '../../helpers/smtp-dialog.ts';
import { startSmtpSink } from '../../helpers/smtp-sink.ts';

/** GET /summary: what the operator gathers into the EmailRelay's status, from a real relay. */

const startRelay = relaysPerTest();

async function send(relay: TestRelay, to: string): Promise<void> {
  const c = await SmtpDialog.open(relay.port);
  await c.reply();
  await c.cmd('EHLO app.example.com');
  await c.cmd('MAIL FROM:<app@example.com>');
  await c.cmd(`RCPT TO:<${to}>`);
  await c.cmd('DATA');
  expect((await c.cmd('From: app@example.com\r\nSubject: s\r\n\r\nx\r\n.'))[0]).toMatch(/^250 /);
  await c.cmd('QUIT');
}

async function summary(relay: TestRelay): Promise<RelaySummary> {
  const res = await fetch(`http://127.0.0.1:${relay.http!.port}/summary`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('application/json');
  return (await res.json()) as RelaySummary;
}

async function until(relay: TestRelay, pred: (s: RelaySummary) => boolean): Promise<RelaySummary> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const s = await summary(relay);
    if (pred(s)) return s;
    if (Date.now() > deadline) throw new Error(`summary never matched: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('/summary', () => {
  it('reports the queue, deferred mail and the oldest message while the upstream is down, then the deliveries of the last hour', async () => {
    const sink = await startSmtpSink();
    try {
      await sink.stop();
      const relay = await startRelay({
        http: '127.0.0.1:0',
        upstream: { url: sink.url, connectTimeoutSeconds: 2 },
        queue: { retryInitialSeconds: 3600, retryMaxSeconds: 3600 },
      });
      const empty = await summary(relay);
      expect(empty.queue).toEqual({ messages: 0, bytes: 0, deferred: 0, oldestAgeSeconds: 0 });
      // The preflight at start found it down already.
      await until(relay, (s) => s.upstreams[0]?.health.preflight !== undefined);
      expect((await summary(relay)).upstreams).toMatchObject([
        { name: sink.url.slice('smtp://'.length), healthy: false, health: { preflight: { ok: false } } },
      ]);
      const t0 = Date.now();
      await send(relay, 'a@example.net');
      await send(relay, 'b@example.net');
      const down = await until(relay, (s) => s.queue.deferred === 2);
      expect(down.queue.messages).toBe(2);
      expect(Date.parse(down.queue.oldestReceivedAt!)).toBeGreaterThanOrEqual(t0 - 1000);
      expect(down.upstreams[0]).toMatchObject({
        state: 'open',
        healthy: false,
        health: { state: 'unreachable' },
      });
      expect(down.upstreams[0]!.lastRefusal!.reply).toMatch(/ECONNREFUSED|connect/i);
      expect(down.accepting).toBe(true);

      await sink.restart();
      relay.delivery.flush();
      const up = await until(relay, (s) => s.queue.messages === 0 && s.lastHour.delivered === 2);
      expect(up.lastHour).toEqual({ delivered: 2, bounced: 0 });
      expect(up.upstreams[0]).toMatchObject({ state: 'closed', healthy: true });
      expect(up.queue.oldestReceivedAt).toBeUndefined();
    } finally {
      await sink.dispose();
    }
  });

  it("carries the upstream's own refusal of the relay (MAIL FROM refused) and counts the bounce", async () => {
    const sink = await startSmtpSink(['-f', 'mail']);
    try {
      const relay = await startRelay({ http: '127.0.0.1:0', upstream: { url: sink.url } });
      await send(relay, 'c@example.net');
      // The message bounces, and so does its DSN to app@example.com (the sink refuses every MAIL).
      const s = await until(relay, (x) => x.lastHour.bounced === 2 && x.queue.messages === 0);
      expect(s.upstreams[0]!.healthy).toBe(false);
      expect(s.upstreams[0]!.lastRefusal!.reply).toMatch(/^5\d\d /);
      expect(Date.parse(s.upstreams[0]!.lastRefusal!.at)).toBeGreaterThan(0);
    } finally {
      await sink.dispose();
    }
  });
});
