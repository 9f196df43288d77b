import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A real file system of a fixed size (tmpfs, mounted for the test; needs root, as in CI): a full
 * disk is then a real ENOSPC from the kernel, not a mock. Fails (never skips) when it cannot mount.
 */
export function mountTmpfs(sizeBytes: number): { dir: string; free: () => number; unmount: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'email-relay-tmpfs-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0755`, 'tmpfs', dir], {
    encoding: 'utf8',
  });
  if (r.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`cannot mount a tmpfs for the test (root needed): ${r.stderr || r.error?.message}`);
  }
  return {
    dir,
    free: () => {
      const s = statfsSync(dir);
      return s.bavail * s.bsize;
    },
    unmount: () => {
      spawnSync('umount', ['-l', dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Fills the file system to the last byte (a file written until ENOSPC). */
export function fillUp(dir: string, name = 'filler'): void {
  spawnSync('sh', ['-c', `cat /dev/zero >> '${join(dir, name)}' 2>/dev/null; true`]);
}
