import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { encodeEnvelope, encodeMessageImage, messageFileName } from '../../../src/relay/spool/format.ts';
import { IdGenerator, idTime } from '../../../src/relay/spool/ids.ts';
import { openSpool } from '../../../src/relay/spool/index.ts';
import { meta, readAll, tempSpoolDir } from './helpers.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function heapUsed(): number {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
}

const N = 20_000;
const VIA_API = 2_000;
const body = Buffer.alloc(300, 'x');

/** Queue N messages: some through the API, the rest written directly in the same format (fast). */
async function fill(dir: string): Promise<void> {
  const spool = await openSpool({ dir, fsync: false });
  await Promise.all(
    Array.from({ length: VIA_API }, async () => {
      const w = await spool.begin();
      await w.write(body);
      await w.commit(meta('mem'));
    }),
  );
  // Some deferred ones carry a state file.
  for (const e of spool.entries().slice(0, 1000)) await spool.reschedule(e.id, e.receivedAt + 60_000);
  await spool.close();
  const ids = new IdGenerator(() => Date.now() + 1000);
  const m = meta('mem');
  for (let i = VIA_API; i < N; i++) {
    const id = ids.next();
    const receivedAt = idTime(id);
    const env = encodeEnvelope({
      ...m,
      id,
      recipients: m.recipients.map((r) => ({ ...r, status: 'pending' as const })),
      size: body.length,
      receivedAt,
      nextAttemptAt: receivedAt,
      attempts: 0,
    });
    writeFileSync(
      join(dir, 'queue', messageFileName(id, body.length)),
      Buffer.concat(encodeMessageImage([body], body.length, env)),
    );
  }
}

describe('index memory and open time', () => {
  it(`holds ${N} queued messages in bounded heap per entry and opens fast`, async () => {
    const { dir, cleanup } = tempSpoolDir('mem');
    try {
      await fill(dir);
      const before = heapUsed();
      const t0 = performance.now();
      const spool = await openSpool({ dir, fsync: false });
      const openMs = performance.now() - t0;
      const perEntry = (heapUsed() - before) / N;
      console.log(`open ${N} entries: ${openMs.toFixed(0)} ms, ${perEntry.toFixed(0)} heap bytes/entry`);
      try {
        expect(spool.stats().messages).toBe(N);
        // 100k entries must stay well under 50 MB, i.e. 500 bytes each.
        expect(perEntry).toBeLessThan(300);
        expect(openMs).toBeLessThan(3000);
        const e = spool.entries()[N - 1]!;
        expect((await readAll(spool.openBody(e.id))).equals(body)).toBe(true);
        expect((await spool.get(spool.entries()[0]!.id))?.nextAttemptAt).toBeGreaterThan(Date.now());
      } finally {
        await spool.close();
      }
    } finally {
      cleanup();
    }
  });
});
