import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openSpool } from '../../../src/relay/spool/index.ts';
import { bodyFor, commitBody, meta, tempSpoolDir } from './helpers.ts';

// The journal's group commit really calls fdatasync (the counters it keeps could not show a
// journal that stopped syncing: zero syncs is "fewer than N / 10" too). Every FileHandle's
// datasync is watched, the real call still made.
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('journal group commit', () => {
  it('makes every commit wait for an fdatasync that finished after it was submitted', async () => {
    const { dir, cleanup } = tempSpoolDir('journal-sync');
    cleanups.push(cleanup);
    const probe = await open(join(dir, 'probe'), 'w');
    const proto: { datasync: () => Promise<void> } = Object.getPrototypeOf(probe);
    await probe.close();
    const datasync = proto.datasync;
    let started = 0;
    let finished = 0;
    proto.datasync = async function (this: unknown) {
      started++;
      await datasync.call(this);
      finished++;
    };
    cleanups.push(() => {
      proto.datasync = datasync;
    });
    const spool = await openSpool({ dir });
    cleanups.push(() => spool.close());
    const base = { started, finished };
    const N = 200;
    const waited = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const before = finished;
        await commitBody(spool, bodyFor(`j${i}`, 2048), meta(`j${i}`));
        return finished - before;
      }),
    );
    const io = spool.stats().io!;
    expect(io.journalRecords).toBe(N);
    expect(io.fileSyncs).toBe(0);
    // each commit resolved only once at least one datasync completed after it began
    expect(Math.min(...waited)).toBeGreaterThanOrEqual(1);
    const calls = started - base.started;
    expect(calls).toBeGreaterThanOrEqual(1);
    expect(calls).toBe(io.journalSyncs);
    expect(calls).toBeLessThan(N / 10); // grouped, not one per message
  });
});
