/**
 * Spool micro-benchmark (not a test): commits/s of 2 KB messages with fsync on, at concurrency
 * 1, 20 and 200, through the journal and through per-file fsync; then the time and heap it takes
 * to open a spool holding many messages.
 *
 *   node --import tsx bench/spool.ts [--seconds 3] [--open 100000] [--dir /path/on/the/real/disk]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { encodeEnvelope, encodeMessageImage, messageFileName } from '../src/relay/spool/format.ts';
import { IdGenerator, idTime } from '../src/relay/spool/ids.ts';
import { type OpenSpoolOptions, openSpool } from '../src/relay/spool/index.ts';
import type { NewMessage } from '../src/relay/spool/types.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '3' },
    open: { type: 'string', default: '100000' },
    dir: { type: 'string', default: tmpdir() },
  },
});
const SECONDS = Number(values.seconds);
const OPEN_N = Number(values.open);

const body = Buffer.from(`Subject: bench\r\n\r\n${'x'.repeat(2048 - 20)}\r\n`);
const meta: NewMessage = {
  from: 'bench@example.com',
  recipients: [{ address: 'rcpt@example.org' }],
  client: { address: '10.0.0.1', helo: 'bench' },
};

async function commits(label: string, opts: Partial<OpenSpoolOptions>, concurrency: number, remove = false) {
  const dir = mkdtempSync(join(values.dir, 'spool-bench-'));
  const spool = await openSpool({ dir, ...opts });
  let done = 0;
  const latencies: number[] = [];
  const end = performance.now() + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        const w = await spool.begin();
        await w.write(body);
        const msg = await w.commit(meta);
        latencies.push(performance.now() - t);
        if (remove) await spool.remove(msg.id);
        done++;
      }
    }),
  );
  const io = spool.stats().io!;
  await spool.close();
  rmSync(dir, { recursive: true, force: true });
  latencies.sort((a, b) => a - b);
  const p = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  const rate = done / SECONDS;
  console.log(
    `${label.padEnd(26)} c=${String(concurrency).padStart(3)}  ${rate.toFixed(0).padStart(6)} commits/s  ` +
      `p50 ${p(0.5).toFixed(2)} ms  p99 ${p(0.99).toFixed(2)} ms  ` +
      `syncs/commit: journal ${(io.journalSyncs / done).toFixed(3)} file ${(io.fileSyncs / done).toFixed(3)} ` +
      `dir ${(io.dirSyncs / done).toFixed(3)}`,
  );
}

async function openTime(n: number) {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const heap = () => {
    for (let i = 0; i < 3; i++) gc();
    return process.memoryUsage().heapUsed;
  };
  const dir = mkdtempSync(join(values.dir, 'spool-bench-open-'));
  // Fill: the commit path is measured above; write the files directly in the same format.
  (await openSpool({ dir, fsync: false })).close();
  const ids = new IdGenerator();
  for (let i = 0; i < n; i++) {
    const id = ids.next();
    const receivedAt = idTime(id);
    const env = encodeEnvelope({
      ...meta,
      id,
      recipients: [{ address: 'rcpt@example.org', status: 'pending' }],
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
  const before = heap();
  const t0 = performance.now();
  const spool = await openSpool({ dir });
  const ms = performance.now() - t0;
  const grown = heap() - before;
  console.log(
    `open ${n} messages: ${ms.toFixed(0)} ms, index heap ${(grown / 1024 / 1024).toFixed(1)} MiB ` +
      `(${(grown / n).toFixed(0)} B/entry), rss ${(process.memoryUsage().rss / 1024 / 1024).toFixed(0)} MiB`,
  );
  await spool.close();
  rmSync(dir, { recursive: true, force: true });
}

console.log(`spool bench: 2 KB messages, fsync on, ${SECONDS}s per run, dir ${values.dir}`);
for (const c of [1, 20, 200]) await commits('journal (default)', {}, c);
for (const c of [1, 20, 200]) await commits('per-file fsync', { journal: false }, c);
await commits('journal, commit+remove', {}, 20, true);
if (OPEN_N > 0) await openTime(OPEN_N);
