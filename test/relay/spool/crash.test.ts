import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { openSpool } from '../../../src/relay/spool/index.ts';
import { bodyFor, readAll, tempSpoolDir } from './helpers.ts';

const child = fileURLToPath(new URL('./fixtures/crash-child.ts', import.meta.url));

interface Printed {
  committed: Map<string, { token: string; size: number }>;
  removed: Set<string>;
  removing: Set<string>;
  updated: Set<string>;
}

/** Runs the child until it printed `after` commits (plus a random few ms), then SIGKILLs it. */
async function burstAndKill(dir: string, mode: string, after: number, p: Printed): Promise<void> {
  const proc: ChildProcess = spawn(process.execPath, ['--import', 'tsx', child, dir, mode], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d) => {
    stderr += d;
  });
  let buf = '';
  let commits = 0;
  let killTimer: NodeJS.Timeout | undefined;
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    proc.on('exit', (_code, sig) => resolve(sig)),
  );
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    for (const line of lines) {
      const [kind, id, a, b] = line.split(' ');
      if (kind === 'C') {
        p.committed.set(id!, { token: a!, size: Number(b) });
        if (++commits === after && !killTimer) {
          killTimer = setTimeout(() => proc.kill('SIGKILL'), Math.floor(Math.random() * 15));
        }
      } else if (kind === 'R') p.removing.add(id!);
      else if (kind === 'D') p.removed.add(id!);
      else if (kind === 'U') p.updated.add(id!);
    }
  });
  const guard = setTimeout(() => proc.kill('SIGKILL'), 30_000);
  const sig = await exited;
  clearTimeout(guard);
  // Lines written before the kill are still in the pipe.
  await new Promise((r) => setImmediate(r));
  expect(sig, stderr).toBe('SIGKILL');
  expect(commits, stderr).toBeGreaterThanOrEqual(after);
}

async function verify(dir: string, p: Printed): Promise<number> {
  const spool = await openSpool({ dir });
  try {
    const entries = spool.entries();
    const present = new Set(entries.map((e) => e.id));
    for (const [id] of p.committed) {
      if (!p.removing.has(id)) expect(present.has(id), `acknowledged ${id} lost`).toBe(true);
    }
    for (const id of p.removed) expect(present.has(id), `removed ${id} came back`).toBe(false);
    // Everything listed is whole: envelope readable, body intact and matching it.
    for (const e of entries) {
      const msg = await spool.get(e.id);
      expect(msg, e.id).toBeDefined();
      const token = /^<(.*)@test>$/.exec(msg!.messageId ?? '')?.[1];
      expect(token, e.id).toBeDefined();
      expect(msg!.recipients[0]?.address).toBe(`${token}@example.org`);
      const printed = p.committed.get(e.id);
      if (printed) expect(printed.token).toBe(token);
      const body = await readAll(spool.openBody(e.id));
      expect(body.length, e.id).toBe(e.size);
      expect(body.equals(bodyFor(token!, e.size)), `${e.id} body`).toBe(true);
      if (p.updated.has(e.id)) expect(msg!.attempts).toBe(1);
    }
    return entries.length;
  } finally {
    await spool.close();
  }
}

describe('crash safety (kill -9 mid-burst)', () => {
  const dirs: Array<() => void> = [];
  afterAll(() => {
    for (const c of dirs) c();
  });

  it.each(['journal', 'file'])(
    'loses no acknowledged message, never lists a partial one (%s)',
    async (mode) => {
      const { dir, cleanup } = tempSpoolDir(`crash-${mode}`);
      dirs.push(cleanup);
      const p: Printed = {
        committed: new Map(),
        removed: new Set(),
        removing: new Set(),
        updated: new Set(),
      };
      // Different moments: right after start, mid-burst, later (journal checkpoints under way).
      for (const after of [1, 40, 150, 400, 900]) {
        await burstAndKill(dir, mode, after, p);
        await verify(dir, p);
      }
      expect(p.committed.size).toBeGreaterThan(1000);
      expect(p.removed.size).toBeGreaterThan(0);
    },
  );
});
