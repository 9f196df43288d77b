import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../../lib/logger.ts';

/**
 * One owner per spool. Node has no flock, so the lock is a file created atomically (written
 * under a temporary name, then hard-linked to `lock`, which fails if it exists) holding
 * {pid, host, since, purpose}.
 *
 * Stale when: same host and the pid is dead (or is our own pid but this process does not hold
 * the lock: a container restarted with the same pid, typically 1); another host (a new pod on
 * the same volume) and the owner stopped refreshing the file's mtime for `staleMs`.
 * Taking over a stale lock races if two processes do it at the same instant; not guarded.
 */
export interface LockInfo {
  pid: number;
  host: string;
  /** ms since epoch. */
  since: number;
  /** Who holds it: 'relay', 'queue-cli'... shown in the error. */
  purpose: string;
}

export const LOCK_FILE = 'lock';
export const DEFAULT_LOCK_STALE_MS = 30_000;

export class SpoolLockedError extends Error {
  override name = 'SpoolLockedError';
  readonly code = 'ESPOOLLOCKED';
  constructor(
    readonly dir: string,
    readonly holder: LockInfo,
  ) {
    const who =
      holder.pid === process.pid && holder.host === hostname() ? 'this process' : `pid ${holder.pid}`;
    super(
      `spool ${dir} is locked by ${who} on ${holder.host} (${holder.purpose}, since ` +
        `${new Date(holder.since).toISOString()}): another relay owns it`,
    );
  }
}

/** Directories (realpath) locked by this process. */
const heldHere = new Set<string>();

export interface LockHandle {
  readonly info: LockInfo;
  release(): Promise<void>;
}

export async function readLock(dir: string): Promise<{ info: LockInfo; mtimeMs: number } | undefined> {
  const path = join(dir, LOCK_FILE);
  try {
    const [text, st] = await Promise.all([fsp.readFile(path, 'utf8'), fsp.stat(path)]);
    const info = parseLock(text);
    return info && { info, mtimeMs: st.mtimeMs };
  } catch (e) {
    if (isCode(e, 'ENOENT')) return undefined;
    throw e;
  }
}

/** A released lock reads as no lock. */
function parseLock(text: string): LockInfo | undefined {
  try {
    const j = JSON.parse(text) as Partial<LockInfo> & { released?: boolean };
    if (j.released === true) return undefined;
    if (typeof j.pid === 'number' && typeof j.host === 'string') {
      return { pid: j.pid, host: j.host, since: Number(j.since) || 0, purpose: String(j.purpose ?? '?') };
    }
  } catch {}
  // Unreadable: written by something else. Treat as a dead holder on this host.
  return { pid: 0, host: hostname(), since: 0, purpose: 'unreadable lock file' };
}

export async function isLockAlive(
  dir: string,
  lock: { info: LockInfo; mtimeMs: number },
  staleMs = DEFAULT_LOCK_STALE_MS,
): Promise<boolean> {
  const { info } = lock;
  if (info.host !== hostname()) return Date.now() - lock.mtimeMs < staleMs;
  if (info.pid <= 0) return false;
  if (info.pid === process.pid) return heldHere.has(await canonical(dir));
  try {
    process.kill(info.pid, 0);
    return true;
  } catch (e) {
    return !isCode(e, 'ESRCH');
  }
}

export async function acquireLock(
  dir: string,
  opts: { purpose: string; staleMs?: number; logger?: Logger },
): Promise<LockHandle> {
  const key = await canonical(dir);
  const path = join(dir, LOCK_FILE);
  const staleMs = opts.staleMs ?? DEFAULT_LOCK_STALE_MS;
  const info: LockInfo = { pid: process.pid, host: hostname(), since: Date.now(), purpose: opts.purpose };
  const tmp = join(dir, `${LOCK_FILE}.${process.pid}.${randomBytes(4).toString('hex')}`);
  let written = false;
  try {
    await fsp.writeFile(tmp, JSON.stringify(info) + '\n');
    written = true;
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    if (!isNoSpace(e)) throw e;
  }
  if (!written) {
    // A full disk: a relay must still start and deliver. The lock file left by the last owner
    // (a crash leaves it, a clean stop marks it released) is rewritten in place: no new blocks.
    await takeInPlace(dir, path, info, staleMs, opts.logger);
  } else {
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          await createExclusive(tmp, path, info);
          break;
        } catch (e) {
          if (!isCode(e, 'EEXIST') || attempt >= 3) throw e;
        }
        const current = await readLock(dir);
        if (current && (await isLockAlive(dir, current, staleMs)))
          throw new SpoolLockedError(dir, current.info);
        if (current) opts.logger?.warn({ dir, stale: current.info }, 'taking over stale spool lock');
        await fsp.rm(path, { force: true });
      }
    } finally {
      await fsp.rm(tmp, { force: true });
    }
  }
  heldHere.add(key);

  // Lets another host tell a live owner from a dead one (pids mean nothing across hosts).
  const heartbeat = setInterval(
    () => {
      const now = new Date();
      fsp.utimes(path, now, now).catch(() => {});
    },
    Math.max(1000, Math.floor(staleMs / 3)),
  );
  heartbeat.unref();

  let released = false;
  return {
    info,
    async release() {
      if (released) return;
      released = true;
      clearInterval(heartbeat);
      heldHere.delete(key);
      const current = await readLock(dir).catch(() => undefined);
      if (current && current.info.pid === info.pid && current.info.since === info.since) {
        // Kept, marked released: the next start can rewrite it in place even on a full disk.
        await rewrite(path, { ...info, released: true }).catch(() => fsp.rm(path, { force: true }));
      }
    },
  };
}

/** link() publishes the lock with its content in one step; O_EXCL where links are unsupported. */
async function createExclusive(tmp: string, path: string, info: LockInfo): Promise<void> {
  try {
    await fsp.link(tmp, path);
  } catch (e) {
    if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS'].some((c) => isCode(e, c))) throw e;
    await fsp.writeFile(path, JSON.stringify(info) + '\n', { flag: 'wx' });
  }
}

function isNoSpace(e: unknown): boolean {
  return isCode(e, 'ENOSPC') || isCode(e, 'EDQUOT');
}

/** Overwrites an existing file in place (its blocks are allocated already). */
async function rewrite(path: string, content: object): Promise<void> {
  const fh = await fsp.open(path, 'r+');
  try {
    const buf = Buffer.from(JSON.stringify(content) + '\n');
    await fh.write(buf, 0, buf.length, 0);
    await fh.truncate(buf.length);
  } finally {
    await fh.close();
  }
}

async function takeInPlace(
  dir: string,
  path: string,
  info: LockInfo,
  staleMs: number,
  logger: Logger | undefined,
): Promise<void> {
  const current = await readLock(dir);
  if (current && (await isLockAlive(dir, current, staleMs))) throw new SpoolLockedError(dir, current.info);
  try {
    await rewrite(path, info);
  } catch (e) {
    if (!isCode(e, 'ENOENT')) throw e;
    // No lock file to reuse (a spool never opened, or its file removed): needs one new block.
    await fsp.writeFile(path, JSON.stringify(info) + '\n', { flag: 'wx' });
  }
  logger?.warn({ dir, stale: current?.info }, 'spool file system full: took the spool lock in place');
}

async function canonical(dir: string): Promise<string> {
  return fsp.realpath(dir).catch(() => dir);
}

export function isCode(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as { code?: unknown }).code === code;
}
