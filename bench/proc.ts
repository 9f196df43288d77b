import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';

/**
 * Memory and CPU of a process tree from /proc: a system's cost is its root process plus every
 * descendant (Postfix: master, smtpd, cleanup, qmgr, smtp, ...; the relay: one node process).
 */

const conf = (name: string, fallback: number) => {
  try {
    return Number(execFileSync('getconf', [name], { encoding: 'utf8' }).trim()) || fallback;
  } catch {
    return fallback;
  }
};
const PAGE = conf('PAGESIZE', 4096);
const HZ = conf('CLK_TCK', 100);

export interface ProcStat {
  pid: number;
  ppid: number;
  comm: string;
  /** utime + stime + cutime + cstime in seconds: own CPU plus that of reaped children. */
  cpu: number;
  rss: number;
  startTime: number;
}

export function readStat(pid: number): ProcStat | undefined {
  let s: string;
  try {
    s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const close = s.lastIndexOf(')');
  const comm = s.slice(s.indexOf('(') + 1, close);
  // fields after "comm": 3 state, 4 ppid, ... 14 utime 15 stime 16 cutime 17 cstime ... 22 starttime 24 rss
  const f = s.slice(close + 2).split(' ');
  const n = (field: number) => Number(f[field - 3]);
  return {
    pid,
    ppid: n(4),
    comm,
    cpu: (n(14) + n(15) + n(16) + n(17)) / HZ,
    rss: n(24) * PAGE,
    startTime: n(22),
  };
}

/** The root and all its descendants that are alive now. */
export function tree(root: number): ProcStat[] {
  const all = new Map<number, ProcStat>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (st) all.set(st.pid, st);
  }
  const rootStat = all.get(root);
  if (!rootStat) return [];
  const out = [rootStat];
  const children = new Map<number, ProcStat[]>();
  for (const st of all.values()) {
    const list = children.get(st.ppid);
    if (list) list.push(st);
    else children.set(st.ppid, [st]);
  }
  for (let i = 0; i < out.length; i++) out.push(...(children.get(out[i]!.pid) ?? []));
  return out;
}

/** CPU seconds used so far by the tree (exited children count once their parent reaped them). */
export function treeCpu(root: number): number {
  return tree(root).reduce((a, p) => a + p.cpu, 0);
}

/** Proportional set size in bytes (shared pages split between the processes sharing them). */
export function pss(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Peak resident set size of one process since start or the last resetPeak (VmHWM). */
export function peakRss(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Resets VmHWM to the current RSS (Linux 4.0+; needs to own the process or be root). */
export function resetPeak(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {}
}

export interface MemSample {
  /** ms since the sampler started */
  t: number;
  rss: number;
  pss: number;
  procs: number;
}

export interface MemSummary {
  /** Largest sum of VmRSS over the tree seen by a sample. */
  peakRss: number;
  /** Largest sum of PSS seen (shared library pages counted once across Postfix's processes). */
  peakPss: number;
  /** Largest number of processes in the tree seen. */
  peakProcs: number;
  samples: MemSample[];
}

/** Samples the tree's memory every `everyMs` until stop(). */
export class MemSampler {
  private readonly samples: MemSample[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly t0 = performance.now();

  constructor(
    private readonly root: () => number,
    everyMs = 200,
  ) {
    this.sample();
    this.timer = setInterval(() => this.sample(), everyMs);
  }

  sample(): MemSample {
    const procs = tree(this.root());
    const s: MemSample = {
      t: Math.round(performance.now() - this.t0),
      rss: procs.reduce((a, p) => a + p.rss, 0),
      pss: procs.reduce((a, p) => a + pss(p.pid), 0),
      procs: procs.length,
    };
    this.samples.push(s);
    return s;
  }

  stop(): MemSummary {
    clearInterval(this.timer);
    this.sample();
    return {
      peakRss: Math.max(...this.samples.map((s) => s.rss)),
      peakPss: Math.max(...this.samples.map((s) => s.pss)),
      peakProcs: Math.max(...this.samples.map((s) => s.procs)),
      samples: this.samples,
    };
  }
}

export const MB = 1024 * 1024;
