import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { OPENSSL_HINT, requireTool } from './tools.ts';

// A fresh throwaway PKI per control plane, made with the openssl CLI (node:crypto cannot issue
// X.509 certificates). ECDSA P-256 everywhere: generation takes milliseconds.

const run = promisify(execFile);

export interface Pki {
  dir: string;
  caCert: string;
  caKey: string;
  servingCert: string;
  servingKey: string;
  /** CN=admin, O=system:masters: cluster-admin under RBAC without any binding. */
  adminCert: string;
  adminKey: string;
  /** Service-account token signing key pair (apiserver issues/verifies, controller-manager mints). */
  saKey: string;
  saPub: string;
}

/** IP the apiserver's `kubernetes` Service gets: first address of --service-cluster-ip-range. */
export const SERVICE_CLUSTER_IP_RANGE = '10.0.0.0/24';
const KUBERNETES_SERVICE_IP = '10.0.0.1';
const DAYS = '30';

export async function createPki(dir: string): Promise<Pki> {
  requireTool('openssl', ['version'], OPENSSL_HINT);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const p = (name: string) => join(dir, name);
  const pki: Pki = {
    dir,
    caCert: p('ca.crt'),
    caKey: p('ca.key'),
    servingCert: p('apiserver.crt'),
    servingKey: p('apiserver.key'),
    adminCert: p('admin.crt'),
    adminKey: p('admin.key'),
    saKey: p('sa.key'),
    saPub: p('sa.pub'),
  };

  await Promise.all([pki.caKey, pki.servingKey, pki.adminKey, pki.saKey].map(genKey));
  await run('openssl', ['pkey', '-in', pki.saKey, '-pubout', '-out', pki.saPub]);

  await writeFile(
    p('ca.cnf'),
    [
      '[req]',
      'distinguished_name = dn',
      '[dn]',
      '[v3_ca]',
      'basicConstraints = critical, CA:TRUE',
      'keyUsage = critical, keyCertSign, cRLSign, digitalSignature',
      'subjectKeyIdentifier = hash',
      '',
    ].join('\n'),
  );
  await run('openssl', [
    'req',
    '-x509',
    '-new',
    '-key',
    pki.caKey,
    '-subj',
    '/CN=email-relay-test-ca',
    '-days',
    DAYS,
    '-config',
    p('ca.cnf'),
    '-extensions',
    'v3_ca',
    '-out',
    pki.caCert,
  ]);

  const sans = [
    'DNS:localhost',
    'DNS:kubernetes',
    'DNS:kubernetes.default',
    'DNS:kubernetes.default.svc',
    'DNS:kubernetes.default.svc.cluster.local',
    'IP:127.0.0.1',
    `IP:${KUBERNETES_SERVICE_IP}`,
  ];
  await Promise.all([
    issue(pki, 'apiserver', '/CN=kube-apiserver', [
      'extendedKeyUsage = serverAuth',
      `subjectAltName = ${sans.join(', ')}`,
    ]),
    issue(pki, 'admin', '/O=system:masters/CN=admin', ['extendedKeyUsage = clientAuth']),
  ]);
  return pki;
}

async function genKey(path: string): Promise<void> {
  await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path]);
}

/** Signs `<name>.key` into `<name>.crt` with the CA, adding `extensions` (openssl extfile lines). */
async function issue(pki: Pki, name: string, subject: string, extensions: string[]): Promise<void> {
  const base = join(pki.dir, name);
  await writeFile(
    `${base}.ext`,
    [
      'basicConstraints = critical, CA:FALSE',
      'keyUsage = critical, digitalSignature, keyEncipherment',
      'authorityKeyIdentifier = keyid',
      ...extensions,
      '',
    ].join('\n'),
  );
  const { stdout: csr } = await run('openssl', ['req', '-new', '-key', `${base}.key`, '-subj', subject]);
  await writeFile(`${base}.csr`, csr);
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    `${base}.csr`,
    '-CA',
    pki.caCert,
    '-CAkey',
    pki.caKey,
    '-CAcreateserial',
    '-days',
    DAYS,
    '-extfile',
    `${base}.ext`,
    '-out',
    `${base}.crt`,
  ]);
}

/** Admin kubeconfig with inline credentials, so it stays valid wherever it is copied. */
export async function writeKubeconfig(path: string, pki: Pki, server: string): Promise<void> {
  const b64 = async (file: string) => (await readFile(file)).toString('base64');
  const [ca, cert, key] = await Promise.all([b64(pki.caCert), b64(pki.adminCert), b64(pki.adminKey)]);
  const yaml = `apiVersion: v1
kind: Config
clusters:
- name: email-relay-test
  cluster:
    server: ${server}
    certificate-authority-data: ${ca}
users:
- name: admin
  user:
    client-certificate-data: ${cert}
    client-key-data: ${key}
contexts:
- name: email-relay-test
  context:
    cluster: email-relay-test
    user: admin
    namespace: default
current-context: email-relay-test
`;
  await writeFile(path, yaml, { mode: 0o600 });
}
