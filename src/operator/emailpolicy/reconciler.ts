import type { KubeClient } from '../../lib/kube/client.ts';
import type { Informer } from '../../lib/kube/informer.ts';
import type { Logger } from '../../lib/logger.ts';
import type { EmailPolicy, EmailPolicyStatus } from '../api/emailpolicy.ts';
import type { EmailRelay } from '../api/emailrelay.ts';
import { canonicalJson } from '../emailrelay/hash.ts';
import { nowTime, setConditions } from '../runtime/conditions.ts';
import type { Result } from '../runtime/controller.ts';
import type { EventRecorder } from '../runtime/events.ts';
import { resourcePath, resourceType, splitKey } from '../runtime/resources.ts';
import { appliesToRelay, parsePolicy } from './select.ts';

/**
 * EmailPolicy status: are the rules valid (Accepted), and which relays compile them in. The
 * relays themselves pick policies up in their own reconcile (policy events enqueue them).
 */
export function makePolicyReconciler(deps: {
  client: KubeClient;
  policies: Informer<EmailPolicy>;
  relays: Informer<EmailRelay>;
  recorder: EventRecorder;
  logger: Logger;
}) {
  return async function reconcile(key: string): Promise<Result | undefined> {
    const { namespace, name } = splitKey(key);
    const policy = deps.policies.get(namespace, name);
    if (!policy || policy.metadata.deletionTimestamp) return undefined;
    const g = policy.metadata.generation ?? 0;
    const parsed = parsePolicy(policy);
    const relays = parsed.ok
      ? deps.relays
          .list(namespace)
          .filter((r) => appliesToRelay(parsed.policy, { name: r.metadata.name, namespace }))
          .map((r) => r.metadata.name)
          .sort()
      : [];
    const accepted = parsed.ok
      ? {
          type: 'Accepted',
          status: 'True' as const,
          reason: 'Valid',
          message: 'rules are valid',
          observedGeneration: g,
        }
      : {
          type: 'Accepted',
          status: 'False' as const,
          reason: 'InvalidRules',
          message: parsed.errors.join('; '),
          observedGeneration: g,
        };
    const missing = parsed.ok ? parsed.policy.spec.relays.filter((r) => !relays.includes(r)) : [];
    const ready = !parsed.ok
      ? { ...accepted, type: 'Ready' }
      : relays.length === 0
        ? {
            type: 'Ready',
            status: 'False' as const,
            reason: 'NoRelays',
            message: 'no EmailRelay in this namespace matches',
            observedGeneration: g,
          }
        : {
            type: 'Ready',
            status: 'True' as const,
            reason: missing.length ? 'SomeRelaysMissing' : 'Applied',
            message: `compiled into ${relays.join(', ')}${missing.length ? `; not found: ${missing.join(', ')}` : ''}`,
            observedGeneration: g,
          };
    const status: EmailPolicyStatus = {
      observedGeneration: g,
      conditions: setConditions(policy.status?.conditions, [ready, accepted], nowTime()),
      relays,
    };
    if (canonicalJson(policy.status ?? {}) === canonicalJson(status)) return undefined;
    const wasAccepted = policy.status?.conditions?.find((c) => c.type === 'Accepted')?.status;
    if (wasAccepted !== accepted.status) {
      deps.recorder.event(
        policy,
        parsed.ok ? 'Normal' : 'Warning',
        accepted.reason,
        parsed.ok ? `rules accepted; relays: ${relays.join(', ') || 'none'}` : accepted.message,
      );
    }
    await deps.client.request('PATCH', resourcePath(resourceType('EmailPolicy'), namespace, name, 'status'), {
      body: { status },
      contentType: 'application/merge-patch+json',
    });
    return undefined;
  };
}
