import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { renderInstall } from '../../../scripts/permissions.ts';
import { ApiError, type KubeClient } from '../../../src/lib/kube/client.ts';
import { emailRelaySpecSchema } from '../../../src/operator/api/emailrelay.ts';
import { renderDrainJob, renderRelay } from '../../../src/operator/emailrelay/render.ts';
import { apply, ensureNamespace, kubeClient, type Obj } from '../operator/harness.ts';

// Pod Security "restricted", enforced by the apiserver's built-in PodSecurity admission: the
// operator's pod (deploy/base) and every shape of relay pod the operator renders are admitted in
// a namespace labelled pod-security.kubernetes.io/enforce=restricted. Pods are admitted or refused
// when they are created, so a server-side dry run of the pod a controller would make suffices
// (no node needed); a pod that breaks the profile is refused, so the check can fail.

const kubeconfig = inject('kubeconfig');
const kubectl = inject('kubectl');
const NS = 'psa-restricted';

/** The pod a Deployment's or StatefulSet's controller would create from its template. */
function podOf(workload: Obj, name: string): Obj {
  const t = workload.spec.template;
  const claims = (workload.spec.volumeClaimTemplates ?? []) as Obj[];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: NS, labels: t.metadata?.labels ?? {} },
    spec: {
      ...t.spec,
      volumes: [
        ...(t.spec.volumes ?? []),
        ...claims.map((c) => ({
          name: c.metadata.name,
          persistentVolumeClaim: { claimName: `${c.metadata.name}-${name}` },
        })),
      ],
    },
  };
}

const relayPod = (spec: Record<string, unknown>) => {
  const rendered = renderRelay({
    relay: { name: 'postfix-relay', namespace: NS, uid: 'u' },
    spec: emailRelaySpecSchema.parse({
      hostname: 'mail.example.com',
      upstream: { host: 'smtp-relay.gmail.com', port: 587, tls: 'starttls' },
      ...spec,
    }),
    defaultImage: 'example.invalid/email-relay:test',
    policies: [],
  });
  const workload = rendered.objects.find((o) => o.kind === rendered.workloadKind) as Obj;
  return podOf(workload, 'postfix-relay-0');
};

describe('Pod Security "restricted"', () => {
  let admin: KubeClient;

  const admit = (pod: Obj) =>
    admin.request<Obj>('POST', `/api/v1/namespaces/${NS}/pods`, { query: { dryRun: 'All' }, body: pod });

  beforeAll(async () => {
    admin = kubeClient(kubeconfig);
    await ensureNamespace(admin, NS, {
      'pod-security.kubernetes.io/enforce': 'restricted',
      'pod-security.kubernetes.io/enforce-version': 'latest',
    });
    // The ServiceAccount admission plugin wants the pods' ServiceAccounts to exist.
    for (const name of ['email-relay-operator', 'postfix-relay'])
      await apply(admin, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace: NS } });
  });
  afterAll(() => admin?.close());

  it("admits the operator's pod as deploy/base renders it (and its namespace enforces restricted)", async () => {
    const objects = (await renderInstall(kubectl, 'deploy/base')) as Obj[];
    const ns = objects.find((o) => o.kind === 'Namespace');
    expect(ns?.metadata.labels['pod-security.kubernetes.io/enforce']).toBe('restricted');
    const deployment = objects.find(
      (o) => o.kind === 'Deployment' && o.metadata.name === 'email-relay-operator',
    );
    if (!deployment) throw new Error('deploy/base has no operator Deployment');
    const created = await admit(podOf(deployment, 'email-relay-operator-0'));
    expect(created.metadata.name).toBe('email-relay-operator-0');
  });

  it('admits every shape of relay pod: port 25 (sysctl), persistent or not, TLS and credentials, no token', async () => {
    const shapes: Record<string, unknown>[] = [
      {},
      { queue: { persistence: { enabled: false } } },
      { smtp: { port: 2525 }, access: { attribution: false } },
      {
        tls: { secretName: 'relay-tls' },
        upstream: {
          host: 'smtp-relay.gmail.com',
          port: 587,
          tls: 'starttls',
          credentialsSecretRef: { name: 'upstream' },
          routes: [
            {
              senderDomains: ['example.org'],
              host: 'smtp.example.org',
              credentialsSecretRef: { name: 'other' },
            },
          ],
        },
      },
    ];
    for (const spec of shapes) {
      const pod = relayPod(spec);
      await expect(admit(pod), JSON.stringify(spec)).resolves.toMatchObject({ kind: 'Pod' });
    }
  });

  it("admits a drain Job's pod (a stranded queue volume emptied by the relay's own image)", async () => {
    const spec = emailRelaySpecSchema.parse({
      hostname: 'mail.example.com',
      upstream: { host: 'smtp-relay.gmail.com', port: 587, tls: 'starttls' },
    });
    const job = renderDrainJob(
      { name: 'postfix-relay', namespace: NS, uid: 'u' },
      spec,
      'example.invalid/email-relay:test',
      'hash',
      3,
    ) as Obj;
    await expect(admit(podOf(job, 'postfix-relay-drain-3-x'))).resolves.toMatchObject({ kind: 'Pod' });
  });

  it("deploy/samples enforces restricted in the relay's namespace, and its relay's pod is admitted", async () => {
    const samples = (await renderInstall(kubectl, 'deploy/samples')) as Obj[];
    const relay = samples.find((o) => o.kind === 'EmailRelay');
    const ns = samples.find((o) => o.kind === 'Namespace' && o.metadata.name === relay?.metadata.namespace);
    expect(ns?.metadata.labels?.['pod-security.kubernetes.io/enforce']).toBe('restricted');
    await expect(admit(relayPod(relay?.spec ?? {}))).resolves.toMatchObject({ kind: 'Pod' });
  });

  it('refuses a pod that breaks the profile (the admission is really on)', async () => {
    const pod = relayPod({});
    delete pod.spec.securityContext.runAsNonRoot;
    delete pod.spec.securityContext.seccompProfile;
    pod.spec.containers[0].securityContext = { allowPrivilegeEscalation: true };
    const err = await admit(pod).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(403);
    expect((err as ApiError).message).toMatch(
      /violates PodSecurity "restricted:latest".*allowPrivilegeEscalation/,
    );
  });
});
