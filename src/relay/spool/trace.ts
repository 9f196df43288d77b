import { appendFileSync } from 'node:fs';
import { appendFile } from 'node:fs/promises';
import { PerformanceObserver, performance } from 'node:perf_hooks';

/**
 * A timeline of the spool's disk work for finding latency stalls (bench/stalls.ts): set
 * EMAIL_RELAY_SPOOL_TRACE=<file> and every group commit (write, fdatasync), segment open and
 * drop, checkpoint, GC pause and event-loop stall over 5 ms is appended to it as a JSON line,
 * with wall-clock milliseconds so a client's timestamps line up. Off (the default), `spoolTrace`
 * is undefined and each call site costs one test.
 */

export type TraceEvent = {
  ev: string;
  /** start, epoch milliseconds (fractional) */
  t: number;
  /** duration, milliseconds */
  ms?: number;
} & Record<string, number | string | boolean>;

const file = process.env.EMAIL_RELAY_SPOOL_TRACE;

/** Epoch milliseconds with sub-millisecond resolution. */
export const nowMs = () => performance.timeOrigin + performance.now();

function start(path: string): (e: TraceEvent) => void {
  let lines: string[] = [];
  const take = () => {
    const text = lines.join('');
    lines = [];
    return text;
  };
  setInterval(() => {
    if (lines.length) void appendFile(path, take()).catch(() => {});
  }, 500).unref();
  process.once('exit', () => {
    if (lines.length) appendFileSync(path, take());
  });
  const record = (e: TraceEvent) => {
    lines.push(`${JSON.stringify(e)}\n`);
  };
  // The event loop: a 1 ms timer that fires late by more than 5 ms was blocked (or starved).
  let expected = nowMs() + 1;
  setInterval(() => {
    const now = nowMs();
    const late = now - expected;
    if (late > 5) record({ ev: 'lag', t: expected, ms: late });
    expected = now + 1;
  }, 1).unref();
  const gc = new PerformanceObserver((list) => {
    for (const g of list.getEntries())
      if (g.duration > 2) record({ ev: 'gc', t: performance.timeOrigin + g.startTime, ms: g.duration });
  });
  gc.observe({ entryTypes: ['gc'] });
  return record;
}

export const spoolTrace: ((e: TraceEvent) => void) | undefined = file ? start(file) : undefined;
