import { parseAllDocuments } from 'yaml';
import { type NodeCluster, waitUntil } from './cluster.ts';

// The product on the node, installed the way a platform team installs it: deploy/base and
// deploy/samples from this checkout through kubectl's kustomize, with only the image reference
// (and, for the samples, the upstream: nothing may leave the node) changed.

export const OPERATOR_NAMESPACE = 'email-relay-system';
export const SHIPPED_IMAGE = /ghcr\.io\/bionicaisolutions\/email-relay:[\w.-]+/g;
export const RELAY_NAMESPACE = 'email-server-prod';
export const RELAY_NAME = 'postfix-relay';
export const APP_NAMESPACE = 'my-app';
/** The seed's two DNS names for the relay. */
export const RELAY_HOSTS = [
  `${RELAY_NAME}.${RELAY_NAMESPACE}.svc.cluster.local`,
  `${RELAY_NAME}-headless.${RELAY_NAMESPACE}.svc.cluster.local`,
];
export const RELAY_SELECTOR = 'app.kubernetes.io/name=email-relay,app.kubernetes.io/instance=postfix-relay';

/** `kubectl kustomize <dir>` of this checkout with the shipped image swapped for the node's. */
export async function kustomize(cluster: NodeCluster, dir: string): Promise<string> {
  const out = (await cluster.kubectl(['kustomize', dir])).stdout;
  return out.replace(SHIPPED_IMAGE, cluster.images.relay);
}

export interface Lease {
  spec: { holderIdentity?: string; renewTime?: string };
}

/** deploy/base applied as shipped (image swapped); resolves once the operator holds its Lease. */
export async function deployOperator(cluster: NodeCluster): Promise<{ leader: string; manifests: string }> {
  const manifests = await kustomize(cluster, 'deploy/base');
  await cluster.apply(manifests, ['--server-side']);
  await cluster.kubectl(
    ['-n', OPERATOR_NAMESPACE, 'rollout', 'status', 'deploy/email-relay-operator', '--timeout=180s'],
    {
      timeoutMs: 200_000,
    },
  );
  const leader = await waitUntil(
    'the operator to hold its leader Lease',
    async () => {
      const lease = await cluster.kubectlJson<Lease>([
        '-n',
        OPERATOR_NAMESPACE,
        'get',
        'lease',
        'email-relay-operator',
      ]);
      return lease.spec.holderIdentity || undefined;
    },
    120_000,
  );
  return { leader, manifests };
}

export interface Upstream {
  host: string;
  port: number;
}

/**
 * deploy/samples applied with two changes to the EmailRelay: its upstream is a sink on the node (the
 * shipped one is Google's relay, which this machine must not reach), and retries start after 2 s
 * instead of Postfix's 300 so that mail deferred while the sink is down arrives within a test.
 */
export async function deploySamples(cluster: NodeCluster, upstream: Upstream): Promise<object[]> {
  const docs = parseAllDocuments(await kustomize(cluster, 'deploy/samples')).map(
    (d) => d.toJSON() as { kind: string; spec?: Record<string, unknown> },
  );
  const relay = docs.find((d) => d.kind === 'EmailRelay');
  if (!relay?.spec) throw new Error('deploy/samples has no EmailRelay');
  relay.spec['upstream'] = { host: upstream.host, port: upstream.port, tls: 'opportunistic' };
  relay.spec['queue'] = { ...(relay.spec['queue'] as object), retryInitialSeconds: 2, retryMaxSeconds: 5 };
  await cluster.apply(docs, ['--server-side']);
  return docs;
}

/** Waits until the relay's StatefulSet has all replicas ready at its current revision. */
export async function waitForRelay(cluster: NodeCluster, timeoutMs = 240_000): Promise<void> {
  await waitUntil(
    `StatefulSet ${RELAY_NAMESPACE}/${RELAY_NAME}`,
    async () =>
      (
        await cluster.kubectl(['-n', RELAY_NAMESPACE, 'get', 'sts', RELAY_NAME, '-o', 'name'], {
          allowFail: true,
        })
      ).code === 0,
    timeoutMs,
  );
  await cluster.kubectl(
    ['-n', RELAY_NAMESPACE, 'rollout', 'status', `sts/${RELAY_NAME}`, `--timeout=${timeoutMs / 1000}s`],
    {
      timeoutMs: timeoutMs + 10_000,
    },
  );
}

/**
 * Every EmailRelay and EmailPolicy deleted while the operator still runs (so its finalizers finish
 * and the relays' StatefulSets go with them), then `namespaces` and what is in them (PVCs too).
 */
export async function removeRelays(cluster: NodeCluster, namespaces: string[]): Promise<void> {
  for (const kind of ['emailrelays', 'emailpolicies']) {
    await cluster.kubectl(['delete', kind, '--all', '--all-namespaces', '--wait', '--timeout=180s'], {
      allowFail: true,
      timeoutMs: 200_000,
    });
  }
  await cluster.kubectl(
    ['delete', 'namespace', ...namespaces, '--ignore-not-found', '--wait', '--timeout=180s'],
    {
      timeoutMs: 200_000,
    },
  );
}

/** `kubectl delete -k deploy/base`: the operator deployOperator installed, CRDs and namespace included. */
export async function removeOperator(cluster: NodeCluster): Promise<void> {
  await cluster.kubectl(['delete', '-f', '-', '--ignore-not-found', '--wait', '--timeout=180s'], {
    input: await kustomize(cluster, 'deploy/base'),
    timeoutMs: 200_000,
  });
}
