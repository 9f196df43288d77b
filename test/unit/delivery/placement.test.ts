import { describe, expect, it } from 'vitest';
import {
  cgroupQuota,
  cpuBudget,
  quietLocal,
  SessionPlacement,
} from '../../../src/relay/delivery/placement.ts';

/** Samples `times` times; checks that sample() says true exactly when `local` changes (the log line). */
const feed = (p: SessionPlacement, inFlight: number, times: number) => {
  for (let i = 0; i < times; i++) {
    const before = p.local;
    expect(p.sample(inFlight)).toBe(p.local !== before);
  }
};

describe('SessionPlacement', () => {
  it('keeps sessions on the main thread while one attempt at a time runs', () => {
    const p = new SessionPlacement();
    feed(p, 1, 1000);
    expect(p.local).toBe(true);
    feed(p, 2, 1000); // the next message's attempt overlapping the last one's
    expect(p.local).toBe(true);
  });

  it('moves them to the delivery thread under sustained load, and back once it is quiet again', () => {
    const p = new SessionPlacement();
    feed(p, 20, 10);
    expect(p.local).toBe(false);
    feed(p, 1, 20);
    expect(p.local).toBe(false); // a lull of 20 attempts is not enough
    feed(p, 1, 200);
    expect(p.local).toBe(true);
  });

  it('does not flip for a short burst, nor back and forth between the thresholds', () => {
    const p = new SessionPlacement();
    feed(p, 1, 100);
    feed(p, 30, 1);
    expect(p.local).toBe(true);
    feed(p, 20, 50);
    expect(p.local).toBe(false);
    let flips = 0;
    let last = p.local;
    for (let i = 0; i < 1000; i++) {
      p.sample(i % 2 ? 2 : 3); // averages 2.5: inside the gap
      if (p.local !== last) flips++;
      last = p.local;
    }
    expect(flips).toBeLessThanOrEqual(1);
  });
});

describe('cpuBudget', () => {
  const files =
    (f: Record<string, string>) =>
    (path: string): string | undefined =>
      f[path];

  it('reads a cgroup v2 quota, and none when it says max', () => {
    expect(cgroupQuota(files({ '/sys/fs/cgroup/cpu.max': '150000 100000\n' }))).toBe(1.5);
    expect(cgroupQuota(files({ '/sys/fs/cgroup/cpu.max': 'max 100000\n' }))).toBeUndefined();
  });

  it('reads a cgroup v1 quota, and none for -1 or without the files', () => {
    const v1 = (quota: string) =>
      files({
        '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': `${quota}\n`,
        '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n',
      });
    expect(cgroupQuota(v1('50000'))).toBe(0.5);
    expect(cgroupQuota(v1('-1'))).toBeUndefined();
    expect(cgroupQuota(files({}))).toBeUndefined();
  });

  it('is the CPUs the process may run on, capped by the quota', () => {
    const v2 = (max: string) => files({ '/sys/fs/cgroup/cpu.max': max });
    expect(cpuBudget(v2('max 100000'), 8)).toBe(8);
    expect(cpuBudget(v2('50000 100000'), 8)).toBe(0.5);
    expect(cpuBudget(v2('400000 100000'), 2)).toBe(2);
  });

  it('keeps quiet sessions on the main thread below two CPUs, unless told', () => {
    expect(quietLocal(undefined, () => 1)).toBe(true);
    expect(quietLocal(undefined, () => 1.5)).toBe(true);
    expect(quietLocal(undefined, () => 2)).toBe(false);
    expect(quietLocal('0', () => 1)).toBe(false);
    expect(quietLocal('1', () => 8)).toBe(true);
  });
});
