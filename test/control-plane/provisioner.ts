import { readFileSync } from 'node:fs';
import { chmod, mkdir, rm } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import { PROVISIONER_NAME, STORAGE_CLASS } from './node-config.ts';

// The test node's storage: a tiny external provisioner for the default StorageClass. A Pending PVC
// of that class gets a hostPath PV (a fresh directory under the node's state dir) pre-bound to it;
// a Released PV of ours is deleted with its directory. kube-controller-manager's own hostpath
// provisioner would do the binding too, but it creates directories 0750 root, which a pod running
// as a non-root user (the relay runs as 65532) cannot write.
//
// Run by node-up.ts as a node component: node provisioner.ts <apiserver-url> <pki-dir> <volumes-dir>

interface Meta {
  name: string;
  namespace?: string;
  uid: string;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
}
interface Pvc {
  metadata: Meta;
  spec: {
    storageClassName?: string;
    volumeName?: string;
    accessModes?: string[];
    resources?: { requests?: { storage?: string } };
    volumeMode?: string;
  };
  status?: { phase?: string };
}
interface Pv {
  metadata: Meta;
  spec: { hostPath?: { path: string }; persistentVolumeReclaimPolicy?: string };
  status?: { phase?: string };
}

const [server, pkiDir, volumesDir] = process.argv.slice(2);
if (!server || !pkiDir || !volumesDir) {
  process.stderr.write('usage: provisioner.ts <apiserver-url> <pki-dir> <volumes-dir>\n');
  process.exit(2);
}
const tls = {
  ca: readFileSync(join(pkiDir, 'ca.crt')),
  cert: readFileSync(join(pkiDir, 'admin.crt')),
  key: readFileSync(join(pkiDir, 'admin.key')),
};
const log = (msg: string) => process.stdout.write(`${new Date().toISOString()} ${msg}\n`);

function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${server}${path}`,
      { method, ...tls, timeout: 10_000, headers: { 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
        });
        res.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = text;
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`timeout: ${method} ${path}`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

async function list<T>(path: string): Promise<T[]> {
  const res = await api('GET', path);
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${JSON.stringify(res.json)}`);
  return (res.json as { items: T[] }).items;
}

async function provision(pvc: Pvc): Promise<void> {
  const name = `pvc-${pvc.metadata.uid}`;
  const dir = join(volumesDir as string, name);
  await mkdir(dir, { recursive: true });
  // Any pod user may write: the relay runs as 65532, other test pods as whatever they choose.
  await chmod(dir, 0o777);
  const pv = {
    apiVersion: 'v1',
    kind: 'PersistentVolume',
    metadata: { name, annotations: { 'pv.kubernetes.io/provisioned-by': PROVISIONER_NAME } },
    spec: {
      capacity: { storage: pvc.spec.resources?.requests?.storage ?? '1Gi' },
      accessModes: pvc.spec.accessModes ?? ['ReadWriteOnce'],
      persistentVolumeReclaimPolicy: 'Delete',
      storageClassName: STORAGE_CLASS,
      volumeMode: pvc.spec.volumeMode ?? 'Filesystem',
      claimRef: {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        namespace: pvc.metadata.namespace,
        name: pvc.metadata.name,
        uid: pvc.metadata.uid,
      },
      hostPath: { path: dir, type: 'Directory' },
    },
  };
  const res = await api('POST', '/api/v1/persistentvolumes', pv);
  if (res.status === 201) log(`provisioned ${name} for ${pvc.metadata.namespace}/${pvc.metadata.name}`);
  else if (res.status !== 409)
    throw new Error(`create PV ${name}: ${res.status} ${JSON.stringify(res.json)}`);
}

async function reclaim(pv: Pv): Promise<void> {
  const path = pv.spec.hostPath?.path;
  // Only directories this provisioner made; never follow a PV someone edited to point elsewhere.
  if (path?.startsWith(`${volumesDir}/`)) await rm(path, { recursive: true, force: true });
  const res = await api('DELETE', `/api/v1/persistentvolumes/${pv.metadata.name}`);
  if (res.status === 200 || res.status === 202 || res.status === 404) log(`deleted ${pv.metadata.name}`);
  else throw new Error(`delete PV ${pv.metadata.name}: ${res.status} ${JSON.stringify(res.json)}`);
}

async function pass(): Promise<void> {
  const pvcs = await list<Pvc>('/api/v1/persistentvolumeclaims');
  for (const pvc of pvcs) {
    const pending = (pvc.status?.phase ?? 'Pending') === 'Pending' && !pvc.spec.volumeName;
    if (pending && !pvc.metadata.deletionTimestamp && pvc.spec.storageClassName === STORAGE_CLASS) {
      await provision(pvc);
    }
  }
  const pvs = await list<Pv>('/api/v1/persistentvolumes');
  for (const pv of pvs) {
    const ours = pv.metadata.annotations?.['pv.kubernetes.io/provisioned-by'] === PROVISIONER_NAME;
    const released = pv.status?.phase === 'Released' || pv.status?.phase === 'Failed';
    if (ours && released && pv.spec.persistentVolumeReclaimPolicy === 'Delete') await reclaim(pv);
  }
}

log(`provisioner ${PROVISIONER_NAME} for StorageClass ${STORAGE_CLASS}, volumes in ${volumesDir}`);
for (;;) {
  await pass().catch((err: unknown) => log(`error: ${err instanceof Error ? err.message : String(err)}`));
  await new Promise((r) => setTimeout(r, 1000));
}
