import { mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { writeAll, writeAllSync, writeSteps } from '../../../src/relay/spool/disk.ts';

const b = (s: string) => Buffer.from(s);

describe('writeSteps (the write loop both writers share)', () => {
  it('after a partial write, asks for the rest from where it stopped', () => {
    const steps = writeSteps([b('abc'), b(''), b('defg')], 100);
    const first = steps.next(0);
    expect(first.done).toBe(false);
    if (first.done) return;
    expect(first.value.pos).toBe(100);
    expect(first.value.want).toBe(7);
    expect(first.value.batch.map(String)).toEqual(['abc', 'defg']); // the empty buffer is dropped
    const second = steps.next(4); // "abc" and "d" made it
    if (second.done) throw new Error('ended after a partial write');
    expect(second.value.pos).toBe(104);
    expect(second.value.batch.map(String)).toEqual(['efg']);
    expect(steps.next(3)).toEqual({ done: true, value: 7 });
  });

  it('never hands more than IOV_MAX buffers to one writev', () => {
    const steps = writeSteps(
      Array.from({ length: 1500 }, () => b('x')),
      0,
    );
    const first = steps.next(0);
    if (first.done) throw new Error('nothing to write');
    expect(first.value.batch).toHaveLength(1024);
    const second = steps.next(1024);
    if (second.done) throw new Error('stopped after the first batch');
    expect(second.value).toMatchObject({ pos: 1024, want: 476 });
    expect(steps.next(476)).toEqual({ done: true, value: 1500 });
  });
});

describe('writeAll and writeAllSync', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('write the same bytes at the offset, through the pool and on the calling thread', async () => {
    dir = mkdtempSync(join(tmpdir(), 'disk-test-'));
    const bufs = Array.from({ length: 1100 }, (_, i) => b(`${i % 10}`));
    const fh = await open(join(dir, 'a'), 'w');
    expect(await writeAll(fh, bufs, 3)).toBe(1100);
    await fh.close();
    const fd = openSync(join(dir, 'b'), 'w');
    expect(writeAllSync(fd, bufs, 3)).toBe(1100);
    const want = Buffer.concat([Buffer.alloc(3), ...bufs]);
    expect(readFileSync(join(dir, 'a'))).toEqual(want);
    expect(readFileSync(join(dir, 'b'))).toEqual(want);
  });
});
