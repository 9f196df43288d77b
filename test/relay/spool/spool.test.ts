import { appendFileSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { imageLength } from '../../../src/relay/spool/format.ts';
import { openSpool, type RelaySpool, SpoolFormatError } from '../../../src/relay/spool/index.ts';
import { bodyFor, commitBody, meta, readAll, tempSpoolDir } from './helpers.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function setup(tag = 'rt') {
  const t = tempSpoolDir(tag);
  cleanups.push(t.cleanup);
  return t.dir;
}

async function open(dir: string, opts: Partial<Parameters<typeof openSpool>[0]> = {}): Promise<RelaySpool> {
  const s = await openSpool({ dir, ...opts });
  cleanups.push(() => s.close());
  return s;
}

const files = (dir: string, sub: string) => readdirSync(join(dir, sub)).sort();

describe.each([
  ['journal', {}],
  ['per-file fsync', { journal: false as const }],
])('spool round trip (%s)', (mode, opts) => {
  it('commit, get, openBody, update, remove', async () => {
    const dir = setup();
    const spool = await open(dir, opts);
    const body = bodyFor('rt1', 3000);
    const before = Date.now();
    const msg = await commitBody(
      spool,
      body,
      meta('rt1', { dsn: { ret: 'HDRS', envid: 'E1' }, smtputf8: true }),
      1000,
    );

    expect(msg.id).toMatch(/^[0-9A-Z]{16}$/);
    expect(msg.size).toBe(3000);
    expect(msg.receivedAt).toBeGreaterThanOrEqual(before);
    expect(msg.nextAttemptAt).toBe(msg.receivedAt);
    expect(msg.attempts).toBe(0);
    expect(msg.recipients.map((r) => r.status)).toEqual(['pending', 'pending']);
    expect(msg.recipients[1]?.notify).toEqual(['NEVER']);

    expect(await spool.get(msg.id)).toEqual(msg);
    expect((await readAll(spool.openBody(msg.id))).equals(body)).toBe(true);
    // Just committed, the journal keeps it in memory: the same bytes as on disk.
    const held = spool.bodyInMemory(msg.id);
    if (mode === 'journal') expect(held).toBeDefined();
    if (held) expect(Buffer.concat(held).equals(body)).toBe(true);
    expect(spool.entries()).toEqual([
      { id: msg.id, size: 3000, receivedAt: msg.receivedAt, nextAttemptAt: msg.receivedAt },
    ]);
    expect(spool.stats()).toMatchObject({ messages: 1, bytes: 3000, oldestReceivedAt: msg.receivedAt });

    const later = msg.receivedAt + 300_000;
    const updated = {
      ...msg,
      attempts: 1,
      nextAttemptAt: later,
      recipients: [
        { ...msg.recipients[0]!, status: 'sent' as const, lastReply: '250 2.0.0 OK' },
        { ...msg.recipients[1]!, lastReply: '451 4.3.0 try later' },
      ],
    };
    await spool.update(updated);
    expect(await spool.get(msg.id)).toEqual(updated);
    expect(spool.entry(msg.id)?.nextAttemptAt).toBe(later);
    await spool.update({ ...updated, attempts: 2 });
    expect((await spool.get(msg.id))?.attempts).toBe(2);
    // Superseded state files are gone.
    expect(files(dir, 'queue').filter((n) => n.includes('-s'))).toEqual([`${msg.id}-s2-${later}`]);

    await spool.remove(msg.id);
    expect(await spool.get(msg.id)).toBeUndefined();
    expect(spool.entries()).toEqual([]);
    expect(spool.stats()).toMatchObject({ messages: 0, bytes: 0, oldestReceivedAt: undefined });
    await expect(readAll(spool.openBody(msg.id))).rejects.toThrow(/not queued/);
    expect(spool.bodyInMemory(msg.id)).toBeUndefined();
    await expect(spool.update(updated)).rejects.toThrow(/not queued/);
    await spool.remove(msg.id); // idempotent
    expect(files(dir, 'queue')).toEqual([]);
    expect(files(dir, 'tmp')).toEqual([]);
  });

  it('restart resumes every message with its latest state', async () => {
    const dir = setup();
    let spool = await open(dir, opts);
    const sizes = [0, 1, 500, 70_000, 300_000, 2048];
    const msgs = [];
    for (const [i, size] of sizes.entries())
      msgs.push(await commitBody(spool, bodyFor(`r${i}`, size), meta(`r${i}`)));
    await spool.update({ ...msgs[1]!, attempts: 3, nextAttemptAt: 42 });
    await spool.remove(msgs[2]!.id);
    await spool.close();

    spool = await open(dir, opts);
    const ids = spool.entries().map((e) => e.id);
    expect(ids).toEqual(msgs.filter((_, i) => i !== 2).map((m) => m.id));
    for (const [i, m] of msgs.entries()) {
      if (i === 2) continue;
      const got = await spool.get(m.id);
      expect(got).toEqual(i === 1 ? { ...m, attempts: 3, nextAttemptAt: 42 } : m);
      expect((await readAll(spool.openBody(m.id))).equals(bodyFor(`r${i}`, sizes[i]!))).toBe(true);
    }
    // New ids stay above the old ones.
    const next = await commitBody(spool, bodyFor('n', 10), meta('n'));
    expect(next.id > msgs.at(-1)!.id).toBe(true);
    expect(spool.entries().at(-1)?.id).toBe(next.id);
  });

  it('abort leaves nothing, before and after spilling to disk', async () => {
    const dir = setup();
    const spool = await open(dir, opts);
    for (const size of [10, 400_000]) {
      const w = await spool.begin();
      await w.write(bodyFor('ab', size));
      expect(w.size).toBe(size);
      await w.abort();
      await expect(w.write(Buffer.from('x'))).rejects.toThrow(/no longer open/);
      await expect(w.commit(meta('ab'))).rejects.toThrow(/no longer open/);
    }
    expect(spool.entries()).toEqual([]);
    expect(files(dir, 'queue')).toEqual([]);
    expect(files(dir, 'tmp')).toEqual([]);
  });

  it('reschedule sets nextAttemptAt durably', async () => {
    const dir = setup();
    let spool = await open(dir, opts);
    const m = await commitBody(spool, bodyFor('rs', 100), meta('rs'));
    expect(await spool.reschedule(m.id, m.receivedAt + 1000)).toBe(true); // creates the state file
    expect(await spool.reschedule(m.id, m.receivedAt + 5)).toBe(true); // a rename
    expect(await spool.reschedule('0000000000000000', 1)).toBe(false);
    await spool.close();
    spool = await open(dir, opts);
    expect(spool.entry(m.id)?.nextAttemptAt).toBe(m.receivedAt + 5);
    expect((await spool.get(m.id))?.nextAttemptAt).toBe(m.receivedAt + 5);
  });

  it('refuses a commit without recipients and cleans up', async () => {
    const dir = setup();
    const spool = await open(dir, opts);
    const w = await spool.begin();
    await w.write(bodyFor('x', 100_000));
    await expect(w.commit({ ...meta('x'), recipients: [] })).rejects.toThrow(/recipient/);
    expect(files(dir, 'tmp')).toEqual([]);
    expect(spool.entries()).toEqual([]);
  });
});

describe('journal', () => {
  it('commits small messages through the journal and checkpoints them into their own files', async () => {
    const dir = setup('cp');
    let spool = await open(dir);
    const small = await Promise.all(
      Array.from({ length: 20 }, (_, i) => commitBody(spool, bodyFor(`j${i}`, 900), meta(`j${i}`))),
    );
    const big = await commitBody(spool, bodyFor('big', 300_000), meta('big'));
    let io = spool.stats().io!;
    expect(io.journalRecords).toBe(20);
    expect(io.fileSyncs).toBe(1); // only the big one
    expect(io.journalSegments).toBe(1);

    await spool.remove(small[0]!.id); // a DELETE record, no dir fsync
    await spool.checkpoint();
    io = spool.stats().io!;
    expect(io.journalSegments).toBe(0);
    expect(io.checkpointedMessages).toBe(19);
    expect(files(dir, 'wal')).toEqual([]);
    await spool.close();

    spool = await open(dir);
    expect(spool.entries().map((e) => e.id)).toEqual([...small.slice(1).map((m) => m.id), big.id]);
    for (const [i, m] of small.entries()) {
      if (i === 0) continue;
      expect((await readAll(spool.openBody(m.id))).equals(bodyFor(`j${i}`, 900))).toBe(true);
    }
  });

  it('reopens with the journal in place: messages read in place, deletes honoured, torn tail ignored', async () => {
    const dir = setup('replay');
    let spool = await open(dir, { journal: { checkpointAfterMs: 3_600_000, sealAfterMs: 3_600_000 } });
    const a = await commitBody(spool, bodyFor('a', 700), meta('a'));
    const b = await commitBody(spool, bodyFor('b', 800), meta('b'));
    const c = await commitBody(spool, bodyFor('c', 900), meta('c'));
    const bImage = readFileSync(join(dir, 'wal', files(dir, 'wal')[0]!));
    await spool.remove(b.id);
    await spool.close(); // no checkpoint: like a crash, the journal is all there is
    expect(files(dir, 'queue')).toEqual([]);
    const wal = files(dir, 'wal');
    expect(wal).toHaveLength(1);

    // A removed message's file that came back (its unlink was not durable yet)...
    const off = bImage.indexOf('ERSQ01', bImage.indexOf(b.id));
    const len = imageLength(bImage, off);
    writeFileSync(join(dir, 'queue', `${b.id}-m800`), bImage.subarray(off, off + len));
    // ...and a torn append at the end of the segment.
    appendFileSync(join(dir, 'wal', wal[0]!), Buffer.from('ERJ1P\0\0\0\xff\xff\0\0garbage', 'latin1'));

    spool = await open(dir);
    expect(spool.entries().map((e) => e.id)).toEqual([a.id, c.id]);
    expect(files(dir, 'queue')).toEqual([]); // the DELETE won
    expect(await spool.get(a.id)).toEqual(a);
    expect((await readAll(spool.openBody(c.id))).equals(bodyFor('c', 900))).toBe(true);
    // New commits go to a fresh segment, never behind the torn tail.
    const d = await commitBody(spool, bodyFor('d', 100), meta('d'));
    expect(files(dir, 'wal')).toHaveLength(2);
    await spool.checkpoint();
    expect(files(dir, 'wal')).toEqual([]);
    expect(files(dir, 'queue')).toEqual([`${a.id}-m700`, `${c.id}-m900`, `${d.id}-m100`].sort());
    expect(statSync(join(dir, 'queue', `${c.id}-m900`)).size).toBeGreaterThan(900);
    await spool.close();
    spool = await open(dir);
    expect((await readAll(spool.openBody(a.id))).equals(bodyFor('a', 700))).toBe(true);
  });

  it('a body stream opened before a checkpoint keeps reading after it', async () => {
    const dir = setup('stream');
    const spool = await open(dir);
    const m = await commitBody(spool, bodyFor('s', 60_000), meta('s'));
    const stream = spool.openBody(m.id);
    await spool.checkpoint();
    expect(files(dir, 'wal')).toEqual([]);
    expect((await readAll(stream)).equals(bodyFor('s', 60_000))).toBe(true);
    expect((await readAll(spool.openBody(m.id))).equals(bodyFor('s', 60_000))).toBe(true);
  });

  it('messages removed before the checkpoint never get a file', async () => {
    const dir = setup('gone');
    const spool = await open(dir);
    const msgs = await Promise.all(
      Array.from({ length: 50 }, (_, i) => commitBody(spool, bodyFor(`g${i}`, 500), meta(`g${i}`))),
    );
    await Promise.all(msgs.slice(0, 45).map((m) => spool.remove(m.id)));
    await spool.checkpoint();
    const io = spool.stats().io!;
    expect(io.checkpointedMessages).toBe(5);
    expect(io.fileSyncs).toBe(5);
    expect(files(dir, 'queue')).toHaveLength(5);
  });

  it('falls back to per-file fsync when the journal is over its cap', async () => {
    const dir = setup('cap');
    const spool = await open(dir, { journal: { maxBytes: 4000, checkpointAfterMs: 3_600_000 } });
    for (let i = 0; i < 6; i++) await commitBody(spool, bodyFor(`c${i}`, 1500), meta(`c${i}`));
    const io = spool.stats().io!;
    expect(io.journalRecords).toBeLessThan(6);
    expect(io.fileSyncs).toBeGreaterThan(0);
    expect(spool.entries()).toHaveLength(6);
  });
});

describe('recently committed messages', () => {
  it('are served from memory exactly as the disk has them, and never stale', async () => {
    const dir = setup('recent');
    let spool = await open(dir);
    const body = bodyFor('mem1', 5000);
    const msg = await commitBody(
      spool,
      body,
      meta('mem1', {
        dsn: { ret: 'FULL', envid: 'ENV-1' },
        smtputf8: true,
        bodyType: '8BITMIME',
        isBounce: false,
        messageId: undefined,
        client: { address: '10.9.8.7', helo: 'h.test', namespace: 'billing', pod: 'api-1', user: 'app' },
      }),
      700,
    );
    const fromMemory = await spool.get(msg.id);
    expect(fromMemory).toEqual(msg);
    // a caller changing what it got changes nothing in the spool
    fromMemory!.recipients[0]!.status = 'sent';
    expect((await spool.get(msg.id))?.recipients[0]?.status).toBe('pending');
    expect((await readAll(spool.openBody(msg.id))).equals(body)).toBe(true);

    // what a restart reads from disk is the same message
    await spool.close();
    spool = await open(dir);
    expect(await spool.get(msg.id)).toEqual(msg);

    // after an update the new state is what get() returns, memory or not
    const m2 = await commitBody(spool, bodyFor('mem2', 100), meta('mem2'));
    await spool.update({ ...m2, attempts: 3, nextAttemptAt: m2.receivedAt + 1000 });
    expect((await spool.get(m2.id))?.attempts).toBe(3);
    await spool.remove(m2.id);
    expect(await spool.get(m2.id)).toBeUndefined();
    await expect(readAll(spool.openBody(m2.id))).rejects.toThrow(/not queued/);
  });
});

describe('housekeeping', () => {
  it('open cleans receptions left in tmp/ and orphaned state files', async () => {
    const dir = setup('clean');
    let spool = await open(dir, { journal: false });
    const m = await commitBody(spool, bodyFor('k', 100), meta('k'));
    const w = await spool.begin();
    await w.write(bodyFor('partial', 200_000)); // spilled to tmp/, never committed
    await spool.update({ ...m, attempts: 1 });
    // A crash can leave a superseded or orphaned state file behind.
    writeFileSync(join(dir, 'queue', `${m.id}-s0-1`), '{}');
    writeFileSync(join(dir, 'queue', '1KQ4Z8M2B0000001-s3-1'), '{}');
    writeFileSync(join(dir, 'tmp', 'leftover'), 'x');
    await spool.close();

    spool = await open(dir, { journal: false });
    expect(spool.entries().map((e) => e.id)).toEqual([m.id]);
    expect((await spool.get(m.id))?.attempts).toBe(1);
    expect(files(dir, 'tmp')).toEqual([]);
    expect(files(dir, 'queue')).toHaveLength(2);
  });

  it('headroom and writable', async () => {
    const dir = setup('hr');
    const spool = await open(dir, { minFreeBytes: 1024 });
    const h = await spool.headroom();
    expect(h).toBeGreaterThan(0);
    expect(await spool.headroom()).toBe(h); // cached
    const huge = await open(setup('hr2'), { minFreeBytes: Number.MAX_SAFE_INTEGER });
    expect(await huge.headroom()).toBeLessThanOrEqual(0);
    expect(await spool.writable()).toBe(true);
    await spool.close();
    expect(await spool.writable()).toBe(false);
    await expect(spool.begin()).rejects.toThrow(/closed/);
  });

  it('refuses a spool of another format version', async () => {
    const dir = setup('fmt');
    writeFileSync(join(dir, 'format'), 'email-relay spool 9\n');
    await expect(openSpool({ dir })).rejects.toThrow(SpoolFormatError);
  });

  it('close waits for commits in flight', async () => {
    const dir = setup('close');
    const spool = await openSpool({ dir });
    const pending = Array.from({ length: 30 }, (_, i) =>
      commitBody(spool, bodyFor(`w${i}`, 1000), meta(`w${i}`)),
    );
    await new Promise((r) => setImmediate(r));
    await spool.close();
    const done = await Promise.allSettled(pending);
    const ok = done.filter((d) => d.status === 'fulfilled').length;
    const reopened = await open(dir);
    expect(reopened.entries()).toHaveLength(ok);
  });
});
