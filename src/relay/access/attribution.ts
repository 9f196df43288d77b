import { KubeClient } from '../../lib/kube/client.ts';
import { loadKubeConnection } from '../../lib/kube/connection.ts';
import { Informer } from '../../lib/kube/informer.ts';
import type { KubeObject, ObjectMeta } from '../../lib/kube/object.ts';
import type { ResourceType } from '../../lib/kube/resources.ts';
import { type LabelSelector, matchesSelector } from '../../lib/label-selector.ts';
import type { Logger } from '../../lib/logger.ts';
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
export interface PodFields {
  metadata: Pick<KubeObject['metadata'], 'name' | 'namespace' | 'uid' | 'resourceVersion'>;
  spec?: { hostNetwork?: boolean };
  status?: { phase?: string; podIP?: string; podIPs?: { ip?: string }[] };
}

type Pod = KubeObject & PodFields;

/** The identity an informer needs of any object: name, namespace, uid, resourceVersion. */
function identity({ name, namespace, uid, resourceVersion }: ObjectMeta): ObjectMeta {
  return {
    name,
    ...(namespace ? { namespace } : {}),
    ...(uid ? { uid } : {}),
    ...(resourceVersion ? { resourceVersion } : {}),
  };
}

/** All the cache keeps of a Pod: a large cluster's pods cost a few hundred bytes each, not KBs. */
export function slimPod(p: Pod): Pod {
  const slim: Pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: identity(p.metadata),
    status: {
      ...(p.status?.phase ? { phase: p.status.phase } : {}),
      ...(p.status?.podIP ? { podIP: p.status.podIP } : {}),
      ...(p.status?.podIPs ? { podIPs: p.status.podIPs.map((x) => ({ ip: x.ip })) } : {}),
    },
  };
  if (p.spec?.hostNetwork) slim.spec = { hostNetwork: true };
  return slim;
}

/** A Namespace's name and labels. */
function slimNamespace(n: KubeObject): KubeObject {
  const { labels } = n.metadata;
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { ...identity(n.metadata), ...(labels ? { labels } : {}) },
  };
}

/** Pod IPs of a pod that holds them: hostNetwork pods share the node's IP and say nothing. */
export function podAddresses(pod: Pick<PodFields, 'spec' | 'status'>): string[] {
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
}

const POD: ResourceType = { apiVersion: 'v1', kind: 'Pod', plural: 'pods', namespaced: true };
const NAMESPACE: ResourceType = {
  apiVersion: 'v1',
  kind: 'Namespace',
  plural: 'namespaces',
  namespaced: false,
};

export function startKubeAttribution(opts: {
  namespaceSelector: LabelSelector;
  kubeconfig?: string;
  logger: Logger;
}): Attribution {
  const client = new KubeClient(loadKubeConnection(opts.kubeconfig));
  const logger = opts.logger;
  const pods = new PodIndex();
  const podInformer = new Informer<Pod>(client, POD, { logger, transform: slimPod });
  const nsInformer = new Informer(client, NAMESPACE, { logger, transform: slimNamespace });
  podInformer.addHandlers({
    onAdd: (p) => pods.upsert(p),
    onUpdate: (_old, p) => pods.upsert(p),
    onDelete: (p) => pods.remove(p),
  });
  // Until both have listed, pod clients get a 4xx (the relay asks synced()).
  podInformer.start();
  nsInformer.start();
  void Promise.all([podInformer.waitForSync(), nsInformer.waitForSync()]).then(() =>
    logger.info({ pods: pods.size, namespaces: nsInformer.list().length }, 'kubernetes attribution synced'),
  );
  /** A namespace's labels ({} when it has none), or undefined when there is no such namespace. */
  const labelsOf = (namespace: string) => {
    const ns = nsInformer.get(undefined, namespace);
    return ns && (ns.metadata.labels ?? {});
  };

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
      const labels = labelsOf(namespace);
      return labels !== undefined && matchesSelector(opts.namespaceSelector, labels);
    },
    labels: labelsOf,
    synced: () => podInformer.hasSynced && nsInformer.hasSynced,
    async stop() {
      await Promise.all([podInformer.stop(), nsInformer.stop()]);
      client.close();
    },
  };
}
