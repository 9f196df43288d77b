import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLoad, SMTP_SOURCE, smtpSource } from '../../bench/load.ts';
import { POSTFIX, startPostfix } from '../../bench/postfix.ts';
import { MemSampler, treeCpu } from '../../bench/proc.ts';
import { buildRelay, startRelay } from '../../bench/relay.ts';
import { Sink, SMTP_SINK } from '../../bench/sink.ts';
import { cleanupAll } from '../../bench/util.ts';

/**
 * The benchmark harness (bench/, `npm run bench`) in miniature: a few hundred messages through a
 * private Postfix instance and through the relay, each to its own smtp-sink, driven by
 * smtp-source and by the latency client. It checks the harness works, not how fast anything is.
 * Postfix needs root here (mail_owner, setgid_group), as `npm test` and CI run; a missing tool or
 * a non-root run fails with a clear message rather than skipping.
 */

const N = 300;
const LATENCY_N = 50;
const canRun = process.getuid?.() === 0 && !!POSTFIX && !!SMTP_SINK && !!SMTP_SOURCE;

describe('bench smoke', () => {
  beforeAll(() => {
    if (!canRun)
      throw new Error(
        'bench smoke needs root plus postfix, smtp-sink and smtp-source (apt-get install postfix)',
      );
  });
  afterAll(cleanupAll);

  const pass = async (port: number, pid: number, sink: Sink) => {
    const cpu0 = treeCpu(pid);
    const mem = new MemSampler(() => pid, 100);
    const { seconds } = await smtpSource({ port, sessions: 10, messages: N, size: 2048, timeoutMs: 20_000 });
    await sink.waitFor(N, 20_000);
    const cpu = treeCpu(pid) - cpu0;
    const { peakRss } = mem.stop();
    const load = await runLoad({
      port,
      sessions: 5,
      messages: LATENCY_N,
      size: 2048,
      rate: 200,
      timeoutMs: 10_000,
    });
    await sink.waitFor(N + LATENCY_N, 10_000);
    expect(seconds).toBeGreaterThan(0);
    expect(cpu).toBeGreaterThan(0);
    expect(peakRss).toBeGreaterThan(1024 * 1024);
    expect(load.failed).toBe(0);
    expect(load.sent).toBe(LATENCY_N);
    expect(load.latency.p50).toBeGreaterThan(0);
    expect(load.latency.p99).toBeGreaterThanOrEqual(load.latency.p50);
  };

  it('relays through Postfix (its own instance, fsync on) to smtp-sink', async () => {
    const sink = await Sink.start();
    const postfix = await startPostfix(sink.port);
    try {
      await pass(postfix.port, postfix.pid, sink);
    } finally {
      await postfix.stop();
      await sink.stop();
    }
  });

  it('relays through email-relay (durable spool) to smtp-sink', async () => {
    const sink = await Sink.start();
    const relay = await startRelay(await buildRelay('tsx'), { upstream: sink.url });
    try {
      await pass(relay.port, relay.pid, sink);
      expect(sink.messages).toBe(N + LATENCY_N);
    } finally {
      await relay.stop();
      await sink.stop();
    }
  });
});
