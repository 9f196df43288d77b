import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { elapsed, type Log, runGo, writeToolsFile } from './go.ts';
import { buildDir, cachedBinDir, cacheRoot, repoGoDir } from './paths.ts';
import { GO_HINT, requireTool } from './tools.ts';
import { GO_MODULES, type GoModule, versionKey } from './versions.ts';

export interface Binaries {
  dir: string;
  etcd: string;
  kubeApiserver: string;
  kubectl: string;
  /** Absent when KUBEBUILDER_ASSETS does not ship it (envtest's assets do not). */
  kubeControllerManager?: string;
  source: 'KUBEBUILDER_ASSETS' | 'cache' | 'build';
}

/** What `up --node` runs on top of the control plane. */
export interface NodeBinaries extends Binaries {
  kubeControllerManager: string;
  kubeScheduler: string;
  kubelet: string;
  kubeProxy: string;
  coredns: string;
  kubeRouter: string;
}

export interface EnsureOptions {
  /** Also the node's binaries (kubelet, kube-proxy, kube-scheduler, CoreDNS, kube-router). */
  node?: boolean;
}

function fromDir(dir: string, source: Binaries['source']): Binaries {
  const need = (name: string) => {
    const p = join(dir, name);
    if (!existsSync(p)) throw new Error(`control plane: ${p} is missing (${source})`);
    return p;
  };
  const kcm = join(dir, 'kube-controller-manager');
  return {
    dir,
    etcd: need('etcd'),
    kubeApiserver: need('kube-apiserver'),
    kubectl: need('kubectl'),
    ...(existsSync(kcm) ? { kubeControllerManager: kcm } : {}),
    source,
  };
}

function nodeFromDir(b: Binaries): NodeBinaries {
  const need = (name: string) => {
    const p = join(b.dir, name);
    if (!existsSync(p)) throw new Error(`node mode: ${p} is missing (${b.source})`);
    return p;
  };
  return {
    ...b,
    kubeControllerManager: need('kube-controller-manager'),
    kubeScheduler: need('kube-scheduler'),
    kubelet: need('kubelet'),
    kubeProxy: need('kube-proxy'),
    coredns: need('coredns'),
    kubeRouter: need('kube-router'),
  };
}

/** ensureBinaries with the node's binaries too (built on first use like the others). */
export async function ensureNodeBinaries(log: Log): Promise<NodeBinaries> {
  return nodeFromDir(await ensureBinaries(log, { node: true }));
}

/**
 * The binaries to run: $KUBEBUILDER_ASSETS if set (envtest convention, no build), else the per-version
 * cache, building whatever is missing or stale from the checked-in go.mod/go.sum first.
 */
export async function ensureBinaries(log: Log, opts: EnsureOptions = {}): Promise<Binaries> {
  const assets = process.env['KUBEBUILDER_ASSETS'];
  if (assets) return fromDir(assets, 'KUBEBUILDER_ASSETS');
  const bin = cachedBinDir();
  const wanted = GO_MODULES.filter((m) => opts.node || !m.nodeOnly);
  const stale = [];
  for (const mod of wanted) if (!(await isFresh(mod, bin))) stale.push(mod);
  if (stale.length === 0) return fromDir(bin, 'cache');

  requireTool('go', ['version'], GO_HINT);
  const unlock = await lock(join(cacheRoot(), versionKey(), 'build.lock'), log);
  try {
    const started = Date.now();
    log(
      `building control plane ${versionKey()} into ${bin} (first run on this machine; Go caches in ${cacheRoot()})`,
    );
    for (const mod of stale) if (!(await isFresh(mod, bin))) await buildModule(mod, bin, log);
    log(`control plane binaries ready in ${elapsed(started)}`);
  } finally {
    await unlock();
  }
  return fromDir(bin, 'build');
}

/** Stamp = hash of everything that determines the output; a changed go.sum or version rebuilds. */
async function inputsHash(mod: GoModule): Promise<string> {
  const h = createHash('sha256').update(JSON.stringify(mod));
  for (const f of moduleFiles(mod)) h.update(await readFile(join(repoGoDir(), mod.dir, f)));
  return h.digest('hex');
}

/** Files checked in under go/<dir>: go.mod, go.sum and any main package of our own. */
export const moduleFiles = (mod: GoModule) => ['go.mod', 'go.sum', ...(mod.sources ?? [])];

const stampFile = (mod: GoModule, bin: string) => join(bin, `.${mod.dir}.stamp`);

async function isFresh(mod: GoModule, bin: string): Promise<boolean> {
  try {
    const stamp = await readFile(stampFile(mod, bin), 'utf8');
    return stamp === (await inputsHash(mod)) && mod.binaries.every((b) => existsSync(join(bin, b.name)));
  } catch {
    return false;
  }
}

async function buildModule(mod: GoModule, bin: string, log: Log): Promise<void> {
  const dir = buildDir(mod.dir);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await mkdir(bin, { recursive: true });
  for (const f of moduleFiles(mod)) await copyFile(join(repoGoDir(), mod.dir, f), join(dir, f));
  const gomod = await readFile(join(dir, 'go.mod'), 'utf8');
  if (!gomod.includes(`require ${mod.upstream} ${mod.version}`)) {
    throw new Error(
      `test/control-plane/go/${mod.dir}/go.mod does not require ${mod.upstream} ${mod.version} ` +
        '(versions.ts changed?): run `npm run control-plane -- gomod`',
    );
  }
  await writeToolsFile(dir, mod);

  log(`[${mod.upstream}@${mod.version}] downloading modules`);
  const dl = Date.now();
  await runGo(['mod', 'download'], dir, log, `${mod.upstream} download`);
  log(`[${mod.upstream}@${mod.version}] modules ready in ${elapsed(dl)}`);

  const ldflags = `-s -w ${await versionLdflags(mod, dir, log)}`.trim();
  // One `go build` for all of a module's binaries: packages they share compile once, in parallel.
  const started = Date.now();
  const names = mod.binaries.map((b) => b.name).join(', ');
  log(`[${mod.upstream}@${mod.version}] building ${names}`);
  const out = join(bin, `.${mod.dir}.tmp`);
  await rm(out, { recursive: true, force: true });
  await mkdir(out);
  const pkgs = mod.binaries.map((b) => b.pkg);
  await runGo(
    ['build', '-v', `-ldflags=${ldflags}`, '-o', `${out}/`, ...pkgs],
    dir,
    log,
    `building ${names}`,
    true,
  );
  for (const b of mod.binaries) {
    await rename(join(out, goBinaryName(b.pkg)), join(bin, b.name));
    const size = (await stat(join(bin, b.name))).size;
    log(`[${mod.upstream}@${mod.version}] built ${b.name} (${mib(size)})`);
  }
  await rm(out, { recursive: true, force: true });
  log(`[${mod.upstream}@${mod.version}] ${names} in ${elapsed(started)}`);
  await writeFile(stampFile(mod, bin), await inputsHash(mod));
}

/** The file name `go build -o dir/` gives a main package: its last path element, skipping a /vN suffix. */
export function goBinaryName(pkg: string): string {
  const parts = pkg.split('/');
  const last = parts.at(-1) ?? pkg;
  return /^v\d+$/.test(last) && parts.length > 1 ? (parts.at(-2) ?? last) : last;
}

/**
 * Binaries built from a module (not a git checkout) would report v0.0.0-master; stamp the release like
 * hack/lib/version.sh does so `/version`, `kubectl version` and version-skew checks see the real version.
 */
async function versionLdflags(mod: GoModule, dir: string, log: Log): Promise<string> {
  if (mod.upstream !== 'k8s.io/kubernetes') return '';
  const info = JSON.parse(await runGo(['list', '-m', '-json', mod.upstream], dir, log)) as { Time?: string };
  const m = /^v(\d+)\.(\d+)\./.exec(mod.version);
  const vars: Record<string, string> = {
    gitVersion: mod.version,
    gitMajor: m?.[1] ?? '',
    gitMinor: m?.[2] ?? '',
    gitTreeState: 'clean',
    // Release time from the module proxy: reproducible, unlike "now".
    buildDate: (info.Time ?? '1970-01-01T00:00:00Z').replace(/\.\d+Z$/, 'Z'),
  };
  return ['k8s.io/client-go/pkg/version', 'k8s.io/component-base/version']
    .flatMap((pkg) => Object.entries(vars).map(([k, v]) => `-X ${pkg}.${k}=${v}`))
    .join(' ');
}

/** Cross-process build lock (CLI and vitest may start at once): mkdir is atomic; stale locks are reclaimed. */
async function lock(path: string, log: Log): Promise<() => Promise<void>> {
  await mkdir(join(path, '..'), { recursive: true });
  let announced = false;
  for (;;) {
    try {
      await mkdir(path);
      await writeFile(join(path, 'pid'), String(process.pid));
      return () => rm(path, { recursive: true, force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const pid = Number(await readFile(join(path, 'pid'), 'utf8').catch(() => '0'));
    if (pid > 0 && !isAlive(pid)) {
      await rm(path, { recursive: true, force: true });
      continue;
    }
    if (!announced) log(`waiting for another control-plane build (pid ${pid || '?'}) to finish`);
    announced = true;
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

/** `name version size` per binary, for `build` and `status`. */
export async function describeBinaries(b: Binaries): Promise<string[]> {
  const run = (file: string, args: string[]) => {
    try {
      return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
    } catch {
      return '?';
    }
  };
  const rows: [string, string | undefined, string][] = [
    ['etcd', b.etcd, run(b.etcd, ['--version']).split('\n')[0] ?? ''],
    ['kube-apiserver', b.kubeApiserver, run(b.kubeApiserver, ['--version'])],
    ['kubectl', b.kubectl, run(b.kubectl, ['version', '--client']).split('\n')[0] ?? ''],
    [
      'kube-controller-manager',
      b.kubeControllerManager,
      b.kubeControllerManager ? run(b.kubeControllerManager, ['--version']) : '(not available)',
    ],
  ];
  // Node mode's binaries, once built.
  for (const [name, args] of [
    ['kube-scheduler', ['--version']],
    ['kubelet', ['--version']],
    ['kube-proxy', ['--version']],
    ['coredns', ['-version']],
    ['kube-router', ['--version']],
  ] as const) {
    const path = join(b.dir, name);
    if (existsSync(path))
      rows.push([
        name,
        path,
        run(path, [...args])
          .split('\n')
          .find(Boolean) ?? '',
      ]);
  }
  const out: string[] = [];
  for (const [name, path, version] of rows) {
    const size = path ? mib((await stat(path)).size) : '-';
    out.push(`${name.padEnd(24)} ${version.padEnd(40)} ${size.padStart(10)}  ${path ?? ''}`);
  }
  return out;
}
