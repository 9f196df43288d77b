import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { splitHostPort } from '../lib/host-port.ts';
import type { KubeConfigLike } from '../lib/kube/client.ts';
import { KubeConfigError, type KubeConnection, loadKubeConnection } from '../lib/kube/connection.ts';
import { createLogger } from '../lib/logger.ts';
import { createProbeServer, listenHttp } from '../lib/probes.ts';
import { Manager } from './manager.ts';

const SA_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

/**
 * `email-relay operator [--kubeconfig FILE] [--namespace NS]... [--http HOST:PORT]`
 * --namespace: watch only these namespaces, with Roles there (deploy/namespaced); the operator
 * then touches no RBAC object (the install binds the relays' attribution role). Without it, the
 * cluster-wide install (deploy/base): the operator keeps the one attribution binding's subjects.
 * plus operational flags (also as environment variables, for the Deployment):
 *   --relay-image IMAGE        default image of relays (EMAIL_RELAY_IMAGE; the operator's own)
 *   --leader-elect / --no-leader-elect, --lease-namespace NS (POD_NAMESPACE)
 *   --workers N                concurrent reconciles of EmailRelays (EMAIL_RELAY_OPERATOR_WORKERS; 4)
 *   --resync-seconds S         re-reconcile everything this often (EMAIL_RELAY_OPERATOR_RESYNC_SECONDS; 600)
 */
export async function operatorCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      kubeconfig: { type: 'string' },
      namespace: { type: 'string', multiple: true },
      http: { type: 'string' },
      'relay-image': { type: 'string' },
      'leader-elect': { type: 'boolean' },
      'no-leader-elect': { type: 'boolean' },
      'lease-namespace': { type: 'string' },
      'log-level': { type: 'string' },
      'cluster-domain': { type: 'string' },
      workers: { type: 'string' },
      'resync-seconds': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  const logger = createLogger(values['log-level'] ?? process.env['LOG_LEVEL'] ?? 'info');
  const kubeConfig = await loadKube(values.kubeconfig);
  const workers = positiveInt('--workers', values.workers ?? process.env['EMAIL_RELAY_OPERATOR_WORKERS'], 4);
  const resyncSeconds = positiveInt(
    '--resync-seconds',
    values['resync-seconds'] ?? process.env['EMAIL_RELAY_OPERATOR_RESYNC_SECONDS'],
    600,
  );

  const namespaces = (values.namespace ?? []).flatMap((n) => n.split(',')).filter(Boolean);
  const image = values['relay-image'] ?? process.env['EMAIL_RELAY_IMAGE'];
  if (!image) {
    const err = new Error(
      'the relay image is unknown: set --relay-image or EMAIL_RELAY_IMAGE (the operator image)',
    );
    throw Object.assign(err, { code: 'ERR_PARSE_ARGS_MISSING_IMAGE' });
  }
  const leaseNamespace =
    values['lease-namespace'] ?? process.env['POD_NAMESPACE'] ?? readIfExists(SA_NAMESPACE_FILE);
  const elect = values['no-leader-elect'] ? false : (values['leader-elect'] ?? leaseNamespace !== undefined);
  if (elect && !leaseNamespace) throw new Error('leader election needs --lease-namespace or POD_NAMESPACE');

  const manager = new Manager({
    kubeConfig,
    logger,
    namespaces,
    defaultImage: image,
    leaderElection: elect && leaseNamespace ? { namespace: leaseNamespace } : false,
    ...(values['cluster-domain'] ? { clusterDomain: values['cluster-domain'] } : {}),
    workers,
    resyncMs: resyncSeconds * 1000,
  });

  // A standby is ready too: its caches are warm and it can take over at once.
  const server = createProbeServer(manager.metrics.registry, () =>
    manager.synced
      ? { ready: true, detail: manager.isLeader ? 'leader' : 'standby' }
      : { ready: false, detail: 'caches not synced' },
  );
  const http = values.http ?? process.env['EMAIL_RELAY_OPERATOR_HTTP'] ?? '0.0.0.0:8080';
  const { host, port } = splitHostPort(http);
  await listenHttp(server, host, port);
  logger.info(
    { http: (server.address() as AddressInfo).port, image, leaderElection: elect },
    'operator starting',
  );

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) process.exit(1);
    stopping = true;
    logger.info({ signal }, 'shutting down');
    manager.stop().then(
      () => server.close(() => process.exit(0)),
      (err: Error) => {
        logger.error({ err: err.message }, 'unclean shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  await manager.start();
}

/**
 * --kubeconfig, $KUBECONFIG, the in-cluster service account or ~/.kube/config (loadKubeConnection's
 * order), read without @kubernetes/client-node (~60 MB of the operator's RSS); that client is
 * loaded only for what needs it: exec plugins and auth providers (cloud kubeconfigs on a laptop).
 */
async function loadKube(file: string | undefined): Promise<KubeConfigLike | KubeConnection> {
  try {
    return loadKubeConnection(file);
  } catch (err) {
    if (!(err instanceof KubeConfigError) || !/exec|auth-provider/.test(err.message)) throw err;
    const { KubeConfig } = await import('@kubernetes/client-node');
    const kc = new KubeConfig();
    if (file) kc.loadFromFile(file);
    else kc.loadFromDefault();
    return kc;
  }
}

function positiveInt(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    const err = new Error(`${flag}: expected a positive integer, got "${value}"`);
    throw Object.assign(err, { code: 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' });
  }
  return n;
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
