import { CoreV1Api, KubeConfig, makeInformer, type V1Namespace, type V1Pod } from '@kubernetes/client-node';
import type { Logger } from '../../lib/logger.ts';
import type { LabelSelector } from './labels.ts';
import { selectorMatches } from './labels.ts';
import { normalizeAddress } from './networks.ts';

/**
 * Who is sending, from the Kubernetes API: client address -> pod and namespace, and whether that
 * namespace opted in (by label). Two cached watches (pods, namespaces) with read-only RBAC, so
 * the opt-in label is enforced by the relay itself even where the CNI ignores NetworkPolicy.
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

/** Pod IPs of a pod that holds them: hostNetwork pods share the node's IP and say nothing. */
export function podAddresses(pod: V1Pod): string[] {
  if (pod.spec?.hostNetwork) return [];
  const phase = pod.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return [];
  const ips = (pod.status?.podIPs ?? []).map((p) => p.ip).filter((ip): ip is string => !!ip);
  if (!ips.length && pod.status?.podIP) ips.push(pod.status.podIP);
  return ips.map(normalizeAddress);
}

export function startKubeAttribution(opts: {
  namespaceSelector: LabelSelector;
  kubeconfig?: string;
  logger: Logger;
}): Attribution {
  const kc = new KubeConfig();
  if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
  else kc.loadFromDefault();
  const core = kc.makeApiClient(CoreV1Api);
  const byAddress = new Map<string, Attributed & { uid: string }>();
  const namespaces = new Map<string, Record<string, string>>();
  let podsSynced = false;
  let nsSynced = false;
  let stopped = false;

  const pods = makeInformer<V1Pod>(kc, '/api/v1/pods', () => core.listPodForAllNamespaces());
  const nss = makeInformer<V1Namespace>(kc, '/api/v1/namespaces', () => core.listNamespace());

  const setPod = (pod: V1Pod) => {
    const uid = pod.metadata?.uid ?? '';
    for (const [addr, a] of byAddress) if (a.uid === uid) byAddress.delete(addr);
    for (const addr of podAddresses(pod)) {
      byAddress.set(addr, { namespace: pod.metadata?.namespace ?? '', pod: pod.metadata?.name ?? '', uid });
    }
  };
  const dropPod = (pod: V1Pod) => {
    const uid = pod.metadata?.uid ?? '';
    for (const [addr, a] of byAddress) if (a.uid === uid) byAddress.delete(addr);
  };
  pods.on('add', setPod);
  pods.on('update', setPod);
  pods.on('delete', dropPod);
  nss.on('add', (n) => namespaces.set(n.metadata?.name ?? '', n.metadata?.labels ?? {}));
  nss.on('update', (n) => namespaces.set(n.metadata?.name ?? '', n.metadata?.labels ?? {}));
  nss.on('delete', (n) => namespaces.delete(n.metadata?.name ?? ''));
  // client-node informers stop on a watch error; restart them (the list resyncs the cache).
  for (const [name, inf] of [
    ['pods', pods],
    ['namespaces', nss],
  ] as const) {
    inf.on('error', (err: unknown) => {
      if (stopped) return;
      opts.logger.warn(
        { err: (err as Error)?.message ?? String(err), watch: name },
        'kubernetes watch failed; restarting',
      );
      setTimeout(() => {
        if (!stopped) inf.start().catch(() => undefined);
      }, 2000).unref();
    });
  }

  // Start without blocking the relay: until both watches have listed, pod clients get a 4xx.
  const begin = (name: string, inf: { start(): Promise<void> }, done: () => void) => {
    inf.start().then(done, (err: unknown) => {
      if (stopped) return;
      opts.logger.warn(
        { err: (err as Error)?.message ?? String(err), watch: name },
        'kubernetes list failed; retrying',
      );
      setTimeout(() => begin(name, inf, done), 2000).unref();
    });
  };
  const onSynced = () => {
    if (podsSynced && nsSynced)
      opts.logger.info(
        { pods: byAddress.size, namespaces: namespaces.size },
        'kubernetes attribution synced',
      );
  };
  begin('pods', pods, () => {
    podsSynced = true;
    onSynced();
  });
  begin('namespaces', nss, () => {
    nsSynced = true;
    onSynced();
  });

  return {
    async lookup(address, waitMs = 0) {
      const a = normalizeAddress(address);
      const deadline = Date.now() + waitMs;
      for (;;) {
        const hit = byAddress.get(a);
        if (hit) return { namespace: hit.namespace, pod: hit.pod };
        if (Date.now() >= deadline) return undefined;
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    admitted(namespace) {
      const labels = namespaces.get(namespace);
      return labels !== undefined && selectorMatches(opts.namespaceSelector, labels);
    },
    labels: (namespace) => namespaces.get(namespace),
    synced: () => podsSynced && nsSynced,
    async stop() {
      stopped = true;
      await Promise.all([pods.stop(), nss.stop()]);
    },
  };
}
