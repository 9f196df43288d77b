import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { openSpool } from '../../../src/relay/spool/index.ts';
import { PREALLOCATE_BYTES } from '../../../src/relay/spool/journal.ts';
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

const segmentSizes = (dir: string) =>
  readdirSync(join(dir, 'wal')).map((n) => statSync(join(dir, 'wal', n)).size);

describe('journal preallocation', () => {
  it('appends into a zero-filled segment; the unused tail is no damage and no warning at reopen', async () => {
    expect(PREALLOCATE_BYTES).toBe(1024 * 1024);
    const { dir, cleanup } = tempSpoolDir('prealloc');
    cleanups.push(cleanup);
    const journal = { checkpointAfterMs: 3_600_000, sealAfterMs: 3_600_000 };
    const spool = await openSpool({ dir, journal });
    const ids = [(await commitBody(spool, bodyFor('p0', 2048), meta('p0'))).id];
    const [first] = segmentSizes(dir);
    expect(first).toBeGreaterThanOrEqual(PREALLOCATE_BYTES);
    for (let i = 1; i < 100; i++)
      ids.push((await commitBody(spool, bodyFor(`p${i}`, 2048), meta(`p${i}`))).id);
    // ~230 KB of records went into the zeroed part: the file did not grow
    expect(segmentSizes(dir)).toEqual([first]);
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
});
