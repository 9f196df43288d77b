import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { DRAIN_ANNOTATION, type PeersConfig } from '../../config/peers.ts';
import { KubeClient } from '../../lib/kube/client.ts';
import { IN_CLUSTER_DIR, loadKubeConnection } from '../../lib/kube/connection.ts';
import type { Logger } from '../../lib/logger.ts';

/**
 * Whether this relay leaves for good on SIGTERM (scale-down: hand the queue to peers) or comes
 * back with the same volume (rollout, restart, node drain: keep the queue). The operator marks
 * the pods a scale-down removes with DRAIN_ANNOTATION before it lowers the StatefulSet's
 * replicas; the pod reads its own object from the API (not a cache) when the signal comes.
 * POD_NAME and POD_NAMESPACE come from the downward API.
 */
export async function leavingForGood(
  config: PeersConfig,
  opts: { kubeconfig?: string; logger: Logger },
): Promise<boolean> {
  if (config.drainOnShutdown !== 'whenMarked') return config.drainOnShutdown === 'always';
  const name = process.env.POD_NAME || hostname();
  const namespace =
    process.env.POD_NAMESPACE ||
    (await readFile(`${IN_CLUSTER_DIR}/namespace`, 'utf8').catch(() => '')).trim();
  if (!namespace) {
    opts.logger.warn('drainOnShutdown whenMarked: own namespace unknown (POD_NAMESPACE): keeping the queue');
    return false;
  }
  try {
    const client = new KubeClient(loadKubeConnection(opts.kubeconfig));
    // A list with a field selector, not a get: the relay's role lists and watches pods only.
    const list = await client.request<{ items?: { metadata?: { annotations?: Record<string, string> } }[] }>(
      'GET',
      `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`,
      { query: { fieldSelector: `metadata.name=${name}` }, signal: AbortSignal.timeout(10_000) },
    );
    const pod = list?.items?.[0];
    return pod?.metadata?.annotations?.[DRAIN_ANNOTATION] === 'true';
  } catch (err) {
    // The queue stays on the volume; the operator drains a stranded volume with a Job.
    opts.logger.warn({ err, pod: `${namespace}/${name}` }, 'cannot read own pod: keeping the queue');
    return false;
  }
}
