import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export interface ImportOptions {
  /** containerd's socket (`ctr --address`); the node harness runs its own under its state dir. */
  address?: string;
  /** Only with a containerd whose default snapshotter is not the one pods use. */
  snapshotter?: string;
}

/**
 * `ctr -n k8s.io images import`: the namespace the CRI plugin (kubelet) reads, so pods with
 * `imagePullPolicy: Never`/`IfNotPresent` find the image without a registry.
 */
export async function importIntoContainerd(archive: string, opts: ImportOptions = {}): Promise<string> {
  const args = [
    ...(opts.address ? ['--address', opts.address] : []),
    '--namespace',
    'k8s.io',
    'images',
    'import',
    ...(opts.snapshotter ? ['--snapshotter', opts.snapshotter] : []),
    archive,
  ];
  try {
    const { stdout, stderr } = await execFileP('ctr', args, { maxBuffer: 16 << 20 });
    return `${stdout}${stderr}`;
  } catch (err) {
    const e = err as { code?: string; stderr?: string };
    if (e.code === 'ENOENT')
      throw new Error('ctr not found: install containerd (apt-get install containerd)');
    throw new Error(`ctr ${args.join(' ')} failed: ${e.stderr || String(err)}`);
  }
}
