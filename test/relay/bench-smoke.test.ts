import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLoad, SMTP_SOURCE, smtpSource } from '../../bench/load.ts';
import { POSTFIX, startPostfix } from '../../bench/postfix.ts';
import { MemSampler, treeCpu } from '../../bench/proc.ts';
import { buildRelay, startRelay } from '../../bench/relay.ts';
import { Sink, SMTP_SINK } from '../../bench/sink.ts';
import { spread } from '../../bench/spread.ts';
import { cleanupAll, run } from '../../bench/util.ts';

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

  it('judges a cell over alternated pairs and reports the spread (npm run bench in miniature)', async () => {
    const out = await mkdtemp(join(tmpdir(), 'bench-smoke-'));
    try {
      const args = ['--import', 'tsx', 'bench/run.ts', '--relay-entry', 'tsx', '--sizes', '2048'];
      args.push('--sessions', '2', '--pairs', '3', '--messages', '0.02', '--latency-seconds', '1');
      args.push('--scale-messages', '0', '--idle-connections', '0', '--operator-relays', '0');
      args.push('--instructions-messages', '0', '--warm-messages', '40', '--out', out);
      const r = await run(process.execPath, args, 170_000);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/\| +e2e R\/P \|/);
      const result = JSON.parse(await readFile(join(out, 'latest.json'), 'utf8'));
      const [cell] = result.cells;
      expect(cell.error).toBeUndefined();
      expect(cell.throughput).toHaveLength(3);
      expect(cell.latency).toHaveLength(3);
      // alternated: who goes first changes from pair to pair
      expect(cell.throughput.map((p: { first: string }) => p.first)).toEqual(['postfix', 'relay', 'postfix']);
      for (const p of cell.throughput)
        expect(p.relay.e2ePerSecond * p.postfix.e2ePerSecond).toBeGreaterThan(0);
      const e2e = cell.summary.ratio.e2e;
      expect(e2e.n).toBe(3);
      const ratios = cell.throughput.map(
        (p: { relay: { e2ePerSecond: number }; postfix: { e2ePerSecond: number } }) =>
          p.relay.e2ePerSecond / p.postfix.e2ePerSecond,
      );
      expect(e2e.max).toBeCloseTo(Math.max(...ratios), 2);
      expect(e2e.min).toBeCloseTo(Math.min(...ratios), 2);
      expect(cell.summary.relay.p99.n).toBe(3);
      expect(cell.summary.ratio.cpu.n).toBe(3);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  }, 180_000);
});

describe('spread over pairs', () => {
  it('is min, median and max (the mean of the middle two for an even count)', () => {
    expect(spread([3, 1, 2, 10, 4])).toEqual({ min: 1, median: 3, max: 10, n: 5 });
    expect(spread([4, 1, 3, 2])).toEqual({ min: 1, median: 2.5, max: 4, n: 4 });
    expect(spread([Number.NaN, 2]).n).toBe(1);
  });
});
