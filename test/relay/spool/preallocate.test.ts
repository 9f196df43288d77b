import { readdirSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { openSpool } from '../../../src/relay/spool/index.ts';
import { PREALLOCATE_BYTES, SYNC_WRITE_BYTES } from '../../../src/relay/spool/journal.ts';
import { bodyFor, commitBody, meta, tempSpoolDir } from './helpers.ts';

/**
 * The journal zero-fills its active segment ahead of the appends (journal.ts): most commits then
 * overwrite existing blocks and their fdatasync commits no file-system metadata. The segment
 * file does not grow with each commit, and a reopen reads the unused zero tail as nothing lost.
 */

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Sizes of the segment files, oldest first. */
const segmentSizes = (dir: string) =>
  readdirSync(join(dir, 'wal'))
    .sort()
    .map((n) => statSync(join(dir, 'wal', n)).size);

describe('journal preallocation', () => {
  it('appends into a zero-filled segment; the unused tail is no damage and no warning at reopen', async () => {
    expect(PREALLOCATE_BYTES).toBe(1024 * 1024);
    const { dir, cleanup } = tempSpoolDir('prealloc');
    cleanups.push(cleanup);
    const journal = { checkpointAfterMs: 3_600_000, sealAfterMs: 3_600_000 };
    const spool = await openSpool({ dir, journal });
    const ids = [(await commitBody(spool, bodyFor('p0', 2048), meta('p0'))).id];
    // 64 KiB zero-filled ahead at first, doubling with use up to 1 MiB
    expect(segmentSizes(dir)[0]).toBeGreaterThanOrEqual(64 * 1024);
    for (let i = 1; i < 500; i++)
      ids.push((await commitBody(spool, bodyFor(`p${i}`, 2048), meta(`p${i}`))).id);
    const [grown] = segmentSizes(dir);
    expect(grown).toBeGreaterThan(PREALLOCATE_BYTES);
    for (let i = 500; i < 600; i++)
      ids.push((await commitBody(spool, bodyFor(`p${i}`, 2048), meta(`p${i}`))).id);
    // ~230 KB more went into the zeroed part: the file did not grow
    expect(segmentSizes(dir)).toEqual([grown]);
    await spool.close();

    const logs: Array<{ level: number; msg: string }> = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line));
        cb();
      },
    });
    const damage: unknown[] = [];
    const again = await openSpool({
      dir,
      journal,
      logger: pino({ level: 'info', base: undefined }, sink),
      onDamage: (e) => damage.push(e),
    });
    cleanups.push(() => again.close());
    expect(damage).toEqual([]);
    expect(logs.filter((l) => l.level >= 40)).toEqual([]);
    for (const [i, id] of ids.entries())
      expect((await again.get(id))?.size).toBe(bodyFor(`p${i}`, 2048).length);
  });

  it('prepares the next segment, zero-filled, halfway through the active one; a spare left at close is harmless', async () => {
    const { dir, cleanup } = tempSpoolDir('prealloc-next');
    cleanups.push(cleanup);
    const journal = { checkpointAfterMs: 3_600_000, sealAfterMs: 3_600_000, segmentBytes: 256 * 1024 };
    const spool = await openSpool({ dir, journal });
    const ids: string[] = [];
    for (let i = 0; i < 60; i++)
      ids.push((await commitBody(spool, bodyFor(`n${i}`, 2048), meta(`n${i}`))).id);
    await spool.close(); // waits for the preparation
    // ~138 KB of records, past half of 256 KiB: the next segment exists, only zeros
    const sizes = segmentSizes(dir);
    expect(sizes).toHaveLength(2);
    expect(sizes[1]).toBe(64 * 1024);
    const damage: unknown[] = [];
    const again = await openSpool({ dir, journal, onDamage: (e) => damage.push(e) });
    cleanups.push(() => again.close());
    for (let i = 60; i < 200; i++)
      ids.push((await commitBody(again, bodyFor(`n${i}`, 2048), meta(`n${i}`))).id);
    expect(damage).toEqual([]);
    for (const [i, id] of ids.entries())
      expect((await again.get(id))?.size).toBe(bodyFor(`n${i}`, 2048).length);
  });

  it('writes a small commit into the zero fill on the event loop, a large one through the thread pool', async () => {
    expect(SYNC_WRITE_BYTES).toBe(256 * 1024);
    const { dir, cleanup } = tempSpoolDir('prealloc-onloop');
    cleanups.push(cleanup);
    // Every write a FileHandle makes (the thread pool's) that carries other bytes than zeros.
    const probe = await open(join(dir, 'probe'), 'w');
    const proto: { write: (...a: unknown[]) => unknown; writev: (...a: unknown[]) => unknown } =
      Object.getPrototypeOf(probe);
    await probe.close();
    const { write, writev } = proto;
    let pooled = 0;
    const data = (b: unknown) => Buffer.isBuffer(b) && b.some((x) => x !== 0);
    proto.write = function (this: unknown, ...a: unknown[]) {
      if (data(a[0])) pooled++;
      return write.apply(this, a);
    };
    proto.writev = function (this: unknown, ...a: unknown[]) {
      if ((a[0] as unknown[]).some(data)) pooled++;
      return writev.apply(this, a);
    };
    cleanups.push(() => {
      proto.write = write;
      proto.writev = writev;
    });
    const journal = { checkpointAfterMs: 3_600_000, sealAfterMs: 3_600_000 };
    const spool = await openSpool({ dir, journal });
    cleanups.push(() => spool.close());
    pooled = 0; // the lock file's pid
    for (let i = 0; i < 50; i++) await commitBody(spool, bodyFor(`s${i}`, 2048), meta(`s${i}`));
    expect(pooled).toBe(0);
    // A group commit of five 100 KiB messages (the first goes alone, the others together)
    const bigs = await Promise.all(
      [0, 1, 2, 3, 4].map((i) => commitBody(spool, bodyFor(`b${i}`, 100 * 1024), meta(`b${i}`))),
    );
    expect(pooled).toBeGreaterThanOrEqual(1);
    for (const [i, q] of bigs.entries())
      expect((await spool.get(q.id))?.size).toBe(bodyFor(`b${i}`, 100 * 1024).length);
  });

  it('fdatasyncs a commit on the event loop only while the owner of the spool allows it', async () => {
    const { dir, cleanup } = tempSpoolDir('sync-onloop');
    cleanups.push(cleanup);
    // Every fdatasync a FileHandle makes (on the thread pool).
    const probe = await open(join(dir, 'probe'), 'w');
    const proto: { datasync: (...a: unknown[]) => Promise<void> } = Object.getPrototypeOf(probe);
    await probe.close();
    const { datasync } = proto;
    let pooled = 0;
    proto.datasync = function (this: unknown, ...a: unknown[]) {
      pooled++;
      return datasync.apply(this, a);
    };
    cleanups.push(() => {
      proto.datasync = datasync;
    });
    const journal = { checkpointAfterMs: 3_600_000, sealAfterMs: 3_600_000 };
    const spool = await openSpool({ dir, journal });
    cleanups.push(() => spool.close());
    let onLoop = true;
    spool.syncOnLoopWhen(() => onLoop);
    pooled = 0;
    for (let i = 0; i < 20; i++) await commitBody(spool, bodyFor(`l${i}`, 2048), meta(`l${i}`));
    expect(pooled).toBe(0);
    onLoop = false;
    for (let i = 0; i < 20; i++) await commitBody(spool, bodyFor(`p${i}`, 2048), meta(`p${i}`));
    expect(pooled).toBe(20);
    expect(spool.stats().messages).toBe(40);
  });
});
