import { afterEach, describe, expect, it } from 'vitest';
import { openSpool } from '../../../src/relay/spool/index.ts';
import { bodyFor, commitBody, meta, tempSpoolDir } from './helpers.ts';

const N = 200;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('group commit batches fsyncs across concurrent commits', () => {
  it('journal: N concurrent commits share a handful of fdatasyncs, no per-message fsync', async () => {
    const { dir, cleanup } = tempSpoolDir('gc-journal');
    cleanups.push(cleanup);
    const spool = await openSpool({ dir });
    cleanups.push(() => spool.close());
    const msgs = await Promise.all(
      Array.from({ length: N }, (_, i) => commitBody(spool, bodyFor(`g${i}`, 2048), meta(`g${i}`))),
    );
    expect(new Set(msgs.map((m) => m.id)).size).toBe(N);
    const io = spool.stats().io!;
    expect(io.journalRecords).toBe(N);
    expect(io.journalSyncs).toBeLessThan(N / 10);
    expect(io.fileSyncs).toBe(0);
    expect(io.dirSyncs).toBe(0);
  });

  it('per-file: one directory fsync covers the renames of many commits', async () => {
    const { dir, cleanup } = tempSpoolDir('gc-file');
    cleanups.push(cleanup);
    const spool = await openSpool({ dir, journal: false });
    cleanups.push(() => spool.close());
    await Promise.all(
      Array.from({ length: N }, (_, i) => commitBody(spool, bodyFor(`f${i}`, 2048), meta(`f${i}`))),
    );
    const io = spool.stats().io!;
    expect(io.fileSyncs).toBe(N);
    expect(io.dirSyncs).toBeLessThan(N / 4);
  });

  it('removes and updates are group-committed too', async () => {
    const { dir, cleanup } = tempSpoolDir('gc-ops');
    cleanups.push(cleanup);
    const spool = await openSpool({ dir, journal: false });
    cleanups.push(() => spool.close());
    const msgs = await Promise.all(
      Array.from({ length: N }, (_, i) => commitBody(spool, bodyFor(`o${i}`, 500), meta(`o${i}`))),
    );
    const before = spool.stats().io!.dirSyncs;
    await Promise.all(msgs.map((m, i) => (i % 2 ? spool.remove(m.id) : spool.update({ ...m, attempts: 1 }))));
    expect(spool.stats().io!.dirSyncs - before).toBeLessThan(N / 4);
    expect(spool.entries()).toHaveLength(N / 2);
  });
});
