// Type-only: the client's model types check every rendered field's name and type at compile time.
import type {
  V1ConfigMap,
  V1Container,
  V1Deployment,
  V1DeploymentSpec,
  V1NetworkPolicy,
  V1NetworkPolicyPeer,
  V1NetworkPolicyPort,
  V1PodDisruptionBudget,
  V1PodSpec,
  V1PodTemplateSpec,
  V1Service,
  V1ServiceAccount,
  V1ServicePort,
  V1StatefulSet,
  V1StatefulSetSpec,
  V1TopologySpreadConstraint,
  V1Volume,
  V1VolumeMount,
} from '@kubernetes/client-node';
import type { RelayConfig } from '../../config/schema.ts';
import type { EmailRelaySpec } from '../api/emailrelay.ts';
import { API_VERSION, GROUP, type KubeObject, type LabelSelector, type OwnerReference } from '../api/meta.ts';
import type { ValidPolicy } from '../emailpolicy/select.ts';
import { renderConfigData, renderRelayConfig } from './config.ts';
import { contentHash } from './hash.ts';
import {
  CONFIG_DIR,
  CONFIG_HASH_ANNOTATION,
  childNames,
  claimName,
  commonLabels,
  drainJobName,
  OPERATOR_POD_LABELS,
  PEERS_PORT,
  PRESTOP_SLEEP_SECONDS,
  RELAY_CONFIG_KEY,
  RELAY_UID,
  ROUTE_SECRET_DIR,
  relayPodLabels,
  SPOOL_MOUNT,
  selectorLabels,
  TLS_DIR,
  UPSTREAM_SECRET_DIR,
} from './names.ts';

/**
 * Pure renderers: an EmailRelay spec (already parsed and defaulted) -> the Kubernetes objects
 * that run it. The reconciler applies what these return and deletes managed children they no
 * longer return; nothing here talks to the API.
 */

export interface RelayRef {
  name: string;
  namespace: string;
  uid: string;
}

export interface RenderInput {
  relay: RelayRef;
  spec: EmailRelaySpec;
  /** Image when spec.image is unset: the operator's own. */
  defaultImage: string;
  policies: readonly ValidPolicy[];
  clusterDomain?: string;
  /** The operator's namespace: its pods may read the relays' /summary (NetworkPolicy). */
  operatorNamespace?: string;
}

export interface Rendered {
  config: RelayConfig;
  configData: Record<string, string>;
  configHash: string;
  workloadKind: 'Deployment' | 'StatefulSet';
  objects: KubeObject[];
}

export function ownerReference(relay: RelayRef): OwnerReference {
  return {
    apiVersion: API_VERSION,
    kind: 'EmailRelay',
    name: relay.name,
    uid: relay.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

function meta(relay: RelayRef, name: string) {
  return {
    name,
    namespace: relay.namespace,
    labels: commonLabels(relay.name),
    ownerReferences: [ownerReference(relay)],
  };
}

/** The args the relay container runs with (also used by the tests that run the relay locally). */
export function relayArgs(): string[] {
  return ['relay', '--config', `${CONFIG_DIR}/${RELAY_CONFIG_KEY}`];
}

export function terminationGraceSeconds(spec: EmailRelaySpec): number {
  // preStop sleep, then SIGTERM and up to shutdownGraceSeconds of draining, then (a pod a
  // scale-down removes) up to drainTimeoutSeconds of handing the queue to peers, plus headroom.
  return PRESTOP_SLEEP_SECONDS + spec.shutdownGraceSeconds + spec.queue.drainTimeoutSeconds + 5;
}

/**
 * client-node's pod template, except for what the EmailRelay passes through as the user wrote it
 * (topology spread constraints, validated by the API server) and resource quantities, which the
 * spec also takes as numbers (client-node types them as strings only).
 */
type Container = Omit<V1Container, 'resources'> & { resources?: EmailRelaySpec['resources'] };
type PodTemplate = Omit<V1PodTemplateSpec, 'spec'> & {
  spec: Omit<V1PodSpec, 'containers' | 'topologySpreadConstraints'> & {
    containers: Container[];
    topologySpreadConstraints: (V1TopologySpreadConstraint | Record<string, unknown>)[];
  };
};
type WithTemplate<W extends { spec?: unknown }, S> = Omit<W, 'spec'> & {
  spec: Omit<S, 'template'> & { template: PodTemplate };
};

export function renderPodTemplate(
  relay: RelayRef,
  spec: EmailRelaySpec,
  image: string,
  configHash: string,
): PodTemplate {
  const names = childNames(relay.name);
  const persistent = spec.queue.persistence.enabled;
  const creds = spec.upstream.credentialsSecretRef;
  const routes = spec.upstream.routes ?? [];

  const volumes: V1Volume[] = [
    { name: 'config', configMap: { name: names.configMap } },
    { name: 'tmp', emptyDir: { sizeLimit: '64Mi' } },
  ];
  const mounts: V1VolumeMount[] = [
    { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
    { name: 'spool', mountPath: SPOOL_MOUNT },
    { name: 'tmp', mountPath: '/tmp' },
  ];
  if (!persistent) volumes.push({ name: 'spool', emptyDir: {} });
  if (creds) {
    volumes.push({
      name: 'upstream-credentials',
      secret: {
        secretName: creds.name,
        items: [
          { key: creds.usernameKey, path: creds.usernameKey },
          { key: creds.passwordKey, path: creds.passwordKey },
        ],
      },
    });
    mounts.push({ name: 'upstream-credentials', mountPath: UPSTREAM_SECRET_DIR, readOnly: true });
  }
  routes.forEach((r, i) => {
    if (!r.credentialsSecretRef) return;
    const { name, usernameKey, passwordKey } = r.credentialsSecretRef;
    volumes.push({
      name: `route-${i}-credentials`,
      secret: {
        secretName: name,
        items: [
          { key: usernameKey, path: usernameKey },
          { key: passwordKey, path: passwordKey },
        ],
      },
    });
    mounts.push({ name: `route-${i}-credentials`, mountPath: `${ROUTE_SECRET_DIR}/${i}`, readOnly: true });
  });
  if (spec.tls) {
    volumes.push({ name: 'tls', secret: { secretName: spec.tls.secretName } });
    mounts.push({ name: 'tls', mountPath: TLS_DIR, readOnly: true });
  }

  const privileged = Math.min(spec.smtp.port, spec.metrics.port) < 1024;
  const httpGet = (path: string) => ({ path, port: 'http' });
  const container: Container = {
    name: 'relay',
    image,
    ...(spec.imagePullPolicy ? { imagePullPolicy: spec.imagePullPolicy } : {}),
    args: relayArgs(),
    ports: [
      { name: 'smtp', containerPort: spec.smtp.port, protocol: 'TCP' },
      { name: 'http', containerPort: spec.metrics.port, protocol: 'TCP' },
      { name: 'peers', containerPort: PEERS_PORT, protocol: 'TCP' },
      { name: 'peers-udp', containerPort: PEERS_PORT, protocol: 'UDP' },
    ],
    // Who am I: a pod a scale-down removes reads its own drain annotation (relay/peers/leaving.ts).
    env: [
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
    ],
    // Probes are HTTP, never SMTP: no log noise, and readiness turns false while draining.
    startupProbe: { httpGet: httpGet('/healthz'), periodSeconds: 2, failureThreshold: 60 },
    readinessProbe: { httpGet: httpGet('/readyz'), periodSeconds: 5, failureThreshold: 2 },
    livenessProbe: {
      httpGet: httpGet('/healthz'),
      periodSeconds: 10,
      failureThreshold: 6,
      timeoutSeconds: 5,
    },
    // Keep serving while endpoints controllers and kube-proxy forget the pod, then SIGTERM drains.
    lifecycle: { preStop: { sleep: { seconds: PRESTOP_SLEEP_SECONDS } } },
    resources: spec.resources,
    securityContext: {
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    },
    volumeMounts: mounts,
  };

  const s = spec.scheduling;
  return {
    metadata: {
      labels: commonLabels(relay.name),
      annotations: { [CONFIG_HASH_ANNOTATION]: configHash },
    },
    spec: {
      serviceAccountName: names.serviceAccount,
      // A token only when the relay watches pods and namespaces (client attribution).
      automountServiceAccountToken: spec.access.attribution,
      enableServiceLinks: false,
      terminationGracePeriodSeconds: terminationGraceSeconds(spec),
      securityContext: {
        runAsNonRoot: true,
        runAsUser: RELAY_UID,
        runAsGroup: RELAY_UID,
        fsGroup: RELAY_UID,
        fsGroupChangePolicy: 'OnRootMismatch',
        seccompProfile: { type: 'RuntimeDefault' },
        // Port 25 as non-root: a namespaced, "safe" sysctl since Kubernetes 1.22.
        ...(privileged ? { sysctls: [{ name: 'net.ipv4.ip_unprivileged_port_start', value: '0' }] } : {}),
      },
      containers: [container],
      volumes,
      ...(s.nodeSelector ? { nodeSelector: s.nodeSelector } : {}),
      ...(s.tolerations ? { tolerations: s.tolerations } : {}),
      ...(s.affinity ? { affinity: s.affinity } : {}),
      ...(s.priorityClassName ? { priorityClassName: s.priorityClassName } : {}),
      topologySpreadConstraints: s.topologySpreadConstraints ?? [
        {
          maxSkew: 1,
          topologyKey: 'kubernetes.io/hostname',
          whenUnsatisfiable: 'ScheduleAnyway',
          labelSelector: { matchLabels: selectorLabels(relay.name) },
        },
      ],
    },
  };
}

export function renderWorkload(
  relay: RelayRef,
  spec: EmailRelaySpec,
  image: string,
  configHash: string,
): KubeObject {
  const names = childNames(relay.name);
  const template = renderPodTemplate(relay, spec, image, configHash);
  const selector = { matchLabels: selectorLabels(relay.name) };
  if (!spec.queue.persistence.enabled) {
    return {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: meta(relay, names.workload),
      spec: {
        replicas: spec.replicas,
        selector,
        minReadySeconds: 5,
        // Never below the wanted capacity during a rollout: surge first, then drain the old pod.
        strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
        template,
      },
    } satisfies WithTemplate<V1Deployment, V1DeploymentSpec>;
  }
  const p = spec.queue.persistence;
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: meta(relay, names.workload),
    spec: {
      replicas: spec.replicas,
      selector,
      serviceName: names.headless,
      podManagementPolicy: 'Parallel',
      minReadySeconds: 5,
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { partition: 0 } },
      // A queue volume outlives its pod: scaled down or deleted, the mail stays for the next pod.
      persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Retain' },
      template,
      volumeClaimTemplates: [
        {
          apiVersion: 'v1',
          kind: 'PersistentVolumeClaim',
          metadata: { name: 'spool', labels: selectorLabels(relay.name) },
          spec: {
            accessModes: ['ReadWriteOnce'],
            resources: { requests: { storage: String(p.size) } },
            ...(p.storageClassName ? { storageClassName: p.storageClassName } : {}),
          },
        },
      ],
    },
  } satisfies WithTemplate<V1StatefulSet, V1StatefulSetSpec>;
}

export function renderServices(relay: RelayRef, spec: EmailRelaySpec): KubeObject[] {
  const names = childNames(relay.name);
  const smtp: V1ServicePort = { name: 'smtp', port: spec.smtp.port, targetPort: 'smtp', protocol: 'TCP' };
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(relay, names.service),
      spec: { type: 'ClusterIP', selector: selectorLabels(relay.name), ports: [smtp] },
    } satisfies V1Service,
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(relay, names.headless),
      spec: {
        clusterIP: 'None',
        selector: selectorLabels(relay.name),
        // The peers resolve this name to find each other (ready pods only) for hand-offs.
        ports: [
          smtp,
          ...(spec.metrics.enabled
            ? [{ name: 'http', port: spec.metrics.port, targetPort: 'http', protocol: 'TCP' }]
            : []),
          { name: 'peers', port: PEERS_PORT, targetPort: 'peers', protocol: 'TCP' },
        ],
      },
    } satisfies V1Service,
  ];
}

/** Drops selector fields that are unset, so the rendered selector is what the API stores. */
function selector(s: LabelSelector): LabelSelector {
  return {
    ...(s.matchLabels ? { matchLabels: s.matchLabels } : {}),
    ...(s.matchExpressions ? { matchExpressions: s.matchExpressions } : {}),
  };
}

/** client-node's NetworkPolicy with the ingress rule's wire name `from` (its model says `_from`, its serializer's). */
type NetworkPolicy = Omit<V1NetworkPolicy, 'spec'> & {
  spec: Omit<NonNullable<V1NetworkPolicy['spec']>, 'ingress'> & {
    ingress: { from: V1NetworkPolicyPeer[]; ports: V1NetworkPolicyPort[] }[];
  };
};

export function renderNetworkPolicies(
  relay: RelayRef,
  spec: EmailRelaySpec,
  operatorNamespace?: string,
): KubeObject[] {
  const names = childNames(relay.name);
  const podSelector = { matchLabels: selectorLabels(relay.name) };
  const smtpFrom: V1NetworkPolicyPeer[] = [{ namespaceSelector: selector(spec.access.namespaceSelector) }];
  for (const cidr of spec.access.extraCIDRs) {
    smtpFrom.push({
      ipBlock: { cidr: cidr.includes('/') ? cidr : `${cidr}/${cidr.includes(':') ? 128 : 32}` },
    });
  }
  const out: KubeObject[] = [
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: meta(relay, names.smtpPolicy),
      spec: {
        podSelector,
        policyTypes: ['Ingress'],
        ingress: [
          {
            from: smtpFrom,
            ports: [{ protocol: 'TCP', port: spec.smtp.port } satisfies V1NetworkPolicyPort],
          },
        ],
      },
    } satisfies NetworkPolicy,
  ];
  // The HTTP port: scrapers (when metrics are on) and the operator, which reads /summary.
  const httpFrom: V1NetworkPolicyPeer[] = [];
  if (spec.metrics.enabled) httpFrom.push({ namespaceSelector: selector(spec.metrics.namespaceSelector) });
  if (operatorNamespace) {
    httpFrom.push({
      namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': operatorNamespace } },
      podSelector: { matchLabels: OPERATOR_POD_LABELS },
    });
  }
  if (httpFrom.length) {
    out.push({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: meta(relay, names.metricsPolicy),
      spec: {
        podSelector,
        policyTypes: ['Ingress'],
        ingress: [
          {
            from: httpFrom,
            ports: [{ protocol: 'TCP', port: spec.metrics.port } satisfies V1NetworkPolicyPort],
          },
        ],
      },
    } satisfies NetworkPolicy);
  }
  // The peer port: only the relay's own pods (and its drain Jobs) hand mail to each other.
  out.push({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: meta(relay, names.peersPolicy),
    spec: {
      podSelector,
      policyTypes: ['Ingress'],
      ingress: [
        {
          from: [{ podSelector: { matchLabels: relayPodLabels(relay.name) } }],
          ports: [
            { protocol: 'TCP', port: PEERS_PORT },
            { protocol: 'UDP', port: PEERS_PORT },
          ],
        },
      ],
    },
  });
  return out;
}

export function renderPodDisruptionBudget(relay: RelayRef, spec: EmailRelaySpec): KubeObject | undefined {
  if (spec.replicas <= 1) return undefined;
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: meta(relay, childNames(relay.name).pdb),
    spec: {
      maxUnavailable: 1,
      selector: { matchLabels: selectorLabels(relay.name) },
      // A pod that never got ready must not block node drains.
      unhealthyPodEvictionPolicy: 'AlwaysAllow',
    },
  } satisfies V1PodDisruptionBudget;
}

/** Everything an EmailRelay runs on. Throws ConfigError when the relay would refuse the config. */
export function renderRelay(input: RenderInput): Rendered {
  const { relay, spec, policies } = input;
  const names = childNames(relay.name);
  const place = {
    name: relay.name,
    namespace: relay.namespace,
    ...(input.clusterDomain ? { clusterDomain: input.clusterDomain } : {}),
  };
  const config = renderRelayConfig(spec, policies, place);
  const configData = renderConfigData(spec, policies, place);
  const configHash = contentHash(configData);
  const image = spec.image ?? input.defaultImage;
  const workload = renderWorkload(relay, spec, image, configHash);
  const pdb = renderPodDisruptionBudget(relay, spec);
  const objects: KubeObject[] = [
    {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: meta(relay, names.serviceAccount),
      // The relay calls the API only for client attribution (read-only, through the one
      // ClusterRoleBinding whose subjects the operator keeps: see attribution.ts).
      automountServiceAccountToken: spec.access.attribution,
    } satisfies V1ServiceAccount,
    {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: meta(relay, names.configMap),
      data: configData,
    } satisfies V1ConfigMap,
    ...renderServices(relay, spec),
    ...renderNetworkPolicies(relay, spec, input.operatorNamespace),
    workload,
    ...(pdb ? [pdb] : []),
  ];
  return {
    config,
    configData,
    configHash,
    workloadKind: workload.kind as Rendered['workloadKind'],
    objects,
  };
}

/** On a drain Job: the ordinal whose volume it empties. */
export const ORDINAL_LABEL = `${GROUP}/ordinal`;

/**
 * A Job that empties a stranded queue volume (claim spool-<relay>-<ordinal>, no pod serves it):
 * the relay's own image, config and credentials in drain-only mode, handing the mail to the
 * ready pods through the headless Service (or delivering it), exiting 0 once empty. Its pod is
 * no relay pod for the Services (component: drain), but a peer for the hand-off.
 */
export function renderDrainJob(
  relay: RelayRef,
  spec: EmailRelaySpec,
  image: string,
  configHash: string,
  ordinal: number,
): KubeObject {
  const template = renderPodTemplate(relay, spec, image, configHash);
  const labels = { ...commonLabels(relay.name), 'app.kubernetes.io/component': 'drain' };
  // No probes (nothing routes to it) and no preStop: it exits by itself once the queue is empty.
  const {
    startupProbe: _s,
    readinessProbe: _r,
    livenessProbe: _l,
    lifecycle: _p,
    ...base
  } = template.spec.containers[0]!;
  const container = {
    ...base,
    args: [...relayArgs(), '--drain-only'],
    ports: [{ name: 'http', containerPort: spec.metrics.port, protocol: 'TCP' }],
  };
  const { topologySpreadConstraints: _spread, ...podSpec } = template.spec;
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      ...meta(relay, drainJobName(relay.name, ordinal)),
      labels: { ...labels, [ORDINAL_LABEL]: String(ordinal) },
    },
    spec: {
      // Retried until empty: a Job that gave up would leave the mail where nobody reads it.
      backoffLimit: 1000,
      template: {
        metadata: { labels, annotations: template.metadata?.annotations ?? {} },
        spec: {
          ...podSpec,
          restartPolicy: 'OnFailure',
          terminationGracePeriodSeconds: spec.shutdownGraceSeconds + 5,
          containers: [container],
          volumes: [
            ...(template.spec.volumes ?? []).filter((v) => v.name !== 'spool'),
            { name: 'spool', persistentVolumeClaim: { claimName: claimName(relay.name, ordinal) } },
          ],
        },
      },
    },
  };
}
