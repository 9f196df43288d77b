import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DEFAULT_PATH, RELAY_CONTRACT, RUNTIME_UID } from './contract.ts';
import { type ImageResult, type RuntimeConfig, writeOciArchive } from './oci.ts';
import { addBase, Rootfs, sharedLibraries } from './rootfs.ts';

// The three images the node tests run, built from this checkout and the host's own binaries:
//   relay  - the product: the Dockerfile's final stage, without Docker (see contract.ts)
//   client - node + nodemailer + python3 stdlib, for the seed's client snippets in pods
//   pause  - the pod sandbox, a static Go binary (scripts/image/pause)
// Each archive is cached under ~/.cache/email-relay/image keyed by everything that goes into it.

const execFileP = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = join(HERE, '..', '..');

export type ImageKind = 'relay' | 'client' | 'pause';
export const IMAGE_KINDS: readonly ImageKind[] = ['relay', 'client', 'pause'];
export type Log = (line: string) => void;

/** `${XDG_CACHE_HOME:-~/.cache}/email-relay/image` */
export function imageCacheDir(): string {
  const base = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(base, 'email-relay', 'image');
}

async function packageVersion(): Promise<string> {
  return (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

/** Default references: `localhost/` is a registry host, so CRI does not rewrite them to docker.io. */
export async function defaultImageName(kind: ImageKind): Promise<string> {
  const repo = kind === 'relay' ? 'email-relay' : `email-relay-${kind}`;
  return `localhost/${repo}:${await packageVersion()}`;
}

/** The relay image config: the contract plus PATH (which distroless's base image supplies). */
export function relayRuntimeConfig(): RuntimeConfig {
  const c = RELAY_CONTRACT;
  return {
    User: c.user,
    WorkingDir: c.workdir,
    Env: [`PATH=${DEFAULT_PATH}`, ...Object.entries(c.env).map(([k, v]) => `${k}=${v}`)],
    Entrypoint: [...c.entrypoint],
    Cmd: [...c.cmd],
    ExposedPorts: Object.fromEntries(c.exposedPorts.map((p) => [p, {}])),
  };
}

export interface BuildOptions {
  kind: ImageKind;
  name?: string;
  log?: Log;
}

/** Builds (or finds in the cache) one image archive. */
export async function buildImage(opts: BuildOptions): Promise<ImageResult & { cached: boolean }> {
  const log = opts.log ?? (() => {});
  const name = opts.name ?? (await defaultImageName(opts.kind));
  const spec =
    opts.kind === 'relay'
      ? await relaySpec(log)
      : opts.kind === 'client'
        ? await clientSpec()
        : await pauseSpec(log);
  const key = createHash('sha256')
    .update(`${await builderHash()}\0${name}\0${JSON.stringify(spec.config)}\0${spec.rootfs.fingerprint()}`)
    .digest('hex')
    .slice(0, 24);
  const dir = imageCacheDir();
  await mkdir(dir, { recursive: true });
  const archive = join(dir, `${opts.kind}-${key}.tar`);
  const meta = `${archive}.json`;
  if (existsSync(archive) && existsSync(meta)) {
    return { ...(JSON.parse(await readFile(meta, 'utf8')) as ImageResult), archive, cached: true };
  }
  log(`writing ${name} (${opts.kind}) to ${archive}`);
  const result = await writeOciArchive(
    name,
    spec.config,
    spec.rootfs.list(),
    archive,
    `email-relay scripts/image ${opts.kind}`,
  );
  await writeFile(meta, JSON.stringify(result, null, 2));
  // Work dirs of builds that were killed (a finished build removes its own).
  await pruneOldest(
    dir,
    (f) => f.startsWith('.oci-'),
    0,
    (f) => [f],
    STALE_MS,
  );
  await pruneOldest(
    dir,
    (f) => f.startsWith(`${opts.kind}-`) && f.endsWith('.tar'),
    KEEP,
    (f) => [f, `${f}.json`],
  );
  return { ...result, cached: false };
}

/** Archives (and compiled dist dirs) kept per kind: a few checkouts or branches can share the cache. */
const KEEP = 3;

/** A build's temp dir older than this belongs to a build that died. */
const STALE_MS = 3_600_000;

/**
 * Removes all but the `keep` newest entries of `dir` that `match` (and are older than `minAgeMs`),
 * with the companions `also` names.
 */
async function pruneOldest(
  dir: string,
  match: (name: string) => boolean,
  keep: number,
  also: (name: string) => string[] = (f) => [f],
  minAgeMs = 0,
): Promise<void> {
  const names = (await readdir(dir)).filter(match);
  const dated = await Promise.all(names.map(async (n) => ({ n, t: (await stat(join(dir, n))).mtimeMs })));
  const old = dated.filter(({ t }) => Date.now() - t >= minAgeMs);
  for (const { n } of old.sort((a, b) => b.t - a.t).slice(keep)) {
    for (const f of also(n)) await rm(join(dir, f), { recursive: true, force: true });
  }
}

interface Spec {
  config: RuntimeConfig;
  rootfs: Rootfs;
}

/** The node binary running this script, at distroless's path, with its libraries. */
async function addNode(fs: Rootfs): Promise<void> {
  await fs.binary('/nodejs/bin/node', await realpath(process.execPath));
}

async function relaySpec(log: Log): Promise<Spec> {
  const fs = new Rootfs();
  addBase(fs, RUNTIME_UID);
  await addNode(fs);
  const dist = await compiledDist(log);
  for (const { from, to } of RELAY_CONTRACT.app) {
    if (from === 'dist') await fs.tree(to, dist);
    else if (from === 'node_modules') await addProductionModules(fs, to);
    else if (from === 'package.json') await fs.file(to, join(ROOT, from));
    else await fs.tree(to, join(ROOT, from));
  }
  return { config: relayRuntimeConfig(), rootfs: fs };
}

/**
 * `tsc -p tsconfig.build.json` into a cache dir keyed by the compiler inputs, as the Dockerfile's
 * `npm run build` does; a warm run with unchanged sources compiles nothing.
 */
async function compiledDist(log: Log): Promise<string> {
  const h = createHash('sha256');
  for (const f of [
    'tsconfig.json',
    'tsconfig.build.json',
    'package.json',
    'node_modules/typescript/package.json',
  ]) {
    h.update(`${f}\0`).update(await readFile(join(ROOT, f)));
  }
  for (const f of await listFiles(join(ROOT, 'src'))) {
    h.update(`${f}\0`).update(await readFile(join(ROOT, 'src', f)));
  }
  const out = join(imageCacheDir(), 'dist', h.digest('hex').slice(0, 24));
  if (existsSync(out)) return out;
  await mkdir(dirname(out), { recursive: true });
  const tmp = await mkdtemp(`${out}.tmp-`);
  log('compiling src/ (tsc -p tsconfig.build.json)');
  try {
    await execFileP(
      process.execPath,
      [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', tmp],
      { cwd: ROOT, maxBuffer: 16 << 20 },
    );
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`tsc -p tsconfig.build.json failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
  // Another build (a parallel test project) may have finished the same dist first: keep that one.
  await rename(tmp, out).catch(async (err: NodeJS.ErrnoException) => {
    await rm(tmp, { recursive: true, force: true });
    if (!existsSync(out)) throw err;
  });
  await pruneOldest(dirname(out), (f) => !f.includes('.tmp-'), KEEP);
  await pruneOldest(
    dirname(out),
    (f) => f.includes('.tmp-'),
    0,
    (f) => [f],
    STALE_MS,
  );
  return out;
}

interface LockPackage {
  dev?: boolean;
  optional?: boolean;
  link?: boolean;
  dependencies?: Record<string, string>;
}

/**
 * node_modules as `npm ci && npm prune --omit=dev` leaves it: every package-lock entry not marked
 * dev, copied from this checkout's node_modules (same lockfile, same hoisting; no registry needed).
 */
async function addProductionModules(fs: Rootfs, to: string, only?: (key: string) => boolean): Promise<void> {
  const lock = JSON.parse(await readFile(join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, LockPackage>;
  };
  for (const [key, pkg] of Object.entries(lock.packages)) {
    if (!key.startsWith('node_modules/') || pkg.dev) continue;
    if (only && !only(key)) continue;
    if (pkg.link)
      throw new Error(`package-lock.json: ${key} is a link; the image builder copies real packages`);
    const dir = join(ROOT, key);
    if (!existsSync(dir)) {
      if (pkg.optional) continue;
      throw new Error(`${key} is missing: run \`npm ci\` before building the image`);
    }
    // Nested node_modules are lock entries of their own (and may be dev-only).
    await fs.tree(posix.join(posix.dirname(to), key), dir, (rel) => rel === 'node_modules');
  }
}

/** Host python3: Debian's if present (what scripts/test.sh installs), else the one on PATH. */
async function hostPython(): Promise<{ executable: string; stdlib: string; dynload: string }> {
  const candidates = [process.env['EMAIL_RELAY_PYTHON'], '/usr/bin/python3', 'python3'].filter(
    (c): c is string => !!c && (c.includes('/') ? existsSync(c) : true),
  );
  const probe =
    'import json, os, sys, sysconfig, _ssl\n' +
    'print(json.dumps({"executable": os.path.realpath(sys.executable), "stdlib": sysconfig.get_path("stdlib"),' +
    ' "dynload": os.path.dirname(_ssl.__file__)}))';
  const { stdout } = await execFileP(candidates[0]!, ['-c', probe]);
  return JSON.parse(stdout) as { executable: string; stdlib: string; dynload: string };
}

/** Parts of the stdlib no client snippet imports, left out of the client image (~35 MB). */
function skipStdlib(rel: string): boolean {
  const top = rel.split('/')[0]!;
  return (
    /^(test|idlelib|tkinter|turtledemo|ensurepip|lib2to3|pydoc_data|distutils|site-packages|dist-packages)$/.test(
      top,
    ) ||
    top.startsWith('config-') ||
    /\.opt-[12]\.pyc$/.test(rel) ||
    /^lib-dynload\/(_test|_ctypes_test|xxlimited)/.test(rel)
  );
}

async function clientSpec(): Promise<Spec> {
  const fs = new Rootfs();
  addBase(fs, RUNTIME_UID);
  await addNode(fs);
  await addProductionModules(fs, '/app/node_modules', (k) => k === 'node_modules/nodemailer');
  const py = await hostPython();
  await fs.binary(py.executable, py.executable);
  if (py.executable !== '/usr/bin/python3') fs.symlink('/usr/bin/python3', py.executable);
  await fs.tree(py.stdlib, py.stdlib, skipStdlib);
  if (!py.dynload.startsWith(`${py.stdlib}/`)) await fs.tree(py.dynload, py.dynload);
  // Extension modules (_ssl, _hashlib, ...) bring libraries of their own.
  const modules = (await readdir(py.dynload))
    .filter((f) => f.endsWith('.so') && !skipStdlib(`lib-dynload/${f}`))
    .map((f) => join(py.dynload, f));
  for (const lib of await sharedLibraries(...modules)) await fs.file(lib, lib);
  return {
    config: {
      User: `${RUNTIME_UID}:${RUNTIME_UID}`,
      WorkingDir: '/app',
      // NODE_PATH: a snippet run from anywhere (`node -e`, a mounted file) finds nodemailer.
      Env: [`PATH=/nodejs/bin:${DEFAULT_PATH}`, 'NODE_PATH=/app/node_modules'],
      Entrypoint: [],
      Cmd: ['/usr/bin/python3', '--version'],
    },
    rootfs: fs,
  };
}

const PAUSE_DIR = join(HERE, 'pause');

/** scripts/image/pause built static with the host's Go toolchain, cached by source and `go version`. */
async function pauseBinary(log: Log): Promise<string> {
  const env = {
    ...process.env,
    CGO_ENABLED: '0',
    GOWORK: 'off',
    GOTOOLCHAIN: 'local',
    GOFLAGS: '-trimpath -buildvcs=false',
    GOCACHE: join(imageCacheDir(), 'go-build'),
  };
  const h = createHash('sha256').update((await execFileP('go', ['version'], { env })).stdout);
  for (const f of ['go.mod', 'main.go']) h.update(f).update(await readFile(join(PAUSE_DIR, f)));
  const out = join(imageCacheDir(), 'pause', h.digest('hex').slice(0, 24), 'pause');
  if (existsSync(out)) return out;
  log('building scripts/image/pause (go build)');
  await mkdir(dirname(out), { recursive: true });
  await execFileP('go', ['build', '-ldflags=-s -w -buildid=', '-o', `${out}.tmp`, '.'], {
    cwd: PAUSE_DIR,
    env,
  });
  await rename(`${out}.tmp`, out);
  return out;
}

async function pauseSpec(log: Log): Promise<Spec> {
  const fs = new Rootfs();
  await fs.file('/pause', await pauseBinary(log));
  // 65535 as registry.k8s.io/pause runs; the sandbox process needs nothing else.
  return {
    config: { User: '65535:65535', Env: [`PATH=${DEFAULT_PATH}`], Entrypoint: ['/pause'] },
    rootfs: fs,
  };
}

/** The builder's own sources: a change to how images are written invalidates every cached archive. */
async function builderHash(): Promise<string> {
  const h = createHash('sha256');
  for (const f of (await readdir(HERE)).filter((f) => f.endsWith('.ts')).sort()) {
    h.update(f).update(await readFile(join(HERE, f)));
  }
  return h.digest('hex');
}

async function listFiles(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const d of (await readdir(join(dir, rel), { withFileTypes: true })).sort((a, b) =>
    a.name < b.name ? -1 : 1,
  )) {
    const r = rel ? `${rel}/${d.name}` : d.name;
    if (d.isDirectory()) out.push(...(await listFiles(dir, r)));
    else out.push(r);
  }
  return out;
}
