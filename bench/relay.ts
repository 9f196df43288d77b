import { type ChildProcess, spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, open, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import type { RelayConfigInput } from '../src/config/schema.ts';
import { freePort, onCleanup, run, terminate, waitUntil } from './util.ts';

/**
 * Our relay as the container runs it: the compiled JavaScript (`tsc -p tsconfig.build.json`,
 * here into a temp dir so the checkout is left alone) in its own node process, durable spool
 * (fsync before 250), pino logs at info to a file, delivering to the sink.
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export type RelayEntry = 'built' | 'tsx';

export interface Build {
  entry: RelayEntry;
  /** node arguments before the relay's own */
  argv: string[];
  dir?: string;
  seconds?: number;
}

export interface HeapFigures {
  rssMB: number;
  heapUsedMB: number;
  heapTotalMB: number;
  externalMB: number;
}

/** The relay's own view of its memory, from prom-client's default metrics on /metrics. */
export async function heapFigures(httpPort: number): Promise<HeapFigures | undefined> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    const get = (name: string) => {
      const m = new RegExp(`^${name} ([0-9.e+]+)$`, 'm').exec(text);
      return m ? Math.round((Number(m[1]) / 1024 / 1024) * 10) / 10 : Number.NaN;
    };
    return {
      rssMB: get('process_resident_memory_bytes'),
      heapUsedMB: get('nodejs_heap_size_used_bytes'),
      heapTotalMB: get('nodejs_heap_size_total_bytes'),
      externalMB: get('nodejs_external_memory_bytes'),
    };
  } catch {
    return undefined;
  }
}

/** The node flags the image's ENTRYPOINT gives the relay (Dockerfile), so the bench runs it alike. */
export async function imageNodeFlags(): Promise<string[]> {
  const dockerfile = await readFile(join(ROOT, 'Dockerfile'), 'utf8');
  const m = /^ENTRYPOINT\s+(\[.*\])\s*$/m.exec(dockerfile);
  if (!m) throw new Error('Dockerfile: no ENTRYPOINT [...] line');
  const argv = JSON.parse(m[1]!) as string[];
  return argv.slice(1).filter((a) => a.startsWith('--'));
}

/** Compiles src/ the way `npm run build` does, into a temp dir (node_modules linked back). */
export async function buildRelay(entry: RelayEntry): Promise<Build> {
  // Resolved here: the relay runs with its temp directory as cwd, where `tsx` is not found.
  if (entry === 'tsx')
    return {
      entry,
      argv: [...(await imageNodeFlags()), '--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli.ts')],
    };
  const dir = await mkdtemp(join(tmpdir(), 'bench-relay-build-'));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  const t0 = performance.now();
  const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
  const r = await run(
    process.execPath,
    [tsc, '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', dir],
    300_000,
  );
  if (r.code !== 0) throw new Error(`build failed (tsc -p tsconfig.build.json):\n${r.stdout}${r.stderr}`);
  await writeFile(join(dir, 'package.json'), '{"type":"module"}\n');
  await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return {
    entry,
    argv: [...(await imageNodeFlags()), join(dir, 'cli.js')],
    dir,
    seconds: (performance.now() - t0) / 1000,
  };
}

export interface RelayOptions {
  /** smtp://127.0.0.1:PORT of the upstream (the sink), which may be down */
  upstream: string;
  fsync?: boolean;
  /** Run under `node --cpu-prof`; on stop the profile is copied to this file. */
  cpuProfile?: string;
  /** more node flags (diagnostics), e.g. --heapsnapshot-signal=SIGUSR2 */
  nodeArgs?: string[];
  /** extra environment, e.g. UV_THREADPOOL_SIZE */
  env?: Record<string, string>;
  /** serve /metrics on a free port (the relay's own heap figures) */
  http?: boolean;
  config?: RelayConfigInput;
  /** a command the relay runs under, e.g. valgrind and its flags (the node command line follows) */
  wrapper?: string[];
  /** how long the relay may take to start and to stop (slow under valgrind) */
  startTimeoutMs?: number;
  stopGraceMs?: number;
}

export interface RelayInstance {
  port: number;
  /** the /metrics listener, with opts.http */
  httpPort?: number;
  pid: number;
  dir: string;
  spool: string;
  /** `email-relay queue flush`: retry deferred mail now (postqueue -f). */
  flush(): Promise<void>;
  log(): Promise<string>;
  /** SIGTERM (the relay drains and exits), SIGKILL after a grace period; removes its directory. */
  stop(opts?: { keep?: boolean }): Promise<void>;
}

export async function startRelay(build: Build, opts: RelayOptions): Promise<RelayInstance> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-relay-'));
  const spool = join(dir, 'spool');
  const port = await freePort();
  const httpPort = opts.http ? await freePort() : undefined;
  const config: RelayConfigInput = {
    hostname: 'relay.bench.example.com',
    listen: `127.0.0.1:${port}`,
    ...(httpPort ? { http: `127.0.0.1:${httpPort}` } : {}),
    logLevel: 'info',
    ...opts.config,
    spool: { dir: spool, fsync: opts.fsync ?? true },
    // every benchmark client comes from 127.0.0.1: lift the per-address cap (default 100)
    smtp: { maxClients: 2000, maxClientsPerAddress: 2000, ...opts.config?.smtp },
    upstream: { url: opts.upstream, ...opts.config?.upstream },
  };
  const configFile = join(dir, 'relay.yaml');
  await writeFile(configFile, stringify(config));
  await mkdir(join(dir, 'prof'), { recursive: true });
  const logFile = await open(join(dir, 'relay.log'), 'w');
  const argv = [
    ...(opts.cpuProfile ? ['--cpu-prof', '--cpu-prof-dir', join(dir, 'prof')] : []),
    ...(opts.nodeArgs ?? []),
  ]
    .concat(build.argv)
    .concat(['relay', '--config', configFile]);
  const [cmd, ...args] = [...(opts.wrapper ?? []), process.execPath, ...argv];
  const child: ChildProcess = spawn(cmd!, args, {
    stdio: ['ignore', logFile.fd, logFile.fd],
    cwd: dir,
    env: { ...process.env, ...opts.env },
  });
  await logFile.close();
  let keep = false;
  const stop = onCleanup(async () => {
    await terminate(child, opts.stopGraceMs ?? 30_000);
    if (opts.cpuProfile) {
      const file = (await readdir(join(dir, 'prof'))).find((f) => f.endsWith('.cpuprofile'));
      if (file) await copyFile(join(dir, 'prof', file), opts.cpuProfile);
    }
    if (!keep) await rm(dir, { recursive: true, force: true });
  });
  const log = () => readFile(join(dir, 'relay.log'), 'utf8');
  try {
    await waitUntil(
      `relay on ${port}`,
      async () => {
        if (child.exitCode !== null)
          throw new Error(`relay exited ${child.exitCode}: ${(await log()).slice(-2000)}`);
        return (await log()).includes('"relay started"');
      },
      opts.startTimeoutMs ?? 30_000,
      50,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    port,
    ...(httpPort ? { httpPort } : {}),
    pid: child.pid!,
    dir,
    spool,
    async flush() {
      const r = await run(process.execPath, [...build.argv, 'queue', 'flush', '--spool', spool], 30_000);
      if (r.code !== 0) throw new Error(`queue flush: ${r.stderr}`);
    },
    log,
    stop: async (o) => {
      keep = !!o?.keep;
      await stop();
    },
  };
}
