import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { renderInstall } from '../../../scripts/permissions.ts';
import { KubeClient } from '../../../src/lib/kube/client.ts';
import type { KubeObject } from '../../../src/operator/api/meta.ts';
import type { Manager } from '../../../src/operator/manager.ts';
import {
  apply,
  ensureNamespace,
  eventually,
  findObject,
  installCrds,
  kubeClient,
  startManager,
} from '../operator/harness.ts';
import {
  baselineRules,
  connectionAs,
  deleteAny,
  effectiveRules,
  grantedAtoms,
  installRbac,
  OPERATOR_NS,
  OPERATOR_SA,
  OPERATOR_USER,
  RBAC_KINDS,
  saCan,
} from '../rbac-harness.ts';

// deploy/namespaced: the operator watches email-server-prod with Roles only; everything it holds
// outside that namespace is read-only (namespaces) or its Lease; it touches no RBAC object.

const kubeconfig = inject('kubeconfig');
const kubectl = inject('kubectl');
const WATCHED = 'email-server-prod';
const OUTSIDE = 'rbac-outside';

const relay = (name: string, namespace: string) =>
  ({
    apiVersion: 'email.bionicaisolutions.com/v1alpha1',
    kind: 'EmailRelay',
    metadata: { name, namespace },
    spec: {
      hostname: 'mail.example.com',
      upstream: { host: 'smtp-relay.gmail.com', port: 587, tls: 'starttls' },
    },
  }) as KubeObject;

describe('namespaced install: Roles only', () => {
  let admin: KubeClient;
  let asOperator: KubeClient;
  let manager: Manager | undefined;
  let installed: KubeObject[];
  const id = (o: KubeObject) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;

  beforeAll(async () => {
    admin = kubeClient(kubeconfig);
    await installCrds(admin);
    // An earlier cluster-wide install on this apiserver: take away what the namespaced one lacks.
    const namespaced = new Set(
      (await renderInstall(kubectl, 'deploy/namespaced')).map((o) => id(o as KubeObject)),
    );
    for (const o of (await renderInstall(kubectl, 'deploy/base')) as KubeObject[])
      if (RBAC_KINDS.includes(o.kind) && !namespaced.has(id(o))) await deleteAny(admin, o);
    await ensureNamespace(admin, WATCHED);
    await ensureNamespace(admin, OUTSIDE);
    installed = await installRbac(admin, kubectl, 'deploy/namespaced');
    asOperator = new KubeClient(await connectionAs(admin, kubeconfig, OPERATOR_NS, OPERATOR_SA));
  });
  afterAll(async () => {
    await manager?.stop();
    asOperator?.close();
    admin?.close();
  });

  it('the cluster-scoped part is the CRDs and read-only roles; the operator holds no ClusterRole that writes', async () => {
    const clusterRoles = installed.filter((o) => o.kind === 'ClusterRole') as (KubeObject & {
      rules: { verbs: string[] }[];
    })[];
    expect(clusterRoles.map((o) => o.metadata.name).sort()).toEqual([
      'email-relay-client-attribution',
      'email-relay-operator-namespaces',
    ]);
    for (const r of clusterRoles)
      for (const rule of r.rules) expect(rule.verbs.sort()).toEqual(['list', 'watch']);
    expect(
      installed
        .filter((o) => o.kind === 'Role')
        .map((o) => `${o.metadata.namespace}/${o.metadata.name}`)
        .sort(),
    ).toEqual([`${OPERATOR_NS}/email-relay-operator-leader-election`, `${WATCHED}/email-relay-operator`]);
  });

  it('what the apiserver lets the operator do, per namespace, is exactly the table', async () => {
    await eventually('RBAC in effect', async () =>
      saCan(admin, OPERATOR_USER, {
        verb: 'create',
        group: 'apps',
        resource: 'statefulsets',
        namespace: WATCHED,
      }),
    );
    const ours = async (ns: string) =>
      effectiveRules(asOperator, ns, await baselineRules(admin, kubeconfig, ns));
    for (const ns of [WATCHED, OPERATOR_NS, OUTSIDE]) {
      const granted = grantedAtoms(installed, { namespace: OPERATOR_NS, name: OPERATOR_SA }, ns);
      expect(await ours(ns), ns).toEqual(granted);
    }
    // Outside its namespaces: only reading namespaces.
    expect(await ours(OUTSIDE)).toEqual(['core/namespaces list *', 'core/namespaces watch *']);
  });

  it('cannot touch namespaces outside its scope, RBAC, or Secrets', async () => {
    const can = (a: Parameters<typeof saCan>[2]) => saCan(admin, OPERATOR_USER, a);
    const kinds: [string, string][] = [
      ['', 'configmaps'],
      ['', 'services'],
      ['', 'serviceaccounts'],
      ['apps', 'statefulsets'],
      ['apps', 'deployments'],
      ['networking.k8s.io', 'networkpolicies'],
      ['policy', 'poddisruptionbudgets'],
    ];
    for (const [group, resource] of kinds) {
      expect(await can({ verb: 'create', group, resource, namespace: WATCHED }), resource).toBe(true);
      for (const verb of ['create', 'patch', 'delete', 'list'])
        expect(await can({ verb, group, resource, namespace: OUTSIDE }), `${verb} ${resource}`).toBe(false);
      // Not cluster-wide either (a list of all namespaces at once).
      expect(await can({ verb: 'list', group, resource }), `list all ${resource}`).toBe(false);
    }
    const crd = 'email.bionicaisolutions.com';
    expect(await can({ verb: 'list', group: crd, resource: 'emailrelays', namespace: OUTSIDE })).toBe(false);
    expect(
      await can({
        verb: 'patch',
        group: crd,
        resource: 'emailrelays',
        subresource: 'status',
        namespace: OUTSIDE,
      }),
    ).toBe(false);
    expect(await can({ verb: 'create', resource: 'events', namespace: OUTSIDE })).toBe(false);
    const rbac = 'rbac.authorization.k8s.io';
    for (const verb of ['get', 'patch', 'update', 'delete'])
      expect(
        await can({
          verb,
          group: rbac,
          resource: 'clusterrolebindings',
          name: 'email-relay-client-attribution',
        }),
        verb,
      ).toBe(false);
    expect(await can({ verb: 'create', group: rbac, resource: 'rolebindings', namespace: WATCHED })).toBe(
      false,
    );
    expect(
      await can({
        verb: 'bind',
        group: rbac,
        resource: 'clusterroles',
        name: 'email-relay-client-attribution',
      }),
    ).toBe(false);
    for (const ns of [WATCHED, OUTSIDE])
      expect(await can({ verb: 'get', resource: 'secrets', namespace: ns })).toBe(false);
    // The relay of the watched namespace may read pods and namespaces (the install lists it), no more.
    const relayUser = `system:serviceaccount:${WATCHED}:postfix-relay`;
    expect(await saCan(admin, relayUser, { verb: 'watch', resource: 'pods' })).toBe(true);
    expect(await saCan(admin, relayUser, { verb: 'get', resource: 'secrets', namespace: WATCHED })).toBe(
      false,
    );
  });

  it('the operator reconciles relays in its namespaces under those Roles, and never looks elsewhere', async () => {
    await apply(admin, relay('outside', OUTSIDE));
    manager = startManager(kubeconfig, {
      kubeConfig: await connectionAs(admin, kubeconfig, OPERATOR_NS, OPERATOR_SA),
      namespaces: [WATCHED],
    });
    expect(manager.binding).toBeUndefined();
    await manager.start();
    await apply(admin, relay('inside', WATCHED));
    const status = await eventually('status of the relay inside', async () =>
      (await findObject(admin, 'EmailRelay', WATCHED, 'inside'))?.status?.conditions?.length
        ? true
        : undefined,
    );
    expect(status).toBe(true);
    for (const kind of [
      'ServiceAccount',
      'ConfigMap',
      'Service',
      'NetworkPolicy',
      'StatefulSet',
      'PodDisruptionBudget',
    ])
      expect(
        await findObject(
          admin,
          kind,
          WATCHED,
          kind === 'ConfigMap' ? 'inside-config' : kind === 'NetworkPolicy' ? 'inside-smtp' : 'inside',
        ),
        kind,
      ).toBeDefined();
    expect(manager.relays.list().map((r) => r.metadata.namespace)).not.toContain(OUTSIDE);
    expect((await findObject(admin, 'EmailRelay', OUTSIDE, 'outside'))?.status).toBeUndefined();
    expect(await findObject(admin, 'ServiceAccount', OUTSIDE, 'outside')).toBeUndefined();
    // Its caches synced without one forbidden list or watch (they would never sync).
    expect(manager.synced).toBe(true);
  });
});
