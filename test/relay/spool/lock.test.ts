import { spawnSync } from 'node:child_process';
import { utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  deleteMessage,
  flushQueue,
  listQueue,
  openSpool,
  SpoolLockedError,
  spoolOwner,
} from '../../../src/relay/spool/index.ts';
import { bodyFor, commitBody, meta, tempSpoolDir } from './helpers.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function setup() {
  const t = tempSpoolDir('lock');
  cleanups.push(t.cleanup);
  return t.dir;
}

/** A pid that is certainly dead: a child that already exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(r.stdout.toString());
}

describe('spool lock', () => {
  it('a second open of the same directory fails with a clear error', async () => {
    const dir = setup();
    const first = await openSpool({ dir });
    cleanups.push(() => first.close());
    const err = await openSpool({ dir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SpoolLockedError);
    expect((err as SpoolLockedError).code).toBe('ESPOOLLOCKED');
    expect((err as Error).message).toMatch(/locked by this process .*relay.*another relay owns it/);
    expect((err as SpoolLockedError).holder.pid).toBe(process.pid);
    // Through another path to the same directory, too.
    await expect(openSpool({ dir: `${dir}/./` })).rejects.toThrow(SpoolLockedError);
    expect(await spoolOwner(dir)).toMatchObject({ pid: process.pid, alive: true, purpose: 'relay' });
  });

  it('is released on close', async () => {
    const dir = setup();
    const a = await openSpool({ dir });
    await a.close();
    expect(await spoolOwner(dir)).toBeUndefined();
    const b = await openSpool({ dir });
    await b.close();
  });

  it('takes over a stale lock of a dead pid', async () => {
    const dir = setup();
    (await openSpool({ dir })).close(); // creates the layout
    const pid = deadPid();
    writeFileSync(join(dir, 'lock'), JSON.stringify({ pid, host: hostname(), since: 1, purpose: 'relay' }));
    expect(await spoolOwner(dir)).toMatchObject({ pid, alive: false });
    const s = await openSpool({ dir });
    expect(await spoolOwner(dir)).toMatchObject({ pid: process.pid, alive: true });
    await s.close();
  });

  it('takes over a lock with our own pid that this process does not hold (container restart)', async () => {
    const dir = setup();
    writeFileSync(
      join(dir, 'lock'),
      JSON.stringify({ pid: process.pid, host: hostname(), since: 1, purpose: 'relay' }),
    );
    const s = await openSpool({ dir });
    await s.close();
  });

  it('respects a live lock of a live pid', async () => {
    const dir = setup();
    // Our parent process is alive and is not us.
    writeFileSync(
      join(dir, 'lock'),
      JSON.stringify({ pid: process.ppid, host: hostname(), since: 1, purpose: 'relay' }),
    );
    await expect(openSpool({ dir })).rejects.toThrow(`locked by pid ${process.ppid}`);
  });

  it('judges another host by the heartbeat (mtime)', async () => {
    const dir = setup();
    const path = join(dir, 'lock');
    writeFileSync(path, JSON.stringify({ pid: 1, host: 'other-pod-7f9c', since: 1, purpose: 'relay' }));
    await expect(openSpool({ dir, lockStaleMs: 5000 })).rejects.toThrow(/other-pod-7f9c/);
    const old = new Date(Date.now() - 10_000);
    utimesSync(path, old, old);
    const s = await openSpool({ dir, lockStaleMs: 5000 });
    await s.close();
  });

  it('offline changes refuse a spool owned by a live relay but reading works', async () => {
    const dir = setup();
    const relay = await openSpool({ dir });
    cleanups.push(() => relay.close());
    const m = await commitBody(relay, bodyFor('lk', 100), meta('lk'));
    expect((await listQueue(dir)).map((e) => e.id)).toEqual([m.id]);
    await expect(deleteMessage(dir, m.id)).rejects.toThrow(SpoolLockedError);
    await expect(flushQueue(dir)).rejects.toThrow(SpoolLockedError);
    expect(relay.entry(m.id)).toBeDefined();
  });
});
