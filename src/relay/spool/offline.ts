import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { silentLogger } from '../../lib/logger.ts';
import { mapLimit } from './disk.ts';
import { listQuarantine, readSegments } from './journal.ts';
import {
  buildIndex,
  checkFormat,
  type Dirs,
  type IndexEntry,
  QUARANTINE_DIR,
  QUEUE_DIR,
  readEnvelope,
  readHeaders,
  spoolDirs,
} from './layout.ts';
import { isCode, isLockAlive, type LockInfo, readLock } from './lock.ts';
import { openSpool, type RelaySpool } from './spool.ts';
import type { QuarantinedMessage, QueuedMessage, QueueEntry } from './types.ts';

/**
 * The `email-relay queue list|show|flush|delete|retry` view of a spool (mailq / postsuper).
 *
 * Reading takes no lock and changes nothing, so it also works on a live relay's spool (it sees
 * committed messages only, from the journal and queue/, as of the moment it looked).
 *
 * Changes open the spool for real (lock, recovery), make the change durably, and close it; they
 * throw SpoolLockedError (code ESPOOLLOCKED) while a live relay owns the spool: send those to the
 * relay instead.
 */

export interface SpoolOwner extends LockInfo {
  alive: boolean;
}

export interface OfflineMessage {
  entry: QueueEntry;
  message?: QueuedMessage;
  /** Why the envelope could not be read (damaged file...). */
  error?: string;
}

/** Who holds the spool's lock, if anyone; `alive` false means a stale lock. */
export async function spoolOwner(dir: string): Promise<SpoolOwner | undefined> {
  const lock = await readLock(dir);
  if (!lock) return undefined;
  return { ...lock.info, alive: await isLockAlive(dir, lock) };
}

/** Index entries, oldest first (file names only: fast for any queue length). */
export async function listQueue(dir: string): Promise<QueueEntry[]> {
  return (await scan(dir)).map(({ id, size, receivedAt, nextAttemptAt }) => ({
    id,
    size,
    receivedAt,
    nextAttemptAt,
  }));
}

/** Messages kept in quarantine/ (not delivered), oldest first. */
export function listQuarantined(dir: string): QuarantinedMessage[] {
  return listQuarantine(join(dir, QUARANTINE_DIR));
}

/** Entries with their envelopes, oldest first, read one at a time. */
export async function* listMessages(dir: string): AsyncGenerator<OfflineMessage> {
  const dirs = spoolDirs(dir);
  for (const e of await scan(dir)) {
    const entry = { id: e.id, size: e.size, receivedAt: e.receivedAt, nextAttemptAt: e.nextAttemptAt };
    let message: QueuedMessage | undefined;
    try {
      message = await settle(dirs, e, readEnvelope);
    } catch (err) {
      yield { entry, error: err instanceof Error ? err.message : String(err) };
      continue;
    }
    if (message) yield { entry, message }; // else delivered meanwhile
  }
}

/** One message: envelope and header section; undefined if not queued. */
export async function showMessage(
  dir: string,
  id: string,
  opts: { maxHeaderBytes?: number } = {},
): Promise<{ message: QueuedMessage; headers: string } | undefined> {
  const e = (await scan(dir)).find((x) => x.id === id);
  if (!e) return undefined;
  const dirs = spoolDirs(dir);
  const message = await settle(dirs, e, readEnvelope);
  const headers = await settle(dirs, e, (d, x) => readHeaders(d, x, opts.maxHeaderBytes));
  return message && headers !== undefined ? { message, headers } : undefined;
}

/**
 * Reads through a live relay's changes: a checkpoint moves a message from the journal into its
 * own file (retry there); a removal makes it vanish (undefined).
 */
async function settle<T>(
  d: Dirs,
  e: IndexEntry,
  read: (d: Dirs, e: IndexEntry) => Promise<T>,
): Promise<T | undefined> {
  try {
    return await read(d, e);
  } catch (err) {
    if (!isCode(err, 'ENOENT')) throw err;
  }
  if (e.off < 0) return undefined;
  try {
    return await read(d, { ...e, off: -1 });
  } catch (err) {
    if (isCode(err, 'ENOENT')) return undefined;
    throw err;
  }
}

/** Deletes one message for good; false if it was not queued. */
export async function deleteMessage(dir: string, id: string): Promise<boolean> {
  return withSpool(dir, async (spool) => {
    if (!spool.entry(id)) return false;
    await spool.remove(id);
    return true;
  });
}

/** Makes one message due now; false if it was not queued. */
export async function retryMessage(dir: string, id: string, now = Date.now()): Promise<boolean> {
  return withSpool(dir, async (spool) => {
    const e = spool.entry(id);
    if (!e) return false;
    if (e.nextAttemptAt > now) await spool.reschedule(id, now);
    return true;
  });
}

/** Makes every deferred message due now; returns how many were rescheduled. */
export async function flushQueue(dir: string, now = Date.now()): Promise<number> {
  return withSpool(dir, async (spool) => {
    const due = spool.entries().filter((e) => e.nextAttemptAt > now);
    let n = 0;
    await mapLimit(due, 16, async (e) => {
      if (await spool.reschedule(e.id, now)) n++;
    });
    return n;
  });
}

async function scan(dir: string): Promise<IndexEntry[]> {
  await assertSpool(dir);
  const { queueDir, walDir } = spoolDirs(dir);
  const segments = await fsp.stat(walDir).then(
    () => readSegments(walDir),
    () => [],
  );
  return buildIndex(queueDir, segments).entries;
}

async function assertSpool(dir: string): Promise<void> {
  const format = await checkFormat(dir);
  const hasQueue = await fsp.stat(join(dir, QUEUE_DIR)).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (format === 'missing' || !hasQueue) throw new Error(`${dir} is not a spool directory`);
}

async function withSpool<T>(dir: string, fn: (spool: RelaySpool) => Promise<T>): Promise<T> {
  await assertSpool(dir);
  const spool = await openSpool({ dir, purpose: 'email-relay queue', logger: silentLogger });
  try {
    return await fn(spool);
  } finally {
    await spool.close();
  }
}
