import { loadKubeConnection } from '../../lib/kube/connection.ts';
import { type KubeObject, listWatch } from '../../lib/kube/list-watch.ts';
import type { Logger } from '../../lib/logger.ts';
import type { LabelSelector } from './labels.ts';
import { selectorMatches } from './labels.ts';
import { normalizeAddress } from './networks.ts';

/**
 * Who is sending, from the Kubernetes API: client address -> pod and namespace, and whether that
 * namespace opted in (by label). Two watches (pods, namespaces) with read-only RBAC, so the
 * opt-in label is enforced by the relay itself even where the CNI ignores NetworkPolicy. Only
 * what attribution needs is kept (address -> pod, namespace -> labels), not whole objects.
 */

export interface Attributed {
  namespace: string;
  pod: string;
}

export interface Attribution {
  /** The pod behind a client address, waiting up to `waitMs` for a pod the watch has not seen yet. */
  lookup(address: string, waitMs?: number): Promise<Attributed | undefined>;
  /** Whether the namespace carries the opt-in labels. */
  admitted(namespace: string): boolean;
  /** A namespace's labels (for policies that select client namespaces by label). */
  labels(namespace: string): Record<string, string> | undefined;
  /** Both watches have listed once. */
  synced(): boolean;
  stop(): Promise<void>;
}

/** The fields of a Pod attribution reads. */
export interface PodFields extends KubeObject {
  spec?: { hostNetwork?: boolean };
  status?: { phase?: string; podIP?: string; podIPs?: { ip?: string }[] };
}

interface NamespaceFields extends KubeObject {
  metadata?: KubeObject['metadata'] & { labels?: Record<string, string> };
}

/** Pod IPs of a pod that holds them: hostNetwork pods share the node's IP and say nothing. */
export function podAddresses(pod: PodFields): string[] {
  if (pod.spec?.hostNetwork) return [];
  const phase = pod.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return [];
  const ips = (pod.status?.podIPs ?? []).map((p) => p.ip).filter((ip): ip is string => !!ip);
  if (!ips.length && pod.status?.podIP) ips.push(pod.status.podIP);
  return ips.map(normalizeAddress);
}

/** address -> pod, maintained from pod events; a pod's old addresses go when it changes. */
export class PodIndex {
  private readonly byAddress = new Map<string, Attributed & { uid: string }>();
  private readonly byUid = new Map<string, string[]>();

  get size(): number {
    return this.byAddress.size;
  }
  get(address: string): Attributed | undefined {
    const hit = this.byAddress.get(address);
    return hit && { namespace: hit.namespace, pod: hit.pod };
  }
  upsert(pod: PodFields): void {
    const uid = pod.metadata?.uid ?? '';
    this.remove(pod);
    const addrs = podAddresses(pod);
    if (!addrs.length) return;
    this.byUid.set(uid, addrs);
    const at = { namespace: pod.metadata?.namespace ?? '', pod: pod.metadata?.name ?? '', uid };
    for (const a of addrs) this.byAddress.set(a, at);
  }
  remove(pod: PodFields): void {
    const uid = pod.metadata?.uid ?? '';
    // An address may already belong to a newer pod (IPs are reused): leave that one alone.
    for (const a of this.byUid.get(uid) ?? [])
      if (this.byAddress.get(a)?.uid === uid) this.byAddress.delete(a);
    this.byUid.delete(uid);
  }
  replace(pods: PodFields[]): void {
    this.byAddress.clear();
    this.byUid.clear();
    for (const p of pods) this.upsert(p);
  }
}

export function startKubeAttribution(opts: {
  namespaceSelector: LabelSelector;
  kubeconfig?: string;
  logger: Logger;
  watchTimeoutSeconds?: number;
}): Attribution {
  const conn = loadKubeConnection(opts.kubeconfig);
  const pods = new PodIndex();
  const namespaces = new Map<string, Record<string, string>>();
  const nsName = (n: NamespaceFields) => n.metadata?.name ?? '';
  const onSynced = () => {
    if (podWatch.synced() && nsWatch.synced())
      opts.logger.info({ pods: pods.size, namespaces: namespaces.size }, 'kubernetes attribution synced');
  };
  const common = {
    logger: opts.logger,
    onSynced,
    ...(opts.watchTimeoutSeconds ? { watchTimeoutSeconds: opts.watchTimeoutSeconds } : {}),
  };
  // Until both have listed, pod clients get a 4xx (the relay asks synced()).
  const podWatch = listWatch<PodFields>(conn, '/api/v1/pods', pods, common);
  const nsWatch = listWatch<NamespaceFields>(
    conn,
    '/api/v1/namespaces',
    {
      replace(items) {
        namespaces.clear();
        for (const n of items) namespaces.set(nsName(n), n.metadata?.labels ?? {});
      },
      upsert: (n) => namespaces.set(nsName(n), n.metadata?.labels ?? {}),
      remove: (n) => namespaces.delete(nsName(n)),
    },
    common,
  );

  return {
    async lookup(address, waitMs = 0) {
      const a = normalizeAddress(address);
      const deadline = Date.now() + waitMs;
      for (;;) {
        const hit = pods.get(a);
        if (hit) return hit;
        if (Date.now() >= deadline) return undefined;
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    admitted(namespace) {
      const labels = namespaces.get(namespace);
      return labels !== undefined && selectorMatches(opts.namespaceSelector, labels);
    },
    labels: (namespace) => namespaces.get(namespace),
    synced: () => podWatch.synced() && nsWatch.synced(),
    async stop() {
      podWatch.stop();
      nsWatch.stop();
    },
  };
}
