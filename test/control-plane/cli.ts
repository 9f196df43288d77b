import { existsSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeBinaries, ensureBinaries } from './build.ts';
import { loadState, probe, startControlPlane, stopControlPlane } from './control-plane.ts';
import { regenerateGoMods } from './gomod.ts';
import { loadNodeState, startNode, stopNode } from './node.ts';
import { cachedBinDir, currentStateFile, stateRoot } from './paths.ts';
import { isRunning } from './processes.ts';

// npm run control-plane -- <command>; progress goes to stderr, machine-readable results to stdout.

const USAGE = `usage: npm run control-plane -- <command>
  up [--no-controller-manager]  start etcd + kube-apiserver (+ kube-controller-manager) in the background;
                                prints KUBECONFIG=<path>
  up --node                     a real single-node cluster (kubelet, containerd, kube-proxy, CoreDNS,
                                kube-router, storage) in a private network namespace (root); prints
                                KUBECONFIG=<path> and NETNS=<name> (use: nsenter --net=/run/netns/<name>)
  down [<state-dir> | --all]    stop the control plane of the last \`up\` (or the given one; --all: every one,
                                including those of running test runs) and delete its data
  status [<state-dir>]          show processes and /readyz of the last \`up\`
  build                         build (or find) the binaries and print where they are
  gomod [<dir>...]              regenerate test/control-plane/go/*/go.{mod,sum} after changing versions.ts`;

const log = (line: string) => process.stderr.write(`[control-plane] ${line}\n`);

async function currentDir(arg: string | undefined): Promise<string> {
  if (arg) return arg;
  const dir = (await readFile(currentStateFile(), 'utf8').catch(() => '')).trim();
  if (!dir || !existsSync(dir)) throw new Error('no control plane is up (run `npm run control-plane -- up`)');
  return dir;
}

async function up(args: string[]): Promise<void> {
  if (args.includes('--node')) return upNode();
  const started = Date.now();
  const cp = await startControlPlane({ log, controllerManager: !args.includes('--no-controller-manager') });
  await writeFile(currentStateFile(), `${cp.dir}\n`);
  log(
    `apiserver ${cp.apiserverUrl}, etcd ${cp.etcdUrl}, binaries ${cp.binaries.dir} (${cp.binaries.source})`,
  );
  log(`processes: ${cp.processes.map((p) => `${p.name}=${p.pid}`).join(' ')}; logs in ${cp.dir}`);
  log(`up in ${((Date.now() - started) / 1000).toFixed(1)}s; stop with: npm run control-plane -- down`);
  process.stdout.write(`KUBECONFIG=${cp.kubeconfig}\n`);
}

async function upNode(): Promise<void> {
  const node = await startNode({ log });
  await writeFile(currentStateFile(), `${node.dir}\n`);
  const procs = [...(node.controlPlane?.processes ?? []), ...node.processes];
  log(`processes: ${procs.map((p) => `${p.name}=${p.pid}`).join(' ')}; logs in ${node.dir}/logs`);
  log(
    `kubectl: nsenter --net=/run/netns/${node.netns} ${node.binaries.kubectl} --kubeconfig=${node.kubeconfig} get nodes`,
  );
  log('stop with: npm run control-plane -- down');
  process.stdout.write(`KUBECONFIG=${node.kubeconfig}\nNETNS=${node.netns}\n`);
}

const isNode = (dir: string) => existsSync(join(dir, 'node.json'));

async function down(args: string[]): Promise<void> {
  const dirs = args.includes('--all')
    ? (await readdir(stateRoot()).catch(() => []))
        .map((d) => join(stateRoot(), d))
        .filter((d) => existsSync(join(d, 'state.json')) || isNode(d))
    : [await currentDir(args[0])];
  // A node first: it owns a control plane of its own, which it stops itself.
  const nodes = dirs.filter(isNode);
  const owned = new Set<string>();
  for (const dir of nodes) {
    const node = await loadNodeState(dir);
    if (node.controlPlane) owned.add(node.controlPlane.dir);
    await stopNode(node, log);
  }
  for (const dir of dirs.filter((d) => !isNode(d) && !owned.has(d) && existsSync(d))) {
    await stopControlPlane(await loadState(dir));
    log(`stopped and removed ${dir}`);
  }
  const current = (await readFile(currentStateFile(), 'utf8').catch(() => '')).trim();
  if (current && !existsSync(current)) await rm(currentStateFile(), { force: true });
}

async function status(args: string[]): Promise<void> {
  const dir = await currentDir(args[0]);
  if (isNode(dir)) return nodeStatus(dir);
  const cp = await loadState(dir);
  const { processes, readyz } = await probe(cp);
  const out = [
    `state dir:  ${cp.dir} (since ${cp.startedAt})`,
    `apiserver:  ${cp.apiserverUrl}  /readyz: ${readyz}`,
    `etcd:       ${cp.etcdUrl}`,
    ...processes.map(([name, alive]) => `process:    ${name} ${alive ? 'running' : 'NOT RUNNING'}`),
    `KUBECONFIG=${cp.kubeconfig}`,
  ];
  process.stdout.write(`${out.join('\n')}\n`);
  if (!processes.every(([, alive]) => alive)) process.exitCode = 1;
}

async function nodeStatus(dir: string): Promise<void> {
  const node = await loadNodeState(dir);
  const cp = node.controlPlane;
  const procs = [...(cp?.processes ?? []), ...node.processes];
  const out = [
    `node state: ${node.dir} (since ${node.startedAt})`,
    `netns:      ${node.netns} (node ${node.nodeName} ${node.nodeIp})`,
    ...(cp ? [`apiserver:  ${cp.apiserverUrl} (inside the netns)`] : []),
    ...procs.map((p) => `process:    ${p.name} (pid ${p.pid}) ${isRunning(p) ? 'running' : 'NOT RUNNING'}`),
    `KUBECONFIG=${node.kubeconfig}`,
    `NETNS=${node.netns}`,
  ];
  process.stdout.write(`${out.join('\n')}\n`);
  if (!procs.every(isRunning)) process.exitCode = 1;
}

async function build(): Promise<void> {
  // Every binary, the node's too: `npm test` runs the node tests, and a cold machine pays once here.
  const b = await ensureBinaries(log, { node: true });
  process.stdout.write(`${(await describeBinaries(b)).join('\n')}\n`);
  if (b.source !== 'KUBEBUILDER_ASSETS') process.stdout.write(`KUBEBUILDER_ASSETS=${cachedBinDir()}\n`);
}

const [command, ...rest] = process.argv.slice(2);
const commands: Record<string, (args: string[]) => Promise<void>> = {
  up,
  down,
  status,
  build,
  gomod: (args) => regenerateGoMods(log, args),
};
const run = command ? commands[command] : undefined;
if (!run) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(command ? 2 : 0);
}
try {
  await run(rest);
} catch (err) {
  log(err instanceof Error ? err.message : String(err));
  process.exit(1);
}
