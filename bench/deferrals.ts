/**
 * Delivery under deferrals: the relay (in this process, durable spool) in front of a smarthost
 * that answers like Google's relay (test/helpers/google-sink.ts), not one that accepts everything.
 *
 *   npm run bench:deferrals [-- --messages 2000 --deny-seconds 30 --peak 200 --penalty-ms 5000]
 *
 * Two phases, each with a fresh relay and sink:
 *  - denied: "550 5.7.0 Mail relay denied" for --deny-seconds, then accepted. Reports what was
 *    bounced (should be nothing), the upstream transactions spent while denied, and the time from
 *    the sink accepting again to the queue being empty.
 *  - peak: "450 4.2.1 Peak SMTP relay limit exceeded" for --penalty-ms after every --peak
 *    messages. Reports delivery time, transactions, refusals, with the Google table (route backs
 *    off and resumes slowly) and with the generic one (each message retried on its own schedule).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import nodemailer from 'nodemailer';
import pino from 'pino';
import { parseConfig } from '../src/config/load.ts';
import type { RelayConfigInput } from '../src/config/schema.ts';
import { startRelay } from '../src/relay/relay.ts';
import { type GoogleSink, startGoogleSink } from '../test/helpers/google-sink.ts';

const { values: opt } = parseArgs({
  options: {
    messages: { type: 'string', default: '2000' },
    'deny-seconds': { type: 'string', default: '30' },
    peak: { type: 'string', default: '200' },
    'penalty-ms': { type: 'string', default: '5000' },
    connections: { type: 'string', default: '20' },
  },
});
const N = Number(opt.messages);
const DENY_MS = Number(opt['deny-seconds']) * 1000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function withRelay<T>(
  sink: GoogleSink,
  upstream: RelayConfigInput['upstream'],
  fn: (
    submit: (n: number) => Promise<void>,
    queued: () => number,
    bounces: () => Promise<number>,
  ) => Promise<T>,
): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-deferrals-'));
  const config = parseConfig({
    hostname: 'mail.example.com',
    listen: '127.0.0.1:0',
    spool: { dir: join(dir, 'spool'), minFreeBytes: 0 },
    upstream: { url: sink.url, maxConnections: Number(opt.connections), ...upstream },
    // "Hours" scaled to seconds: retries every 1-8 s, a lifetime far beyond the run.
    queue: { retryInitialSeconds: 1, retryMaxSeconds: 8, maxLifetimeSeconds: 3600 },
    logLevel: 'silent',
  });
  const relay = await startRelay(config, pino({ level: 'silent' }), { defaultMetrics: false });
  const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port: relay.smtp.port,
    pool: true,
    maxConnections: 10,
  });
  const submit = async (n: number) => {
    const jobs: Promise<unknown>[] = [];
    for (let i = 0; i < n; i++) {
      jobs.push(
        transport.sendMail({
          from: 'app@example.com',
          to: `user${i}@example.net`,
          subject: `bench ${i}`,
          text: 'The quick brown fox jumps over the lazy dog.\n'.repeat(40),
        }),
      );
      if (jobs.length >= 200) await Promise.all(jobs.splice(0));
    }
    await Promise.all(jobs);
  };
  const bounces = async () => (await relay.metrics.bouncesGenerated.get()).values[0]?.value ?? 0;
  try {
    return await fn(submit, () => relay.spool.stats().messages, bounces);
  } finally {
    transport.close();
    await relay.stop('bench');
    await rm(dir, { recursive: true, force: true });
  }
}

async function until(pred: () => boolean, timeoutMs = 600_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(50);
  }
}

async function denied() {
  const sink = await startGoogleSink();
  try {
    sink.mode.relayDenied = true;
    return await withRelay(
      sink,
      { replyClasses: { profile: 'google' }, hold: { initialSeconds: 2, maxSeconds: 8 } },
      async (submit, queued, bounces) => {
        const t0 = Date.now();
        await submit(N);
        const submitted = (Date.now() - t0) / 1000;
        await sleep(Math.max(0, DENY_MS - (Date.now() - t0)));
        const whileDenied = sink.transactions.length;
        sink.mode.relayDenied = false;
        const t1 = Date.now();
        await until(() => queued() === 0);
        return {
          messages: N,
          deniedSeconds: DENY_MS / 1000,
          submitSeconds: submitted,
          transactionsWhileDenied: whileDenied,
          refusals: sink.refusals.length,
          drainSeconds: (Date.now() - t1) / 1000,
          delivered: sink.messages.length,
          bounced: await bounces(),
        };
      },
    );
  } finally {
    await sink.close();
  }
}

async function peak(profile: 'google' | 'generic') {
  const sink = await startGoogleSink();
  try {
    sink.mode.peakLimit = { messages: Number(opt.peak), penaltyMs: Number(opt['penalty-ms']) };
    return await withRelay(
      sink,
      { replyClasses: { profile }, hold: { rateInitialSeconds: 2, rateMaxSeconds: 8, resumeSeconds: 5 } },
      async (submit, queued, bounces) => {
        const t0 = Date.now();
        await submit(N);
        await until(() => queued() === 0);
        return {
          profile,
          messages: N,
          seconds: (Date.now() - t0) / 1000,
          transactions: sink.transactions.length,
          refused: sink.refusals.filter((r) => /^450[ -]4\.2\.1/.test(r.reply)).length,
          connections: sink.connections.length,
          delivered: sink.messages.length,
          bounced: await bounces(),
        };
      },
    );
  } finally {
    await sink.close();
  }
}

const results = {
  denied: await denied(),
  peakBackoff: await peak('google'),
  peakPerMessage: await peak('generic'),
};
console.log(JSON.stringify(results, null, 2));
