import { ApiError, isNotFound, type KubeClient } from '../../lib/kube/client.ts';
import type { Informer } from '../../lib/kube/informer.ts';
import type { Logger } from '../../lib/logger.ts';
import { type EmailRelay, emailRelaySpecSchema } from '../api/emailrelay.ts';
import type { KubeObject } from '../api/meta.ts';
import { deleteObject } from '../runtime/apply.ts';
import type { Result } from '../runtime/controller.ts';
import { resourcePath, resourceType } from '../runtime/resources.ts';
import {
  ATTRIBUTION_BINDING,
  ATTRIBUTION_CLUSTER_ROLE,
  childNames,
  LEGACY_BINDING_PREFIX,
  MANAGED_SELECTOR,
  RELAY_NAME_LABEL,
  RELAY_NAMESPACE_LABEL,
} from './names.ts';

/**
 * Client attribution's RBAC: one ClusterRoleBinding (created by the install) of the read-only
 * `email-relay-client-attribution` ClusterRole, whose subjects the operator keeps equal to the
 * ServiceAccounts of the relays that attribute clients. The operator may get, watch and patch
 * that one object (resourceNames) and nothing else of RBAC, so it cannot change or delete any
 * other binding nor create one; the roleRef is immutable, so patching cannot bind anything else.
 * Operator 0.1 created one ClusterRoleBinding per relay instead: those, and only those (named
 * `email-relay:<ns>:<relay>`, carrying our labels and the attribution roleRef), are deleted once
 * the shared binding names their ServiceAccounts, when the install grants the temporary
 * permission to find them (deploy/upgrade-0.1).
 */

export interface Subject {
  kind: 'ServiceAccount';
  name: string;
  namespace: string;
}

/** Whether a relay attributes clients; a spec the schema refuses keeps the default (true). */
function attributes(relay: EmailRelay): boolean {
  const parsed = emailRelaySpecSchema.safeParse(relay.spec ?? {});
  if (parsed.success) return parsed.data.access.attribution;
  const raw = (relay.spec as { access?: { attribution?: unknown } } | undefined)?.access?.attribution;
  return raw !== false;
}

/** The subjects the binding should have: each attributing relay's ServiceAccount, sorted. */
export function attributionSubjects(relays: readonly EmailRelay[]): Subject[] {
  const seen = new Map<string, Subject>();
  for (const r of relays) {
    if (r.metadata.deletionTimestamp || !r.metadata.namespace || !attributes(r)) continue;
    const s: Subject = {
      kind: 'ServiceAccount',
      name: childNames(r.metadata.name).serviceAccount,
      namespace: r.metadata.namespace,
    };
    seen.set(`${s.namespace}/${s.name}`, s);
  }
  return [...seen.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, s]) => s);
}

type Binding = KubeObject & { subjects?: Subject[]; roleRef?: { kind: string; name: string } };

const sameSubjects = (a: readonly Subject[], b: readonly Subject[] | undefined) =>
  a.length === (b?.length ?? 0) &&
  a.every((s, i) => {
    const t = b?.[i];
    return t && t.kind === s.kind && t.name === s.name && t.namespace === s.namespace;
  });

/** A per-relay binding operator 0.1 created: our labels, our name pattern, the attribution role. */
export function isLegacyBinding(b: Binding): boolean {
  const ns = b.metadata.labels?.[RELAY_NAMESPACE_LABEL];
  const name = b.metadata.labels?.[RELAY_NAME_LABEL];
  return (
    !!ns &&
    !!name &&
    b.metadata.labels?.['app.kubernetes.io/managed-by'] === 'email-relay-operator' &&
    b.metadata.name === `${LEGACY_BINDING_PREFIX}${ns}:${name}` &&
    b.roleRef?.kind === 'ClusterRole' &&
    b.roleRef.name === ATTRIBUTION_CLUSTER_ROLE
  );
}

export interface AttributionDeps {
  client: KubeClient;
  relays: Informer<EmailRelay>;
  /** The one binding, watched by name (metadata.name field selector, as RBAC's resourceNames needs). */
  binding: Informer;
  logger: Logger;
}

/** The single key of the attribution controller: there is one binding. */
export const ATTRIBUTION_KEY = ATTRIBUTION_BINDING;

export function makeAttributionReconciler(deps: AttributionDeps) {
  const { client, relays, binding, logger } = deps;
  const path = resourcePath(resourceType('ClusterRoleBinding'), undefined, ATTRIBUTION_BINDING);
  let missingLogged = false;
  /** Once per process: done, or not permitted (then there is nothing this install lets us migrate). */
  let migrated = false;

  async function migrateLegacy(wanted: readonly Subject[]): Promise<void> {
    let items: Binding[];
    try {
      const list = await client.get<{ items: Binding[] }>(resourcePath(resourceType('ClusterRoleBinding')), {
        labelSelector: `${MANAGED_SELECTOR},${RELAY_NAME_LABEL}`,
      });
      items = list.items;
    } catch (err) {
      if (err instanceof ApiError && err.status === 403) {
        // The normal case: only an upgrade from 0.1 grants this, for as long as it takes.
        logger.debug('no permission to list ClusterRoleBindings: no per-relay bindings of 0.1 to migrate');
        migrated = true;
        return;
      }
      throw err;
    }
    const covered = new Set(wanted.map((s) => `${s.namespace}/${s.name}`));
    for (const b of items.map((i) => ({ ...i, kind: 'ClusterRoleBinding' }) as Binding)) {
      if (!isLegacyBinding(b)) continue;
      // Its relay still attributes but is not yet in the shared binding: keep its access until it is.
      const still = (b.subjects ?? []).filter(
        (s) => s.kind === 'ServiceAccount' && !covered.has(`${s.namespace}/${s.name}`),
      );
      const relay = relays.get(
        b.metadata.labels?.[RELAY_NAMESPACE_LABEL],
        b.metadata.labels?.[RELAY_NAME_LABEL] ?? '',
      );
      if (still.length && relay && attributes(relay)) continue;
      try {
        await deleteObject(client, b);
        logger.info({ name: b.metadata.name }, 'deleted per-relay ClusterRoleBinding of operator 0.1');
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    migrated = true;
  }

  return async function reconcile(): Promise<Result | undefined> {
    const actual = binding.get(undefined, ATTRIBUTION_BINDING) as Binding | undefined;
    const wanted = attributionSubjects(relays.list());
    if (!actual) {
      // The install creates it and the operator may not (create cannot be limited by name): say
      // so once, and act when the watch sees it come back.
      if (!missingLogged)
        logger.error(
          { binding: ATTRIBUTION_BINDING },
          'ClusterRoleBinding missing: relays cannot attribute clients until it is re-applied (kubectl apply -k deploy/base)',
        );
      missingLogged = true;
      return undefined;
    }
    missingLogged = false;
    if (!sameSubjects(wanted, actual.subjects)) {
      // A merge patch replaces the whole list; resourceVersion makes it fail (and retry from the
      // cache) if someone changed the binding since the cache saw it.
      await client.request('PATCH', path, {
        body: { metadata: { resourceVersion: actual.metadata.resourceVersion }, subjects: wanted },
        contentType: 'application/merge-patch+json',
      });
      logger.info({ binding: ATTRIBUTION_BINDING, subjects: wanted.length }, 'updated attribution subjects');
    }
    if (!migrated) await migrateLegacy(wanted);
    return undefined;
  };
}
