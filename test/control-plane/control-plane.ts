import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { type Binaries, ensureBinaries } from './build.ts';
import type { Log } from './go.ts';
import { stateRoot } from './paths.ts';
import { createPki, type Pki, SERVICE_CLUSTER_IP_RANGE, writeKubeconfig } from './pki.ts';
import { awaitReady, freePorts, isRunning, type Proc, startDetached, stopProcess } from './processes.ts';

// etcd + kube-apiserver (+ kube-controller-manager) on loopback, no kubelet: controller-runtime's
// envtest setup, plus the controllers that make sense without nodes so that owner-reference GC,
// Deployment -> ReplicaSet and namespace deletion behave as in a real cluster.

/** Everything `down`/`status` need, persisted as <dir>/state.json. */
export interface ControlPlane {
  dir: string;
  kubeconfig: string;
  apiserverUrl: string;
  etcdUrl: string;
  binaries: Binaries;
  pki: Pki;
  processes: Proc[];
  startedAt: string;
}

export interface StartOptions {
  log: Log;
  /** Run kube-controller-manager if the binary is available (default true). */
  controllerManager?: boolean;
  /** More kube-apiserver flags, appended to ours (e.g. the benchmark's audit log). */
  apiserverArgs?: string[];
  /** kube-controller-manager's --controllers (default CONTROLLERS; node mode runs `*`). */
  controllers?: string[];
  /** More kube-controller-manager flags, appended to ours. */
  controllerManagerArgs?: string[];
}

/** kube-controller-manager controllers that need no kubelet, node or cloud provider. */
export const CONTROLLERS = [
  'garbage-collector-controller',
  'deployment-controller',
  'replicaset-controller',
  'namespace-controller',
  'serviceaccount-controller',
  'serviceaccount-token-controller',
  'root-ca-certificate-publisher-controller',
  'clusterrole-aggregation-controller',
];

const READY_TIMEOUT_MS = 90_000;

export async function startControlPlane(opts: StartOptions): Promise<ControlPlane> {
  const binaries = await ensureBinaries(opts.log);
  // A port picked by freePorts() can be taken by someone else before our server binds it: retry.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(binaries, opts);
    } catch (err) {
      if (attempt >= 3 || !String(err).includes('address already in use')) throw err;
      opts.log(`port collision, retrying (${attempt})`);
    }
  }
}

async function startOnce(binaries: Binaries, opts: StartOptions): Promise<ControlPlane> {
  await mkdir(stateRoot(), { recursive: true });
  const dir = await mkdtemp(join(stateRoot(), 'cp-'));
  const port = await freePorts(['etcd', 'etcdPeer', 'apiserver', 'controllerManager'] as const);
  const pki = await createPki(join(dir, 'pki')).catch(async (err: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw err;
  });
  const cp: ControlPlane = {
    dir,
    kubeconfig: join(dir, 'kubeconfig'),
    apiserverUrl: `https://127.0.0.1:${port.apiserver}`,
    etcdUrl: `http://127.0.0.1:${port.etcd}`,
    binaries,
    pki,
    processes: [],
    startedAt: new Date().toISOString(),
  };
  const started = Date.now();
  try {
    await writeKubeconfig(cp.kubeconfig, cp.pki, cp.apiserverUrl);
    await saveState(cp);

    const ok = (url: string, auth: boolean) => async () => (await get(url, cp.pki, auth)).status === 200;
    await launch(cp, 'etcd', binaries.etcd, etcdArgs(cp, port.etcdPeer), ok(`${cp.etcdUrl}/health`, false));
    const kcm = opts.controllerManager === false ? undefined : binaries.kubeControllerManager;
    const readyz = ok(`${cp.apiserverUrl}/readyz`, true);
    await launch(
      cp,
      'kube-apiserver',
      binaries.kubeApiserver,
      [...apiserverArgs(cp, port.apiserver, !!kcm), ...(opts.apiserverArgs ?? [])],
      readyz,
    );
    if (kcm) {
      const healthz = ok(`https://127.0.0.1:${port.controllerManager}/healthz`, false);
      const args = [
        ...kcmArgs(cp, port.controllerManager, opts.controllers ?? CONTROLLERS),
        ...(opts.controllerManagerArgs ?? []),
      ];
      await launch(cp, 'kube-controller-manager', kcm, args, healthz);
    }
    opts.log(`control plane ready in ${((Date.now() - started) / 1000).toFixed(1)}s (${cp.dir})`);
    return cp;
  } catch (err) {
    await stopControlPlane(cp);
    throw err;
  }
}

/** Starts one component, records its pid, and waits until `ready` or fails with its log tail. */
async function launch(
  cp: ControlPlane,
  name: string,
  bin: string,
  args: string[],
  ready: () => Promise<boolean>,
): Promise<void> {
  const proc = startDetached(name, bin, args, join(cp.dir, `${name}.log`));
  cp.processes.push(proc);
  await saveState(cp);
  await awaitReady(name, proc, ready, READY_TIMEOUT_MS);
}

function etcdArgs(cp: ControlPlane, peerPort: number): string[] {
  const peer = `http://127.0.0.1:${peerPort}`;
  return [
    '--name=email-relay-test',
    `--data-dir=${join(cp.dir, 'etcd')}`,
    `--listen-client-urls=${cp.etcdUrl}`,
    `--advertise-client-urls=${cp.etcdUrl}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=email-relay-test=${peer}`,
    // Throwaway data: skip fsync like envtest does; makes writes an order of magnitude faster.
    '--unsafe-no-fsync=true',
    '--log-level=warn',
  ];
}

function apiserverArgs(cp: ControlPlane, port: number, withKcm: boolean): string[] {
  const { pki } = cp;
  return [
    `--etcd-servers=${cp.etcdUrl}`,
    '--bind-address=127.0.0.1',
    '--advertise-address=127.0.0.1',
    `--secure-port=${port}`,
    `--cert-dir=${join(cp.dir, 'apiserver')}`,
    `--tls-cert-file=${pki.servingCert}`,
    `--tls-private-key-file=${pki.servingKey}`,
    `--client-ca-file=${pki.caCert}`,
    '--authorization-mode=RBAC',
    '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
    `--service-account-key-file=${pki.saPub}`,
    `--service-account-signing-key-file=${pki.saKey}`,
    `--service-cluster-ip-range=${SERVICE_CLUSTER_IP_RANGE}`,
    '--allow-privileged=true',
    // No kubelet, so no node to reconcile the `kubernetes` Endpoints against (it would point at loopback).
    '--endpoint-reconciler-type=none',
    // Without the serviceaccount controller no `default` ServiceAccount appears and every Pod would be
    // rejected by the ServiceAccount admission plugin (envtest disables it for the same reason).
    ...(withKcm ? [] : ['--disable-admission-plugins=ServiceAccount']),
  ];
}

function kcmArgs(cp: ControlPlane, port: number, controllers: string[]): string[] {
  return [
    `--kubeconfig=${cp.kubeconfig}`,
    `--authentication-kubeconfig=${cp.kubeconfig}`,
    `--authorization-kubeconfig=${cp.kubeconfig}`,
    // Take client certs from our CA directly instead of the front-proxy (requestheader) config in
    // kube-system/extension-apiserver-authentication, which this control plane does not set up.
    '--authentication-skip-lookup=true',
    `--client-ca-file=${cp.pki.caCert}`,
    '--bind-address=127.0.0.1',
    `--secure-port=${port}`,
    `--cert-dir=${join(cp.dir, 'kube-controller-manager')}`,
    `--controllers=${controllers.join(',')}`,
    `--service-account-private-key-file=${cp.pki.saKey}`,
    `--root-ca-file=${cp.pki.caCert}`,
    // For the csrsigning controller when the full set runs (node mode); unused otherwise.
    `--cluster-signing-cert-file=${cp.pki.caCert}`,
    `--cluster-signing-key-file=${cp.pki.caKey}`,
    '--leader-elect=false',
  ];
}

/** Stops every recorded process (newest first) and deletes the state dir with its etcd data. */
export async function stopControlPlane(cp: Pick<ControlPlane, 'dir' | 'processes'>): Promise<void> {
  for (const proc of [...cp.processes].reverse()) await stopProcess(proc);
  await rm(cp.dir, { recursive: true, force: true });
}

/** Synchronous best-effort kill for process 'exit' handlers (no awaiting possible there). */
export function killControlPlaneSync(cp: Pick<ControlPlane, 'processes'>): void {
  for (const proc of cp.processes) {
    if (!isRunning(proc)) continue;
    try {
      process.kill(proc.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

async function saveState(cp: ControlPlane): Promise<void> {
  await writeFile(join(cp.dir, 'state.json'), `${JSON.stringify(cp, null, 2)}\n`);
}

export async function loadState(dir: string): Promise<ControlPlane> {
  return JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as ControlPlane;
}

/** Component -> running?, and the apiserver's /readyz verdict. */
export async function probe(cp: ControlPlane): Promise<{ processes: [string, boolean][]; readyz: string }> {
  const processes = cp.processes.map((p): [string, boolean] => [`${p.name} (pid ${p.pid})`, isRunning(p)]);
  const readyz = await get(`${cp.apiserverUrl}/readyz`, cp.pki, true).then(
    (r) => `${r.status} ${r.body.trim()}`,
    (err: Error) => err.message,
  );
  return { processes, readyz };
}

/** GET; over https with our CA and the admin client cert when `auth`. */
function get(url: string, pki: Pki, auth: boolean): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const done = (res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    };
    const req = url.startsWith('https:')
      ? httpsRequest(url, tlsOptions(pki, auth), done)
      : httpRequest(url, { timeout: 2000 }, done);
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)));
    req.on('error', reject);
    req.end();
  });
}

function tlsOptions(pki: Pki, auth: boolean) {
  // kube-controller-manager serves with a self-signed cert it generates; its /healthz proves liveness only.
  if (!auth) return { timeout: 2000, rejectUnauthorized: false };
  const [ca, cert, key] = [pki.caCert, pki.adminCert, pki.adminKey].map((f) => readFileSync(f));
  return { timeout: 2000, ca, cert, key };
}
