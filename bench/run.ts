/**
 * email-relay against Postfix on this machine (issue 6). See bench/README.md.
 *
 *   npm run bench [-- --sizes 2048,102400,5242880 --sessions 1,20,200 --scale-messages 100000 ...]
 */
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runLoadProcess, smtpSource } from './load.ts';
import { formatOperator, OPERATOR_DEFAULTS, operatorBench, operatorTargets } from './operator.ts';
import { startPostfix } from './postfix.ts';
import { MB, MemSampler, peakRss, resetPeak, tree, treeCpu } from './proc.ts';
import { formatSummary, type ProfileSummary, summarise } from './profile.ts';
import { type Build, buildRelay, type RelayEntry, startRelay } from './relay.ts';
import { type RuntimeWindow, runtimeWindow, sampleRuntime } from './runtime.ts';
import { idleConnections, queueWhileDown } from './scale.ts';
import { Sink } from './sink.ts';
import { cleanupAll, cleanupOnSignals } from './util.ts';

const HERE = dirname(fileURLToPath(import.meta.url));

const { values: opt } = parseArgs({
  options: {
    sizes: { type: 'string', default: '2048,102400,5242880' },
    sessions: { type: 'string', default: '1,20,200' },
    'postfix-max-sessions': { type: 'string', default: '150' },
    messages: { type: 'string', default: '1', short: 'm' },
    'latency-load': { type: 'string', default: '0.5' },
    'latency-seconds': { type: 'string', default: '10' },
    'scale-messages': { type: 'string', default: '20000' },
    'idle-connections': { type: 'string', default: '1000' },
    'operator-relays': { type: 'string', default: String(OPERATOR_DEFAULTS.relays) },
    'operator-namespaces': { type: 'string', default: String(OPERATOR_DEFAULTS.namespaces) },
    'operator-single': { type: 'string', default: String(OPERATOR_DEFAULTS.single) },
    'operator-quiet-seconds': { type: 'string', default: String(OPERATOR_DEFAULTS.quietSeconds) },
    'relay-entry': { type: 'string', default: 'built' },
    'relay-node-args': { type: 'string', default: '' },
    reuse: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    out: { type: 'string', default: join(HERE, 'results') },
    'no-save': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (opt.help) {
  console.log(`npm run bench -- [options]
  --sizes B,B,...            payload sizes (default 2048,102400,5242880; '' skips the comparison)
  --sessions N,N,...         concurrent sessions (default 1,20,200)
  --postfix-max-sessions N   Postfix gets min(N, sessions): its listen backlog stalls at 200 (150)
  --messages F               multiply the per-cell message counts by F (default 1)
  --latency-load F           latency pass offered load, fraction of the slower system's accept rate (0.5)
  --latency-seconds S        latency pass length (10)
  --scale-messages N         messages queued while the upstream is down (20000; 0 skips)
  --idle-connections N       idle sessions held open (1000; 0 skips)
  --operator-relays N        EmailRelays applied at once to the operator (500; 0 skips the operator benchmarks)
  --operator-namespaces N    ... spread over N namespaces (100)
  --operator-single N        single-EmailRelay runs, apply -> children + status (20; 0 skips)
  --operator-quiet-seconds S steady-state window with nothing happening (30)
  --relay-entry built|tsx    compiled JS as in the image (default) or src/ under tsx
  --relay-node-args="..."    node flags for the relay, e.g. --relay-node-args="--max-semi-space-size=8"
  --reuse                    smtp-source -d (one connection per session, not per message)
  --profile                  run the relay under --cpu-prof and print where its time goes
  --out DIR / --no-save      where the JSON goes (default bench/results)`);
  process.exit(0);
}

const list = (s: string) => s.split(',').filter(Boolean).map(Number);
const SIZES = list(opt.sizes);
const SESSIONS = list(opt.sessions);
const PF_MAX = Number(opt['postfix-max-sessions']);
const LAT_LOAD = Number(opt['latency-load']);
const LAT_SECONDS = Number(opt['latency-seconds']);
const NODE_ARGS = opt['relay-node-args'].split(/\s+/).filter(Boolean);

/** Messages per cell: ~10-20 s of work for the slower system on a 2-core machine. */
function messagesFor(size: number, sessions: number): number {
  const base = size <= 8192 ? 10_000 : size <= 256 * 1024 ? 3000 : 200;
  const n = Math.round((sessions === 1 ? base / 5 : base) * Number(opt.messages));
  return Math.max(n, 2 * sessions);
}

const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const sizeName = (b: number) =>
  b >= MB ? `${round(b / MB)} MB` : b >= 1024 ? `${round(b / 1024)} KB` : `${b} B`;

type SystemName = 'postfix' | 'relay';

interface System {
  name: SystemName;
  port: number;
  pid: number;
  sink: Sink;
  sessions: number;
}

interface Latency {
  /** relay only: its event loop and GC over the pass (from its /metrics) */
  runtime?: RuntimeWindow;
  offeredPerSecond: number;
  sessions: number;
  messages: number;
  failed: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

interface Measured {
  sessions: number;
  messages: number;
  acceptSeconds: number;
  e2eSeconds: number;
  acceptedPerSecond: number;
  e2ePerSecond: number;
  cpuSecondsPer1000: number;
  peakRssMB: number;
  peakPssMB: number;
  /** relay: VmHWM of its one process over the pass */
  vmHwmMB?: number;
  peakProcesses: number;
  latency?: Latency;
}

interface Cell {
  size: number;
  sessions: number;
  loadavg: number[];
  postfix?: Measured;
  relay?: Measured;
  error?: string;
}

async function throughput(s: System, size: number, messages: number): Promise<Measured> {
  const base = s.sink.messages;
  for (const p of tree(s.pid)) resetPeak(p.pid);
  const cpu0 = treeCpu(s.pid);
  const mem = new MemSampler(() => s.pid, 200);
  const t0 = performance.now();
  const timeoutMs = 60_000 + messages * Math.max(20, size / 10_000);
  const { seconds } = await smtpSource({
    port: s.port,
    sessions: s.sessions,
    messages,
    size,
    timeoutMs,
    reuse: opt.reuse,
  });
  const t1 = await s.sink.waitFor(base + messages, timeoutMs);
  const cpu = treeCpu(s.pid) - cpu0;
  const m = mem.stop();
  const e2e = (t1 - t0) / 1000;
  return {
    sessions: s.sessions,
    messages,
    acceptSeconds: round(seconds, 2),
    e2eSeconds: round(e2e, 2),
    acceptedPerSecond: round(messages / seconds),
    e2ePerSecond: round(messages / e2e),
    cpuSecondsPer1000: round((cpu / messages) * 1000, 2),
    peakRssMB: round(m.peakRss / MB),
    peakPssMB: round(m.peakPss / MB),
    ...(s.name === 'relay' ? { vmHwmMB: round(peakRss(s.pid) / MB) } : {}),
    peakProcesses: m.peakProcs,
  };
}

async function latency(s: System, size: number, rate: number): Promise<Latency> {
  const messages = Math.max(20, Math.min(5000, Math.round(rate * LAT_SECONDS)));
  const base = s.sink.messages;
  const timeoutMs = 60_000 + (messages / rate) * 3000;
  const r = await runLoadProcess({ port: s.port, sessions: s.sessions, messages, size, rate, timeoutMs });
  await s.sink.waitFor(base + r.sent, timeoutMs);
  if (r.failed) console.warn(`  ${s.name}: ${r.failed} failed: ${r.errors.join('; ')}`);
  return { offeredPerSecond: round(rate), sessions: s.sessions, messages, failed: r.failed, ...r.latency };
}

async function cell(
  build: Build,
  size: number,
  sessions: number,
  index: number,
  profileDir?: string,
): Promise<Cell> {
  const out: Cell = { size, sessions, loadavg: loadavg().map((x) => round(x, 2)) };
  const messages = messagesFor(size, sessions);
  const sinkP = await Sink.start();
  const sinkR = await Sink.start();
  const pf = await startPostfix(sinkP.port);
  const cpuProfile = profileDir ? join(profileDir, `relay-${size}-${sessions}.cpuprofile`) : undefined;
  const relay = await startRelay(build, {
    upstream: sinkR.url,
    http: true,
    nodeArgs: NODE_ARGS,
    ...(cpuProfile ? { cpuProfile } : {}),
  });
  const systems: Record<SystemName, System> = {
    postfix: {
      name: 'postfix',
      port: pf.port,
      pid: pf.pid,
      sink: sinkP,
      sessions: Math.min(sessions, PF_MAX),
    },
    relay: { name: 'relay', port: relay.port, pid: relay.pid, sink: sinkR, sessions },
  };
  // alternate who goes first, so drift (other load on the machine) does not always hit the same one
  const order: SystemName[] = index % 2 ? ['relay', 'postfix'] : ['postfix', 'relay'];
  try {
    const warm = Math.max(Math.min(sessions, 20), Math.min(1000, Math.round(messages / 10)));
    for (const name of order) {
      const s = systems[name];
      await smtpSource({
        port: s.port,
        sessions: Math.min(s.sessions, 20),
        messages: warm,
        size,
        timeoutMs: 600_000,
      });
      await s.sink.waitFor(warm, 600_000);
    }
    for (const name of order) {
      console.log(`  ${sizeName(size)} x ${systems[name].sessions} sessions, ${messages} messages: ${name}`);
      out[name] = await throughput(systems[name], size, messages);
    }
    const rate = LAT_LOAD * Math.min(out.postfix!.acceptedPerSecond, out.relay!.acceptedPerSecond);
    for (const name of order) {
      const before = name === 'relay' && relay.httpPort ? await sampleRuntime(relay.httpPort) : undefined;
      const lat = await latency(systems[name], size, rate);
      const after = before && relay.httpPort ? await sampleRuntime(relay.httpPort) : undefined;
      if (before && after) {
        lat.runtime = runtimeWindow(before, after);
        const r = lat.runtime;
        console.log(
          `  relay during the latency pass: p99 ${lat.p99} ms, max ${lat.max} ms; event-loop lag max ${r.lagMaxMs} ms; ` +
            `GC ${r.gcCount}x ${r.gcMs} ms${Object.keys(r.gcOver10ms).length ? `, over 10 ms: ${JSON.stringify(r.gcOver10ms)}` : ''}`,
        );
      }
      out[name]!.latency = lat;
    }
  } catch (err) {
    out.error = (err as Error).message;
    console.error(`  failed: ${out.error}`);
  } finally {
    await relay.stop();
    await pf.stop();
    await sinkP.stop();
    await sinkR.stop();
  }
  return out;
}

// ---- table ----

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) => r.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '))
    .join('\n');
}

function report(cells: Cell[]): string {
  const f = (x: number | undefined, d = 0) => (x === undefined || Number.isNaN(x) ? '-' : x.toFixed(d));
  const ratio = (r?: number, p?: number) => (r && p ? `${(r / p).toFixed(2)}x` : '-');
  const rows = [
    [
      'size',
      'sessions P/R',
      'accepted/s P',
      'R',
      'R/P',
      'e2e/s P',
      'R',
      'R/P',
      'lat@load/s',
      'p50 ms P',
      'R',
      'p99 ms P',
      'R',
      'RSS MB P',
      'R',
      'R/P',
      'CPU s/1k P',
      'R',
      'R/P',
    ],
  ];
  for (const c of cells) {
    const p = c.postfix;
    const r = c.relay;
    rows.push([
      sizeName(c.size),
      `${p?.sessions ?? '-'}/${r?.sessions ?? c.sessions}`,
      f(p?.acceptedPerSecond, 1),
      f(r?.acceptedPerSecond, 1),
      ratio(r?.acceptedPerSecond, p?.acceptedPerSecond),
      f(p?.e2ePerSecond, 1),
      f(r?.e2ePerSecond, 1),
      ratio(r?.e2ePerSecond, p?.e2ePerSecond),
      f(r?.latency?.offeredPerSecond, 1),
      f(p?.latency?.p50, 1),
      f(r?.latency?.p50, 1),
      f(p?.latency?.p99, 1),
      f(r?.latency?.p99, 1),
      f(p?.peakRssMB),
      f(r?.peakRssMB),
      ratio(r?.peakRssMB, p?.peakRssMB),
      f(p?.cpuSecondsPer1000, 2),
      f(r?.cpuSecondsPer1000, 2),
      ratio(r?.cpuSecondsPer1000, p?.cpuSecondsPer1000),
    ]);
    if (c.error) rows.push([`  ! ${c.error.slice(0, 150)}`]);
  }
  return table(rows);
}

interface Target {
  target: string;
  value: string;
  met: boolean | 'not run';
}

function targets(
  cells: Cell[],
  scale?: Awaited<ReturnType<typeof queueWhileDown>>,
  idle?: Awaited<ReturnType<typeof idleConnections>>,
): Target[] {
  const c = cells.find((x) => x.size === 2048 && x.sessions === 20);
  const out: Target[] = [];
  if (c?.postfix && c.relay) {
    const ratio = c.relay.e2ePerSecond / c.postfix.e2ePerSecond;
    out.push({
      target: 'end-to-end >= 1.5x Postfix (2 KB, 20 sessions)',
      value: `${ratio.toFixed(2)}x (${c.relay.e2ePerSecond} vs ${c.postfix.e2ePerSecond} msg/s)`,
      met: ratio >= 1.5,
    });
  } else out.push({ target: 'end-to-end >= 1.5x Postfix (2 KB, 20 sessions)', value: '-', met: 'not run' });
  if (c?.relay?.latency) {
    const l = c.relay.latency;
    out.push({
      target: 'p99 dot->250 <= 20 ms below saturation (2 KB, 20 sessions)',
      value: `${l.p99} ms at ${l.offeredPerSecond} msg/s offered`,
      met: l.p99 <= 20,
    });
  } else out.push({ target: 'p99 dot->250 <= 20 ms below saturation', value: '-', met: 'not run' });
  out.push(
    scale
      ? {
          target: `RSS < 200 MB with 100k queued`,
          value: `${scale.rssQueuedMB} MB with ${scale.messages} queued (peak ${scale.peakRssFillMB})`,
          met: scale.messages >= 100_000 ? scale.peakRssFillMB < 200 : 'not run',
        }
      : { target: 'RSS < 200 MB with 100k queued', value: '-', met: 'not run' },
  );
  out.push(
    idle
      ? {
          target: `RSS < 150 MB with 1000 idle connections`,
          value: `${idle.rssIdleMB} MB with ${idle.open} of ${idle.connections} open (peak ${idle.peakRssMB})`,
          met: idle.connections >= 1000 && idle.open === idle.connections ? idle.peakRssMB < 150 : 'not run',
        }
      : { target: 'RSS < 150 MB with 1000 idle connections', value: '-', met: 'not run' },
  );
  return out;
}

function gitInfo(): { commit: string; dirtySrcFiles: number } | undefined {
  try {
    const git = (...args: string[]) => execFileSync('git', args, { cwd: HERE, encoding: 'utf8' }).trim();
    const dirty = git('status', '--porcelain', '--', '../src').split('\n').filter(Boolean).length;
    return { commit: git('rev-parse', 'HEAD'), dirtySrcFiles: dirty };
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const profileDir = opt.profile ? join(resolve(opt.out), 'profiles', stamp) : undefined;
  if (profileDir) await mkdir(profileDir, { recursive: true });
  console.log(`building the relay (${opt['relay-entry']}) ...`);
  const build = await buildRelay(opt['relay-entry'] as RelayEntry);

  const cells: Cell[] = [];
  let index = 0;
  for (const size of SIZES) {
    for (const sessions of SESSIONS) {
      console.log(`cell ${sizeName(size)}, ${sessions} sessions`);
      cells.push(await cell(build, size, sessions, index++, profileDir));
    }
  }
  if (cells.length) console.log(`\n${report(cells)}\n`);

  const profiles: Record<string, ProfileSummary> = {};
  if (profileDir) {
    for (const c of cells) {
      const file = join(profileDir, `relay-${c.size}-${c.sessions}.cpuprofile`);
      try {
        profiles[`${c.size}/${c.sessions}`] = summarise(file, 30);
      } catch (err) {
        console.warn(`no profile for ${file}: ${(err as Error).message}`);
      }
    }
    for (const [k, s] of Object.entries(profiles))
      console.log(`relay profile, ${k}:\n${formatSummary(s, 20)}\n`);
  }

  const scaleN = Number(opt['scale-messages']);
  let scale: Awaited<ReturnType<typeof queueWhileDown>> | undefined;
  if (scaleN > 0) {
    console.log(`scale: ${scaleN} messages queued while the upstream is down, then the drain ...`);
    scale = await queueWhileDown(build, scaleN, 20, 2048, { nodeArgs: NODE_ARGS });
    const { fillCurve: _f, drainCurve: _d, ...brief } = scale;
    console.log(brief);
  }
  const idleN = Number(opt['idle-connections']);
  let idle: Awaited<ReturnType<typeof idleConnections>> | undefined;
  if (idleN > 0) {
    console.log(`scale: ${idleN} idle connections ...`);
    idle = await idleConnections(build, idleN, NODE_ARGS);
    console.log(idle);
  }
  const operatorRelays = Number(opt['operator-relays']);
  if (operatorRelays > 0)
    console.log(`operator: ${operatorRelays} EmailRelays, ${opt['operator-single']} single runs ...`);
  const operator = await operatorBench(build, {
    relays: operatorRelays,
    namespaces: Number(opt['operator-namespaces']),
    single: Number(opt['operator-single']),
    quietSeconds: Number(opt['operator-quiet-seconds']),
  });
  console.log(`\n${formatOperator(operator)}`);

  const goals = [...targets(cells, scale, idle), ...operatorTargets(operator)];
  console.log('\ntargets:');
  for (const g of goals)
    console.log(
      `  [${g.met === true ? 'met' : g.met === false ? 'MISSED' : 'not run'}] ${g.target}: ${g.value}`,
    );

  const result = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      cpu: cpus()[0]?.model,
      memoryMB: Math.round(totalmem() / MB),
      kernel: release(),
      node: process.version,
      loadavgAtEnd: loadavg().map((x) => round(x, 2)),
    },
    options: opt,
    git: gitInfo(),
    relayBuild: { entry: build.entry, buildSeconds: build.seconds && round(build.seconds) },
    notes: [
      'accepted/s: messages / wall time of smtp-source (Postfix tool, one connection per message unless --reuse)',
      'e2e/s: messages / time from smtp-source start until the sink counted the last one',
      'latency: final dot -> 250, our client (bench/load.ts) pipelining over reused connections at the offered load',
      'peakRssMB: largest sampled sum of VmRSS over the process tree (Postfix: master and all children)',
      'cpuSecondsPer1000: utime+stime (+ reaped children) of the tree over the throughput pass, per 1000 messages',
      `Postfix runs min(sessions, ${PF_MAX}) sessions: its listen backlog stalls smtp-source at 200`,
    ],
    cells,
    profiles,
    scale,
    idle,
    operator,
    targets: goals,
  };
  if (!opt['no-save']) {
    await mkdir(opt.out, { recursive: true });
    const json = `${JSON.stringify(result, null, 2)}\n`;
    await writeFile(join(opt.out, `${stamp}.json`), json);
    await writeFile(join(opt.out, 'latest.json'), json);
    console.log(`\nsaved ${join(opt.out, `${stamp}.json`)} and latest.json`);
  }
}

cleanupOnSignals();
try {
  await main();
} finally {
  await cleanupAll();
}
