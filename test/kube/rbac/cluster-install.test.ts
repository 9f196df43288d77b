import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ApiError, KubeClient } from '../../../src/lib/kube/client.ts';
import type { KubeObject } from '../../../src/operator/api/meta.ts';
import type { Manager } from '../../../src/operator/manager.ts';
import { resourcePath, resourceType } from '../../../src/operator/runtime/resources.ts';
import {
  apply,
  ensureNamespace,
  eventually,
  findObject,
  installCrds,
  kubeClient,
  type Obj,
  startManager,
} from '../operator/harness.ts';
import {
  applyAny,
  baselineRules,
  connectionAs,
  deleteAny,
  effectiveRules,
  grantedAtoms,
  installRbac,
  OPERATOR_NS,
  OPERATOR_SA,
  OPERATOR_USER,
  saCan,
} from '../rbac-harness.ts';

// The cluster-wide install (deploy/base) as a platform team would review it: the operator runs
// under its own ServiceAccount with exactly the manifests' RBAC, and the apiserver is asked what
// it and the relays may and may not do.

const kubeconfig = inject('kubeconfig');
const kubectl = inject('kubectl');
const NS = 'rbac-cluster';
const OTHER = 'rbac-elsewhere';
const BINDING = 'email-relay-client-attribution';
const bindingPath = resourcePath(resourceType('ClusterRoleBinding'), undefined, BINDING);

const relay = (name: string, attribution = true, namespace = NS) =>
  ({
    apiVersion: 'email.bionicaisolutions.com/v1alpha1',
    kind: 'EmailRelay',
    metadata: { name, namespace },
    spec: {
      hostname: 'mail.example.com',
      upstream: { host: 'smtp-relay.gmail.com', port: 587, tls: 'starttls' },
      access: { attribution },
    },
  }) as KubeObject;

const legacyBinding = (namespace: string, name: string, labelled = true, role = BINDING) =>
  ({
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: {
      name: `email-relay:${namespace}:${name}`,
      labels: labelled
        ? {
            'app.kubernetes.io/managed-by': 'email-relay-operator',
            'email.bionicaisolutions.com/relay-namespace': namespace,
            'email.bionicaisolutions.com/relay-name': name,
          }
        : {},
    },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
    subjects: [{ kind: 'ServiceAccount', name, namespace }],
  }) as KubeObject;

/** The binding's subjects in this test's namespaces (relays of other test files may be listed too). */
const subjectsOf = async (client: KubeClient) =>
  (((await findObject(client, 'ClusterRoleBinding', '', BINDING))?.subjects ?? []) as Obj[]).filter((s) =>
    [NS, OTHER].includes(s.namespace),
  );
const forbidden = (err: unknown) => err instanceof ApiError && err.status === 403;

describe('cluster-wide install: the operator under deploy/base RBAC', () => {
  let admin: KubeClient;
  let asOperator: KubeClient;
  let manager: Manager | undefined;
  let installed: KubeObject[];
  /** What any ServiceAccount may do without our bindings, per namespace. */
  const baseline = new Map<string, string[]>();
  const ours = async (client: KubeClient, ns: string) => {
    if (!baseline.has(ns)) baseline.set(ns, await baselineRules(admin, kubeconfig, ns));
    return effectiveRules(client, ns, baseline.get(ns));
  };

  const startOperator = async () => {
    const m = startManager(kubeconfig, {
      kubeConfig: await connectionAs(admin, kubeconfig, OPERATOR_NS, OPERATOR_SA),
    });
    await m.start();
    return m;
  };

  beforeAll(async () => {
    admin = kubeClient(kubeconfig);
    await installCrds(admin);
    installed = await installRbac(admin, kubectl, 'deploy/base');
    await ensureNamespace(admin, NS);
    await ensureNamespace(admin, OTHER);
    asOperator = new KubeClient(await connectionAs(admin, kubeconfig, OPERATOR_NS, OPERATOR_SA));
  });
  afterAll(async () => {
    await manager?.stop();
    asOperator?.close();
    admin?.close();
  });

  it('what the apiserver lets the operator do is exactly the table (docs/permissions.md)', async () => {
    for (const ns of [OPERATOR_NS, NS]) {
      const granted = grantedAtoms(installed, { namespace: OPERATOR_NS, name: OPERATOR_SA }, ns);
      expect(await ours(asOperator, ns)).toEqual(granted);
    }
  });

  it('cannot create, change or delete any ClusterRoleBinding but the attribution one, nor bind other roles', async () => {
    const can = (a: Parameters<typeof saCan>[2]) => saCan(admin, OPERATOR_USER, a);
    const rbac = 'rbac.authorization.k8s.io';
    // The one it keeps (positive control: the review answers true where the manifests grant).
    expect(await can({ verb: 'patch', group: rbac, resource: 'clusterrolebindings', name: BINDING })).toBe(
      true,
    );
    for (const name of [
      'cluster-admin',
      'email-relay-operator',
      'system:kube-controller-manager',
      'anything',
    ])
      for (const verb of ['update', 'patch', 'delete'])
        expect(
          await can({ verb, group: rbac, resource: 'clusterrolebindings', name }),
          `${verb} ${name}`,
        ).toBe(false);
    expect(await can({ verb: 'delete', group: rbac, resource: 'clusterrolebindings', name: BINDING })).toBe(
      false,
    );
    expect(await can({ verb: 'create', group: rbac, resource: 'clusterrolebindings' })).toBe(false);
    expect(await can({ verb: 'list', group: rbac, resource: 'clusterrolebindings' })).toBe(false);
    expect(await can({ verb: 'create', group: rbac, resource: 'rolebindings', namespace: NS })).toBe(false);
    for (const role of ['cluster-admin', 'admin', 'edit', 'view'])
      expect(await can({ verb: 'bind', group: rbac, resource: 'clusterroles', name: role }), role).toBe(
        false,
      );
    expect(await can({ verb: 'escalate', group: rbac, resource: 'clusterroles', name: BINDING })).toBe(false);
    expect(await can({ verb: 'patch', group: rbac, resource: 'clusterroles', name: BINDING })).toBe(false);
    // Nor the paths around RBAC: Secrets, tokens of the ServiceAccounts it creates, pods, exec.
    for (const verb of ['get', 'list', 'watch'])
      expect(await can({ verb, resource: 'secrets', namespace: NS }), `${verb} secrets`).toBe(false);
    expect(
      await can({ verb: 'create', resource: 'serviceaccounts', subresource: 'token', namespace: NS }),
    ).toBe(false);
    expect(await can({ verb: 'create', resource: 'pods', namespace: NS })).toBe(false);
    expect(await can({ verb: 'create', resource: 'pods', subresource: 'exec', namespace: NS })).toBe(false);
    expect(await can({ verb: 'impersonate', resource: 'serviceaccounts', namespace: NS })).toBe(false);
  });

  it('and the apiserver refuses it when it tries', async () => {
    const crb = (name: string, role: string) =>
      ({
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'ClusterRoleBinding',
        metadata: { name },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
        subjects: [{ kind: 'ServiceAccount', name: OPERATOR_SA, namespace: OPERATOR_NS }],
      }) as KubeObject;
    for (const role of ['cluster-admin', 'edit', BINDING])
      await expect(applyAny(asOperator, crb(`escalate-to-${role}`, role))).rejects.toSatisfy(forbidden);
    await expect(asOperator.request('DELETE', bindingPath)).rejects.toSatisfy(forbidden);
    await expect(
      asOperator.request(
        'DELETE',
        resourcePath(resourceType('ClusterRoleBinding'), undefined, 'cluster-admin'),
      ),
    ).rejects.toSatisfy(forbidden);
    // Patching the one binding it may patch cannot point it at another role: roleRef is immutable.
    await expect(
      asOperator.request('PATCH', bindingPath, {
        body: {
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' },
        },
        contentType: 'application/merge-patch+json',
      }),
      // Refused as an escalation (403: it may not bind cluster-admin), or as immutable (422).
    ).rejects.toSatisfy((err: unknown) => err instanceof ApiError && [403, 422].includes(err.status));
    await expect(asOperator.get(`/api/v1/namespaces/${NS}/secrets`)).rejects.toSatisfy(forbidden);
  });

  it('keeps the one binding equal to the ServiceAccounts of relays that attribute; they may only list and watch pods and namespaces', async () => {
    manager = await startOperator();
    await apply(admin, relay('r1'));
    await apply(admin, relay('r2', false));
    await apply(admin, relay('r3', true, OTHER));
    await eventually('subjects', async () => (await subjectsOf(admin)).length === 2);
    expect(await subjectsOf(admin)).toEqual([
      { kind: 'ServiceAccount', name: 'r1', namespace: NS },
      { kind: 'ServiceAccount', name: 'r3', namespace: OTHER },
    ]);
    // The relay's own view, with its own token: pods and namespaces, list and watch, nothing else.
    await eventually('r1 ServiceAccount', () => findObject(admin, 'ServiceAccount', NS, 'r1'));
    const asRelay = new KubeClient(await connectionAs(admin, kubeconfig, NS, 'r1'));
    try {
      const atoms = [
        'core/namespaces list *',
        'core/namespaces watch *',
        'core/pods list *',
        'core/pods watch *',
      ];
      await eventually('RBAC in effect', async () => (await ours(asRelay, NS)).length === 4);
      expect(await ours(asRelay, NS)).toEqual(atoms);
      expect(await ours(asRelay, 'kube-system')).toEqual(atoms);
      expect(grantedAtoms(installed, { namespace: NS, name: 'r1' }, NS, true)).toEqual(atoms);
    } finally {
      asRelay.close();
    }
    const relayCan = (user: string, a: Parameters<typeof saCan>[2]) => saCan(admin, user, a);
    const r1 = `system:serviceaccount:${NS}:r1`;
    expect(await relayCan(r1, { verb: 'get', resource: 'secrets', namespace: NS })).toBe(false);
    expect(await relayCan(r1, { verb: 'list', resource: 'configmaps', namespace: NS })).toBe(false);
    expect(await relayCan(r1, { verb: 'create', resource: 'pods', namespace: NS })).toBe(false);
    expect(await relayCan(`system:serviceaccount:${NS}:r2`, { verb: 'list', resource: 'pods' })).toBe(false);

    // Attribution off, relay deleted: subject gone. A hand edit of the subjects is put back.
    await apply(admin, relay('r3', false, OTHER));
    await admin.request('DELETE', resourcePath(resourceType('EmailRelay'), NS, 'r1'));
    await eventually('subjects emptied', async () => (await subjectsOf(admin)).length === 0);
    await apply(admin, relay('r1'));
    await eventually('r1 back', async () => (await subjectsOf(admin)).length === 1);
    await admin.request('PATCH', bindingPath, {
      body: { subjects: [{ kind: 'ServiceAccount', name: 'intruder', namespace: NS }] },
      contentType: 'application/merge-patch+json',
    });
    await eventually('subjects restored', async () => {
      const s = await subjectsOf(admin);
      return s.length === 1 && s[0]?.name === 'r1';
    });
  });

  it('a binding deleted by hand cannot be recreated by the operator; re-applying the install brings the subjects back', async () => {
    await admin.request('DELETE', bindingPath);
    const crb = installed.find((o) => o.kind === 'ClusterRoleBinding' && o.metadata.name === BINDING);
    if (!crb) throw new Error('deploy/base has no attribution binding');
    await applyAny(admin, crb);
    await eventually('subjects back', async () => (await subjectsOf(admin)).length === 1);
  });

  it('upgrade from 0.1: deletes its labelled per-relay bindings once the shared binding covers them, nothing else', async () => {
    await manager?.stop();
    manager = undefined;
    const theirs = legacyBinding(NS, 'theirs');
    if (theirs.metadata.labels) theirs.metadata.labels['app.kubernetes.io/managed-by'] = 'someone-else';
    const kept = [
      legacyBinding(NS, 'hand-made', false), // our name pattern, not our labels
      legacyBinding(NS, 'admin', true, 'cluster-admin'), // our labels, another role
      theirs, // the relay labels, but managed by someone else
    ];
    const migrated = [legacyBinding(NS, 'r1'), legacyBinding(OTHER, 'gone')];
    for (const b of [...kept, ...migrated]) await applyAny(admin, b);

    // Without the upgrade grant the operator cannot even see them: it runs, and they stay.
    manager = await startOperator();
    await apply(admin, relay('r4'));
    await eventually('r4 subject', async () => (await subjectsOf(admin)).some((s) => s.name === 'r4'));
    for (const b of migrated)
      expect(await findObject(admin, 'ClusterRoleBinding', '', b.metadata.name)).toBeDefined();
    await manager.stop();

    // deploy/upgrade-0.1 grants list and delete for the upgrade.
    const upgrade = (await installRbac(admin, kubectl, 'deploy/upgrade-0.1')).filter((o) =>
      o.metadata.name.startsWith('email-relay-operator-upgrade'),
    );
    expect(upgrade.map((o) => o.kind).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding']);
    await eventually('grant in effect', () =>
      saCan(admin, OPERATOR_USER, {
        verb: 'list',
        group: 'rbac.authorization.k8s.io',
        resource: 'clusterrolebindings',
      }),
    );
    manager = await startOperator();
    for (const b of migrated)
      await eventually(
        `${b.metadata.name} deleted`,
        async () => !(await findObject(admin, 'ClusterRoleBinding', '', b.metadata.name)),
      );
    for (const b of kept)
      expect(await findObject(admin, 'ClusterRoleBinding', '', b.metadata.name)).toBeDefined();
    // r1 kept its access throughout: it is in the shared binding.
    expect((await subjectsOf(admin)).map((s) => s.name)).toContain('r1');
    for (const o of upgrade) await deleteAny(admin, o);
    for (const b of kept) await deleteAny(admin, b);
  });
});
