import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/**
 * Where new upstream sessions live: in the delivery thread (wire-thread.ts) when the relay has two
 * CPUs or more to run on, and on a one-CPU budget in the main thread while the relay is quiet.
 *
 * With a second CPU the thread pays at any load. At one client (one connection per message, 2 KB,
 * two cores shared with the client and the smarthost) the main thread spent 1.28 ms per message
 * with the sessions beside it and 1.00 ms with them in the thread, and the client got 1.12x
 * (0.96-1.33) the messages per second, for 4 % more CPU in all; at 100 KB 1.17x (its extra CPU
 * then was the thread's missing fast dot-stuffing, since installed). On one CPU nothing runs beside the main thread, so
 * handing each transaction over and back is cost without gain: there a quiet relay keeps its
 * sessions here and moves them to the thread only when busy. The load is a moving average of the
 * attempts under way, with a gap between the two thresholds so that a burst or a lull does not
 * move sessions back and forth (each move costs a dial).
 */

/** CPUs the relay may use: the CPUs it may run on, capped by a cgroup CPU quota (a pod's limit). */
export function cpuBudget(
  read: (path: string) => string | undefined = readQuiet,
  cpus: number = availableParallelism(),
): number {
  const quota = cgroupQuota(read);
  return quota === undefined ? cpus : Math.min(cpus, quota);
}

/**
 * The cgroup CPU quota in CPUs, or undefined without one: cgroup v2's `cpu.max` ("150000 100000",
 * or "max 100000" for none), else cgroup v1's cfs_quota_us / cfs_period_us (-1: none).
 */
export function cgroupQuota(read: (path: string) => string | undefined): number | undefined {
  const v2 = read('/sys/fs/cgroup/cpu.max')?.trim().split(/\s+/);
  if (v2) return v2[0] === 'max' ? undefined : ratio(v2[0], v2[1]);
  return ratio(read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us'), read('/sys/fs/cgroup/cpu/cpu.cfs_period_us'));
}

function ratio(quota: string | undefined, period: string | undefined): number | undefined {
  const q = Number(quota);
  const p = Number(period);
  return Number.isFinite(q) && q > 0 && Number.isFinite(p) && p > 0 ? q / p : undefined;
}

function readQuiet(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * A quiet relay keeps its sessions on the main thread: on a budget under two CPUs, unless
 * EMAIL_RELAY_DELIVERY_QUIET_LOCAL says otherwise (0: every session in the thread whatever the
 * budget, 1: quiet ones here whatever the budget; A/B, tests).
 */
export const QUIET_LOCAL = quietLocal(process.env.EMAIL_RELAY_DELIVERY_QUIET_LOCAL, cpuBudget);

export function quietLocal(setting: string | undefined, budget: () => number): boolean {
  if (setting === '0') return false;
  if (setting === '1') return true;
  return budget() < 2;
}

export class SessionPlacement {
  private load = 0;
  /** New sessions go on the main thread. */
  local = true;

  constructor(
    private readonly o = {
      /** Weight of one sample in the moving average. */
      alpha: 0.05,
      /** Into the thread above this many attempts under way, on average... */
      busyAbove: 3,
      /** ...and back below this many. */
      quietBelow: 1.5,
    },
  ) {}

  /** An attempt starts, with `inFlight` attempts under way (itself included). True if the place changed. */
  sample(inFlight: number): boolean {
    this.load += (inFlight - this.load) * this.o.alpha;
    if (this.local && this.load > this.o.busyAbove) this.local = false;
    else if (!this.local && this.load < this.o.quietBelow) this.local = true;
    else return false;
    return true;
  }

  /** The moving average, for the log line of a move. */
  get average(): number {
    return Math.round(this.load * 100) / 100;
  }
}
