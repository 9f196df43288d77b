/**
 * Where the latency tail comes from: the latency client's per-request timestamps (final dot ->
 * 250) lined up with the relay's spool timeline (EMAIL_RELAY_SPOOL_TRACE: every group commit
 * with its write and fdatasync times, segment open/seal/drop, checkpoints, GC pauses, event-loop
 * stalls). Slow requests are grouped into stalls; each stall is printed with what overlapped it.
 *
 *   node --import tsx bench/stalls.ts [--runs 3 --seconds 30 --rate 350 --sessions 20 --size 2048]
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runLoadProcess, smtpSource } from './load.ts';
import { buildRelay, type RelayEntry, startRelay } from './relay.ts';
import { Sink } from './sink.ts';
import { spread } from './spread.ts';
import { ensureTools } from './tools.ts';
import { cleanupAll, cleanupOnSignals, onCleanup, parseEnvList, percentile } from './util.ts';

const { values: o } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '30' },
    rate: { type: 'string', default: '350' },
    sessions: { type: 'string', default: '20' },
    size: { type: 'string', default: '2048' },
    slow: { type: 'string', default: '10' },
    'relay-entry': { type: 'string', default: 'built' },
    'relay-env': { type: 'string', default: '' },
    verbose: { type: 'boolean', short: 'v', default: false },
  },
});

interface Req {
  t: number;
  ms: number;
  s: number;
}
interface Ev {
  ev: string;
  t: number;
  ms?: number;
  [k: string]: unknown;
}

const readLines = async <T>(path: string): Promise<T[]> =>
  (await readFile(path, 'utf8').catch(() => ''))
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as T);

const r1 = (x: number) => Math.round(x * 10) / 10;

function analyse(reqs: Req[], evs: Ev[], slowMs: number) {
  const lat = reqs.map((r) => r.ms).sort((a, b) => a - b);
  const commits = evs.filter((e) => e.ev === 'commit');
  const sync = commits.map((e) => Number(e.syncMs)).sort((a, b) => a - b);
  const write = commits.map((e) => Number(e.writeMs)).sort((a, b) => a - b);
  // stalls: slow requests whose [dot, 250] intervals overlap, merged
  const slow = reqs.filter((r) => r.ms > slowMs).sort((a, b) => a.t - b.t);
  const stalls: Array<{ t: number; end: number; n: number; worst: number }> = [];
  for (const r of slow) {
    const last = stalls.at(-1);
    if (last && r.t <= last.end) {
      last.end = Math.max(last.end, r.t + r.ms);
      last.n++;
      last.worst = Math.max(last.worst, r.ms);
    } else stalls.push({ t: r.t, end: r.t + r.ms, n: 1, worst: r.ms });
  }
  const t0 = reqs[0]?.t ?? 0;
  const report = stalls.map((st) => {
    const over = evs.filter(
      (e) => e.t <= st.end && e.t + (e.ms ?? 0) >= st.t && (e.ev !== 'commit' || (e.ms ?? 0) > 3),
    );
    return {
      at: `+${r1((st.t - t0) / 1000)} s`,
      ms: r1(st.end - st.t),
      requests: st.n,
      worst: r1(st.worst),
      overlapping: over.map((e) => {
        const { t, ev, ...rest } = e;
        return `${ev}@${r1(t - st.t)}ms ${Object.entries(rest)
          .map(([k, v]) => `${k}=${typeof v === 'number' ? r1(v) : v}`)
          .join(' ')}`;
      }),
    };
  });
  return {
    requests: reqs.length,
    p50: r1(percentile(lat, 0.5)),
    p90: r1(percentile(lat, 0.9)),
    p99: r1(percentile(lat, 0.99)),
    max: r1(lat.at(-1) ?? 0),
    slow: slow.length,
    commits: commits.length,
    perCommit: r1(reqs.length / (commits.length || 1)),
    fdatasync: { p50: r1(percentile(sync, 0.5)), p99: r1(percentile(sync, 0.99)), max: r1(sync.at(-1) ?? 0) },
    write: { p50: r1(percentile(write, 0.5)), p99: r1(percentile(write, 0.99)), max: r1(write.at(-1) ?? 0) },
    lagOver5: evs.filter((e) => e.ev === 'lag').length,
    lagMax: r1(Math.max(0, ...evs.filter((e) => e.ev === 'lag').map((e) => e.ms ?? 0))),
    gcOver2: evs.filter((e) => e.ev === 'gc').length,
    others: evs.filter((e) => ['open', 'seal', 'drop', 'checkpoint'].includes(e.ev)).length,
    stalls: report,
  };
}

cleanupOnSignals();
try {
  await ensureTools(['postfix']);
  const build = await buildRelay(o['relay-entry'] as RelayEntry);
  const dir = await mkdtemp(join(tmpdir(), 'bench-stalls-'));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  const relayEnv = parseEnvList(o['relay-env']);
  const spoolTrace = join(dir, 'spool.jsonl');
  const sink = await Sink.start();
  const relay = await startRelay(build, {
    upstream: sink.url,
    env: { ...relayEnv, EMAIL_RELAY_SPOOL_TRACE: spoolTrace },
  });
  const sessions = Number(o.sessions);
  const size = Number(o.size);
  const rate = Number(o.rate);
  await smtpSource({ port: relay.port, sessions: 20, messages: 1000, size, timeoutMs: 120_000 });
  let sent = 1000;
  await sink.waitFor(sent, 60_000);
  const p99s: number[] = [];
  for (let i = 0; i < Number(o.runs); i++) {
    const trace = join(dir, `requests-${i}.jsonl`);
    const messages = Math.round(rate * Number(o.seconds));
    const r = await runLoadProcess({
      port: relay.port,
      sessions,
      messages,
      size,
      rate,
      timeoutMs: 300_000,
      trace,
    });
    sent += r.sent;
    await sink.waitFor(sent, 60_000);
    await new Promise((res) => setTimeout(res, 700)); // the trace file is appended every 500 ms
    const reqs = await readLines<Req>(trace);
    const from = reqs[0]?.t ?? 0;
    const to = (reqs.at(-1)?.t ?? 0) + 1000;
    const evs = (await readLines<Ev>(spoolTrace)).filter((e) => e.t >= from - 1000 && e.t <= to);
    const a = analyse(reqs, evs, Number(o.slow));
    p99s.push(a.p99);
    const { stalls, ...brief } = a;
    console.log(`run ${i + 1}: ${JSON.stringify(brief)}`);
    for (const st of o.verbose ? stalls : stalls.filter((s) => s.ms > 15 || s.requests > 2))
      console.log(
        `  stall ${st.at}: ${st.ms} ms, ${st.requests} requests (worst ${st.worst})\n    ${st.overlapping.join('\n    ')}`,
      );
  }
  console.log(`p99 over the runs: ${JSON.stringify(spread(p99s))}`);
  await relay.stop();
  await sink.stop();
} finally {
  await cleanupAll();
}
