import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { goEnv } from '../control-plane/go.ts';

/**
 * powercut-fs (test/powercut/main.go): a FUSE file system that keeps only what was fsynced when
 * the "power" is cut, so a test can show a missing fsync, which kill -9 never can (the kernel
 * keeps the page cache). Built with Go on first use and cached under ~/.cache/email-relay
 * (needs root and /dev/fuse, as CI has; fails, never skips, without them).
 */

const SRC = fileURLToPath(new URL('../powercut/', import.meta.url));

export function powercutBinary(): string {
  const h = createHash('sha256');
  for (const f of ['main.go', 'go.mod', 'go.sum']) h.update(readFileSync(join(SRC, f)));
  const base = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  const dir = join(base, 'email-relay', 'powercut-fs', h.digest('hex').slice(0, 16));
  const bin = join(dir, 'powercut-fs');
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const r = spawnSync('go', ['build', '-o', bin, '.'], { cwd: SRC, env: goEnv(), encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`building powercut-fs failed: ${r.stderr || r.error?.message}`);
  return bin;
}

export interface PowercutFs {
  /** Where programs write (FUSE). */
  mount: string;
  /** Cut the power: what a disk would still hold is written to the returned directory (a real one). */
  cut(): Promise<string>;
  /** Unmounts without a cut (cleanup). */
  dispose(): void;
}

/** Mounts a fresh one, empty or starting from `seed` (the disk as an earlier cut left it). */
export async function mountPowercut(seed?: string): Promise<PowercutFs> {
  const bin = powercutBinary();
  const root = mkdtempSync(join(tmpdir(), 'email-relay-powercut-'));
  const mount = join(root, 'mnt');
  const image = join(root, 'after-cut');
  mkdirSync(mount);
  const child: ChildProcess = spawn(bin, [mount, image, ...(seed ? [seed] : [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const deadline = Date.now() + 15_000;
  while (!out.includes('ready')) {
    if (child.exitCode !== null) throw new Error(`powercut-fs exited: ${err}`);
    if (Date.now() > deadline) throw new Error(`powercut-fs did not mount: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  let done = false;
  return {
    mount,
    async cut() {
      child.kill('SIGUSR1');
      const code = await exited;
      done = true;
      if (code !== 0 || !out.includes('cut')) throw new Error(`powercut-fs failed at the cut: ${err}`);
      return image;
    },
    dispose() {
      if (!done) child.kill('SIGTERM');
      spawnSync('umount', ['-l', mount]);
      rmSync(root, { recursive: true, force: true });
    },
  };
}
