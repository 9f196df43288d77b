import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { versionKey } from './versions.ts';

// Everything the control plane writes lives outside the repo: binaries and Go caches under the
// user cache dir (survive between runs, CI can cache the directory), per-`up` state under $TMPDIR.

/** `${XDG_CACHE_HOME:-~/.cache}/email-relay/control-plane` */
export function cacheRoot(): string {
  const base = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(base, 'email-relay', 'control-plane');
}

/** Built binaries for the pinned version pair. */
export function cachedBinDir(): string {
  return join(cacheRoot(), versionKey(), 'bin');
}

/** Scratch directory for one module's build (go.mod + go.sum copied from the repo). */
export function buildDir(moduleDir: string): string {
  return join(cacheRoot(), versionKey(), 'build', moduleDir);
}

/** Go build and module caches, shared by every version under the same root. */
export function goCaches(): { GOCACHE: string; GOMODCACHE: string } {
  return { GOCACHE: join(cacheRoot(), 'go-build'), GOMODCACHE: join(cacheRoot(), 'go-mod') };
}

/** Parent of the per-`up` state dirs (certs, etcd data, logs, pids). */
export function stateRoot(): string {
  return join(tmpdir(), 'email-relay-control-plane');
}

/** File naming the state dir of the most recent `npm run control-plane -- up`. */
export function currentStateFile(): string {
  return join(stateRoot(), 'current');
}

/** test/control-plane/go: the checked-in go.mod/go.sum per module. */
export function repoGoDir(): string {
  return join(dirname(fileURLToPath(import.meta.url)), 'go');
}
