import { ConfigError, formatIssues } from '../../config/load.ts';
import { DRAIN_ANNOTATION } from '../../config/peers.ts';
import { ApiError, isNotFound, type KubeClient } from '../../lib/kube/client.ts';
import type { Informer } from '../../lib/kube/informer.ts';
import type { Logger } from '../../lib/logger.ts';
import type { EmailPolicy } from '../api/emailpolicy.ts';
import { type EmailRelay, type EmailRelayStatus, emailRelaySpecSchema } from '../api/emailrelay.ts';
import type { KubeObject } from '../api/meta.ts';
import { policiesForRelay } from '../emailpolicy/select.ts';
import { deleteObject, isSubset, serverSideApply } from '../runtime/apply.ts';
import { nowTime } from '../runtime/conditions.ts';
import type { Result } from '../runtime/controller.ts';
import type { EventRecorder } from '../runtime/events.ts';
import type { OperatorMetrics } from '../runtime/metrics.ts';
import { resourcePath, resourceType, splitKey } from '../runtime/resources.ts';
import { matchesSelector, selectorString } from '../runtime/selector.ts';
import { canonicalJson, contentHash } from './hash.ts';
import { APPLIED_HASH_ANNOTATION, childNames, FIELD_MANAGER, selectorLabels, serviceHost } from './names.ts';
import {
  drainMarks,
  drainReport,
  gatherSummaries,
  planStranded,
  queueTotals,
  upstreamCondition,
} from './queues.ts';
import { renderDrainJob, renderRelay } from './render.ts';
import { computeRelayStatus, type StatusInput } from './status.ts';

/** The kinds that run pods (and their disruption budget): applied after everything they use. */
const WORKLOAD_KINDS = new Set(['StatefulSet', 'Deployment', 'PodDisruptionBudget']);

/** The kinds an EmailRelay owns, in apply order (config and identity before the pods that use them). */
export const CHILD_KINDS = [
  'ServiceAccount',
  'ConfigMap',
  'Service',
  'NetworkPolicy',
  'StatefulSet',
  'Deployment',
  'PodDisruptionBudget',
] as const;

export interface RelayCaches {
  relays: Informer<EmailRelay>;
  policies: Informer<EmailPolicy>;
  namespaces: Informer;
  children: ReadonlyMap<string, Informer>;
  /** Relay and drain Job pods (managed-by label): addresses for /summary, drain marks, reports. */
  pods?: Informer;
  /** Queue volumes (the StatefulSet's claims carry the relay's selector labels). */
  claims?: Informer;
  /** Drain Jobs of stranded queue volumes. */
  jobs?: Informer;
}

export interface RelayReconcilerDeps {
  client: KubeClient;
  caches: RelayCaches;
  recorder: EventRecorder;
  defaultImage: string;
  logger: Logger;
  clusterDomain?: string;
  /** Namespace of the operator's pods (admitted to the relays' /summary port). */
  operatorNamespace?: string;
  /** How often the pods' summaries are read again without an event. Default 15 s. */
  summaryIntervalMs?: number;
  /** Where `email_relay_stranded_queues` is kept (the StrandedQueue alert reads it). */
  metrics?: Pick<OperatorMetrics, 'stranded'>;
}

const isOwnedBy = (obj: KubeObject, uid: string) =>
  obj.metadata.ownerReferences?.some((o) => o.kind === 'EmailRelay' && o.uid === uid && o.controller) ??
  false;

/** The owning EmailRelay's key of a child, for mapping child events to reconciles. */
export function ownerKey(obj: KubeObject): string | undefined {
  const ref = obj.metadata.ownerReferences?.find((o) => o.kind === 'EmailRelay' && o.controller);
  return ref && obj.metadata.namespace ? `${obj.metadata.namespace}/${ref.name}` : undefined;
}

/** Adds the hash of what we apply, so a change in our own rendering is noticed even for removed fields. */
function withAppliedHash(obj: KubeObject): KubeObject {
  const hash = contentHash(obj);
  return {
    ...obj,
    metadata: {
      ...obj.metadata,
      annotations: { ...obj.metadata.annotations, [APPLIED_HASH_ANNOTATION]: hash },
    },
  };
}

/** Already as wanted: same applied hash and every field we set still has our value. */
export function upToDate(desired: KubeObject, actual: KubeObject | undefined): boolean {
  if (!actual) return false;
  const want = desired.metadata.annotations?.[APPLIED_HASH_ANNOTATION];
  if (actual.metadata.annotations?.[APPLIED_HASH_ANNOTATION] !== want) return false;
  const { metadata: dm, ...dRest } = desired;
  const { metadata: am, ...aRest } = actual;
  return isSubset(dRest, aRest) && isSubset({ labels: dm.labels, ownerReferences: dm.ownerReferences }, am);
}

/** What one child needs: applied (absent or drifted from what we render) or nothing. */
export interface ApplyStep {
  obj: KubeObject;
  actual: KubeObject | undefined;
  apply: boolean;
}

/**
 * The apply step's plan: two rounds, each applied concurrently (identity, config and network
 * first, then the workload and its PDB: pods need their ServiceAccount and ConfigMap to start),
 * each child compared with its cached copy.
 */
export function applyPlan(
  desired: KubeObject[],
  cached: (kind: string, name: string) => KubeObject | undefined,
): ApplyStep[][] {
  const step = (obj: KubeObject): ApplyStep => {
    const actual = cached(obj.kind, obj.metadata.name);
    return { obj, actual, apply: !upToDate(obj, actual) };
  };
  return [
    desired.filter((o) => !WORKLOAD_KINDS.has(o.kind)).map(step),
    desired.filter((o) => WORKLOAD_KINDS.has(o.kind)).map(step),
  ];
}

/** The prune step's plan: children this relay owns (controller reference) that it no longer renders. */
export function prunePlan(
  owned: (kind: string) => KubeObject[],
  uid: string,
  desired: KubeObject[],
): KubeObject[] {
  const wanted = new Set(desired.map((o) => `${o.kind}/${o.metadata.name}`));
  return CHILD_KINDS.flatMap((kind) =>
    owned(kind).filter((obj) => isOwnedBy(obj, uid) && !wanted.has(`${kind}/${obj.metadata.name}`)),
  );
}

/**
 * A merge patch keeps every field it leaves out: fields the new status no longer has (the
 * oldest message's time once the queue is empty, say) are sent as null, which deletes them.
 */
export function withRemovals(current: object, next: object): Record<string, unknown> {
  const out: Record<string, unknown> = { ...next };
  const cur = current as Record<string, unknown>;
  for (const [k, v] of Object.entries(cur)) {
    const n = (next as Record<string, unknown>)[k];
    if (n === undefined) out[k] = null;
    else if (isPlainObject(v) && isPlainObject(n)) out[k] = withRemovals(v, n);
  }
  return out;
}

const isPlainObject = (v: unknown): v is object => typeof v === 'object' && v !== null && !Array.isArray(v);

export function makeRelayReconciler(deps: RelayReconcilerDeps) {
  const { client, caches, recorder, logger } = deps;
  const statusPath = (r: EmailRelay) =>
    resourcePath(resourceType('EmailRelay'), r.metadata.namespace, r.metadata.name, 'status');

  /**
   * The status we last wrote per relay, with the resourceVersion the write produced: until the
   * cache has seen that write, it is the truth (otherwise a reconcile racing our own status
   * update would write it again and repeat its events).
   */
  const written = new Map<string, { uid: string; resourceVersion: string; status: EmailRelayStatus }>();
  /** Consecutive retryable apply failures per relay: reported in the status from the third on. */
  const retries = new Map<string, number>();
  const keyOf = (r: EmailRelay) => `${r.metadata.namespace}/${r.metadata.name}`;

  function currentStatus(relay: EmailRelay): EmailRelayStatus | undefined {
    const last = written.get(keyOf(relay));
    if (last && last.uid === relay.metadata.uid && last.resourceVersion !== relay.metadata.resourceVersion) {
      return last.status;
    }
    return relay.status;
  }

  async function writeStatus(relay: EmailRelay, status: EmailRelayStatus): Promise<void> {
    const current = currentStatus(relay);
    // Compared canonically: a reconcile that learned nothing writes nothing.
    if (canonicalJson(current ?? {}) === canonicalJson(status)) return;
    const before = new Map((current?.conditions ?? []).map((c) => [c.type, c.status]));
    const updated = await client.request<EmailRelay>('PATCH', statusPath(relay), {
      body: { status: withRemovals(current ?? {}, status) },
      contentType: 'application/merge-patch+json',
    });
    if (updated?.metadata?.resourceVersion) {
      written.set(keyOf(relay), {
        uid: relay.metadata.uid ?? '',
        resourceVersion: updated.metadata.resourceVersion,
        status,
      });
    }
    const ready = status.conditions?.find((c) => c.type === 'Ready');
    if (ready && before.get('Ready') !== ready.status) {
      recorder.event(
        relay,
        ready.status === 'True' ? 'Normal' : 'Warning',
        ready.status === 'True' ? 'Ready' : `NotReady`,
        `${ready.reason}: ${ready.message}`,
      );
    }
    // Upstream health: an Event when it changes (not for Unknown, e.g. while pods start).
    const up = status.conditions?.find((c) => c.type === 'UpstreamHealthy');
    const upBefore = current?.conditions?.find((c) => c.type === 'UpstreamHealthy');
    if (up && up.status !== 'Unknown' && (upBefore?.status !== up.status || upBefore.reason !== up.reason)) {
      if (up.status === 'False' || upBefore) {
        recorder.event(relay, up.status === 'True' ? 'Normal' : 'Warning', up.reason, up.message);
      }
    }
  }

  return async function reconcile(key: string): Promise<Result | undefined> {
    const { namespace, name } = splitKey(key);
    const relay = caches.relays.get(namespace, name);
    if (!relay || relay.metadata.deletionTimestamp) {
      written.delete(key);
      retries.delete(key);
      deps.metrics?.stranded.remove({ namespace, relay: name });
      // Owner references clean up the children; the attribution controller drops its subject.
      return undefined;
    }
    const uid = relay.metadata.uid ?? '';
    const generation = relay.metadata.generation ?? 0;
    const relayPods = (caches.pods?.list(namespace) ?? []).filter(
      (p) => p.metadata.labels?.['app.kubernetes.io/instance'] === name,
    );
    const servingPods = relayPods.filter(
      (p) => p.metadata.labels?.['app.kubernetes.io/component'] === 'relay',
    );
    const base: Omit<StatusInput, 'desiredReplicas'> = {
      generation,
      previous: currentStatus(relay),
      now: nowTime(),
    };

    /** A problem only a spec change can fix: say so in the status, run nothing new. */
    const reportFatal = (reason: string, message: string) =>
      writeStatus(
        relay,
        computeRelayStatus({ ...base, desiredReplicas: 0, problem: { reason, message, fatal: true } }),
      );

    // 1. The spec: admission should have refused anything invalid, but a stale CRD must not crash us.
    const parsed = emailRelaySpecSchema.safeParse(relay.spec ?? {});
    if (!parsed.success) {
      const message = `invalid spec: ${formatIssues(parsed.error).join('; ')}`;
      if (currentStatus(relay)?.conditions?.find((c) => c.type === 'Ready')?.reason !== 'InvalidSpec') {
        recorder.event(relay, 'Warning', 'InvalidSpec', message);
      }
      await reportFatal('InvalidSpec', message);
      return undefined; // nothing to retry until the spec changes
    }
    const spec = parsed.data;

    // 2. Inputs from the caches: the policies of this relay and the namespaces admitted.
    const policies = policiesForRelay(caches.policies.list(namespace), { name, namespace });
    const admitted = caches.namespaces
      .list()
      .filter(
        (ns) =>
          !ns.metadata.deletionTimestamp &&
          matchesSelector(spec.access.namespaceSelector, ns.metadata.labels),
      )
      .map((ns) => ns.metadata.name)
      .sort();

    // 3. Render (pure). A config the relay would refuse is reported, not shipped.
    let rendered: ReturnType<typeof renderRelay>;
    try {
      rendered = renderRelay({
        relay: { name, namespace, uid },
        spec,
        defaultImage: deps.defaultImage,
        policies,
        ...(deps.clusterDomain ? { clusterDomain: deps.clusterDomain } : {}),
        ...(deps.operatorNamespace ? { operatorNamespace: deps.operatorNamespace } : {}),
      });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      const message = err.message.replace(/\n\s*/g, ' ');
      recorder.event(relay, 'Warning', 'InvalidConfig', message);
      await reportFatal('InvalidConfig', message);
      return undefined;
    }

    // 4. Apply what differs from the cache; delete managed children no longer wanted.
    const desired = rendered.objects.map(withAppliedHash);
    let problem: StatusInput['problem'];
    let workload: KubeObject | undefined;
    let retryable: unknown;
    // One event per verb and reconcile ("Created ServiceAccount a, ConfigMap a, ..."), not one per child.
    const changed = { Created: [] as string[], Updated: [] as string[], Deleted: [] as string[] };
    // 4a. A scale-down: mark the pods it removes before the StatefulSet shrinks, so each hands
    // its queue to the pods that stay when it gets SIGTERM (relay/peers/leaving.ts).
    if (rendered.workloadKind === 'StatefulSet') {
      const { mark, unmark } = drainMarks(name, spec.replicas, servingPods, DRAIN_ANNOTATION);
      for (const pod of [...mark, ...unmark]) {
        try {
          await client.request('PATCH', resourcePath(resourceType('Pod'), namespace, pod), {
            body: { metadata: { annotations: { [DRAIN_ANNOTATION]: mark.includes(pod) ? 'true' : null } } },
            contentType: 'application/merge-patch+json',
          });
          logger.info({ relay: key, pod, drain: mark.includes(pod) }, 'drain mark');
        } catch (err) {
          if (!isNotFound(err)) throw err;
        }
      }
      if (mark.length)
        recorder.event(relay, 'Normal', 'ScalingDown', `handing off the queues of ${mark.join(', ')}`);
    }
    const rounds = applyPlan(desired, (kind, child) => caches.children.get(kind)?.get(namespace, child));
    for (const round of rounds) {
      const results = await Promise.all(
        round.map(async ({ obj, actual, apply }) => {
          if (!apply) return { obj, actual, applied: actual, wrote: false };
          try {
            return { obj, actual, applied: await serverSideApply(client, obj, FIELD_MANAGER), wrote: true };
          } catch (err) {
            return { obj, actual, err, wrote: false };
          }
        }),
      );
      for (const { obj, actual, applied, err, wrote } of results) {
        if (err === undefined) {
          if (obj.kind === rendered.workloadKind) workload = applied;
          if (!wrote) continue;
          const verb = actual ? 'Updated' : 'Created';
          changed[verb].push(`${obj.kind} ${obj.metadata.name}`);
          logger.info({ relay: key, kind: obj.kind, name: obj.metadata.name }, `${verb.toLowerCase()} child`);
          continue;
        }
        if (obj.kind === rendered.workloadKind) workload = actual;
        if (!(err instanceof ApiError) || err.status >= 500 || err.status === 429 || err.status === 409) {
          if (retryable) continue; // one count and one report per reconcile
          // Retried with backoff; if it keeps failing (an API server error, a full service IP
          // range...) the relay must say so rather than only the operator's log.
          const n = (retries.get(key) ?? 0) + 1;
          retries.set(key, n);
          if (n < 3) throw err;
          retryable = err;
          const message = `${obj.kind} ${obj.metadata.name}: ${(err as Error).message} (retrying)`;
          recorder.event(relay, 'Warning', 'ApplyRetrying', message);
          problem = { reason: 'ApplyRetrying', message, fatal: false };
          continue;
        }
        // Refused for good (e.g. an immutable StatefulSet field): say so, keep the rest running.
        const message = `${obj.kind} ${obj.metadata.name}: ${err.message}`;
        recorder.event(relay, 'Warning', 'ApplyFailed', message);
        if (!retryable) problem = { reason: 'ApplyFailed', message, fatal: false };
      }
      if (retryable) break;
    }
    const prune = retryable
      ? []
      : prunePlan((kind) => caches.children.get(kind)?.list(namespace) ?? [], uid, desired);
    for (const obj of prune) {
      try {
        await deleteObject(client, obj);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      changed.Deleted.push(`${obj.kind} ${obj.metadata.name}`);
    }

    for (const [verb, what] of Object.entries(changed)) {
      if (what.length)
        recorder.event(
          relay,
          'Normal',
          verb,
          `${verb} ${what.join(', ')}${verb === 'Deleted' ? ' (no longer wanted)' : ''}`,
        );
    }

    // 4c. Queue volumes no pod serves: a drain Job each, until it has emptied the volume.
    const previous = currentStatus(relay);
    const jobs = (caches.jobs?.list(namespace) ?? []).filter(
      (j) => j.metadata.labels?.['app.kubernetes.io/instance'] === name,
    );
    const claims = (caches.claims?.list(namespace) ?? []).filter(
      (c) => c.metadata.labels?.['app.kubernetes.io/instance'] === name,
    );
    const plan = planStranded(
      name,
      rendered.workloadKind === 'StatefulSet' ? spec.replicas : 0,
      servingPods,
      claims,
      jobs,
    );
    if (!retryable && caches.claims) {
      for (const n of plan.create) {
        const job = renderDrainJob(
          { name, namespace, uid },
          spec,
          spec.image ?? deps.defaultImage,
          rendered.configHash,
          n,
        );
        await serverSideApply(client, job, FIELD_MANAGER);
        logger.info({ relay: key, job: job.metadata.name }, 'created drain Job');
      }
      for (const j of plan.remove) {
        const job = jobs.find((x) => x.metadata.name === j);
        if (job)
          await deleteObject(client, job).catch((err) => (isNotFound(err) ? undefined : Promise.reject(err)));
      }
    }
    const wasStranded = new Set((previous?.strandedQueues ?? []).map((q) => q.claim));
    for (const q of plan.stranded) {
      if (!wasStranded.has(q.claim))
        recorder.event(
          relay,
          'Warning',
          'QueueStranded',
          `${q.claim}: no pod serves it; drain Job ${q.job} empties it`,
        );
    }
    for (const q of plan.drained) {
      if (!wasStranded.has(q.claim)) continue;
      const r = drainReport(relayPods, q.job);
      recorder.event(
        relay,
        'Normal',
        'QueueDrained',
        `${q.claim} is empty: ${r ? `${r.handedOff} messages handed to the relay pods, ${r.delivered} delivered` : `Job ${q.job} succeeded`}`,
      );
    }

    // 4d. The pods' own account of their queues (GET /summary on the HTTP port).
    const summaries = await gatherSummaries(relayPods, spec.metrics.port);
    const serving = new Map(
      [...summaries].filter(([pod]) => servingPods.some((p) => p.metadata.name === pod)),
    );
    const strandedQueues = plan.stranded.map((q) => {
      const jobPod = relayPods.find(
        (p) => p.metadata.labels?.['job-name'] === q.job && summaries.has(p.metadata.name),
      );
      const s = jobPod ? summaries.get(jobPod.metadata.name) : undefined;
      return { ...q, ...(s ? { queued: s.queue.messages } : {}) };
    });

    if (caches.claims) deps.metrics?.stranded.set({ namespace, relay: name }, strandedQueues.length);

    // 5. Status.
    const names = childNames(name);
    const domain = deps.clusterDomain ?? 'cluster.local';
    const endpoint = `${serviceHost(names.service, namespace, domain)}:${spec.smtp.port}`;
    const status = computeRelayStatus({
      ...base,
      desiredReplicas: spec.replicas,
      ...(workload ? { workload } : {}),
      ...(problem ? { problem } : {}),
      endpoint,
      endpoints: [endpoint, `${serviceHost(names.headless, namespace, domain)}:${spec.smtp.port}`],
      admittedNamespaces: admitted,
      policies: policies.map((p) => p.name),
      configHash: rendered.configHash,
      selector: selectorString(selectorLabels(name)),
      ...(caches.pods
        ? { queue: queueTotals(serving), upstream: upstreamCondition(serving, generation) }
        : {}),
      ...(caches.claims ? { strandedQueues } : {}),
    });
    const prevAdmitted = currentStatus(relay)?.admittedNamespaces ?? [];
    const added = admitted.filter((n) => !prevAdmitted.includes(n));
    const removed = prevAdmitted.filter((n) => !admitted.includes(n));
    if (added.length || removed.length) {
      recorder.event(
        relay,
        'Normal',
        'AdmittedNamespacesChanged',
        [
          added.length ? `admitted ${added.join(', ')}` : '',
          removed.length ? `no longer admitted ${removed.join(', ')}` : '',
        ]
          .filter(Boolean)
          .join('; '),
      );
    }
    await writeStatus(relay, status);
    if (retryable) throw retryable;
    retries.delete(key);
    // Queues change without Kubernetes events: read the summaries again in a while.
    return relayPods.length ? { requeueAfterMs: deps.summaryIntervalMs ?? 15_000 } : undefined;
  };
}
