import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { splitHostPort } from '../lib/host-port.ts';
import { createLogger } from '../lib/logger.ts';
import { createProbeServer, listenHttp } from '../lib/probes.ts';
import { Manager } from './manager.ts';

const SA_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

/**
 * `email-relay operator [--kubeconfig FILE] [--namespace NS]... [--http HOST:PORT]`
 * plus operational flags (also as environment variables, for the Deployment):
 *   --relay-image IMAGE        default image of relays (EMAIL_RELAY_IMAGE; the operator's own)
 *   --leader-elect / --no-leader-elect, --lease-namespace NS (POD_NAMESPACE)
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
    },
    strict: true,
    allowPositionals: false,
  });
  const logger = createLogger(values['log-level'] ?? process.env['LOG_LEVEL'] ?? 'info');
  const kubeConfig = new KubeConfig();
  const kubeconfigPath = values.kubeconfig ?? process.env['KUBECONFIG'];
  if (kubeconfigPath) kubeConfig.loadFromFile(kubeconfigPath);
  else kubeConfig.loadFromDefault(); // in-cluster ServiceAccount, or ~/.kube/config

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

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
