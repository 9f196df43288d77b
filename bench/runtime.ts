/**
 * What the relay's own /metrics (prom-client's default metrics) say about its event loop and GC
 * over a stretch of the benchmark: a latency tail that hits every session at once is either the
 * event loop stalled (GC, a long synchronous task) or I/O (fsync) waiting, and this tells which.
 */

export interface RuntimeSample {
  /** per GC kind: count and seconds, cumulative */
  gc: Record<string, { count: number; seconds: number; over10ms: number }>;
  /** max event-loop delay since the previous scrape (prom-client resets it on every scrape) */
  lagMaxMs: number;
}

export interface RuntimeWindow {
  lagMaxMs: number;
  gcCount: number;
  gcMs: number;
  /** collections that took longer than 10 ms, by kind */
  gcOver10ms: Record<string, number>;
}

export async function sampleRuntime(httpPort: number): Promise<RuntimeSample | undefined> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    const gc: RuntimeSample['gc'] = {};
    const kind = (line: string) => /kind="(\w+)"/.exec(line)?.[1] ?? '?';
    for (const line of text.split('\n')) {
      if (!line.startsWith('nodejs_gc_duration_seconds_')) continue;
      const v = Number(line.slice(line.lastIndexOf(' ') + 1));
      const k = kind(line);
      gc[k] ??= blank();
      const g = gc[k];
      if (line.startsWith('nodejs_gc_duration_seconds_count{')) g.count = v;
      else if (line.startsWith('nodejs_gc_duration_seconds_sum{')) g.seconds = v;
      else if (line.startsWith('nodejs_gc_duration_seconds_bucket{') && line.includes('le="0.01"'))
        g.over10ms = -v; // completed below
    }
    for (const g of Object.values(gc)) g.over10ms += g.count;
    const lag = /^nodejs_eventloop_lag_max_seconds ([0-9.e+-]+)$/m.exec(text);
    return { gc, lagMaxMs: lag ? Number(lag[1]) * 1000 : Number.NaN };
  } catch {
    return undefined;
  }
}

const blank = () => ({ count: 0, seconds: 0, over10ms: 0 });

export function runtimeWindow(before: RuntimeSample, after: RuntimeSample): RuntimeWindow {
  let gcCount = 0;
  let gcMs = 0;
  const gcOver10ms: Record<string, number> = {};
  for (const [k, a] of Object.entries(after.gc)) {
    const b = before.gc[k] ?? blank();
    gcCount += a.count - b.count;
    gcMs += (a.seconds - b.seconds) * 1000;
    if (a.over10ms - b.over10ms > 0) gcOver10ms[k] = a.over10ms - b.over10ms;
  }
  return { lagMaxMs: Math.round(after.lagMaxMs * 10) / 10, gcCount, gcMs: Math.round(gcMs), gcOver10ms };
}
