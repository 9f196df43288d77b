import { describe, expect, it, vi } from 'vitest';
import { computeRelayStatus } from '../../../src/operator/emailrelay/status.ts';
import { isSubset } from '../../../src/operator/runtime/apply.ts';
import { setConditions } from '../../../src/operator/runtime/conditions.ts';
import { matchesSelector } from '../../../src/operator/runtime/selector.ts';
import { ExponentialBackoff, WorkQueue } from '../../../src/operator/runtime/workqueue.ts';

describe('WorkQueue', () => {
  it('deduplicates keys waiting to be processed', async () => {
    const q = new WorkQueue();
    q.add('a');
    q.add('b');
    q.add('a');
    expect(q.length).toBe(2);
    expect(await q.get()).toBe('a');
    expect(await q.get()).toBe('b');
  });

  it('never hands one key to two workers; an add while processing comes back after done', async () => {
    const q = new WorkQueue();
    q.add('a');
    const key = await q.get();
    q.add('a');
    expect(q.length).toBe(0); // not handed out again while processing
    q.done(key!);
    expect(q.length).toBe(1);
    expect(await q.get()).toBe('a');
  });

  it('wakes a waiting worker, and ends workers on shutdown', async () => {
    const q = new WorkQueue();
    const waiting = q.get();
    q.add('x');
    expect(await waiting).toBe('x');
    const idle = q.get();
    q.shutDown();
    expect(await idle).toBeUndefined();
  });

  it('backs off per key, exponentially and capped; forget resets', () => {
    const b = new ExponentialBackoff({ baseMs: 100, maxMs: 1000 });
    expect([b.next('a'), b.next('a'), b.next('a'), b.next('a'), b.next('a')]).toEqual([
      100, 200, 400, 800, 1000,
    ]);
    expect(b.next('b')).toBe(100);
    b.forget('a');
    expect(b.next('a')).toBe(100);
  });

  it('addRateLimited re-adds after the delay; an earlier addAfter wins', async () => {
    vi.useFakeTimers();
    try {
      const q = new WorkQueue({ backoff: { baseMs: 1000, maxMs: 10_000 } });
      expect(q.addRateLimited('a')).toBe(1000);
      q.addAfter('a', 5000);
      vi.advanceTimersByTime(999);
      expect(q.length).toBe(0);
      vi.advanceTimersByTime(1);
      expect(q.length).toBe(1);
      vi.advanceTimersByTime(10_000);
      expect(q.length).toBe(1);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('conditions', () => {
  it('keep lastTransitionTime while the status stays, move it on a change', () => {
    const a = setConditions(undefined, [{ type: 'Ready', status: 'False', reason: 'X', message: 'm' }], 't1');
    const b = setConditions(a, [{ type: 'Ready', status: 'False', reason: 'Y', message: 'n' }], 't2');
    expect(b[0]).toMatchObject({ reason: 'Y', lastTransitionTime: 't1' });
    const c = setConditions(b, [{ type: 'Ready', status: 'True', reason: 'Z', message: 'o' }], 't3');
    expect(c[0]?.lastTransitionTime).toBe('t3');
  });
});

describe('label selectors', () => {
  it('match labels and expressions like metav1.LabelSelector', () => {
    const labels = { a: '1', b: '2' };
    expect(matchesSelector({}, labels)).toBe(true);
    expect(matchesSelector({ matchLabels: { a: '1' } }, labels)).toBe(true);
    expect(matchesSelector({ matchLabels: { a: '2' } }, labels)).toBe(false);
    expect(
      matchesSelector({ matchExpressions: [{ key: 'b', operator: 'In', values: ['2', '3'] }] }, labels),
    ).toBe(true);
    expect(
      matchesSelector({ matchExpressions: [{ key: 'b', operator: 'NotIn', values: ['2'] }] }, labels),
    ).toBe(false);
    expect(matchesSelector({ matchExpressions: [{ key: 'c', operator: 'DoesNotExist' }] }, labels)).toBe(
      true,
    );
    expect(matchesSelector({ matchExpressions: [{ key: 'c', operator: 'Exists' }] }, labels)).toBe(false);
  });
});

describe('isSubset (is a child already as rendered?)', () => {
  it('ignores fields the API added and zero values it omitted; sees changed values', () => {
    expect(isSubset({ a: 1, b: [{ c: 'x' }] }, { a: 1, z: 2, b: [{ c: 'x', d: 'TCP' }] })).toBe(true);
    expect(isSubset({ flag: false, list: [] }, {})).toBe(true);
    expect(isSubset({ port: 25 }, { port: 26 })).toBe(false);
    expect(isSubset({ l: [1, 2] }, { l: [1] })).toBe(false);
    expect(isSubset({ maxUnavailable: 1 }, { maxUnavailable: '1' })).toBe(true);
  });
});

describe('computeRelayStatus', () => {
  const base = { generation: 3, previous: undefined, now: 't', desiredReplicas: 2 };
  const ready = (s: ReturnType<typeof computeRelayStatus>) => s.conditions?.find((c) => c.type === 'Ready');

  it('is Ready when enough pods are ready, and not while none are', () => {
    const workload = (readyReplicas: number) => ({
      apiVersion: 'apps/v1',
      kind: 'StatefulSet',
      metadata: { name: 'r', generation: 1 },
      status: { observedGeneration: 1, replicas: 2, readyReplicas, updatedReplicas: 2 },
    });
    expect(ready(computeRelayStatus({ ...base, workload: workload(2) }))).toMatchObject({ status: 'True' });
    expect(ready(computeRelayStatus({ ...base, workload: workload(0) }))).toMatchObject({
      status: 'False',
      reason: 'PodsNotReady',
    });
  });

  it('reports a fatal problem as Ready=False with its reason, and Degraded', () => {
    const s = computeRelayStatus({
      ...base,
      problem: { reason: 'InvalidSpec', message: 'bad', fatal: true },
    });
    expect(ready(s)).toMatchObject({
      status: 'False',
      reason: 'InvalidSpec',
      message: 'bad',
      observedGeneration: 3,
    });
    expect(s.conditions?.find((c) => c.type === 'Degraded')?.status).toBe('True');
    expect(s.observedGeneration).toBe(3);
  });
});
