import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export interface ImportOptions {
  /** containerd's socket (`ctr --address`); the node harness runs its own under its state dir. */
  address?: string;
  /** Only with a containerd whose default snapshotter is not the one pods use. */
  snapshotter?: string;
}

async function ctr(args: string[], opts: ImportOptions): Promise<string> {
  const full = [...(opts.address ? ['--address', opts.address] : []), '--namespace', 'k8s.io', ...args];
  try {
    const { stdout, stderr } = await execFileP('ctr', full, { maxBuffer: 16 << 20 });
    return `${stdout}${stderr}`;
  } catch (err) {
    const e = err as { code?: string; stderr?: string };
    if (e.code === 'ENOENT')
      throw new Error('ctr not found: install containerd (apt-get install containerd)');
    throw new Error(`ctr ${full.join(' ')} failed: ${e.stderr || String(err)}`);
  }
}

/** The manifest digest containerd's k8s.io namespace has under `name`, if any. */
export async function containerdImageDigest(
  name: string,
  opts: ImportOptions = {},
): Promise<string | undefined> {
  // Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS
  const out = await ctr(['images', 'ls', `name==${name}`], opts);
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((cols) => cols[0] === name)?.[2];
}

/**
 * `ctr -n k8s.io images import`: the namespace the CRI plugin (kubelet) reads, so pods with
 * `imagePullPolicy: Never`/`IfNotPresent` find the image without a registry. Skipped when that
 * name already points at `digest` (a warm node keeps its images).
 */
export async function importIntoContainerd(
  archive: string,
  opts: ImportOptions & { name?: string; digest?: string } = {},
): Promise<string> {
  if (opts.name && opts.digest && (await containerdImageDigest(opts.name, opts)) === opts.digest) {
    return `${opts.name} already present (${opts.digest})`;
  }
  return ctr(
    ['images', 'import', ...(opts.snapshotter ? ['--snapshotter', opts.snapshotter] : []), archive],
    opts,
  );
}
