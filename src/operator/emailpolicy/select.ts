import { formatIssues } from '../../config/load.ts';
import { type EmailPolicy, type EmailPolicySpec, emailPolicySpecSchema } from '../api/emailpolicy.ts';

/** A policy that parsed, with where it came from. */
export interface ValidPolicy {
  name: string;
  namespace: string;
  generation?: number;
  spec: EmailPolicySpec;
}

export type ParsedPolicy = { ok: true; policy: ValidPolicy } | { ok: false; name: string; errors: string[] };

export function parsePolicy(obj: EmailPolicy): ParsedPolicy {
  const result = emailPolicySpecSchema.safeParse(obj.spec ?? {});
  if (!result.success) return { ok: false, name: obj.metadata.name, errors: formatIssues(result.error) };
  return {
    ok: true,
    policy: {
      name: obj.metadata.name,
      namespace: obj.metadata.namespace ?? '',
      ...(obj.metadata.generation !== undefined ? { generation: obj.metadata.generation } : {}),
      spec: result.data,
    },
  };
}

/** Whether a policy names this relay (an empty `relays` list means every relay of the namespace). */
export function appliesToRelay(policy: ValidPolicy, relay: { name: string; namespace: string }): boolean {
  if (policy.namespace !== relay.namespace) return false;
  return policy.spec.relays.length === 0 || policy.spec.relays.includes(relay.name);
}

/** The order the relay evaluates policies in: priority, then name. */
export function sortPolicies<T extends { name: string; spec: { priority: number } }>(policies: T[]): T[] {
  return [...policies].sort(
    (a, b) => a.spec.priority - b.spec.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  );
}

/** The valid policies of a namespace that apply to a relay, in evaluation order. */
export function policiesForRelay(
  objects: readonly EmailPolicy[],
  relay: { name: string; namespace: string },
): ValidPolicy[] {
  const valid: ValidPolicy[] = [];
  for (const obj of objects) {
    if (obj.metadata.deletionTimestamp) continue;
    const parsed = parsePolicy(obj);
    if (parsed.ok && appliesToRelay(parsed.policy, relay)) valid.push(parsed.policy);
  }
  return sortPolicies(valid);
}
