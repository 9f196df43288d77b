import type { Condition } from '../api/meta.ts';

/**
 * Conditions per the Kubernetes API conventions. lastTransitionTime moves only when status
 * changes, so a reconcile that learns nothing new produces the same conditions (and no write).
 */

export type ConditionInput = Omit<Condition, 'lastTransitionTime'>;

export function findCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

export function setCondition(
  conditions: readonly Condition[],
  next: ConditionInput,
  now: string,
): Condition[] {
  const prev = findCondition(conditions, next.type);
  const condition: Condition = {
    type: next.type,
    status: next.status,
    reason: next.reason,
    message: next.message,
    lastTransitionTime: prev && prev.status === next.status ? prev.lastTransitionTime : now,
    ...(next.observedGeneration !== undefined ? { observedGeneration: next.observedGeneration } : {}),
  };
  const out = conditions.filter((c) => c.type !== next.type);
  out.push(condition);
  return out;
}

/** Sets each condition in order, keeping the given type order stable for readable output. */
export function setConditions(
  conditions: readonly Condition[] | undefined,
  next: ConditionInput[],
  now: string,
): Condition[] {
  let out = [...(conditions ?? [])];
  for (const c of next) out = setCondition(out, c, now);
  const order = new Map(next.map((c, i) => [c.type, i]));
  return out.sort((a, b) => (order.get(a.type) ?? 99) - (order.get(b.type) ?? 99));
}

/** RFC 3339 at second precision, as metav1.Time serialises. */
export function nowTime(d = new Date()): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
