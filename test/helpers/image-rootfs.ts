import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { imageCacheDir } from '../../scripts/image/images.ts';
import type { RuntimeConfig } from '../../scripts/image/oci.ts';

const execFileP = promisify(execFile);

export interface ExtractedImage {
  rootfs: string;
  config: RuntimeConfig;
  /** The whole image config blob (architecture, rootfs.diff_ids, ...). */
  imageConfig: { config: RuntimeConfig; rootfs: { diff_ids: string[] } };
  index: { manifests: { digest: string; annotations?: Record<string, string> }[] };
}

/**
 * Unpacks an OCI archive the way a runtime would: index.json -> manifest -> config + layer, the
 * layer extracted with Debian's tar as root (owners and modes as stored). Kept under the image
 * cache by manifest digest (content-addressed: same digest, same bytes), so a warm run unpacks nothing.
 */
export async function extractImage(archive: string): Promise<ExtractedImage> {
  const index = JSON.parse(
    (await execFileP('tar', ['-xOf', archive, 'index.json'])).stdout,
  ) as ExtractedImage['index'];
  const digest = index.manifests[0]!.digest.replace(/^sha256:/, '');
  const root = join(imageCacheDir(), 'rootfs');
  const dir = join(root, digest.slice(0, 24));
  const done = join(dir, 'config.json');
  if (!existsSync(done)) {
    await mkdir(root, { recursive: true });
    const tmp = await mkdtemp(join(root, '.tmp-'));
    try {
      const layout = join(tmp, 'layout');
      await mkdir(layout);
      await mkdir(join(tmp, 'rootfs'));
      await execFileP('tar', ['-xf', archive, '-C', layout]);
      const blob = (d: string) => join(layout, 'blobs', 'sha256', d.replace(/^sha256:/, ''));
      const manifest = JSON.parse(await readFile(blob(index.manifests[0]!.digest), 'utf8')) as {
        config: { digest: string };
        layers: { digest: string }[];
      };
      for (const layer of manifest.layers) {
        await execFileP('tar', [
          '-xzf',
          blob(layer.digest),
          '-C',
          join(tmp, 'rootfs'),
          '--same-owner',
          '--same-permissions',
        ]);
      }
      await writeFile(join(tmp, 'config.json'), await readFile(blob(manifest.config.digest)));
      await rm(layout, { recursive: true });
      await rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
        if (!existsSync(done)) throw err; // a parallel run got there first otherwise
      });
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    await pruneRootfs(root);
  }
  const imageConfig = JSON.parse(await readFile(done, 'utf8')) as ExtractedImage['imageConfig'];
  return { rootfs: join(dir, 'rootfs'), config: imageConfig.config, imageConfig, index };
}

/** Unpacked images kept (~190 MB each for the relay): the current relay, client and pause, and one more. */
async function pruneRootfs(root: string): Promise<void> {
  const dirs = await readdir(root);
  const dated = await Promise.all(dirs.map(async (d) => ({ d, t: (await stat(join(root, d))).mtimeMs })));
  // Temp dirs of runs that died (an hour is far past any extraction).
  for (const { d } of dated.filter(({ d, t }) => d.startsWith('.tmp-') && Date.now() - t > 3_600_000)) {
    await rm(join(root, d), { recursive: true, force: true });
  }
  const kept = dated.filter(({ d }) => !d.startsWith('.'));
  for (const { d } of kept.sort((a, b) => b.t - a.t).slice(4)) {
    await rm(join(root, d), { recursive: true, force: true });
  }
}

/** True when this process may chroot and mount (root); the image run tests need it. */
export function canRunRootfs(): boolean {
  return process.getuid?.() === 0;
}

export interface RootfsRun {
  rootfs: string;
  config: RuntimeConfig;
  /** Overrides the image's Entrypoint + Cmd (like a pod's command). */
  argv?: string[];
  /** Host directories bind-mounted read-write into the container, e.g. { '/spool': dir }. */
  mounts?: Record<string, string>;
}

/**
 * Starts the image's process as a runtime with a read-only root would: a private mount namespace,
 * the rootfs bind-mounted read-only, a tmpfs on /tmp, the config's user, workdir and env only.
 * Shares the host network (loopback), which is all these tests need.
 */
export function runRootfs(run: RootfsRun): ChildProcess {
  const { rootfs, config } = run;
  const argv = run.argv ?? [...config.Entrypoint, ...(config.Cmd ?? [])];
  const [uid, gid] = config.User.split(':');
  const r = sq(rootfs);
  // As runc does, mount points missing from the image are created before the root goes read-only.
  for (const inside of ['/tmp', ...Object.keys(run.mounts ?? {})])
    mkdirSync(join(rootfs, inside), { recursive: true });
  const script = [
    `mount --bind ${r} ${r}`,
    `mount -o remount,bind,ro ${r}`,
    `mount -t tmpfs -o mode=1777 tmpfs ${r}/tmp`,
    ...Object.entries(run.mounts ?? {}).map(
      ([inside, host]) => `mount --bind ${sq(host)} ${sq(rootfs + inside)}`,
    ),
    // env -i: only the image's Env reaches the process, as with a runtime.
    `exec env -i ${config.Env.map(sq).join(' ')} /usr/bin/unshare --root=${r} --wd=${sq(config.WorkingDir ?? '/')} ` +
      `--setuid ${sq(uid!)} --setgid ${sq(gid ?? uid!)} -- ${argv.map(sq).join(' ')}`,
  ].join(' && ');
  return spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function sq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Runs to completion; resolves with the exit code and output. */
export async function runRootfsToEnd(
  run: RootfsRun,
): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  const child = runRootfs(run);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c, s) => resolve([c, s]));
  });
  return { code, signal, stdout, stderr };
}
