import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, resolve } from 'node:path';
import { parse } from 'yaml';

/**
 * Where the Kubernetes API is and how to authenticate, from a kubeconfig or the pod's service
 * account: the part of `@kubernetes/client-node`'s KubeConfig the relay needs. The relay does not
 * load that client (it adds ~80 MB RSS to every replica); the operator does.
 */
export interface KubeConnection {
  /** https://host:port, without a trailing slash */
  server: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  insecureSkipTlsVerify?: boolean;
  tlsServerName?: string;
  /** Read on every request: projected service-account tokens are rotated by the kubelet. */
  token?: () => string | undefined;
}

export const IN_CLUSTER_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export class KubeConfigError extends Error {}

/** Explicit path, then $KUBECONFIG, then the in-cluster service account, then ~/.kube/config. */
export function loadKubeConnection(
  path?: string,
  env: NodeJS.ProcessEnv = process.env,
  inClusterDir = IN_CLUSTER_DIR,
): KubeConnection {
  if (path) return fromKubeconfigFile(path);
  const fromEnv = env.KUBECONFIG?.split(':').find((p) => p && existsSync(p));
  if (fromEnv) return fromKubeconfigFile(fromEnv);
  if (env.KUBERNETES_SERVICE_HOST && existsSync(`${inClusterDir}/token`)) return inCluster(env, inClusterDir);
  const home = resolve(homedir(), '.kube/config');
  if (existsSync(home)) return fromKubeconfigFile(home);
  throw new KubeConfigError('no kubeconfig: set access.kubernetes.kubeconfig, $KUBECONFIG, or run in a pod');
}

export function inCluster(env: NodeJS.ProcessEnv, dir = IN_CLUSTER_DIR): KubeConnection {
  const host = env.KUBERNETES_SERVICE_HOST ?? '';
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  const tokenFile = `${dir}/token`;
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    ca: readFileSync(`${dir}/ca.crt`),
    token: () => readFileSync(tokenFile, 'utf8').trim(),
  };
}

function fromKubeconfigFile(path: string): KubeConnection {
  let doc: unknown;
  try {
    doc = parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new KubeConfigError(`kubeconfig ${path}: ${(err as Error).message}`);
  }
  return fromKubeconfig(doc, dirname(path), path);
}

interface Named<T> {
  name?: string;
  cluster?: T;
  user?: T;
  context?: T;
}
type Fields = Record<string, unknown>;

/** The current context's cluster and user; relative file paths resolve against the kubeconfig's folder. */
export function fromKubeconfig(doc: unknown, baseDir: string, source = 'kubeconfig'): KubeConnection {
  const fail = (what: string): never => {
    throw new KubeConfigError(`${source}: ${what}`);
  };
  const cfg = (doc ?? {}) as {
    'current-context'?: string;
    contexts?: Named<Fields>[];
    clusters?: Named<Fields>[];
    users?: Named<Fields>[];
  };
  const ctxName = cfg['current-context'] ?? fail('no current-context');
  const ctx =
    cfg.contexts?.find((c) => c.name === ctxName)?.context ?? fail(`context "${ctxName}" not found`);
  const cluster =
    cfg.clusters?.find((c) => c.name === ctx.cluster)?.cluster ??
    fail(`cluster "${String(ctx.cluster)}" not found`);
  const user = ctx.user === undefined ? {} : (cfg.users?.find((u) => u.name === ctx.user)?.user ?? {});
  if (user.exec || user['auth-provider'])
    fail(
      `user "${String(ctx.user)}": exec and auth-provider credentials are not supported; use a token or a client certificate`,
    );

  const str = (o: Fields, k: string) => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
  const bytes = (o: Fields, k: string): Buffer | undefined => {
    const data = str(o, `${k}-data`);
    if (data) return Buffer.from(data, 'base64');
    const file = str(o, k);
    return file ? readFileSync(resolve(baseDir, file)) : undefined;
  };
  const server = (str(cluster, 'server') ?? fail('cluster has no server')).replace(/\/+$/, '');
  const token = str(user, 'token');
  const tokenFile = str(user, 'tokenFile');
  const conn: KubeConnection = { server };
  const ca = bytes(cluster, 'certificate-authority');
  const cert = bytes(user, 'client-certificate');
  const key = bytes(user, 'client-key');
  if (ca) conn.ca = ca;
  if (cert) conn.cert = cert;
  if (key) conn.key = key;
  if (cluster['insecure-skip-tls-verify'] === true) conn.insecureSkipTlsVerify = true;
  const sni = str(cluster, 'tls-server-name');
  if (sni) conn.tlsServerName = sni;
  if (token) conn.token = () => token;
  else if (tokenFile) {
    const file = resolve(baseDir, tokenFile);
    conn.token = () => readFileSync(file, 'utf8').trim();
  }
  return conn;
}
