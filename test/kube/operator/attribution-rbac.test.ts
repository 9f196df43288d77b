import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import type { KubeClient } from '../../../src/lib/kube/client.ts';
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
  startManager,
} from './harness.ts';

// A relay watches pods and namespaces to attribute its clients; the operator grants exactly that
// through a ClusterRoleBinding per relay (deploy/base's ClusterRole), and removes it with the relay.

const kubeconfig = inject('kubeconfig');
const NS = 'rbac-test';
const BINDING = `email-relay:${NS}:r1`;

async function deployedClusterRole(): Promise<KubeObject> {
  const text = await readFile(join(import.meta.dirname, '../../../deploy/base/rbac.yaml'), 'utf8');
  const docs = parseAllDocuments(text).map((d) => d.toJSON() as KubeObject);
  const role = docs.find(
    (d) => d.kind === 'ClusterRole' && d.metadata.name === 'email-relay-client-attribution',
  );
  if (!role) throw new Error('deploy/base/rbac.yaml has no email-relay-client-attribution ClusterRole');
  return role;
}

async function can(client: KubeClient, user: string, verb: string, resource: string): Promise<boolean> {
  const review = await client.request<{ status: { allowed: boolean } }>(
    'POST',
    '/apis/authorization.k8s.io/v1/subjectaccessreviews',
    {
      body: {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SubjectAccessReview',
        spec: {
          user,
          groups: ['system:serviceaccounts', `system:serviceaccounts:${NS}`],
          resourceAttributes: { verb, resource },
        },
      },
    },
  );
  return review.status.allowed;
}

const relay = (name: string, attribution = true) =>
  ({
    apiVersion: 'email.bionicaisolutions.com/v1alpha1',
    kind: 'EmailRelay',
    metadata: { name, namespace: NS },
    spec: {
      hostname: 'mail.example.com',
      upstream: { host: 'smtp-relay.gmail.com', port: 587, tls: 'starttls' },
      access: { attribution },
    },
  }) as KubeObject;

describe('client attribution RBAC', () => {
  let client: KubeClient;
  let manager: Manager | undefined;

  beforeAll(async () => {
    client = kubeClient(kubeconfig);
    await installCrds(client);
    await ensureNamespace(client, NS);
    await apply(client, await deployedClusterRole());
    manager = startManager(kubeconfig);
    await manager.start();
  });
  afterAll(async () => {
    await manager?.stop();
    client?.close();
  });

  it('binds the relay ServiceAccount to read-only pod and namespace access, nothing more', async () => {
    await apply(client, relay('r1'));
    const binding = await eventually('ClusterRoleBinding', () =>
      findObject(client, 'ClusterRoleBinding', '', BINDING),
    );
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'r1', namespace: NS }]);
    const sa = `system:serviceaccount:${NS}:r1`;
    await eventually('RBAC in effect', () => can(client, sa, 'watch', 'pods'));
    expect(await can(client, sa, 'list', 'namespaces')).toBe(true);
    expect(await can(client, sa, 'create', 'pods')).toBe(false);
    expect(await can(client, sa, 'get', 'secrets')).toBe(false);
  });

  it('puts back a binding deleted by hand, and drops it when attribution is turned off', async () => {
    const path = resourcePath(resourceType('ClusterRoleBinding'), undefined, BINDING);
    await client.request('DELETE', path);
    await eventually('binding restored', () => findObject(client, 'ClusterRoleBinding', '', BINDING));
    await apply(client, relay('r1', false));
    await eventually(
      'binding removed',
      async () => !(await findObject(client, 'ClusterRoleBinding', '', BINDING)),
    );
  });

  it('removes the binding with the relay, also one left behind while the operator was down', async () => {
    await apply(client, relay('r1'));
    await eventually('binding', () => findObject(client, 'ClusterRoleBinding', '', BINDING));
    await client.request('DELETE', resourcePath(resourceType('EmailRelay'), NS, 'r1'));
    await eventually(
      'binding removed',
      async () => !(await findObject(client, 'ClusterRoleBinding', '', BINDING)),
    );

    // A relay deleted while no operator ran: its binding is found by label at the next start.
    await manager?.stop();
    manager = undefined;
    await apply(client, {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: {
        name: `email-relay:${NS}:gone`,
        labels: {
          'app.kubernetes.io/managed-by': 'email-relay-operator',
          'email.bionicaisolutions.com/relay-namespace': NS,
          'email.bionicaisolutions.com/relay-name': 'gone',
        },
      },
      roleRef: {
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'ClusterRole',
        name: 'email-relay-client-attribution',
      },
      subjects: [{ kind: 'ServiceAccount', name: 'gone', namespace: NS }],
    } as KubeObject);
    manager = startManager(kubeconfig);
    await manager.start();
    await eventually(
      'orphan removed',
      async () => !(await findObject(client, 'ClusterRoleBinding', '', `email-relay:${NS}:gone`)),
    );
  });
});
