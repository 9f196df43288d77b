import { execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, rmdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ensureNodeBinaries } from './build.ts';
import { killControlPlaneSync, stopControlPlane } from './control-plane.ts';
import type { Log } from './go.ts';
import {
  CNI_NETWORK,
  HOST_SYSCTLS,
  NODE_IP,
  NODE_NAME,
  nodePaths,
  SERVICE_CLUSTER_IP_RANGE,
} from './node-config.ts';
import { loadNodeState, type NodeState, saveNodeState } from './node-state.ts';
import { stateRoot } from './paths.ts';
import { isRunning, stopProcess } from './processes.ts';
import { requireTool } from './tools.ts';

// `up --node`: a real single-node cluster (control plane + containerd, kubelet, kube-proxy, CoreDNS,
// kube-router, a hostPath provisioner) inside a private network namespace. This file is the host side:
// it makes the namespace, runs node-up.ts inside it, and tears everything down by recorded pid,
// putting back what kubelet and containerd change outside the state dir.

export type { NodeState } from './node-state.ts';
export { loadNodeState } from './node-state.ts';

const execFileP = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..', '..');
const NSENTER = 'nsenter';

/** Debian packages behind each host tool node mode runs (scripts/test.sh installs them). */
export const NODE_TOOLS: [tool: string, args: string[], pkg: string][] = [
  ['ip', ['-V'], 'iproute2'],
  ['nsenter', ['--version'], 'util-linux'],
  ['containerd', ['--version'], 'containerd'],
  ['ctr', ['--version'], 'containerd'],
  ['runc', ['--version'], 'runc'],
  ['iptables', ['--version'], 'iptables'],
  ['ipset', ['--version'], 'ipset'],
  ['conntrack', ['--version'], 'conntrack'],
];
const CNI_PLUGINS = ['bridge', 'host-local', 'portmap', 'loopback'];

export interface NodeOptions {
  log: Log;
}

function checkHost(): void {
  if (process.getuid?.() !== 0)
    throw new Error('node mode needs root (network namespaces, containerd, kubelet)');
  for (const [tool, args, pkg] of NODE_TOOLS) {
    requireTool(tool, args, `Install it with \`apt-get install ${pkg}\` (scripts/test.sh does).`);
  }
  for (const plugin of CNI_PLUGINS) {
    if (!existsSync(`/usr/lib/cni/${plugin}`)) {
      throw new Error(
        `node mode: /usr/lib/cni/${plugin} is missing: apt-get install containernetworking-plugins (scripts/test.sh does)`,
      );
    }
  }
}

/** A node whose processes still run: there is one kubelet per machine (kubepods cgroups are global). */
export function runningNodes(): string[] {
  const root = stateRoot();
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((d) => d.startsWith('node-') && existsSync(join(root, d, 'node.json')))
    .map((d) => join(root, d))
    .filter((d) => {
      const s = JSON.parse(readFileSync(join(d, 'node.json'), 'utf8')) as NodeState;
      return [...s.processes, ...(s.controlPlane?.processes ?? [])].some(isRunning);
    });
}

/** The relay, client and pause images, from `npm run image` (built once per input, then cached). */
async function buildImages(log: Log): Promise<NodeState['images']> {
  log('images: npm run image -- pause|relay|client');
  return Promise.all(
    ['pause', 'relay', 'client'].map(async (kind) => {
      const { stdout } = await execFileP(
        process.execPath,
        ['--import', 'tsx', 'scripts/image/cli.ts', kind],
        {
          cwd: REPO,
          maxBuffer: 16 << 20,
        },
      );
      const [name, archive, digest] = stdout.trim().split('\n').at(-1)?.split(' ') ?? [];
      if (!name || !archive || !digest) {
        throw new Error(`npm run image -- ${kind} printed no "<name> <archive> <digest>" line`);
      }
      return { kind, name, archive, digest };
    }),
  );
}

function readSysctl(key: string): string {
  return readFileSync(`/proc/sys/${key.replaceAll('.', '/')}`, 'utf8').trim();
}

async function ip(args: string[]): Promise<void> {
  await execFileP('ip', args);
}

export async function startNode(opts: NodeOptions): Promise<NodeState> {
  const { log } = opts;
  checkHost();
  const busy = runningNodes();
  if (busy.length > 0) {
    throw new Error(
      `a node cluster is already up (${busy.join(', ')}): one per machine; stop it with \`npm run control-plane -- down\``,
    );
  }
  const started = Date.now();
  const binaries = await ensureNodeBinaries(log);
  const images = await buildImages(log);
  const pause = images.find((i) => i.kind === 'pause');
  if (!pause) throw new Error('no pause image');

  await mkdir(stateRoot(), { recursive: true });
  const dir = await mkdtemp(join(stateRoot(), 'node-'));
  const state: NodeState = {
    kind: 'node',
    dir,
    netns: `email-relay-${basename(dir).slice('node-'.length)}`,
    nodeName: NODE_NAME,
    nodeIp: NODE_IP,
    kubeconfig: '',
    binaries,
    images,
    pauseImage: pause.name,
    processes: [],
    hostSysctls: Object.fromEntries(HOST_SYSCTLS.map((k) => [k, readSysctl(k)])),
    removeRunContainerd: !existsSync('/run/containerd'),
    removeVarLibCni: !existsSync('/var/lib/cni'),
    startedAt: new Date().toISOString(),
  };
  await saveNodeState(state);
  try {
    await makeNetns(state.netns);
    await runInNetns(state, log);
    const final = await loadNodeState(dir);
    log(`node cluster up in ${((Date.now() - started) / 1000).toFixed(1)}s (${dir})`);
    return final;
  } catch (err) {
    await stopNode(await loadNodeState(dir).catch(() => state), log).catch(() => {});
    throw err;
  }
}

/**
 * lo + a veth pair with both ends in the namespace as the node's NIC: the node IP exists, nothing
 * routes out. The service CIDR is routed to it so node-local clients reach ClusterIPs (kube-proxy's
 * DNAT happens in OUTPUT, after the route lookup).
 */
async function makeNetns(name: string): Promise<void> {
  await ip(['netns', 'add', name]);
  await ip(['-n', name, 'link', 'set', 'lo', 'up']);
  await ip(['-n', name, 'link', 'add', 'node0', 'type', 'veth', 'peer', 'name', 'node0-peer']);
  await ip(['-n', name, 'addr', 'add', `${NODE_IP}/24`, 'dev', 'node0']);
  await ip(['-n', name, 'link', 'set', 'node0', 'up']);
  await ip(['-n', name, 'link', 'set', 'node0-peer', 'up']);
  await ip(['-n', name, 'route', 'add', SERVICE_CLUSTER_IP_RANGE, 'dev', 'node0']);
}

/** `nsenter --net` (not `ip netns exec`, which remounts /sys and hides the cgroup tree from kubelet). */
export function netnsArgv(state: Pick<NodeState, 'netns'>, cmd: string, args: string[]): [string, string[]] {
  return [NSENTER, [`--net=/run/netns/${state.netns}`, cmd, ...args]];
}

function runInNetns(state: NodeState, log: Log): Promise<void> {
  const [cmd, args] = netnsArgv(state, process.execPath, [
    '--import',
    'tsx',
    join(HERE, 'node-up.ts'),
    state.dir,
  ]);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: REPO, stdio: ['ignore', 'inherit', 'pipe'] });
    let tail = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      tail = (tail + d).slice(-8000);
      for (const line of d.split('\n')) if (line) log(line.replace(/^\[node\] /, ''));
    });
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`node bring-up failed (exit ${code}):\n${tail}`)),
    );
  });
}

/**
 * Stops everything `startNode` started, by recorded pid, and removes what the node left outside its
 * state dir: pod sandboxes and shims, mounts, the namespace, kubepods cgroups, libcni's result cache,
 * host sysctls kubelet rewrote.
 */
export async function stopNode(state: NodeState, log: Log = () => {}): Promise<void> {
  const p = nodePaths(state.dir);
  const byName = (name: string) => state.processes.find((x) => x.name === name);
  // Pod-facing components first, so nothing recreates the pods being killed below.
  for (const name of ['provisioner', 'coredns', 'kube-router', 'kube-proxy', 'kubelet', 'kube-scheduler']) {
    const proc = byName(name);
    if (proc) await stopProcess(proc);
  }
  const containers = await killContainers(state, p.containerdSock);
  const containerd = byName('containerd');
  if (containerd) await stopProcess(containerd);
  killShims(p.containerdSock);
  if (state.controlPlane) await stopControlPlane(state.controlPlane);
  for (const proc of state.processes) await stopProcess(proc);

  unmountUnder(state.dir);
  if (existsSync(`/run/netns/${state.netns}`)) await ip(['netns', 'del', state.netns]).catch(() => {});
  await removeKubepodsCgroups();
  for (const [key, value] of Object.entries(state.hostSysctls)) {
    spawnSync('sysctl', ['-q', '-w', `${key}=${value}`]);
  }
  await removeCniResults(containers);
  if (state.removeRunContainerd) await rm('/run/containerd', { recursive: true, force: true });
  if (state.removeVarLibCni) await rm('/var/lib/cni', { recursive: true, force: true });
  await rm(state.dir, { recursive: true, force: true });
  log(`node cluster stopped, ${state.dir} removed`);
}

/** SIGKILLs every task in the node's containerd and deletes the containers; returns their ids. */
async function killContainers(state: NodeState, sock: string): Promise<string[]> {
  const containerd = state.processes.find((x) => x.name === 'containerd');
  if (!containerd || !isRunning(containerd)) return [];
  const ctr = async (args: string[]) =>
    (await execFileP('ctr', ['--address', sock, '-n', 'k8s.io', ...args]).catch(() => ({ stdout: '' })))
      .stdout;
  const ids = (await ctr(['containers', 'ls', '-q'])).split('\n').filter(Boolean);
  const tasks = (await ctr(['tasks', 'ls', '-q'])).split('\n').filter(Boolean);
  await Promise.all(tasks.map((t) => ctr(['tasks', 'kill', '-s', 'SIGKILL', t])));
  for (const t of tasks) await ctr(['tasks', 'rm', '-f', t]);
  for (const c of ids) await ctr(['containers', 'rm', c]);
  return ids;
}

/** containerd-shim processes of this node's containerd (they outlive it by design). */
function killShims(sock: string): void {
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (argv[0]?.includes('containerd-shim') && argv.includes(sock)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
}

/** kubelet's volume mounts, containerd's rootfs/shm/netns mounts: all under the state dir. */
function unmountUnder(dir: string): void {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4]?.replace(/\\040/g, ' '))
    .filter((m): m is string => !!m && (m === dir || m.startsWith(`${dir}/`)));
  for (const m of mounts.sort().reverse()) spawnSync('umount', ['-l', m]);
}

async function removeKubepodsCgroups(): Promise<void> {
  const root = '/sys/fs/cgroup';
  const hierarchies = existsSync(join(root, 'kubepods'))
    ? [root]
    : readdirSync(root).map((h) => join(root, h));
  for (const h of hierarchies) {
    const top = join(h, 'kubepods');
    if (existsSync(top)) await rmdirDepthFirst(top);
  }
}

async function rmdirDepthFirst(dir: string): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) if (e.isDirectory()) await rmdirDepthFirst(join(dir, e.name));
  await rmdir(dir).catch(() => {});
}

/** libcni caches each ADD under /var/lib/cni/results; killed pods never got a DEL. */
async function removeCniResults(containers: string[]): Promise<void> {
  const dir = '/var/lib/cni/results';
  const files = await readdir(dir).catch(() => [] as string[]);
  for (const f of files) {
    const ours =
      f.startsWith(`${CNI_NETWORK}-`) ||
      (f.startsWith('cni-loopback-') && containers.some((c) => f.includes(c)));
    if (ours) await rm(join(dir, f), { force: true });
  }
}

/** Synchronous kill for process 'exit' handlers: stops processes; `down --all` cleans up the rest. */
export function killNodeSync(state: NodeState): void {
  for (const proc of [...state.processes].reverse()) {
    if (!isRunning(proc)) continue;
    try {
      process.kill(proc.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  if (state.controlPlane) killControlPlaneSync(state.controlPlane);
}
