import type { EmailRelayStatus } from '../api/emailrelay.ts';
import type { KubeObject } from '../api/meta.ts';
import { type ConditionInput, setConditions } from '../runtime/conditions.ts';

/** Pure: what the relay's status should say, from the workload's status and what reconcile did. */

export interface WorkloadStatus {
  observedGeneration?: number;
  replicas?: number;
  readyReplicas?: number;
  updatedReplicas?: number;
  availableReplicas?: number;
  currentRevision?: string;
  updateRevision?: string;
}

export interface StatusInput {
  generation: number;
  previous: EmailRelayStatus | undefined;
  now: string;
  desiredReplicas: number;
  workload?: KubeObject;
  /** A problem that stops or degrades the relay (invalid spec, failed apply, invalid policy). */
  problem?: { reason: string; message: string; fatal: boolean };
  endpoint?: string;
  endpoints?: string[];
  admittedNamespaces?: string[];
  policies?: string[];
  configHash?: string;
  selector?: string;
  /** Totals of the pods' /summary; undefined keeps the last known. */
  queue?: EmailRelayStatus['queue'];
  strandedQueues?: EmailRelayStatus['strandedQueues'];
  /** Whether the smarthost takes mail (from the pods' summaries). */
  upstream?: ConditionInput;
}

function rollout(workload: KubeObject | undefined, desired: number) {
  const meta = workload?.metadata as { generation?: number } | undefined;
  const s = (workload?.['status'] ?? {}) as WorkloadStatus;
  const ready = s.readyReplicas ?? 0;
  const updated = s.updatedReplicas ?? 0;
  const observed = s.observedGeneration === undefined || s.observedGeneration >= (meta?.generation ?? 0);
  const revisionDone = s.updateRevision === undefined || s.currentRevision === s.updateRevision;
  const done = workload !== undefined && observed && updated >= desired && ready >= desired && revisionDone;
  return { ready, replicas: s.replicas ?? 0, done };
}

export function computeRelayStatus(input: StatusInput): EmailRelayStatus {
  const g = input.generation;
  const { ready, replicas, done } = rollout(input.workload, input.desiredReplicas);
  const desired = input.desiredReplicas;
  const p = input.problem;
  const minAvailable = desired > 1 ? desired - 1 : desired;

  const available: ConditionInput =
    desired === 0
      ? {
          type: 'Available',
          status: 'False',
          reason: 'ScaledToZero',
          message: 'spec.replicas is 0',
          observedGeneration: g,
        }
      : ready >= minAvailable && ready > 0
        ? {
            type: 'Available',
            status: 'True',
            reason: 'MinimumReplicasAvailable',
            message: `${ready}/${desired} relay pods ready`,
            observedGeneration: g,
          }
        : {
            type: 'Available',
            status: 'False',
            reason: input.workload ? 'PodsNotReady' : 'WorkloadMissing',
            message: input.workload
              ? `${ready}/${desired} relay pods ready`
              : 'the relay workload does not exist yet',
            observedGeneration: g,
          };
  const progressing: ConditionInput = p?.fatal
    ? { type: 'Progressing', status: 'False', reason: p.reason, message: p.message, observedGeneration: g }
    : done
      ? {
          type: 'Progressing',
          status: 'False',
          reason: 'RolloutComplete',
          message: `${ready} relay pods run the current configuration`,
          observedGeneration: g,
        }
      : {
          type: 'Progressing',
          status: 'True',
          reason: 'RollingOut',
          message: `${ready}/${desired} ready, rolling out configuration ${input.configHash ?? ''}`.trim(),
          observedGeneration: g,
        };
  const degraded: ConditionInput = p
    ? { type: 'Degraded', status: 'True', reason: p.reason, message: p.message, observedGeneration: g }
    : {
        type: 'Degraded',
        status: 'False',
        reason: 'AsExpected',
        message: 'no problems',
        observedGeneration: g,
      };
  const readyCond: ConditionInput = p?.fatal
    ? { type: 'Ready', status: 'False', reason: p.reason, message: p.message, observedGeneration: g }
    : available.status !== 'True'
      ? {
          type: 'Ready',
          status: 'False',
          reason: available.reason,
          message: available.message,
          observedGeneration: g,
        }
      : p
        ? { type: 'Ready', status: 'False', reason: p.reason, message: p.message, observedGeneration: g }
        : {
            type: 'Ready',
            status: 'True',
            reason: 'RelayReady',
            message: available.message,
            observedGeneration: g,
          };

  const prev = input.previous ?? {};
  const conditions = setConditions(
    prev.conditions,
    [readyCond, available, progressing, degraded, ...(input.upstream ? [input.upstream] : [])],
    input.now,
  );
  const queue = input.queue ?? prev.queue;
  const stranded = input.strandedQueues ?? prev.strandedQueues ?? [];
  // A fatal problem keeps what was last known to be true about endpoints and config.
  return {
    observedGeneration: g,
    conditions,
    replicas,
    readyReplicas: ready,
    selector: input.selector ?? prev.selector ?? '',
    endpoint: input.endpoint ?? prev.endpoint ?? '',
    endpoints: input.endpoints ?? prev.endpoints ?? [],
    admittedNamespaces: input.admittedNamespaces ?? prev.admittedNamespaces ?? [],
    policies: input.policies ?? prev.policies ?? [],
    configHash: input.configHash ?? prev.configHash ?? '',
    workload: input.workload
      ? `${input.workload.kind}/${input.workload.metadata.name}`
      : (prev.workload ?? ''),
    ...(queue ? { queue } : {}),
    // Always present: a merge patch leaves out what it omits, so an emptied list must be sent.
    strandedQueues: stranded,
  };
}
