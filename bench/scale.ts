import { connect, type Socket } from 'node:net';
import { smtpSource } from './load.ts';
import { MB, MemSampler, type MemSummary, tree } from './proc.ts';
import { type Build, type HeapFigures, heapFigures, type RelayOptions, startRelay } from './relay.ts';
import { Sink } from './sink.ts';
import { freePort, sleep } from './util.ts';

/** Scale checks, our relay only: a deep queue while the upstream is down, and idle connections. */

const mb = (b: number) => Math.round((b / MB) * 10) / 10;

/** RSS over time, thinned to at most `points` samples, in MB. */
function curve(mem: MemSummary, points = 40): Array<{ s: number; rssMB: number }> {
  const step = Math.max(1, Math.ceil(mem.samples.length / points));
  return mem.samples
    .filter((_, i) => i % step === 0 || i === mem.samples.length - 1)
    .map((x) => ({ s: Math.round(x.t / 100) / 10, rssMB: mb(x.rss) }));
}

export interface QueueResult {
  messages: number;
  sessions: number;
  size: number;
  /** accepted while the upstream was down */
  acceptedPerSecond: number;
  fillSeconds: number;
  /** RSS when 25/50/75/100% of the fill time had passed (the accept rate is steady) */
  rssDuringFillMB: number[];
  /** RSS with everything queued, after a 5 s pause */
  rssQueuedMB: number;
  peakRssFillMB: number;
  /** from `email-relay queue flush` with the sink back until the sink has every message */
  drainSeconds: number;
  drainPerSecond: number;
  peakRssDrainMB: number;
  rssAfterDrainMB: number;
  /** the relay's heap (from its /metrics) with everything queued: RSS vs what is live */
  heapQueued?: HeapFigures;
  fillCurve: Array<{ s: number; rssMB: number }>;
  drainCurve: Array<{ s: number; rssMB: number }>;
}

export async function queueWhileDown(
  build: Build,
  messages: number,
  sessions = 20,
  size = 2048,
  relayOpts: Partial<RelayOptions> = {},
): Promise<QueueResult> {
  const upstreamPort = await freePort(); // nothing listens here until the drain
  const relay = await startRelay(build, {
    upstream: `smtp://127.0.0.1:${upstreamPort}`,
    http: true,
    ...relayOpts,
  });
  let sink: Sink | undefined;
  try {
    const fill = new MemSampler(() => relay.pid, 500);
    const { seconds } = await smtpSource({
      port: relay.port,
      sessions,
      messages,
      size,
      timeoutMs: 120_000 + messages * 20,
    });
    await sleep(5000);
    const fillMem = fill.stop();
    const rssQueued = tree(relay.pid)[0]?.rss ?? 0;
    const heapQueued = await heapFigures(relay.httpPort!);
    const at = (f: number) => {
      const t = f * seconds * 1000;
      return mb(fillMem.samples.find((x) => x.t >= t)?.rss ?? rssQueued);
    };

    sink = await Sink.start(upstreamPort);
    const drain = new MemSampler(() => relay.pid, 500);
    const t0 = performance.now();
    await relay.flush();
    const t1 = await sink.waitFor(messages, 120_000 + messages * 20);
    await sleep(2000);
    const drainMem = drain.stop();
    const drainSeconds = (t1 - t0) / 1000;
    return {
      messages,
      sessions,
      size,
      acceptedPerSecond: Math.round(messages / seconds),
      fillSeconds: Math.round(seconds * 10) / 10,
      rssDuringFillMB: [0.25, 0.5, 0.75, 1].map(at),
      rssQueuedMB: mb(rssQueued),
      peakRssFillMB: mb(fillMem.peakRss),
      drainSeconds: Math.round(drainSeconds * 10) / 10,
      drainPerSecond: Math.round(messages / drainSeconds),
      peakRssDrainMB: mb(drainMem.peakRss),
      rssAfterDrainMB: mb(drainMem.samples.at(-1)?.rss ?? 0),
      ...(heapQueued ? { heapQueued } : {}),
      fillCurve: curve(fillMem),
      drainCurve: curve(drainMem),
    };
  } finally {
    await relay.stop();
    await sink?.stop();
  }
}

export interface IdleResult {
  connections: number;
  /** all of them greeted and answered EHLO, and were still open at the end */
  open: number;
  rssBeforeMB: number;
  rssIdleMB: number;
  peakRssMB: number;
  perConnectionKB: number;
  rssAfterCloseMB: number;
}

/** Opens `n` sessions (banner + EHLO each), holds them idle, and reads the relay's RSS. */
export async function idleConnections(build: Build, n: number, nodeArgs: string[] = []): Promise<IdleResult> {
  const holdMs = 5000;
  const sink = await Sink.start();
  const relay = await startRelay(build, { upstream: sink.url, nodeArgs });
  const sockets: Socket[] = [];
  try {
    await sleep(2000);
    const before = tree(relay.pid)[0]?.rss ?? 0;
    const mem = new MemSampler(() => relay.pid, 250);
    let open = 0;
    const one = () =>
      new Promise<void>((resolve) => {
        const s = connect(relay.port, '127.0.0.1');
        sockets.push(s);
        let seen = '';
        let ehloSent = false;
        const timer = setTimeout(resolve, 10_000);
        s.on('error', () => resolve());
        s.on('data', (d: Buffer) => {
          seen += d.toString();
          if (!ehloSent && /^220 .*\r\n$/.test(seen)) {
            ehloSent = true;
            seen = '';
            s.write('EHLO idle.bench.example.com\r\n');
          } else if (ehloSent && /(^|\n)250 [^\n]*\r\n$/.test(seen)) {
            open++;
            clearTimeout(timer);
            resolve();
          }
        });
      });
    for (let i = 0; i < n; i += 50) await Promise.all(Array.from({ length: Math.min(50, n - i) }, one));
    await sleep(holdMs);
    const idle = tree(relay.pid)[0]?.rss ?? 0;
    const stillOpen = sockets.filter((s) => !s.destroyed && s.readyState === 'open').length;
    const summary = mem.stop();
    for (const s of sockets) s.destroy();
    await sleep(3000);
    const after = tree(relay.pid)[0]?.rss ?? 0;
    return {
      connections: n,
      open: Math.min(open, stillOpen),
      rssBeforeMB: mb(before),
      rssIdleMB: mb(idle),
      peakRssMB: mb(summary.peakRss),
      perConnectionKB: Math.round((idle - before) / 1024 / n),
      rssAfterCloseMB: mb(after),
    };
  } finally {
    for (const s of sockets) s.destroy();
    await relay.stop();
    await sink.stop();
  }
}
