/**
 * Operator benchmarks (issue 6): "time from applying an EmailRelay to all children existing, and
 * for 500 EmailRelays in 100 namespaces; writes to the API server per steady-state resync
 * (target: zero)". See bench/README.md, section Operator.
 *
 * Against a private control plane (test/control-plane: etcd, kube-apiserver with an audit log of
 * the operator's requests, kube-controller-manager; no kubelet), the operator as a separate
 * process (the compiled CLI, leader election on, its ServiceAccount's token and deploy/base RBAC):
 *   1. single: apply one EmailRelay (server-side apply as admin), time until every child the
 *      operator renders for it exists and status.observedGeneration == generation; N times;
 *   2. bulk: 500 EmailRelays in 100 namespaces applied at once (20 requests in flight): time
 *      until all are done, and until the operator's last write; its peak RSS, CPU seconds and
 *      API requests by verb (from the audit log);
 *   3. steady state, with everything settled: the operator's writes (audit log; Lease renewals
 *      of leader election counted apart) in a quiet window, during a full resync (a new namespace
 *      makes the operator re-reconcile every EmailRelay, the same enqueueAllRelays() as its
 *      10-minute resync timer, which has no flag), and during a restart (re-list, re-reconcile all).
 */
import { loadavg } from 'node:os';
import { RELAY_ACCESS_LABEL } from '../src/operator/api/meta.ts';
import { MANAGED_SELECTOR } from '../src/operator/emailrelay/names.ts';
import { CHILD_KINDS } from '../src/operator/emailrelay/reconciler.ts';
import { resourcePath, resourceType } from '../src/operator/runtime/resources.ts';
import {
  type AuditEntry,
  countRequests,
  isLease,
  isWrite,
  type RequestCounts,
  resyncWrites,
} from './operator-audit.ts';
import {
  applyObject,
  type BenchCluster,
  OPERATOR_USER,
  type OperatorProcess,
  operatorCounters,
  startBenchCluster,
  startOperator,
} from './operator-cluster.ts';
import { expectedChildren, ReconcileTracker } from './operator-track.ts';
import { MB, peakRss, readStat, resetPeak } from './proc.ts';
import type { Build } from './relay.ts';
import { percentile, sleep } from './util.ts';

export interface OperatorOptions {
  /** EmailRelays of the bulk test; 0 skips the operator benchmarks. */
  relays: number;
  namespaces: number;
  /** Single-EmailRelay runs (0 skips them). */
  single: number;
  /** Length of the quiet steady-state window. */
  quietSeconds: number;
}

export const OPERATOR_DEFAULTS: OperatorOptions = {
  relays: 500,
  namespaces: 100,
  single: 20,
  quietSeconds: 30,
};

export interface SingleResult {
  runs: number;
  /** the children of one relay, by kind */
  children: Record<string, number>;
  /** apply -> all children and the observed status, ms */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** apply -> last child seen / status observed, p50 */
  childrenP50Ms: number;
  statusP50Ms: number;
  samplesMs: number[];
}

export interface BulkResult {
  relays: number;
  namespaces: number;
  /** one EmailPolicy per namespace, for all its relays, applied before them */
  policies: number;
  statefulSets: number;
  deployments: number;
  /** the benchmark's 500 server-side applies took this long */
  applySeconds: number;
  /** first apply -> the last relay with all children and its status observed */
  allDoneSeconds: number;
  /** first apply -> the operator's last write (Lease renewals aside), events included */
  lastWriteSeconds: number;
  /** per relay, its own apply -> done */
  perRelayP50Seconds: number;
  perRelayP99Seconds: number;
  /** VmHWM of the operator process over the test */
  peakRssMB: number;
  rssBeforeMB: number;
  rssAfterMB: number;
  cpuSeconds: number;
  reconciles: number;
  reconcileErrors: number;
  /** slowest /healthz response until all were done */
  maxProbeMs: number;
  /** mean time of one EmailRelay reconcile (the operator's histogram) */
  meanReconcileMs: number;
  /** CPU seconds of etcd, kube-apiserver, kube-controller-manager over the same time */
  controlPlaneCpuSeconds: Record<string, number>;
  /** the operator's requests from the first apply until it settled */
  requests: RequestCounts;
}

export interface SteadyWindow {
  what: string;
  seconds: number;
  /** restart: spawn -> caches synced (its log) */
  readySeconds?: number;
  /** slowest /healthz response during the window (event loop blocked) */
  maxProbeMs?: number;
  /** start of the window -> every EmailRelay reconciled once */
  resyncSeconds?: number;
  /** EmailRelay reconciles the operator counted in the window */
  reconciles: number;
  cpuSeconds: number;
  /** writes other than Lease renewals: the figure with a target of zero */
  writes: number;
  writeSample: string[];
  requests: RequestCounts;
}

export interface CacheSize {
  objects: number;
  /** JSON of everything the operator's informers hold (as the API serves it) */
  jsonMB: number;
  /** ... of which metadata.managedFields */
  managedFieldsMB: number;
}

export interface SteadyResult {
  relays: number;
  rssMB: number;
  cache: CacheSize;
  windows: SteadyWindow[];
}

export interface OperatorResult {
  skipped?: string;
  error?: string;
  options?: OperatorOptions;
  operator?: {
    entry: string;
    argv: string[];
    user: string;
    leaderElection: boolean;
    /** RSS once leading, before any EmailRelay exists */
    rssIdleMB?: number;
  };
  controlPlaneSeconds?: number;
  loadavg?: { start: number[]; end: number[] };
  single?: SingleResult;
  bulk?: BulkResult;
  steady?: SteadyResult;
  notes?: string[];
}

/** The bulk test fails when no relay got done for this long. */
const STALL_MS = 120_000;

const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const load = () => loadavg().map((x) => round(x, 2));
const log = (line: string) => console.log(`  [operator] ${line}`);

const spec = (i: number) => ({
  hostname: 'mail.bench.example.com',
  upstream: { host: 'smtp.bench.example.com', port: 587, tls: 'starttls' },
  // every fourth one without a persistent queue: a Deployment (the rest: StatefulSets)
  ...(i % 4 === 3 ? { queue: { persistence: { enabled: false } } } : {}),
});

const relayObject = (namespace: string, name: string, i: number) => ({
  apiVersion: 'email.bionicaisolutions.com/v1alpha1',
  kind: 'EmailRelay',
  metadata: { name, namespace },
  spec: spec(i),
});

const policyObject = (namespace: string) => ({
  apiVersion: 'email.bionicaisolutions.com/v1alpha1',
  kind: 'EmailPolicy',
  metadata: { name: 'limits', namespace },
  spec: { rules: { maxRecipients: 50, senders: { domains: ['bench.example.com'] } } },
});

const namespaceObject = (name: string, labels: Record<string, string> = {}) => ({
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name, labels },
});

async function pool<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}

interface Ctx {
  cluster: BenchCluster;
  op: OperatorProcess;
  tracker: ReconcileTracker;
}

/**
 * Response time of the operator's /healthz, polled every 20 ms: how long its event loop is stuck
 * (reconciles that need no request run back to back in microtasks, without yielding to I/O).
 */
function probeLatency(op: OperatorProcess): { stop(): Promise<number> } {
  let stopped = false;
  let max = 0;
  const loop = (async () => {
    while (!stopped) {
      const t = performance.now();
      await fetch(`http://127.0.0.1:${op.httpPort}/healthz`)
        .then((r) => r.arrayBuffer())
        .catch(() => undefined);
      max = Math.max(max, performance.now() - t);
      await sleep(20);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return round(max);
    },
  };
}

const cpuOf = (pid: number) => readStat(pid)?.cpu ?? Number.NaN;
const rssOf = (pid: number) => round((readStat(pid)?.rss ?? 0) / MB);

/** The operator's audit entries from t0 (epoch ms) on. */
const operatorEntries = async (ctx: Ctx, t0: number, t1?: number): Promise<AuditEntry[]> =>
  (await ctx.cluster.audit.between(t0, t1)).filter((e) => e.user === OPERATOR_USER);

/**
 * Waits until the operator has been quiet for quietMs: nothing queued and no write (Lease
 * renewals aside) in the audit log; and, with minReconciles, until it counted that many
 * EmailRelay reconciles since `base`. Returns the time of its last write (epoch ms; t0 if none).
 */
async function settle(
  ctx: Ctx,
  t0: number,
  opts: { quietMs: number; timeoutMs: number; minReconciles?: number; base?: number },
): Promise<number> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const entries = await operatorEntries(ctx, t0);
    const last = entries.filter((e) => isWrite(e) && !isLease(e)).reduce((a, e) => Math.max(a, e.t), t0);
    const c = await operatorCounters(ctx.op);
    const enough = c.reconciles - (opts.base ?? 0) >= (opts.minReconciles ?? 0);
    if (enough && c.depth === 0 && Date.now() - last >= opts.quietMs) return last;
    if (Date.now() > deadline)
      throw new Error(
        `operator not settled after ${opts.timeoutMs} ms (reconciles ${c.reconciles - (opts.base ?? 0)}` +
          `/${opts.minReconciles ?? 0}, queue ${c.depth}, last write ${Date.now() - last} ms ago)`,
      );
    await sleep(500);
  }
}

async function single(ctx: Ctx, runs: number): Promise<SingleResult> {
  const ns = 'bench-single';
  await applyObject(ctx.cluster.admin, namespaceObject(ns));
  await settle(ctx, Date.now(), { quietMs: 2000, timeoutMs: 60_000 });
  const total: number[] = [];
  const children: number[] = [];
  const status: number[] = [];
  let kinds: Record<string, number> = {};
  for (let i = 0; i < runs; i++) {
    const name = `single-${String(i).padStart(2, '0')}`;
    const expected = expectedChildren(ns, name, spec(i));
    if (i === 0) {
      kinds = {};
      for (const c of expected) kinds[c.split('/')[0]!] = (kinds[c.split('/')[0]!] ?? 0) + 1;
    }
    const key = `${ns}/${name}`;
    const t = ctx.tracker.expect(key, expected);
    await applyObject(ctx.cluster.admin, relayObject(ns, name, i));
    await ctx.tracker.waitDone(key, 60_000);
    total.push(t.doneAt! - t.appliedAt);
    children.push(t.childrenAt! - t.appliedAt);
    status.push(t.statusAt! - t.appliedAt);
    // let its events and the workload controller's follow-ups pass before the next one
    await settle(ctx, Date.now() - 1000, { quietMs: 1000, timeoutMs: 60_000 });
  }
  const s = (a: number[]) => [...a].sort((x, y) => x - y);
  const ts = s(total);
  return {
    runs,
    children: kinds,
    p50Ms: round(percentile(ts, 0.5)),
    p99Ms: round(percentile(ts, 0.99)),
    maxMs: round(ts[ts.length - 1] ?? Number.NaN),
    childrenP50Ms: round(percentile(s(children), 0.5)),
    statusP50Ms: round(percentile(s(status), 0.5)),
    samplesMs: total.map((x) => round(x)),
  };
}

async function bulk(ctx: Ctx, relays: number, namespaces: number): Promise<BulkResult> {
  const { admin } = ctx.cluster;
  const nsName = (j: number) => `bench-ns-${String(j).padStart(3, '0')}`;
  const nss = Array.from({ length: namespaces }, (_, j) => nsName(j));
  log(`creating ${namespaces} namespaces ...`);
  await pool(nss, 10, (n) => applyObject(admin, namespaceObject(n)));
  await pool(nss, 10, (n) => applyObject(admin, policyObject(n)));
  // each new namespace makes the operator look at every relay again (labels decide admission)
  await settle(ctx, Date.now() - 1000, { quietMs: 3000, timeoutMs: 300_000 });

  const items = Array.from({ length: relays }, (_, i) => ({
    i,
    namespace: nsName(i % namespaces),
    name: `relay-${String(i).padStart(3, '0')}`,
  }));
  const expected = items.map((r) => expectedChildren(r.namespace, r.name, spec(r.i)));
  const keys = items.map((r) => `${r.namespace}/${r.name}`);
  const pid = ctx.op.pid;
  const before = await operatorCounters(ctx.op);
  const rssBefore = rssOf(pid);
  resetPeak(pid);
  const cpu0 = cpuOf(pid);
  const cpCpu0 = ctx.cluster.cp.processes.map((p) => cpuOf(p.pid));
  const t0Wall = Date.now();
  const t0 = performance.now();
  const probe = probeLatency(ctx.op);
  log(`applying ${relays} EmailRelays in ${namespaces} namespaces ...`);
  await pool(items, 20, async (r) => {
    ctx.tracker.expect(`${r.namespace}/${r.name}`, expected[r.i]!);
    await applyObject(admin, relayObject(r.namespace, r.name, r.i));
  });
  const applied = performance.now();
  // progress every 10 s; no relay done for STALL_MS: fail with what the operator says
  let stalled: (err: Error) => void = () => {};
  const stall = new Promise<never>((_, reject) => {
    stalled = reject;
  });
  let lastCount = -1;
  let lastChange = performance.now();
  const progress = setInterval(async () => {
    const n = ctx.tracker.doneCount(keys);
    log(`${n}/${relays} done after ${round((performance.now() - t0) / 1000)} s`);
    if (n !== lastCount) {
      lastCount = n;
      lastChange = performance.now();
    } else if (performance.now() - lastChange > STALL_MS) {
      const errors = (await ctx.op.log()).split('\n').filter((l) => l.includes('reconcile failed'));
      stalled(
        new Error(
          `stalled at ${n}/${relays} done for ${STALL_MS / 1000} s; ${errors.length} failed reconciles, last: ${errors.at(-1)?.slice(0, 500)}`,
        ),
      );
    }
  }, 10_000);
  try {
    await Promise.race([Promise.all(keys.map((k) => ctx.tracker.waitDone(k, 30 * 60_000))), stall]);
  } finally {
    clearInterval(progress);
  }
  const timings = keys.map((k) => ctx.tracker.timing(k)!);
  const allDone = Math.max(...timings.map((t) => t.doneAt!));
  log(`all ${relays} done after ${round((allDone - t0) / 1000)} s; waiting for the operator to settle ...`);
  const maxProbeMs = await probe.stop();
  const lastWrite = await settle(ctx, t0Wall, { quietMs: 5000, timeoutMs: 30 * 60_000 });
  const cpu = cpuOf(pid) - cpu0;
  const cpCpu = Object.fromEntries(
    ctx.cluster.cp.processes.map((p, i) => [p.name, round(cpuOf(p.pid) - cpCpu0[i]!, 2)]),
  );
  const peak = peakRss(pid);
  const after = await operatorCounters(ctx.op);
  const entries = await operatorEntries(ctx, t0Wall, lastWrite + 1);
  const per = timings.map((t) => (t.doneAt! - t.appliedAt) / 1000).sort((a, b) => a - b);
  return {
    relays,
    namespaces,
    policies: namespaces,
    statefulSets: items.filter((r) => r.i % 4 !== 3).length,
    deployments: items.filter((r) => r.i % 4 === 3).length,
    applySeconds: round((applied - t0) / 1000, 2),
    allDoneSeconds: round((allDone - t0) / 1000, 2),
    lastWriteSeconds: round((lastWrite - t0Wall) / 1000, 2),
    perRelayP50Seconds: round(percentile(per, 0.5), 2),
    perRelayP99Seconds: round(percentile(per, 0.99), 2),
    peakRssMB: round(peak / MB),
    rssBeforeMB: rssBefore,
    rssAfterMB: rssOf(pid),
    cpuSeconds: round(cpu, 2),
    reconciles: after.reconciles - before.reconciles,
    reconcileErrors: after.errors - before.errors,
    meanReconcileMs: round(
      ((after.reconcileSeconds - before.reconcileSeconds) /
        Math.max(1, after.reconciles - before.reconciles)) *
        1000,
    ),
    controlPlaneCpuSeconds: cpCpu,
    maxProbeMs,
    requests: countRequests(entries),
  };
}

async function window(
  ctx: Ctx,
  what: string,
  t0: number,
  t1: number,
  reconciles: number,
  cpuSeconds: number,
  extra: Pick<SteadyWindow, 'readySeconds' | 'resyncSeconds' | 'maxProbeMs'> = {},
): Promise<SteadyWindow> {
  await sleep(500); // the audit log is written as responses complete: let the last ones land
  const entries = await operatorEntries(ctx, t0, t1);
  const w = resyncWrites(entries);
  log(`${what}: ${w.count} writes (Lease renewals aside), ${reconciles} reconciles`);
  return {
    what,
    seconds: round((t1 - t0) / 1000, 2),
    ...extra,
    reconciles,
    cpuSeconds: round(cpuSeconds, 2),
    writes: w.count,
    writeSample: w.sample,
    requests: countRequests(entries),
  };
}

/** Polls the operator's reconcile counter until it reached base + n; seconds since t0 (performance.now()). */
async function reconciled(ctx: Ctx, t0: number, n: number, base = 0): Promise<number> {
  const deadline = performance.now() + 600_000;
  while ((await operatorCounters(ctx.op)).reconciles - base < n) {
    if (performance.now() > deadline) throw new Error(`fewer than ${n} reconciles after 600 s`);
    await sleep(50);
  }
  return round((performance.now() - t0) / 1000, 2);
}

/** What the operator's informers hold, as JSON from the API (the operator keeps whole objects). */
async function cacheSize(ctx: Ctx): Promise<CacheSize> {
  const scopes: [string, string | undefined][] = [
    ['EmailRelay', undefined],
    ['EmailPolicy', undefined],
    ['Namespace', undefined],
    ...CHILD_KINDS.map((k): [string, string] => [k, MANAGED_SELECTOR]),
  ];
  const out = { objects: 0, json: 0, managed: 0 };
  for (const [kind, labelSelector] of scopes) {
    let cont: string | undefined;
    do {
      const page = await ctx.cluster.admin.get<{
        items: { metadata: { managedFields?: unknown } }[];
        metadata: { continue?: string };
      }>(resourcePath(resourceType(kind)), { labelSelector, limit: 500, continue: cont });
      for (const item of page.items) {
        out.objects++;
        out.json += JSON.stringify(item).length;
        out.managed += JSON.stringify(item.metadata.managedFields ?? []).length;
      }
      cont = page.metadata.continue || undefined;
    } while (cont);
  }
  return {
    objects: out.objects,
    jsonMB: round(out.json / MB, 2),
    managedFieldsMB: round(out.managed / MB, 2),
  };
}

async function steady(ctx: Ctx, build: Build, quietSeconds: number): Promise<SteadyResult> {
  const { admin } = ctx.cluster;
  const relays = (
    await admin.get<{ items: unknown[] }>('/apis/email.bionicaisolutions.com/v1alpha1/emailrelays')
  ).items.length;
  const cache = await cacheSize(ctx);
  const windows: SteadyWindow[] = [];

  // a. nothing happens
  log(`steady state (${relays} EmailRelays): ${quietSeconds} s quiet ...`);
  let c0 = await operatorCounters(ctx.op);
  let cpu0 = cpuOf(ctx.op.pid);
  let t0 = Date.now();
  let probe = probeLatency(ctx.op);
  await sleep(quietSeconds * 1000);
  let maxProbeMs = await probe.stop();
  let c1 = await operatorCounters(ctx.op);
  windows.push(
    await window(
      ctx,
      `quiet ${quietSeconds} s`,
      t0,
      Date.now(),
      c1.reconciles - c0.reconciles,
      cpuOf(ctx.op.pid) - cpu0,
      { maxProbeMs },
    ),
  );

  // b. a full resync: an unlabelled namespace appears, the operator re-reconciles every relay
  log('steady state: full resync (a new namespace) ...');
  c0 = await operatorCounters(ctx.op);
  cpu0 = cpuOf(ctx.op.pid);
  t0 = Date.now();
  probe = probeLatency(ctx.op);
  let p0 = performance.now();
  await applyObject(admin, namespaceObject('bench-resync-trigger'));
  const resyncSeconds = await reconciled(ctx, p0, relays, c0.reconciles);
  maxProbeMs = await probe.stop();
  await settle(ctx, t0, { quietMs: 3000, timeoutMs: 600_000, minReconciles: relays, base: c0.reconciles });
  c1 = await operatorCounters(ctx.op);
  windows.push(
    await window(
      ctx,
      'full resync (namespace added)',
      t0,
      Date.now(),
      c1.reconciles - c0.reconciles,
      cpuOf(ctx.op.pid) - cpu0,
      { resyncSeconds, maxProbeMs },
    ),
  );

  // c. restart: SIGTERM (releases the Lease), a new process lists everything and reconciles all
  log('steady state: operator restart ...');
  t0 = Date.now();
  await ctx.op.stop();
  p0 = performance.now();
  const spawned = Date.now();
  ctx.op = await startOperator(build, ctx.cluster, 'restarted');
  const restartResync = await reconciled(ctx, p0, relays);
  // from its log: /metrics answers only once the resync that follows has run (see probeLatency)
  const synced = (await ctx.op.log()).split('\n').find((l) => l.includes('"caches synced"'));
  const syncedAt = synced ? Date.parse((JSON.parse(synced) as { time: string }).time) : Number.NaN;
  const readySeconds = round((syncedAt - spawned) / 1000, 2);
  await settle(ctx, t0, { quietMs: 3000, timeoutMs: 600_000, minReconciles: relays });
  c1 = await operatorCounters(ctx.op);
  windows.push(
    await window(ctx, 'operator restart', t0, Date.now(), c1.reconciles, cpuOf(ctx.op.pid), {
      readySeconds,
      resyncSeconds: restartResync,
    }),
  );
  return { relays, rssMB: rssOf(ctx.op.pid), cache, windows };
}

export async function operatorBench(
  build: Build,
  o: OperatorOptions = OPERATOR_DEFAULTS,
): Promise<OperatorResult> {
  if (o.relays <= 0) return { skipped: '--operator-relays 0' };
  const result: OperatorResult = {
    options: o,
    operator: { entry: build.entry, argv: build.argv, user: OPERATOR_USER, leaderElection: true },
    loadavg: { start: load(), end: [] },
    notes: [
      'times from the benchmark: apply request start -> the admin watch saw the last child and status.observedGeneration == generation',
      'requests: kube-apiserver audit log, the operator ServiceAccount only; watches counted when they start',
      'steady-state writes: create/update/patch/delete of the operator other than its Lease renewals (leader election, every 2 s), events included',
      'full resync: a new namespace enqueues every EmailRelay, the same call as the 10-minute resync timer (ManagerOptions.resyncMs, no flag)',
      `EmailRelays: DESIGN.md's minimal spec; every fourth with queue.persistence.enabled=false (a Deployment), the rest StatefulSets; 3 namespaces labelled ${RELAY_ACCESS_LABEL}; bulk: one EmailPolicy (all relays) per namespace, applied first`,
      'no kubelet: pods never run, so no relay becomes Ready; kube-controller-manager runs GC, Deployment and ReplicaSet controllers (no StatefulSet controller)',
    ],
  };
  const started = performance.now();
  let cluster: BenchCluster | undefined;
  let tracker: ReconcileTracker | undefined;
  let ctx: Ctx | undefined;
  try {
    log('starting a private control plane with an audit log ...');
    cluster = await startBenchCluster((l) => log(`control plane: ${l}`));
    result.controlPlaneSeconds = round((performance.now() - started) / 1000);
    for (let j = 0; j < 3; j++)
      await applyObject(cluster.admin, namespaceObject(`bench-app-${j}`, { [RELAY_ACCESS_LABEL]: 'true' }));
    tracker = new ReconcileTracker(cluster.admin);
    await tracker.start();
    log('starting the operator ...');
    const op = await startOperator(build, cluster, 'first');
    await sleep(2000);
    result.operator!.rssIdleMB = rssOf(op.pid);
    ctx = { cluster, op, tracker };
    if (o.single > 0) {
      log(`single EmailRelay, ${o.single} runs ...`);
      result.single = await single(ctx, o.single);
      log(`single: p50 ${result.single.p50Ms} ms, p99 ${result.single.p99Ms} ms`);
    }
    result.bulk = await bulk(ctx, o.relays, Math.max(1, o.namespaces));
    result.steady = await steady(ctx, build, o.quietSeconds);
  } catch (err) {
    result.error = (err as Error).message;
    console.error(`  [operator] failed: ${result.error}`);
    if (ctx) console.error((await ctx.op.log()).slice(-3000));
  } finally {
    result.loadavg!.end = load();
    await tracker?.stop();
    await ctx?.op.stop();
    await cluster?.stop();
  }
  return result;
}

// ---- report ----

const fmtVerbs = (m: Record<string, number>) =>
  Object.entries(m)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');

export function formatOperator(r: OperatorResult): string {
  if (r.skipped) return `operator: skipped (${r.skipped})`;
  const rows: [string, string][] = [];
  const s = r.single;
  if (s)
    rows.push([
      `1 EmailRelay -> ${Object.values(s.children).reduce((a, b) => a + b, 0)} children + status (${s.runs} runs)`,
      `p50 ${s.p50Ms} ms, p99 ${s.p99Ms} ms, max ${s.maxMs} ms (children p50 ${s.childrenP50Ms}, status p50 ${s.statusP50Ms})`,
    ]);
  const b = r.bulk;
  if (b) {
    rows.push([
      `${b.relays} EmailRelays in ${b.namespaces} namespaces`,
      `all done ${b.allDoneSeconds} s (applied in ${b.applySeconds} s; per relay p50 ${b.perRelayP50Seconds} s, p99 ${b.perRelayP99Seconds} s); last write ${b.lastWriteSeconds} s`,
    ]);
    rows.push([
      '  operator process',
      `peak RSS ${b.peakRssMB} MB (idle ${r.operator?.rssIdleMB}, ${b.rssBeforeMB} before, ${b.rssAfterMB} after), CPU ${b.cpuSeconds} s; ${b.reconciles} reconciles (${b.reconcileErrors} failed), mean ${b.meanReconcileMs} ms; /healthz max ${b.maxProbeMs} ms`,
    ]);
    rows.push([
      '  control plane CPU s',
      Object.entries(b.controlPlaneCpuSeconds)
        .map(([k, v]) => `${k} ${v}`)
        .join(', '),
    ]);
    rows.push([`  API requests (${b.requests.total})`, fmtVerbs(b.requests.byVerb)]);
    rows.push(['  writes', fmtVerbs(b.requests.writes)]);
    if (Object.keys(b.requests.failed).length) rows.push(['  failed', fmtVerbs(b.requests.failed)]);
  }
  const st = r.steady;
  if (st)
    rows.push([
      `steady (${st.relays} relays)`,
      `operator RSS ${st.rssMB} MB; its caches: ${st.cache.objects} objects, ${st.cache.jsonMB} MB of JSON (managedFields ${st.cache.managedFieldsMB} MB)`,
    ]);
  for (const w of st?.windows ?? []) {
    const took = [
      w.readySeconds !== undefined ? `caches synced ${w.readySeconds} s after spawn` : '',
      w.resyncSeconds !== undefined ? `all reconciled after ${w.resyncSeconds} s` : '',
      w.maxProbeMs !== undefined ? `/healthz max ${w.maxProbeMs} ms` : '',
    ]
      .filter(Boolean)
      .join(', ');
    rows.push([
      `  ${w.what}`,
      `writes ${w.writes} (target 0; Lease ${w.requests.leaseWrites}); ${w.reconciles} reconciles${took ? `, ${took}` : ''}; CPU ${w.cpuSeconds} s; requests in ${w.seconds} s: ${fmtVerbs(w.requests.byVerb)}`,
    ]);
    for (const x of w.writeSample) rows.push(['    write', x]);
  }
  if (r.error) rows.push(['! failed', r.error.slice(0, 300)]);
  const width = Math.max(...rows.map((x) => x[0].length));
  const head = `operator (${r.operator?.entry}, leader election on; load avg ${r.loadavg?.start.join(' ')} -> ${r.loadavg?.end.join(' ')})`;
  return [head, ...rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`)].join('\n');
}

export interface OperatorTarget {
  target: string;
  value: string;
  met: boolean | 'not run';
}

export function operatorTargets(r: OperatorResult): OperatorTarget[] {
  const windows = (r.steady?.windows ?? []).filter((w) => w.what !== `quiet ${r.options?.quietSeconds} s`);
  if (!windows.length)
    return [{ target: 'operator: zero API writes per steady-state resync', value: '-', met: 'not run' }];
  return [
    {
      target: 'operator: zero API writes per steady-state resync',
      value: windows.map((w) => `${w.what}: ${w.writes} writes / ${w.reconciles} reconciles`).join('; '),
      met: windows.every((w) => w.writes === 0),
    },
  ];
}
