import { existsSync } from 'node:fs';
import { run } from './util.ts';

/**
 * The Debian tools the benchmark runs: found on PATH (or in /usr/sbin, /usr/lib/postfix/sbin),
 * else installed with apt-get when we are root (as scripts/test.sh does for the tests), else a
 * clear error naming the package. Nothing is skipped for want of a tool.
 */

const DIRS = ['/usr/bin', '/usr/sbin', '/sbin', '/usr/lib/postfix/sbin', '/usr/local/bin'];

export const TOOLS = {
  postfix: { binaries: ['postfix', 'smtp-source', 'smtp-sink', 'postconf'], pkg: 'postfix' },
  valgrind: { binaries: ['valgrind', 'callgrind_annotate'], pkg: 'valgrind' },
} as const;

export type ToolName = keyof typeof TOOLS;

export function findBinary(name: string): string | undefined {
  const path = (process.env.PATH ?? '').split(':').filter(Boolean);
  return [...path, ...DIRS].map((d) => `${d}/${name}`).find(existsSync);
}

const missingPackages = (names: readonly ToolName[]) => [
  ...new Set(names.filter((n) => TOOLS[n].binaries.some((b) => !findBinary(b))).map((n) => TOOLS[n].pkg)),
];

/** Installs what is missing (root: apt-get), or throws saying what to install. */
export async function ensureTools(names: readonly ToolName[]): Promise<void> {
  const missing = missingPackages(names);
  if (!missing.length) return;
  if (process.getuid?.() !== 0)
    throw new Error(
      `the benchmark needs ${missing.join(', ')}: run 'sudo apt-get install ${missing.join(' ')}'`,
    );
  console.log(`installing ${missing.join(', ')} (apt-get) ...`);
  process.env.DEBIAN_FRONTEND = 'noninteractive'; // run() hands our environment on
  const update = await run('apt-get', ['update', '-qq'], 600_000);
  if (update.code !== 0) throw new Error(`apt-get update failed: ${update.stderr.trim()}`);
  const r = await run(
    'apt-get',
    ['install', '-o', 'DPkg::Lock::Timeout=600', '-y', '-qq', '--no-install-recommends', ...missing],
    900_000,
  );
  if (r.code !== 0) throw new Error(`apt-get install ${missing.join(' ')} failed: ${r.stderr.trim()}`);
  const still = missingPackages(names);
  if (still.length) throw new Error(`still missing after apt-get install: ${still.join(', ')}`);
}
