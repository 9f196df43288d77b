import { spawnSync } from 'node:child_process';

/** A host tool a test needs: its path, or a failure naming the Debian package (never a skip). */
export function requireTool(tool: string, debianPackage: string): string {
  const r = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
  const path = r.stdout.trim();
  if (r.status !== 0 || !path) {
    throw new Error(
      `${tool} not found: scripts/test.sh installs it (Debian: apt-get install ${debianPackage})`,
    );
  }
  return path;
}
