import { existsSync, readdirSync, readFileSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeJournal } from '../../../src/relay/spool/format.ts';
import { type OpenSpoolOptions, openSpool, type RelaySpool } from '../../../src/relay/spool/index.ts';
import type { SpoolDamageEvent } from '../../../src/relay/spool/types.ts';
import { bodyFor, commitBody, meta, readAll, tempSpoolDir } from './helpers.ts';

/**
 * A bad disk under the spool: one flipped byte, a cut tail, a file deleted or overwritten by
 * hand. Each costs at most the one damaged record; nothing else acknowledged is lost, no file of
 * a message is deleted, and the log and the damage events name what happened.
 */

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function setup(tag: string): string {
  const t = tempSpoolDir(`damage-${tag}`);
  cleanups.push(t.cleanup);
  return t.dir;
}

const ls = (dir: string, sub: string) =>
  existsSync(join(dir, sub)) ? readdirSync(join(dir, sub)).sort() : [];

/** A spool whose log lines and damage events the test reads. */
async function open(dir: string, extra: Partial<OpenSpoolOptions> = {}) {
  const logs: Array<Record<string, unknown>> = [];
  const events: SpoolDamageEvent[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line));
      cb();
    },
  });
  const spool = await openSpool({
    dir,
    logger: pino({ level: 'debug', base: undefined }, sink),
    onDamage: (e) => events.push(e),
    // Nothing checkpoints by itself: the journal is all there is, as after a crash.
    journal: { checkpointAfterMs: 3_600_000, sealAfterMs: 3_600_000 },
    ...extra,
  });
  return { spool, logs, events };
}

async function fill(spool: RelaySpool, n: number, size = 600): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push((await commitBody(spool, bodyFor(`m${i}`, size), meta(`m${i}`))).id);
  return ids;
}

async function expectWhole(spool: RelaySpool, ids: string[], size = 600): Promise<void> {
  for (const [i, id] of ids.entries()) {
    const msg = await spool.get(id);
    expect(msg?.messageId, id).toBe(`<m${i}@test>`);
    expect((await readAll(spool.openBody(id))).equals(bodyFor(`m${i}`, size)), id).toBe(true);
  }
}

function segmentOf(dir: string): string {
  const wal = ls(dir, 'wal');
  expect(wal).toHaveLength(1);
  return join(dir, 'wal', wal[0]!);
}

describe('spool on a damaged disk', () => {
  it('a flipped byte in one record costs that record only; the segment is kept aside', async () => {
    const dir = setup('flip');
    let { spool } = await open(dir);
    const ids = await fill(spool, 200);
    await spool.close();

    const path = segmentOf(dir);
    const buf = readFileSync(path);
    const victim = decodeJournal(buf).records[50]!;
    expect(victim.id).toBe(ids[50]);
    buf[victim.offset + 200] = buf[victim.offset + 200]! ^ 0x01; // in the message body of record 50
    writeFileSync(path, buf);

    const t0 = performance.now();
    const r = await open(dir);
    const recoveryMs = performance.now() - t0;
    spool = r.spool;
    const survivors = ids.filter((_, i) => i !== 50);
    expect(spool.entries().map((e) => e.id)).toEqual(survivors);
    expect(r.events).toEqual([{ kind: 'lost', id: ids[50], reason: 'damaged journal record' }]);
    const lostLine = r.logs.find((l) => l.queueId === ids[50]);
    expect(lostLine?.msg).toMatch(/lost to journal damage/);
    expect(lostLine?.level).toBe(50);
    expect(r.logs.some((l) => /damaged journal record\(s\) skipped/.test(String(l.msg)))).toBe(true);
    for (const [i, id] of ids.entries()) {
      if (i === 50) continue;
      expect((await readAll(spool.openBody(id))).equals(bodyFor(`m${i}`, 600)), id).toBe(true);
    }

    // Once its good records have files of their own, the segment goes to damaged/, not away.
    await spool.checkpoint();
    expect(ls(dir, 'wal')).toEqual([]);
    const kept = ls(dir, 'damaged');
    expect(kept).toHaveLength(1);
    expect(readFileSync(join(dir, 'damaged', kept[0]!)).equals(buf)).toBe(true);
    await spool.close();
    ({ spool } = await open(dir));
    expect(spool.entries()).toHaveLength(199);
    await spool.close();
    console.log(`flipped byte: 1 of 200 lost, reopened in ${recoveryMs.toFixed(0)} ms`);
  });

  it('a damaged record header (its length) is skipped by resynchronising on the next record', async () => {
    const dir = setup('header');
    let { spool } = await open(dir);
    const ids = await fill(spool, 20);
    await spool.close();
    const path = segmentOf(dir);
    const buf = readFileSync(path);
    const victim = decodeJournal(buf).records[7]!;
    buf[victim.offset + 9] = buf[victim.offset + 9]! ^ 0x40; // length field: the reader cannot skip by it
    writeFileSync(path, buf);
    const r = await open(dir);
    spool = r.spool;
    expect(spool.entries().map((e) => e.id)).toEqual(ids.filter((_, i) => i !== 7));
    expect(r.events.map((e) => e.id)).toEqual([ids[7]]);
    await spool.close();
  });

  it('a cut tail loses only the record the cut went through (never acknowledged), and says so', async () => {
    const dir = setup('cut');
    let { spool } = await open(dir);
    const ids = await fill(spool, 30);
    await spool.close();
    const path = segmentOf(dir);
    const last = decodeJournal(readFileSync(path)).records.at(-1)!;
    truncateSync(path, last.offset + 100);
    const r = await open(dir);
    spool = r.spool;
    expect(spool.entries().map((e) => e.id)).toEqual(ids.slice(0, -1));
    expect(r.events).toEqual([]); // a torn append: its commit never returned
    const line = r.logs.find((l) => /journal tail cut/.test(String(l.msg)));
    expect(line?.ids).toEqual([ids.at(-1)]);
    await expectWhole(spool, ids.slice(0, -1));
    await spool.checkpoint();
    expect(ls(dir, 'damaged')).toEqual([]); // a torn tail is no damage to keep
    await spool.close();
  });

  it('a deleted message file: its delivery state is quarantined, not deleted (at open and live)', async () => {
    const dir = setup('deleted');
    let { spool } = await open(dir, { journal: false });
    const [a, b, c] = await fill(spool, 3, 2000);
    for (const id of [a!, b!]) {
      const msg = (await spool.get(id))!;
      msg.attempts = 1;
      msg.recipients[0]!.status = 'sent';
      await spool.update(msg);
    }
    await spool.close();
    const aFile = ls(dir, 'queue').find((n) => n.startsWith(`${a}-m`))!;
    unlinkSync(join(dir, 'queue', aFile));

    let r = await open(dir, { journal: false });
    spool = r.spool;
    expect(spool.entries().map((e) => e.id)).toEqual([b, c]);
    expect(r.events).toEqual([{ kind: 'quarantined', id: a, reason: 'message body missing' }]);
    expect(spool.quarantined().map((q) => q.id)).toEqual([a]);
    expect(ls(dir, 'quarantine')[0]).toMatch(new RegExp(`^${a}-s1-`));

    // Live: the file of b vanishes under the running spool. get() quarantines it (no endless retry).
    const bFile = ls(dir, 'queue').find((n) => n.startsWith(`${b}-m`))!;
    unlinkSync(join(dir, 'queue', bFile));
    expect(await spool.get(b!)).toBeUndefined();
    expect(spool.entries().map((e) => e.id)).toEqual([c]);
    expect(spool.quarantined().map((q) => q.id)).toEqual([a, b]);
    expect(r.events.at(-1)).toMatchObject({ kind: 'quarantined', id: b });
    await spool.close();
    r = await open(dir, { journal: false });
    expect(r.spool.entries().map((e) => e.id)).toEqual([c]);
    expect(r.events).toEqual([]);
    await r.spool.close();
  });

  it('a corrupt state file: recovered from the original envelope, the bad file kept; nothing readable: quarantined', async () => {
    const dir = setup('state');
    let { spool } = await open(dir, { journal: false });
    const [a, b] = await fill(spool, 2, 2000);
    for (const id of [a!, b!]) {
      const msg = (await spool.get(id))!;
      msg.attempts = 3;
      await spool.update(msg);
    }
    await spool.close();
    const state = (id: string) => ls(dir, 'queue').find((n) => n.startsWith(`${id}-s`))!;
    writeFileSync(join(dir, 'queue', state(a!)), '{"v":1,"id":tru');
    writeFileSync(join(dir, 'queue', state(b!)), 'garbage');
    const bMsg = ls(dir, 'queue').find((n) => n.startsWith(`${b}-m`))!;
    writeFileSync(join(dir, 'queue', bMsg), 'not a message file either');

    const r = await open(dir, { journal: false });
    spool = r.spool;
    const got = await spool.get(a!);
    expect(got?.messageId).toBe('<m0@test>');
    expect(got?.attempts).toBe(0); // the original envelope
    expect((await readAll(spool.openBody(a!))).equals(bodyFor('m0', 2000))).toBe(true);
    expect(await spool.get(b!)).toBeUndefined();
    expect(await spool.get(b!)).toBeUndefined(); // asked again: no error, no loop
    expect(spool.entries().map((e) => e.id)).toEqual([a]);
    expect(r.events.map((e) => [e.kind, e.id])).toEqual([
      ['recovered', a],
      ['quarantined', b],
    ]);
    const q = spool.quarantined();
    expect(q.map((x) => x.id)).toEqual([a, b]);
    expect(q[1]!.files).toHaveLength(2);
    await spool.close();
    ({ spool } = await open(dir, { journal: false }));
    expect((await spool.get(a!))?.messageId).toBe('<m0@test>');
    await spool.close();
  });
});
