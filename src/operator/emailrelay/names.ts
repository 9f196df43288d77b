import { GROUP } from '../api/meta.ts';

/** Names, labels and paths shared by the renderers, the reconciler and the tests. */

export const FIELD_MANAGER = 'email-relay-operator';
export const MANAGED_BY = 'email-relay-operator';

export const CONFIG_HASH_ANNOTATION = `${GROUP}/config-hash`;
/** Hash of the object as last applied: a change in what we render is a change to apply. */
export const APPLIED_HASH_ANNOTATION = `${GROUP}/applied-hash`;

export const CONFIG_DIR = '/etc/email-relay/config';
export const RELAY_CONFIG_KEY = 'relay.yaml';
export const SPOOL_MOUNT = '/var/spool/email-relay';
export const UPSTREAM_SECRET_DIR = '/etc/email-relay/upstream';
export const ROUTE_SECRET_DIR = '/etc/email-relay/routes';
export const TLS_DIR = '/etc/email-relay/tls';
/** The image user (distroless "nonroot", see Dockerfile); the queue volume is group-writable for it. */
export const RELAY_UID = 65532;
/** Seconds the pod keeps serving after it is marked for deletion, so Services stop routing to it first. */
export const PRESTOP_SLEEP_SECONDS = 5;

/** The ClusterRole (deploy/base) that lets a relay watch pods and namespaces to attribute clients. */
export const ATTRIBUTION_CLUSTER_ROLE = 'email-relay-client-attribution';
/**
 * The one ClusterRoleBinding (deploy/base) of that role to every relay's ServiceAccount. The
 * install creates it; the operator may only get, watch and patch this one object (resourceNames)
 * and keeps its subjects equal to the relays' ServiceAccounts. Its roleRef is immutable, so that
 * grant cannot be turned into a binding of anything else.
 */
export const ATTRIBUTION_BINDING = 'email-relay-client-attribution';
/**
 * Labels naming the relay on the per-relay ClusterRoleBindings (`email-relay:<ns>:<relay>`)
 * that operator 0.1 created; the migration deletes only bindings that carry them.
 */
export const RELAY_NAMESPACE_LABEL = `${GROUP}/relay-namespace`;
export const RELAY_NAME_LABEL = `${GROUP}/relay-name`;
export const LEGACY_BINDING_PREFIX = 'email-relay:';

/** The relays' peer listener: queue hand-off (TCP) and shared rate-limit reports (UDP). */
export const PEERS_PORT = 2526;
/** The operator's pods (deploy/base): admitted to the relays' HTTP port to read /summary. */
export const OPERATOR_POD_LABELS = { 'app.kubernetes.io/name': 'email-relay-operator' };

/** StatefulSet names: pod <workload>-<n> mounts claim spool-<workload>-<n>. */
export const podName = (relay: string, ordinal: number) => `${relay}-${ordinal}`;
export const claimName = (relay: string, ordinal: number) => `spool-${relay}-${ordinal}`;
export const drainJobName = (relay: string, ordinal: number) => `${relay}-drain-${ordinal}`;
/** The ordinal of `<base>-<n>` (a pod of base <relay>, a claim of base spool-<relay>). */
export function ordinalOf(base: string, name: string): number | undefined {
  if (!name.startsWith(`${base}-`)) return undefined;
  const rest = name.slice(base.length + 1);
  return /^\d{1,5}$/.test(rest) ? Number(rest) : undefined;
}

export const childNames = (relay: string) => ({
  service: relay,
  headless: `${relay}-headless`,
  workload: relay,
  configMap: `${relay}-config`,
  serviceAccount: relay,
  pdb: relay,
  smtpPolicy: `${relay}-smtp`,
  metricsPolicy: `${relay}-metrics`,
  peersPolicy: `${relay}-peers`,
});

/** Every pod of a relay, its drain Jobs' too: who may use the peer port. */
export function relayPodLabels(relay: string): Record<string, string> {
  return { 'app.kubernetes.io/name': 'email-relay', 'app.kubernetes.io/instance': relay };
}

/** Pod selector: stable for the life of the relay (a Deployment's selector is immutable). */
export function selectorLabels(relay: string): Record<string, string> {
  return {
    'app.kubernetes.io/name': 'email-relay',
    'app.kubernetes.io/instance': relay,
    'app.kubernetes.io/component': 'relay',
  };
}

/** Recommended labels on every child; `managed-by` also scopes the operator's caches. */
export function commonLabels(relay: string): Record<string, string> {
  return {
    ...selectorLabels(relay),
    'app.kubernetes.io/part-of': 'email-relay',
    'app.kubernetes.io/managed-by': MANAGED_BY,
  };
}

export const MANAGED_SELECTOR = `app.kubernetes.io/managed-by=${MANAGED_BY}`;
/** The relays' queue volumes (labelled by the StatefulSet's volumeClaimTemplates). */
export const CLAIM_SELECTOR = 'app.kubernetes.io/name=email-relay,app.kubernetes.io/component=relay';

export function serviceHost(name: string, namespace: string, clusterDomain = 'cluster.local'): string {
  return `${name}.${namespace}.svc.${clusterDomain}`;
}
