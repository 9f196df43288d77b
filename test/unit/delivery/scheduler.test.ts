import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MinHeap } from '../../../src/relay/delivery/heap.ts';
import { Scheduler } from '../../../src/relay/delivery/scheduler.ts';

/** A run the test resolves by hand: what the scheduler started, in order. */
function harness(concurrency = 2) {
  const started: string[] = [];
  const pending = new Map<string, { resolve: (due: number | undefined) => void; signal: AbortSignal }>();
  const s = new Scheduler({
    concurrency,
    now: () => Date.now(),
    run: (id, signal) =>
      new Promise((resolve) => {
        started.push(id);
        pending.set(id, { resolve, signal });
      }),
    onError: () => undefined,
  });
  const finish = async (id: string, due?: number) => {
    pending.get(id)!.resolve(due);
    pending.delete(id);
    await vi.advanceTimersByTimeAsync(0);
  };
  return { s, started, pending, finish };
}

beforeEach(() => {
  vi.useFakeTimers({ now: 1_000_000 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('Scheduler', () => {
  it('runs due ids FIFO, at most `concurrency` at once', async () => {
    const { s, started, finish } = harness(2);
    s.scheduleMany(['a', 'b', 'c', 'd'].map((id) => ({ id, due: 0 })));
    expect(started).toEqual(['a', 'b']);
    expect(s.inFlight).toBe(2);
    await finish('b');
    expect(started).toEqual(['a', 'b', 'c']);
    await finish('a');
    expect(started).toEqual(['a', 'b', 'c', 'd']);
  });

  it('orders by due time, then by insertion', async () => {
    const { s, started, finish } = harness(1);
    const now = Date.now();
    s.scheduleMany([
      { id: 'late', due: now - 10 },
      { id: 'early', due: now - 1000 },
      { id: 'same', due: now - 10 },
    ]);
    await finish('early');
    await finish('late');
    expect(started).toEqual(['early', 'late', 'same']);
  });

  it('waits for the earliest due time with one timer', async () => {
    const { s, started } = harness(5);
    s.schedule('x', Date.now() + 5000);
    s.schedule('y', Date.now() + 1000);
    expect(vi.getTimerCount()).toBe(1);
    await vi.advanceTimersByTimeAsync(999);
    expect(started).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(started).toEqual(['y']);
    await vi.advanceTimersByTimeAsync(4000);
    expect(started).toEqual(['y', 'x']);
  });

  it('re-queues at the due time the run returns, forgets on undefined', async () => {
    const { s, started, finish } = harness(1);
    s.schedule('m', Date.now());
    await finish('m', Date.now() + 300);
    expect(s.has('m')).toBe(true);
    await vi.advanceTimersByTimeAsync(300);
    expect(started).toEqual(['m', 'm']);
    await finish('m', undefined);
    expect(s.has('m')).toBe(false);
  });

  it('makeDue / makeAllDue bring deferred ids forward (retry, flush)', async () => {
    const { s, started, finish } = harness(1);
    const later = Date.now() + 3_600_000;
    s.scheduleMany(['a', 'b', 'c'].map((id) => ({ id, due: later })));
    expect(s.makeDue('b')).toBe(true);
    expect(started).toEqual(['b']);
    expect(s.makeDue('nope')).toBe(false);
    s.makeAllDue();
    await finish('b', later);
    expect(started).toEqual(['b', 'a']);
    await finish('a', later);
    expect(started).toEqual(['b', 'a', 'c']);
  });

  it('makeDue() of a running id: the run it defers is followed at once by another', async () => {
    const { s, started, finish } = harness(1);
    const later = Date.now() + 3_600_000;
    s.schedule('a', Date.now());
    expect(s.makeDue('a')).toBe(true);
    await finish('a', later);
    expect(started).toEqual(['a', 'a']);
    // Only once: the second run's deferral stands.
    await finish('a', later);
    expect(started).toEqual(['a', 'a']);
    expect(s.has('a')).toBe(true);
  });

  it('makeAllDue() (flush) during a run: the run it defers is followed at once by another', async () => {
    const { s, started, finish } = harness(2);
    const later = Date.now() + 3_600_000;
    s.schedule('a', Date.now());
    s.schedule('b', later);
    s.makeAllDue(); // 'a' is running; 'b' was waiting and starts now
    expect(started).toEqual(['a', 'b']);
    await finish('a', later);
    expect(started).toEqual(['a', 'b', 'a']);
    // 'b' began after the flush, and 'a' runs again once only: their deferrals stand.
    await finish('b', later);
    await finish('a', later);
    expect(started).toEqual(['a', 'b', 'a']);
    expect(s.has('a') && s.has('b')).toBe(true);
  });

  it('forget() of a running id waits for the run and drops what it returns', async () => {
    const { s, finish } = harness(1);
    s.schedule('a', Date.now());
    let forgotten = false;
    const p = s.forget('a').then(() => (forgotten = true));
    await vi.advanceTimersByTimeAsync(0);
    expect(forgotten).toBe(false);
    await finish('a', Date.now());
    await p;
    expect(s.has('a')).toBe(false);
  });

  it('stop(): starts nothing new, lets runs finish before the deadline', async () => {
    const { s, started, finish } = harness(1);
    s.scheduleMany(['a', 'b'].map((id) => ({ id, due: 0 })));
    const stopped = s.stop(Date.now() + 10_000);
    await finish('a', Date.now());
    await stopped;
    expect(started).toEqual(['a']);
  });

  it('stop(): aborts runs still going at the deadline and waits for them to settle', async () => {
    const { s, pending } = harness(2);
    s.scheduleMany(['a', 'b'].map((id) => ({ id, due: 0 })));
    for (const { signal, resolve } of pending.values())
      signal.addEventListener('abort', () => resolve(undefined));
    let done = false;
    const stopped = s.stop(Date.now() + 1000).then(() => (done = true));
    await vi.advanceTimersByTimeAsync(999);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await stopped;
    expect([...pending.values()].every((p) => p.signal.aborted)).toBe(true);
  });

  it('a run that throws is re-queued by onError', async () => {
    let calls = 0;
    const s = new Scheduler({
      concurrency: 1,
      now: () => Date.now(),
      run: async () => {
        calls++;
        throw new Error('boom');
      },
      onError: () => (calls < 3 ? Date.now() + 10 : undefined),
    });
    s.schedule('x', Date.now());
    await vi.advanceTimersByTimeAsync(100);
    expect(calls).toBe(3);
    expect(s.has('x')).toBe(false);
  });
});

describe('MinHeap', () => {
  it('pops in order and rebuilds in bulk', () => {
    const h = new MinHeap<number>((a, b) => a < b);
    const values = Array.from({ length: 500 }, () => Math.floor(Math.random() * 1000));
    for (const v of values) h.push(v);
    const out: number[] = [];
    while (h.size) out.push(h.pop()!);
    expect(out).toEqual([...values].sort((a, b) => a - b));
    h.reset([5, 3, 9, 1]);
    expect([h.pop(), h.pop(), h.pop(), h.pop(), h.pop()]).toEqual([1, 3, 5, 9, undefined]);
  });
});
