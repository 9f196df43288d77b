import { afterEach, describe, expect, it } from 'vitest';
import {
  deleteMessage,
  flushQueue,
  listMessages,
  listQueue,
  openSpool,
  retryMessage,
  showMessage,
  spoolOwner,
} from '../../../src/relay/spool/index.ts';
import type { QueuedMessage } from '../../../src/relay/spool/types.ts';
import { bodyFor, commitBody, meta, readAll, tempSpoolDir } from './helpers.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A stopped relay's spool: three messages, one deferred, journal left in place. */
async function stoppedSpool(): Promise<{ dir: string; msgs: QueuedMessage[] }> {
  const t = tempSpoolDir('offline');
  cleanups.push(t.cleanup);
  const spool = await openSpool({ dir: t.dir, journal: { checkpointAfterMs: 3_600_000 } });
  const msgs = [];
  for (const i of [0, 1, 2]) msgs.push(await commitBody(spool, bodyFor(`q${i}`, 1000 + i), meta(`q${i}`)));
  await spool.update({ ...msgs[1]!, attempts: 2, nextAttemptAt: Date.now() + 3_600_000 });
  await spool.close();
  return { dir: t.dir, msgs };
}

describe('offline queue functions (email-relay queue ...)', () => {
  it('list: entries and envelopes, oldest first', async () => {
    const { dir, msgs } = await stoppedSpool();
    expect((await listQueue(dir)).map((e) => e.id)).toEqual(msgs.map((m) => m.id));
    const listed = [];
    for await (const m of listMessages(dir)) listed.push(m);
    expect(listed.map((m) => m.message?.from)).toEqual(msgs.map((m) => m.from));
    expect(listed[1]?.message?.attempts).toBe(2);
    expect(await spoolOwner(dir)).toBeUndefined();
  });

  it('show: envelope and headers', async () => {
    const { dir, msgs } = await stoppedSpool();
    const shown = await showMessage(dir, msgs[0]!.id);
    expect(shown?.message).toEqual(msgs[0]);
    expect(shown?.headers).toBe('Message-ID: <q0@test>\r\nSubject: spool test q0\r\n\r\n');
    expect(await showMessage(dir, '0000000000000000')).toBeUndefined();
  });

  it('delete: durably, and only what exists', async () => {
    const { dir, msgs } = await stoppedSpool();
    expect(await deleteMessage(dir, msgs[0]!.id)).toBe(true);
    expect(await deleteMessage(dir, msgs[0]!.id)).toBe(false);
    const spool = await openSpool({ dir });
    cleanups.push(() => spool.close());
    expect(spool.entries().map((e) => e.id)).toEqual([msgs[1]!.id, msgs[2]!.id]);
    expect((await readAll(spool.openBody(msgs[2]!.id))).equals(bodyFor('q2', 1002))).toBe(true);
  });

  it('retry one / flush all: deferred messages become due now', async () => {
    const { dir, msgs } = await stoppedSpool();
    const now = Date.now();
    expect(await retryMessage(dir, msgs[1]!.id, now)).toBe(true);
    expect((await listQueue(dir))[1]?.nextAttemptAt).toBe(now);
    expect(await retryMessage(dir, '0000000000000000')).toBe(false);

    const spool = await openSpool({ dir });
    await spool.reschedule(msgs[0]!.id, now + 999_999);
    await spool.reschedule(msgs[2]!.id, now + 999_999);
    await spool.close();
    expect(await flushQueue(dir, now + 1)).toBe(2);
    expect((await listQueue(dir)).every((e) => e.nextAttemptAt <= now + 1)).toBe(true);
    // The rest of the state is untouched.
    expect((await showMessage(dir, msgs[1]!.id))?.message.attempts).toBe(2);
  });

  it('refuses a directory that is not a spool', async () => {
    const t = tempSpoolDir('notspool');
    cleanups.push(t.cleanup);
    await expect(listQueue(t.dir)).rejects.toThrow(/not a spool/);
    await expect(deleteMessage(t.dir, '0000000000000000')).rejects.toThrow(/not a spool/);
  });
});
