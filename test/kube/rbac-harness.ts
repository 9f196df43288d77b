import { renderInstall } from '../../scripts/permissions.ts';
import { isNotFound, KubeClient } from '../../src/lib/kube/client.ts';
import { type KubeConnection, loadKubeConnection } from '../../src/lib/kube/connection.ts';
import type { KubeObject } from '../../src/operator/api/meta.ts';

/**
 * Installs the RBAC of a rendered kustomization (what `kubectl apply -k` would create) and gives
 * tests the identities it grants: a real ServiceAccount token (TokenRequest) for running the
 * operator or a relay as itself, and SubjectAccessReviews for "may X do Y".
 */

export const OPERATOR_NS = 'email-relay-system';
export const OPERATOR_SA = 'email-relay-operator';
export const OPERATOR_USER = `system:serviceaccount:${OPERATOR_NS}:${OPERATOR_SA}`;

const PLURALS: Record<string, string> = {
  Namespace: 'namespaces',
  ServiceAccount: 'serviceaccounts',
  ClusterRole: 'clusterroles',
  ClusterRoleBinding: 'clusterrolebindings',
  Role: 'roles',
  RoleBinding: 'rolebindings',
};
export const RBAC_KINDS = Object.keys(PLURALS);

export function objectPath(obj: Pick<KubeObject, 'apiVersion' | 'kind' | 'metadata'>): string {
  const plural = PLURALS[obj.kind];
  if (!plural) throw new Error(`rbac-harness: cannot handle ${obj.kind}`);
  const base = obj.apiVersion.includes('/') ? `/apis/${obj.apiVersion}` : `/api/${obj.apiVersion}`;
  const ns = obj.metadata.namespace ? `/namespaces/${obj.metadata.namespace}` : '';
  return `${base}${ns}/${plural}/${obj.metadata.name}`;
}

export async function applyAny(admin: KubeClient, obj: KubeObject): Promise<void> {
  await admin.request('PATCH', objectPath(obj), {
    query: { fieldManager: 'kubectl', force: true },
    body: obj,
    contentType: 'application/apply-patch+yaml',
  });
}

export async function deleteAny(admin: KubeClient, obj: KubeObject): Promise<void> {
  try {
    await admin.request('DELETE', objectPath(obj));
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

/** The Namespace, ServiceAccount and RBAC objects of an install (no CRDs, no Deployment). */
export async function installRbac(admin: KubeClient, kubectl: string, dir: string): Promise<KubeObject[]> {
  const objects = (await renderInstall(kubectl, dir)).filter((o) =>
    RBAC_KINDS.includes(o.kind),
  ) as KubeObject[];
  // Namespaces first: the namespaced objects live in them.
  for (const o of objects.filter((o) => o.kind === 'Namespace')) await applyAny(admin, o);
  for (const o of objects.filter((o) => o.kind !== 'Namespace')) await applyAny(admin, o);
  return objects;
}

/** A bound token of a ServiceAccount, as the kubelet projects one into its pods. */
export async function serviceAccountToken(
  admin: KubeClient,
  namespace: string,
  name: string,
): Promise<string> {
  const res = await admin.request<{ status: { token: string } }>(
    'POST',
    `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`,
    {
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: { expirationSeconds: 3600 },
      },
    },
  );
  return res.status.token;
}

/** The admin kubeconfig's server and CA with a ServiceAccount's token instead of the admin cert. */
export async function connectionAs(
  admin: KubeClient,
  kubeconfig: string,
  namespace: string,
  name: string,
): Promise<KubeConnection> {
  const { server, ca, tlsServerName } = loadKubeConnection(kubeconfig);
  const token = await serviceAccountToken(admin, namespace, name);
  return { server, ...(ca ? { ca } : {}), ...(tlsServerName ? { tlsServerName } : {}), token: () => token };
}

export interface Access {
  verb: string;
  resource: string;
  group?: string;
  namespace?: string;
  name?: string;
  subresource?: string;
}

/** SubjectAccessReview for a ServiceAccount (with the groups its token carries). */
export async function saCan(admin: KubeClient, user: string, a: Access): Promise<boolean> {
  const [, , ns] = user.split(':');
  const review = await admin.request<{ status: { allowed: boolean } }>(
    'POST',
    '/apis/authorization.k8s.io/v1/subjectaccessreviews',
    {
      body: {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SubjectAccessReview',
        spec: {
          user,
          groups: ['system:serviceaccounts', `system:serviceaccounts:${ns}`, 'system:authenticated'],
          resourceAttributes: { group: '', ...a },
        },
      },
    },
  );
  return review.status.allowed;
}

/** "group/resource verb name" atoms an identity holds in a namespace, as the apiserver says. */
export async function effectiveRules(client: KubeClient, namespace: string, except: readonly string[] = []) {
  const review = await client.request<{
    status: {
      resourceRules: {
        verbs: string[];
        apiGroups?: string[];
        resources?: string[];
        resourceNames?: string[];
      }[];
    };
  }>('POST', '/apis/authorization.k8s.io/v1/selfsubjectrulesreviews', {
    body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectRulesReview', spec: { namespace } },
  });
  return ruleAtoms(review.status.resourceRules).filter((a) => !except.includes(a));
}

/**
 * What every ServiceAccount may do without any binding of ours (the apiserver's defaults: ask
 * what it may do, read ClusterTrustBundles, ...): the rules of a ServiceAccount bound to nothing.
 */
export async function baselineRules(
  admin: KubeClient,
  kubeconfig: string,
  namespace: string,
): Promise<string[]> {
  const name = 'rbac-baseline-nobody';
  await applyAny(admin, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace } });
  const nobody = new KubeClient(await connectionAs(admin, kubeconfig, namespace, name));
  try {
    return await effectiveRules(nobody, namespace);
  } finally {
    nobody.close();
  }
}

export function ruleAtoms(
  rules: readonly { verbs: string[]; apiGroups?: string[]; resources?: string[]; resourceNames?: string[] }[],
): string[] {
  const out = new Set<string>();
  for (const r of rules)
    for (const g of r.apiGroups ?? [])
      for (const res of r.resources ?? [])
        for (const v of r.verbs)
          for (const n of r.resourceNames?.length ? r.resourceNames : ['*'])
            out.add(`${g || 'core'}/${res} ${v} ${n}`);
  return [...out].sort();
}

type Rules = { verbs: string[]; apiGroups?: string[]; resources?: string[]; resourceNames?: string[] }[];
interface RbacObject {
  kind: string;
  metadata: { name: string; namespace?: string };
  rules?: Rules;
  roleRef?: { kind: string; name: string };
  subjects?: { kind: string; name: string; namespace?: string }[];
}

/**
 * The atoms the manifests grant a ServiceAccount in a namespace (what SelfSubjectRulesReview
 * answers): rules of every ClusterRoleBinding naming it, and of RoleBindings in that namespace.
 * `subjectless` also counts bindings without subjects (those the operator fills in).
 */
export function grantedAtoms(
  objects: readonly RbacObject[],
  sa: { namespace: string; name: string },
  namespace: string,
  subjectless = false,
): string[] {
  const role = (kind: string, name: string, ns?: string) =>
    objects.find(
      (o) =>
        o.kind === kind &&
        o.metadata.name === name &&
        (kind === 'ClusterRole' || o.metadata.namespace === ns),
    );
  const rules: Rules = [];
  for (const b of objects) {
    if (b.kind !== 'ClusterRoleBinding' && !(b.kind === 'RoleBinding' && b.metadata.namespace === namespace))
      continue;
    const names =
      b.subjects?.some(
        (s) => s.kind === 'ServiceAccount' && s.name === sa.name && s.namespace === sa.namespace,
      ) ||
      (subjectless && !b.subjects?.length);
    if (!names || !b.roleRef) continue;
    rules.push(...(role(b.roleRef.kind, b.roleRef.name, b.metadata.namespace)?.rules ?? []));
  }
  return ruleAtoms(rules);
}
