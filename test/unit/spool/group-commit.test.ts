import { describe, expect, it } from 'vitest';
import { GroupCommit } from '../../../src/relay/spool/group-commit.ts';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

describe('GroupCommit', () => {
  it('covers concurrent submitters with one flush', async () => {
    const batches: number[][] = [];
    const gc = new GroupCommit<number>(async (items) => {
      batches.push(items);
      await tick(5);
    });
    await Promise.all(Array.from({ length: 100 }, (_, i) => gc.submit(i)));
    expect(batches).toEqual([Array.from({ length: 100 }, (_, i) => i)]);
    expect(gc.flushes).toBe(1);
    expect(gc.maxBatch).toBe(100);
  });

  it('gathers what arrives during a flush into the next one', async () => {
    const batches: number[][] = [];
    const gc = new GroupCommit<number>(async (items) => {
      batches.push(items);
      await tick(20);
    });
    const first = gc.submit(0);
    await tick(5); // first flush in flight
    const rest = Array.from({ length: 50 }, (_, i) => gc.submit(i + 1));
    await Promise.all([first, ...rest]);
    expect(batches.map((b) => b.length)).toEqual([1, 50]);
  });

  it('resolves a submitter only after a flush that started after its submit', async () => {
    const log: string[] = [];
    let n = 0;
    const gc = new GroupCommit(async () => {
      const k = ++n;
      log.push(`start${k}`);
      await tick(10);
      log.push(`end${k}`);
    });
    const a = gc.submit().then(() => log.push('a'));
    await tick(2);
    const b = gc.submit().then(() => log.push('b'));
    await Promise.all([a, b]);
    const at = (x: string) => log.indexOf(x);
    expect(at('a')).toBeGreaterThan(at('end1'));
    // b arrived while flush 1 was in flight: flush 1 does not cover it.
    expect(at('start2')).toBeGreaterThan(at('end1'));
    expect(at('b')).toBeGreaterThan(at('end2'));
  });

  it('rejects exactly the batch whose flush failed, then carries on', async () => {
    let fail = true;
    const gc = new GroupCommit(async () => {
      await tick(5);
      if (fail) {
        fail = false;
        throw new Error('EIO');
      }
    });
    const first = [gc.submit(), gc.submit()];
    await tick(1);
    const second = gc.submit();
    const results = await Promise.allSettled([...first, second]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'fulfilled']);
  });

  it('idle() waits for the queue to drain', async () => {
    let done = 0;
    const gc = new GroupCommit(async () => {
      await tick(10);
      done++;
    });
    void gc.submit();
    await tick(1);
    void gc.submit();
    await gc.idle();
    expect(done).toBe(2);
    expect(gc.pending).toBe(0);
  });

  it('a lazy item waits for an eager one and goes out in its flush', async () => {
    const batches: string[][] = [];
    const gc = new GroupCommit<string>(async (items) => {
      batches.push(items);
      await tick(1);
    }, 60_000);
    await gc.submit('put0'); // mail is coming in
    batches.length = 0;
    let delDone = false;
    const del = gc.submit('del', true).then(() => (delDone = true));
    await tick(10);
    expect(batches).toEqual([]); // not on its own
    expect(delDone).toBe(false);
    await Promise.all([gc.submit('put'), del]);
    expect(batches).toEqual([['del', 'put']]);
  });

  it('lazy items that arrive during a flush wait again; idle() sends them at once', async () => {
    const batches: string[][] = [];
    const gc = new GroupCommit<string>(async (items) => {
      batches.push(items);
      await tick(5);
    }, 60_000);
    const put = gc.submit('put');
    await tick(1);
    const del = gc.submit('del', true);
    await put;
    await tick(10);
    expect(batches).toEqual([['put']]);
    await gc.idle();
    await del;
    expect(batches).toEqual([['put'], ['del']]);
  });

  it('with no eager item for a while (a queue draining, no mail coming in), a lazy one goes at once', async () => {
    const batches: string[][] = [];
    const gc = new GroupCommit<string>(async (items) => {
      batches.push(items);
    }, 60_000);
    await gc.submit('del', true);
    expect(batches).toEqual([['del']]);
  });

  it('without lazyMs a lazy item is flushed like any other', async () => {
    const batches: string[][] = [];
    const gc = new GroupCommit<string>(async (items) => {
      batches.push(items);
    });
    await gc.submit('del', true);
    expect(batches).toEqual([['del']]);
  });
});
