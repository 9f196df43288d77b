import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): self time per function and per module
 * (package, our source file, or node internals), largest first.
 *
 *   node --import tsx bench/profile.ts FILE.cpuprofile [--top 25]
 */

interface CpuProfile {
  nodes: Array<{
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }>;
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileEntry {
  name: string;
  selfMs: number;
  pct: number;
}

export interface ProfileSummary {
  totalMs: number;
  /** sampled time not in (idle): what the percentages are of */
  busyMs: number;
  /** (garbage collector), (program): V8's pseudo-frames; (idle) is left out */
  functions: ProfileEntry[];
  modules: ProfileEntry[];
}

/** The compiled relay (bench/relay.ts builds into bench-relay-build-*) maps back to src/. */
const shorten = (url: string) =>
  url
    .replace(/^file:\/\/.*?\/bench-relay-build-[^/]+(-patched)?\//, 'src/')
    .replace(/^file:\/\/.*?\/(node_modules|src)\//, '$1/');

function moduleOf(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith('node:')) return 'node internals';
  return shorten(url).replace(/\.js$/, '.ts');
}

export function summarise(file: string, top = 25): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (const [i, id] of p.samples.entries()) self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
  const fns = new Map<string, number>();
  const mods = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    total += us;
    if (functionName === '(idle)') {
      idle += us;
      continue;
    }
    const short = shorten(url);
    const name = url ? `${functionName || '(anonymous)'} ${short}:${lineNumber + 1}` : functionName;
    fns.set(name, (fns.get(name) ?? 0) + us);
    const mod = moduleOf(url, functionName);
    mods.set(mod, (mods.get(mod) ?? 0) + us);
  }
  const busy = total - idle;
  const list = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({
        name,
        selfMs: Math.round(us / 1000),
        pct: Math.round((us / busy) * 1000) / 10,
      }));
  return {
    totalMs: Math.round(total / 1000),
    busyMs: Math.round(busy / 1000),
    functions: list(fns),
    modules: list(mods),
  };
}

export function formatSummary(s: ProfileSummary, top = 25): string {
  const rows = (title: string, list: ProfileEntry[]) =>
    [
      title,
      ...list
        .slice(0, top)
        .map((e) => `  ${e.pct.toFixed(1).padStart(5)}%  ${String(e.selfMs).padStart(7)} ms  ${e.name}`),
    ].join('\n');
  return `${rows(`self time by module, % of ${s.busyMs} ms busy (${s.totalMs} ms sampled)`, s.modules)}\n${rows('self time by function', s.functions)}`;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const file = process.argv[2];
  if (!file) throw new Error('usage: profile.ts FILE.cpuprofile [--top N]');
  const i = process.argv.indexOf('--top');
  const top = i > 0 ? Number(process.argv[i + 1]) : 25;
  console.log(formatSummary(summarise(file, top), top));
}
