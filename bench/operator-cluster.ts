import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KubeConfig } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { KubeClient } from '../src/lib/kube/client.ts';
import type { KubeObject } from '../src/operator/api/meta.ts';
import { serverSideApply } from '../src/operator/runtime/apply.ts';
import {
  type ControlPlane,
  killControlPlaneSync,
  startControlPlane,
  stopControlPlane,
} from '../test/control-plane/control-plane.ts';
import { AuditLog } from './operator-audit.ts';
import type { Build } from './relay.ts';
import { freePort, onCleanup, terminate, waitUntil } from './util.ts';

/**
 * The operator benchmark's world: a private control plane (test/control-plane: etcd,
 * kube-apiserver, kube-controller-manager; own ports and data dir, torn down at the end) whose
 * apiserver writes an audit log of the operator's requests, the CRDs and the operator's RBAC from
 * deploy/base, and the operator itself as a separate process under its own ServiceAccount
 * identity (a TokenRequest token), so the audit log tells its requests apart from everyone else's.
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export const OPERATOR_NAMESPACE = 'email-relay-system';
export const OPERATOR_SA = 'email-relay-operator';
export const OPERATOR_USER = `system:serviceaccount:${OPERATOR_NAMESPACE}:${OPERATOR_SA}`;
/** Kept out of the relays' pod templates' way: nothing runs it (no kubelet). */
export const BENCH_IMAGE = 'example.invalid/email-relay:bench';

export interface BenchCluster {
  cp: ControlPlane;
  /** The admin (system:masters) client of the benchmark itself; not in the audit log. */
  admin: KubeClient;
  audit: AuditLog;
  /** Kubeconfig with the operator's ServiceAccount token. */
  operatorKubeconfig: string;
  dir: string;
  stop(): Promise<void>;
}

/**
 * Metadata level for the operator's user only: one entry per request (watches when they start,
 * everything else when the response is complete), nothing for anybody else.
 */
function auditPolicy(): string {
  return `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    users: ["${OPERATOR_USER}"]
    verbs: [watch]
    omitStages: [ResponseComplete]
  - level: Metadata
    users: ["${OPERATOR_USER}"]
  - level: None
`;
}

export async function startBenchCluster(log: (line: string) => void): Promise<BenchCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-operator-'));
  const auditPath = join(dir, 'audit.log');
  await writeFile(join(dir, 'audit-policy.yaml'), auditPolicy());
  let cp: ControlPlane;
  try {
    cp = await startControlPlane({
      log,
      apiserverArgs: [
        `--audit-policy-file=${join(dir, 'audit-policy.yaml')}`,
        `--audit-log-path=${auditPath}`,
        '--audit-log-maxsize=2000', // MB: never rotate during a run
        '--audit-log-mode=blocking',
        // 500 ClusterIP Services do not fit the test control plane's /24 (the last flag wins)
        '--service-cluster-ip-range=10.0.0.0/16',
      ],
    });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const onExit = () => killControlPlaneSync(cp);
  process.once('exit', onExit);
  const kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfig);
  const admin = new KubeClient(kc);
  const stop = onCleanup(async () => {
    admin.close();
    await stopControlPlane(cp);
    process.off('exit', onExit);
    await rm(dir, { recursive: true, force: true });
  });
  try {
    await installCrds(admin);
    await installOperatorRbac(admin);
    const token = await operatorToken(admin);
    const operatorKubeconfig = join(dir, 'operator.kubeconfig');
    await writeTokenKubeconfig(operatorKubeconfig, cp, token);
    return { cp, admin, audit: new AuditLog(auditPath), operatorKubeconfig, dir, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** crds/*.yaml as users install them; waits until they are served. */
async function installCrds(admin: KubeClient): Promise<void> {
  const dir = join(ROOT, 'crds');
  for (const file of (await readdir(dir)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')) {
    for (const doc of parseAllDocuments(await readFile(join(dir, file), 'utf8'))) {
      const crd = doc.toJS() as KubeObject;
      const path = `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`;
      await admin.request('PATCH', path, {
        query: { fieldManager: 'bench', force: true },
        body: crd,
        contentType: 'application/apply-patch+yaml',
      });
      await waitUntil(
        `CRD ${crd.metadata.name} established`,
        async () => {
          const got = await admin.get<{ status?: { conditions?: { type: string; status: string }[] } }>(path);
          return !!got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True');
        },
        30_000,
        100,
      );
    }
  }
}

/** deploy/base's Namespace, ServiceAccount and RBAC, namespaced as its kustomization does. */
async function installOperatorRbac(admin: KubeClient): Promise<void> {
  for (const file of ['namespace.yaml', 'serviceaccount.yaml', 'rbac.yaml', 'attribution.yaml']) {
    const text = await readFile(join(ROOT, 'deploy/base', file), 'utf8');
    for (const doc of parseAllDocuments(text)) {
      const obj = doc.toJS() as KubeObject & { subjects?: { kind: string; namespace?: string }[] };
      if (!obj) continue;
      if (['ServiceAccount', 'Role', 'RoleBinding'].includes(obj.kind))
        obj.metadata.namespace = OPERATOR_NAMESPACE;
      for (const s of obj.subjects ?? [])
        if (s.kind === 'ServiceAccount' && !s.namespace) s.namespace = OPERATOR_NAMESPACE;
      await applyAny(admin, obj);
    }
  }
}

/** Server-side apply of kinds the operator's resource table does not know (RBAC, Roles). */
async function applyAny(admin: KubeClient, obj: KubeObject): Promise<void> {
  const plural: Record<string, string> = {
    Namespace: 'namespaces',
    ServiceAccount: 'serviceaccounts',
    ClusterRole: 'clusterroles',
    ClusterRoleBinding: 'clusterrolebindings',
    Role: 'roles',
    RoleBinding: 'rolebindings',
  };
  const p = plural[obj.kind];
  if (!p) throw new Error(`bench: cannot apply ${obj.kind}`);
  const base = obj.apiVersion.includes('/') ? `/apis/${obj.apiVersion}` : `/api/${obj.apiVersion}`;
  const ns = obj.metadata.namespace ? `/namespaces/${obj.metadata.namespace}` : '';
  await admin.request('PATCH', `${base}${ns}/${p}/${obj.metadata.name}`, {
    query: { fieldManager: 'bench', force: true },
    body: obj,
    contentType: 'application/apply-patch+yaml',
  });
}

/** A bound token of the operator's ServiceAccount, as the kubelet would project it (longer-lived). */
async function operatorToken(admin: KubeClient): Promise<string> {
  const res = await admin.request<{ status: { token: string } }>(
    'POST',
    `/api/v1/namespaces/${OPERATOR_NAMESPACE}/serviceaccounts/${OPERATOR_SA}/token`,
    {
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: { expirationSeconds: 24 * 3600 },
      },
    },
  );
  return res.status.token;
}

async function writeTokenKubeconfig(path: string, cp: ControlPlane, token: string): Promise<void> {
  const ca = (await readFile(cp.pki.caCert)).toString('base64');
  await writeFile(
    path,
    `apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster:
    server: ${cp.apiserverUrl}
    certificate-authority-data: ${ca}
users:
- name: ${OPERATOR_SA}
  user:
    token: ${token}
contexts:
- name: bench
  context: {cluster: bench, user: ${OPERATOR_SA}, namespace: ${OPERATOR_NAMESPACE}}
current-context: bench
`,
    { mode: 0o600 },
  );
}

export async function applyObject(admin: KubeClient, obj: KubeObject): Promise<void> {
  if (obj.kind === 'Namespace') await applyAny(admin, obj);
  else await serverSideApply(admin, obj, 'bench');
}

// ---- the operator process ----

export interface OperatorProcess {
  pid: number;
  httpPort: number;
  /** Prometheus text of its /metrics. */
  metrics(): Promise<string>;
  log(): Promise<string>;
  /** SIGTERM (it finishes in-flight reconciles and releases the Lease), SIGKILL after 30 s. */
  stop(): Promise<void>;
}

/**
 * `email-relay operator` as the Deployment runs it (leader election on, in its namespace), the
 * compiled JavaScript of `build` (or src/ under tsx), logs at info to a file.
 */
export async function startOperator(
  build: Build,
  cluster: BenchCluster,
  tag: string,
): Promise<OperatorProcess> {
  const httpPort = await freePort();
  const logPath = join(cluster.dir, `operator-${tag}.log`);
  const logFile = await open(logPath, 'w');
  const child: ChildProcess = spawn(
    process.execPath,
    [
      ...build.argv,
      'operator',
      '--kubeconfig',
      cluster.operatorKubeconfig,
      '--http',
      `127.0.0.1:${httpPort}`,
      '--relay-image',
      BENCH_IMAGE,
      '--leader-elect',
      '--lease-namespace',
      OPERATOR_NAMESPACE,
      '--log-level',
      'info',
    ],
    {
      stdio: ['ignore', logFile.fd, logFile.fd],
      cwd: build.dir ?? ROOT,
      env: { ...process.env, KUBECONFIG: cluster.operatorKubeconfig, HOSTNAME: `bench-operator-${tag}` },
    },
  );
  await logFile.close();
  const stop = onCleanup(() => terminate(child, 30_000));
  const log = () => readFile(logPath, 'utf8').catch(() => '');
  const metrics = async () => (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  try {
    await waitUntil(
      'the operator to sync its caches and lead',
      async () => {
        if (child.exitCode !== null)
          throw new Error(`operator exited ${child.exitCode}: ${(await log()).slice(-3000)}`);
        const text = await metrics().catch(() => '');
        return metricSum(text, 'leader_election_master_status') === 1;
      },
      120_000,
      100,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid: child.pid!, httpPort, metrics, log, stop };
}

/** Sum of a metric's samples whose labels include `labels`. */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? ([0-9.eE+-]+|NaN)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[4]);
  }
  return sum;
}

export async function operatorCounters(
  op: OperatorProcess,
): Promise<{ reconciles: number; reconcileSeconds: number; errors: number; depth: number }> {
  const text = await op.metrics();
  const relay = { controller: 'emailrelay' };
  return {
    reconciles: metricSum(text, 'controller_runtime_reconcile_total', relay),
    reconcileSeconds: metricSum(text, 'controller_runtime_reconcile_time_seconds_sum', relay),
    errors: metricSum(text, 'controller_runtime_reconcile_errors_total'),
    depth: metricSum(text, 'workqueue_depth'),
  };
}
