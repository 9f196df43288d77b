import { constants, promises as fsp, writevSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { isCode } from './lock.ts';

/** Small file-system helpers shared by the live spool and the offline functions. */

// Linux IOV_MAX; more buffers per writev fail with EINVAL.
const IOV_MAX = 1024;

/** One writev to make: these buffers at this offset, `want` bytes in all. */
interface WriteStep {
  batch: Buffer[];
  pos: number;
  want: number;
}

/**
 * The loop both writers share, without the write itself: yields each writev to make and is
 * told how many bytes it wrote; a partial write is followed by the rest. Returns the total.
 */
export function* writeSteps(bufs: readonly Buffer[], pos: number): Generator<WriteStep, number, number> {
  let list = bufs.filter((b) => b.length > 0);
  let written = 0;
  while (list.length > 0) {
    const batch = list.slice(0, IOV_MAX);
    const want = batch.reduce((n, b) => n + b.length, 0);
    const n = yield { batch, pos, want };
    pos += n;
    written += n;
    list = n === want ? list.slice(batch.length) : dropWritten(list, n);
  }
  return written;
}

/** Writes every buffer at `pos`, looping over partial writes. */
export async function writeAll(fh: FileHandle, bufs: readonly Buffer[], pos: number): Promise<number> {
  const steps = writeSteps(bufs, pos);
  for (let step = steps.next(0); ; ) {
    if (step.done) return step.value;
    const { batch, pos: at, want } = step.value;
    const { bytesWritten } =
      batch.length === 1 ? await fh.write(batch[0]!, 0, want, at) : await fh.writev(batch, at);
    step = steps.next(bytesWritten);
  }
}

/**
 * writeAll on the calling thread: for small appends into blocks that already exist, where the
 * copy into the page cache takes microseconds and the thread-pool round trip of an async write
 * costs more than the write itself.
 */
export function writeAllSync(fd: number, bufs: readonly Buffer[], pos: number): number {
  const steps = writeSteps(bufs, pos);
  for (let step = steps.next(0); ; ) {
    if (step.done) return step.value;
    step = steps.next(writevSync(fd, step.value.batch, step.value.pos));
  }
}

/** After a partial write of `n` bytes: the buffers (and the part of one) still to go. */
function dropWritten(list: readonly Buffer[], n: number): Buffer[] {
  let skip = n;
  const rest: Buffer[] = [];
  for (const b of list) {
    if (skip >= b.length) skip -= b.length;
    else {
      rest.push(skip > 0 ? b.subarray(skip) : b);
      skip = 0;
    }
  }
  return rest;
}

/**
 * Runs one fsync/fdatasync; if it fails, `poison` runs before the error is rethrown. A failed
 * sync is never retried: Linux reports a writeback error once and may have dropped the dirty
 * pages, so a later sync that succeeds proves nothing. The spool stops taking mail instead.
 */
export async function syncOrPoison(sync: () => Promise<void>, poison?: (e: unknown) => void): Promise<void> {
  try {
    await sync();
  } catch (e) {
    poison?.(e);
    throw e;
  }
}

/**
 * Creates `path` (must not exist) with these contents, fdatasynced if `sync`; removes it again on
 * failure. `onSyncError` tells a failed fdatasync (fatal: pages may be lost) from a failed write.
 */
export async function writeNewFile(
  path: string,
  bufs: readonly Buffer[],
  sync: boolean,
  onSyncError?: (e: unknown) => void,
): Promise<void> {
  const fh = await fsp.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o640);
  try {
    await writeAll(fh, bufs, 0);
    if (sync) await syncOrPoison(() => fh.datasync(), onSyncError);
  } catch (e) {
    await fh.close().catch(() => {});
    await fsp.rm(path, { force: true });
    throw e;
  }
  await fh.close();
}

export async function readExactly(fh: FileHandle, pos: number, len: number): Promise<Buffer> {
  const buf = Buffer.alloc(len);
  let off = 0;
  while (off < len) {
    const { bytesRead } = await fh.read(buf, off, len - off, pos + off);
    if (bytesRead === 0) throw Object.assign(new Error('unexpected end of file'), { code: 'ESHORT' });
    off += bytesRead;
  }
  return buf;
}

export async function unlinkQuiet(path: string): Promise<void> {
  try {
    await fsp.unlink(path);
  } catch (e) {
    if (!isCode(e, 'ENOENT')) throw e;
  }
}

/** Runs fn over items with at most `limit` in flight. */
export async function mapLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
