import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { openSpool } from '../../../src/relay/spool/index.ts';
import { mountPowercut } from '../../helpers/powercut.ts';
import { bodyFor, readAll } from './helpers.ts';

/**
 * Power loss, not just kill -9: the spool runs on powercut-fs (FUSE), which keeps only what was
 * fsynced when the power is cut. Every message acknowledged (its commit resolved) before the cut
 * must be whole afterwards. The negative control skips the journal's fdatasync and must lose
 * acknowledged mail, or this test could not tell a missing fsync.
 */

const child = fileURLToPath(new URL('./fixtures/crash-child.ts', import.meta.url));

interface Printed {
  committed: Map<string, { token: string; size: number }>;
  removing: Set<string>;
  removed: Set<string>;
}

async function burst(dir: string, after: number, p: Printed, env: NodeJS.ProcessEnv = {}): Promise<void> {
  const proc: ChildProcess = spawn(process.execPath, ['--import', 'tsx', child, dir, 'journal'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  let buf = '';
  let commits = 0;
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    for (const line of lines) {
      const [kind, id, a, b] = line.split(' ');
      if (kind === 'C') {
        p.committed.set(id!, { token: a!, size: Number(b) });
        // The cut comes in the middle of the burst, not at a quiet moment.
        if (++commits === after) proc.kill('SIGKILL');
      } else if (kind === 'R') p.removing.add(id!);
      else if (kind === 'D') p.removed.add(id!);
    }
  });
  const guard = setTimeout(() => proc.kill('SIGKILL'), 90_000);
  await exited;
  clearTimeout(guard);
  await new Promise((r) => setImmediate(r));
  expect(commits, stderr).toBeGreaterThanOrEqual(after);
}

/** Opens the spool as the cut left it; returns the acknowledged messages that are missing. */
async function lostAfterCut(dir: string, p: Printed): Promise<string[]> {
  const spool = await openSpool({ dir });
  try {
    const present = new Set(spool.entries().map((e) => e.id));
    const lost = [...p.committed.keys()].filter((id) => !p.removing.has(id) && !present.has(id));
    for (const id of p.removed) expect(present.has(id), `removed ${id} came back`).toBe(false);
    for (const e of spool.entries()) {
      const msg = await spool.get(e.id);
      const token = /^<(.*)@test>$/.exec(msg?.messageId ?? '')?.[1];
      expect(token, e.id).toBeDefined();
      const body = await readAll(spool.openBody(e.id));
      expect(body.equals(bodyFor(token!, e.size)), `${e.id} body`).toBe(true);
    }
    return lost;
  } finally {
    await spool.close();
  }
}

describe('power loss (unsynced writes really lost)', () => {
  it('every acknowledged message survives a cut mid-burst, three cuts in a row', async () => {
    const p: Printed = { committed: new Map(), removing: new Set(), removed: new Set() };
    let seed: string | undefined;
    const disposers: Array<() => void> = [];
    try {
      for (const after of [50, 200, 400]) {
        const fs = await mountPowercut(seed);
        disposers.push(fs.dispose);
        await burst(join(fs.mount, 'spool'), after, p);
        const image = await fs.cut();
        const t0 = performance.now();
        const lost = await lostAfterCut(join(image, 'spool'), p);
        console.log(
          `power cut after ${after} commits: ${p.committed.size} acknowledged so far, ${lost.length} lost, reopened and checked in ${(performance.now() - t0).toFixed(0)} ms`,
        );
        expect(lost).toEqual([]);
        seed = image;
      }
    } finally {
      for (const d of disposers) d();
    }
  }, 300_000);

  it('with every commit fdatasynced on the event loop (one client connected), acknowledged mail survives a cut', async () => {
    const p: Printed = { committed: new Map(), removing: new Set(), removed: new Set() };
    const fs = await mountPowercut();
    try {
      await burst(join(fs.mount, 'spool'), 200, p, { CRASH_CHILD_SYNC_ON_LOOP: '1' });
      const image = await fs.cut();
      expect(await lostAfterCut(join(image, 'spool'), p)).toEqual([]);
    } finally {
      fs.dispose();
    }
  }, 300_000);

  it.each([
    ['on the thread pool', {}],
    ['on the event loop', { CRASH_CHILD_SYNC_ON_LOOP: '1' }],
  ])(
    'negative control: without the journal fdatasync (%s), acknowledged mail is lost',
    async (_, env) => {
      const p: Printed = { committed: new Map(), removing: new Set(), removed: new Set() };
      const fs = await mountPowercut();
      try {
        await burst(join(fs.mount, 'spool'), 200, p, { CRASH_CHILD_SKIP_DATASYNC: '1', ...env });
        const image = await fs.cut();
        const lost = await lostAfterCut(join(image, 'spool'), p);
        console.log(`journal fdatasync skipped: ${lost.length} of ${p.committed.size} acknowledged lost`);
        expect(lost.length).toBeGreaterThan(0);
      } finally {
        fs.dispose();
      }
    },
    300_000,
  );
});
