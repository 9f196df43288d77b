import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { configSchema, type RelayConfig, type RelayConfigInput } from '../../../src/config/schema.ts';
import { createDeliveryAgent } from '../../../src/relay/delivery/index.ts';
import type { DeliveryAgent } from '../../../src/relay/delivery/types.ts';
import { createRelayMetrics, type RelayMetrics } from '../../../src/relay/metrics.ts';
import { openSpool } from '../../../src/relay/spool/index.ts';
import type { NewMessage, QueuedMessage, RecipientInput, Spool } from '../../../src/relay/spool/types.ts';

/**
 * A real spool in a temporary directory and a delivery agent over it, with logs captured as
 * objects: what the relay runs, minus the SMTP front end (tests put messages in the spool the way
 * the front end does: begin, write, commit, enqueue).
 */

export type LogLine = Record<string, unknown> & { msg?: string; level: number };

export interface Harness {
  dir: string;
  config: RelayConfig;
  spool: Spool;
  agent: DeliveryAgent;
  metrics: RelayMetrics;
  logs: LogLine[];
  submit(m: Submission): Promise<QueuedMessage>;
  /** Polls `pred` every 20 ms until true. */
  waitFor(pred: () => boolean | Promise<boolean>, timeoutMs?: number, what?: string): Promise<void>;
  waitEmpty(timeoutMs?: number): Promise<void>;
  /** Current value of a metric sample, 0 when absent. */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  /** Observations in a histogram. */
  histogramCount(name: string): Promise<number>;
  /** Attempt log lines (one per transaction and outcome). */
  attempts(): LogLine[];
  dispose(): Promise<void>;
}

export interface Submission {
  from?: string;
  to: (string | RecipientInput)[];
  body?: string;
  subject?: string;
  dsn?: NewMessage['dsn'];
  client?: NewMessage['client'];
  isBounce?: boolean;
  /** Commit without telling the agent (e.g. before start()). */
  quiet?: boolean;
}

/** A plausible message of about `size` bytes, CRLF line ends, like the SMTP front end stores. */
export function makeMessage(
  opts: { subject?: string; from?: string; to?: string; size?: number } = {},
): string {
  const head =
    `Received: from app.example.com (app [10.0.0.5])\r\n\tby mail.example.com with ESMTP\r\n` +
    `From: ${opts.from ?? 'app@example.com'}\r\nTo: ${opts.to ?? 'user@example.net'}\r\n` +
    `Subject: ${opts.subject ?? 'Test'}\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@example.com>\r\n` +
    `Date: Wed, 25 Nov 2026 05:20:50 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n`;
  const line = 'The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\r\n';
  let body = '';
  while (head.length + body.length < (opts.size ?? 600)) body += line;
  return head + body;
}

export async function startHarness(
  input: RelayConfigInput = {},
  opts: { start?: boolean } = {},
): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), 'delivery-test-'));
  const config = configSchema.parse({
    hostname: 'mail.example.com',
    ...input,
    spool: { dir: join(dir, 'spool'), fsync: false, ...input.spool },
    upstream: {
      outboxDir: join(dir, 'outbox'),
      connectTimeoutSeconds: 5,
      greetingTimeoutSeconds: 5,
      socketTimeoutSeconds: 10,
      // Tests count the peer's connections and logins; the preflight has tests of its own.
      preflight: false,
      ...input.upstream,
    },
  });
  const logs: LogLine[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as LogLine);
      cb();
    },
  });
  const logger = pino({ level: 'debug', base: undefined }, sink);
  const spool = await openSpool({
    dir: config.spool.dir,
    fsync: config.spool.fsync,
    minFreeBytes: 0,
    logger,
  });
  const metrics = createRelayMetrics();
  const agent = createDeliveryAgent({ config, spool, metrics, logger });
  if (opts.start !== false) agent.start();

  const waitFor: Harness['waitFor'] = async (pred, timeoutMs = 15_000, what = 'condition') => {
    const deadline = Date.now() + timeoutMs;
    while (!(await pred())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  let disposed = false;
  return {
    dir,
    config,
    spool,
    agent,
    metrics,
    logs,
    async submit(m) {
      const w = await spool.begin();
      await w.write(Buffer.from(m.body ?? makeMessage({ subject: m.subject ?? 'Test' })));
      const msg = await w.commit({
        from: m.from ?? 'app@example.com',
        recipients: m.to.map((r) => (typeof r === 'string' ? { address: r } : r)),
        client: m.client ?? { address: '10.0.0.5' },
        messageId: '<test@example.com>',
        ...(m.dsn ? { dsn: m.dsn } : {}),
        ...(m.isBounce ? { isBounce: true } : {}),
      });
      if (!m.quiet)
        agent.enqueue({
          id: msg.id,
          size: msg.size,
          receivedAt: msg.receivedAt,
          nextAttemptAt: msg.nextAttemptAt,
        });
      return msg;
    },
    waitFor,
    // Empty and idle: the spool index drops a message before its removal is durable, and the
    // attempt's bookkeeping (metrics, logs) finishes after that.
    waitEmpty: (timeoutMs) =>
      waitFor(
        () => spool.stats().messages === 0 && agent.inFlight() === 0,
        timeoutMs,
        'an empty, idle queue',
      ),
    async metric(name, labels = {}) {
      const m = await metrics.registry.getSingleMetric(name)?.get();
      const v = m?.values.find((s) =>
        Object.entries(labels).every(([k, val]) => String(s.labels[k]) === val),
      );
      return v?.value ?? 0;
    },
    async histogramCount(name) {
      const m = await metrics.registry.getSingleMetric(name)?.get();
      return m?.values.find((s) => (s as { metricName?: string }).metricName === `${name}_count`)?.value ?? 0;
    },
    attempts: () => logs.filter((l) => typeof l['outcome'] === 'string' && typeof l['attempt'] === 'number'),
    async dispose() {
      if (disposed) return;
      disposed = true;
      await agent.stop(Date.now() + 2000);
      await spool.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
