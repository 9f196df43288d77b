import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startControlPlane } from './control-plane.ts';
import {
  bootstrapManifests,
  cniConflist,
  containerdConfig,
  corefile,
  kubeletConfig,
  kubeProxyConfig,
  NODE_IP,
  NODE_NAME,
  nodePaths,
} from './node-config.ts';
import { loadNodeState, type NodeState, saveNodeState } from './node-state.ts';
import { awaitReady, freePorts, startDetached, waitFor } from './processes.ts';

// The in-namespace half of `up --node`: node.ts made the network namespace and runs this file in it
// (nsenter --net), so every process started here, and every probe, lives in the node's namespace.
// Components are started detached with their pids in node.json; this process exits when all are up.

const execFileP = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));
const READY_TIMEOUT_MS = 120_000;
const log = (line: string) => process.stderr.write(`[node] ${line}\n`);

async function main(dir: string): Promise<void> {
  const state = await loadNodeState(dir);
  const p = nodePaths(dir);
  const t0 = Date.now();
  const step = (what: string) => log(`${what} (+${((Date.now() - t0) / 1000).toFixed(1)}s)`);

  // Per-namespace sysctls: pods route through the node; bridged traffic passes kube-proxy's iptables.
  for (const [key, value] of [
    ['net/ipv4/ip_forward', '1'],
    ['net/bridge/bridge-nf-call-iptables', '1'],
    ['net/bridge/bridge-nf-call-ip6tables', '1'],
  ] as const) {
    await writeFile(`/proc/sys/${key}`, value);
  }
  for (const d of [
    p.cniConfDir,
    p.cniIpamDir,
    p.staticPods,
    p.podLogs,
    p.volumes,
    dirname(p.containerdConfig),
  ]) {
    await mkdir(d, { recursive: true });
  }
  await writeFile(p.containerdConfig, containerdConfig(p, state.pauseImage));
  await writeFile(join(p.cniConfDir, '10-email-relay.conflist'), cniConflist(p));
  await writeFile(p.kubeletConfig, kubeletConfig(p));

  // containerd + image import run while etcd and the apiserver come up.
  const runtime = (async () => {
    await launch(state, 'containerd', 'containerd', ['--config', p.containerdConfig], async () =>
      existsSync(p.containerdSock),
    );
    const ctr = (args: string[]) =>
      execFileP('ctr', ['--address', p.containerdSock, '-n', 'k8s.io', ...args]);
    let imported = 0;
    for (const img of state.images) {
      // Already in the (cached) content store under this name and manifest digest: nothing to do.
      const have = (await ctr(['images', 'ls', `name==${img.name}`]).catch(() => ({ stdout: '' }))).stdout;
      if (have.includes(img.digest)) continue;
      await ctr(['images', 'import', img.archive]);
      imported++;
    }
    step(`containerd up, ${imported} of ${state.images.length} images imported (the others were there)`);
  })();
  const cp = await startControlPlane({
    log,
    // Pods reach the apiserver through the `kubernetes` Service: listen on the node IP too, advertise
    // it, and keep the Service's endpoints reconciled; dial kubelets by IP (no DNS for node names).
    apiserverArgs: [
      '--bind-address=0.0.0.0',
      `--advertise-address=${NODE_IP}`,
      '--endpoint-reconciler-type=lease',
      '--kubelet-preferred-address-types=InternalIP',
    ],
    // The full controller set: EndpointSlices, StatefulSets, PV binding, Jobs, node lifecycle...
    controllers: ['*'],
  });
  state.controlPlane = cp;
  state.kubeconfig = cp.kubeconfig;
  await saveNodeState(state);
  step(`control plane up (${cp.dir})`);
  await runtime;

  const kubectl = (args: string[], input?: string) => kubectlRun(state, args, input);
  const port = await freePorts(['scheduler'] as const);
  await launch(
    state,
    'kube-scheduler',
    state.binaries.kubeScheduler,
    [
      `--kubeconfig=${cp.kubeconfig}`,
      `--authentication-kubeconfig=${cp.kubeconfig}`,
      `--authorization-kubeconfig=${cp.kubeconfig}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${port.scheduler}`,
      '--leader-elect=false',
    ],
    () => httpOk(`https://127.0.0.1:${port.scheduler}/healthz`),
  );
  await launch(
    state,
    'kubelet',
    state.binaries.kubelet,
    [
      `--config=${p.kubeletConfig}`,
      `--kubeconfig=${cp.kubeconfig}`,
      `--root-dir=${p.kubeletRoot}`,
      `--cert-dir=${p.kubeletCerts}`,
      `--node-ip=${NODE_IP}`,
      `--hostname-override=${NODE_NAME}`,
    ],
    async () => {
      const r = await kubectl([
        'get',
        'node',
        NODE_NAME,
        '-o',
        'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
      ]);
      return r.trim() === 'True';
    },
  );
  step('node Ready');
  await writeFile(p.proxyConfig, kubeProxyConfig(cp.kubeconfig));
  await launch(state, 'kube-proxy', state.binaries.kubeProxy, [`--config=${p.proxyConfig}`], () =>
    httpOk('http://127.0.0.1:10256/healthz'),
  );
  // kube-router exits if its Node object does not exist yet: started after registration.
  await launch(
    state,
    'kube-router',
    state.binaries.kubeRouter,
    [
      '--run-router=false',
      '--run-service-proxy=false',
      '--run-firewall=true',
      `--kubeconfig=${cp.kubeconfig}`,
      `--hostname-override=${NODE_NAME}`,
      '--health-port=20244',
    ],
    () => httpOk('http://127.0.0.1:20244/healthz'),
  );
  await kubectl(
    ['apply', '-f', '-'],
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items: bootstrapManifests() }),
  );
  await writeFile(p.corefile, corefile(cp.kubeconfig));
  await launch(state, 'coredns', state.binaries.coredns, ['-conf', p.corefile, '-dns.port', '53'], () =>
    httpOk('http://127.0.0.1:18181/ready'),
  );
  await launch(
    state,
    'provisioner',
    process.execPath,
    ['--import', 'tsx', join(HERE, 'provisioner.ts'), cp.apiserverUrl, cp.pki.dir, p.volumes],
    async () => true,
  );
  // Ready is not reachable: wait until kube-proxy has programmed the ClusterIPs pods will use first.
  const kubernetesIp = (
    await kubectl(['get', 'svc', 'kubernetes', '-o', 'jsonpath={.spec.clusterIP}'])
  ).trim();
  for (const [host, port] of [
    [kubernetesIp, 443],
    ['10.0.0.10', 53],
  ] as const) {
    if (!(await waitFor(() => tcpOpen(host, port), READY_TIMEOUT_MS))) {
      throw new Error(`ClusterIP ${host}:${port} does not answer from the node`);
    }
  }
  // Pods are rejected until the namespace's `default` ServiceAccount exists.
  await waitFor(
    async () => (await kubectl(['get', 'sa', 'default', '-o', 'name']).catch(() => '')) !== '',
    60_000,
  );
  step('node up: DNS and the kubernetes Service answer');
}

/** Starts one node component, records its pid in node.json, waits until `ready` (or fails with its log). */
async function launch(
  state: NodeState,
  name: string,
  bin: string,
  args: string[],
  ready: () => Promise<boolean>,
): Promise<void> {
  await mkdir(join(state.dir, 'logs'), { recursive: true });
  const proc = startDetached(name, bin, args, join(state.dir, 'logs', `${name}.log`));
  state.processes.push(proc);
  await saveNodeState(state);
  await awaitReady(name, proc, ready, READY_TIMEOUT_MS);
}

async function kubectlRun(state: NodeState, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      state.binaries.kubectl,
      [`--kubeconfig=${state.kubeconfig}`, ...args],
      { maxBuffer: 64 << 20 },
      (err, stdout, stderr) =>
        err ? reject(new Error(`kubectl ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout),
    );
    child.stdin?.end(input);
  });
}

/** 200 from an http(s) health endpoint (self-signed serving certs: liveness only). */
function httpOk(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const get = url.startsWith('https:') ? httpsGet : httpGet;
    const req = get(url, { timeout: 2000, rejectUnauthorized: false }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

function tcpOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host, port, timeout: 1000 });
    sock.on('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.on('timeout', () => {
      sock.destroy();
      resolve(false);
    });
    sock.on('error', () => resolve(false));
  });
}

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: node-up.ts <node-state-dir> (run by node.ts inside the node namespace)\n');
  process.exit(2);
}
try {
  await main(dir);
} catch (err) {
  log(err instanceof Error ? err.message : String(err));
  process.exit(1);
}
