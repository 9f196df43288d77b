import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ApiError, type KubeClient } from '../../../src/lib/kube/client.ts';
import { CONFIG_HASH_ANNOTATION } from '../../../src/operator/emailrelay/names.ts';
import type { Manager } from '../../../src/operator/manager.ts';
import { resourcePath, resourceType } from '../../../src/operator/runtime/resources.ts';
import {
  apply,
  ensureNamespace,
  eventually,
  findObject,
  getObject,
  installCrds,
  kubeClient,
  kubectl,
  startManager,
} from './harness.ts';

const kubeconfig = inject('kubeconfig');
const kubectlBin = inject('kubectl');
const NS = 'email-server-prod';
const ACCESS = 'email.bionicaisolutions.com/relay-access';

const minimalRelay = (spec: Record<string, unknown> = {}) => ({
  apiVersion: 'email.bionicaisolutions.com/v1alpha1',
  kind: 'EmailRelay',
  metadata: { name: 'postfix-relay', namespace: NS },
  spec: {
    hostname: 'mail.bionicaisolutions.com',
    upstream: { host: 'smtp-relay.gmail.com', port: 587, tls: 'starttls' },
    ...spec,
  },
});

describe('EmailRelay operator against a real kube-apiserver', () => {
  let client: KubeClient;
  let manager: Manager;
  const relayStatus = async () => (await findObject(client, 'EmailRelay', NS, 'postfix-relay'))?.status;

  beforeAll(async () => {
    client = kubeClient(kubeconfig);
    await installCrds(client);
    await ensureNamespace(client, NS);
    await ensureNamespace(client, 'app-a', { [ACCESS]: 'true' });
    await ensureNamespace(client, 'app-b');
    manager = startManager(kubeconfig);
    await manager.start();
  });

  afterAll(async () => {
    await manager?.stop();
    client?.close();
  });

  it("turns DESIGN.md's minimal EmailRelay into the seed's endpoints, a workload, policies, config and status", async () => {
    await apply(client, minimalRelay());
    const svc = await eventually('Service postfix-relay', () =>
      findObject(client, 'Service', NS, 'postfix-relay'),
    );
    expect(svc.spec.type).toBe('ClusterIP');
    expect(svc.spec.ports).toEqual([expect.objectContaining({ name: 'smtp', port: 25, targetPort: 'smtp' })]);
    const headless = await eventually('headless Service', () =>
      findObject(client, 'Service', NS, 'postfix-relay-headless'),
    );
    expect(headless.spec.clusterIP).toBe('None');
    expect(headless.spec.ports[0].port).toBe(25);
    const sts = await eventually('StatefulSet', () => findObject(client, 'StatefulSet', NS, 'postfix-relay'));
    expect(sts.spec.template.spec.containers[0].args).toEqual([
      'relay',
      '--config',
      '/etc/email-relay/config/relay.yaml',
    ]);
    expect(await findObject(client, 'NetworkPolicy', NS, 'postfix-relay-smtp')).toBeDefined();
    expect(await findObject(client, 'NetworkPolicy', NS, 'postfix-relay-metrics')).toBeDefined();
    expect(await findObject(client, 'PodDisruptionBudget', NS, 'postfix-relay')).toBeDefined();
    const cm = await getObject(client, 'ConfigMap', NS, 'postfix-relay-config');
    expect(cm.data['relay.yaml']).toContain('hostname: mail.bionicaisolutions.com');
    expect(sts.metadata.ownerReferences[0]).toMatchObject({
      kind: 'EmailRelay',
      name: 'postfix-relay',
      controller: true,
    });

    const status = await eventually('status', async () => {
      const s = await relayStatus();
      return s?.observedGeneration ? s : undefined;
    });
    expect(status.endpoints).toEqual([
      'postfix-relay.email-server-prod.svc.cluster.local:25',
      'postfix-relay-headless.email-server-prod.svc.cluster.local:25',
    ]);
    expect(status.admittedNamespaces).toEqual(['app-a']);
    expect(status.conditions.map((c: { type: string }) => c.type)).toEqual([
      'Ready',
      'Available',
      'Progressing',
      'Degraded',
      'UpstreamHealthy',
    ]);
    // No pod answers on /summary: nobody knows whether the smarthost takes mail.
    expect(status.conditions[4]).toMatchObject({ status: 'Unknown', reason: 'NoSummary' });
    expect(status.queue).toEqual({
      queued: 0,
      deferred: 0,
      deliveredLastHour: 0,
      bouncedLastHour: 0,
      pods: 0,
    });
    expect(status.strandedQueues).toEqual([]);
    // No kubelet: pods never become ready, and the status says so.
    expect(status.conditions[0]).toMatchObject({ status: 'False', reason: 'PodsNotReady' });

    await manager.recorder.flush();
    const describe = await kubectl(
      kubectlBin,
      kubeconfig,
      'describe',
      'emailrelay',
      'postfix-relay',
      '-n',
      NS,
    );
    expect(describe).toMatch(/Events:/);
    // one event for everything created in a reconcile, not one per child
    expect(describe).toMatch(/Created\s+.*Created ServiceAccount postfix-relay, .*Service postfix-relay, /);
    // Each event once: a reconcile racing our own status write does not repeat them.
    expect(describe).not.toMatch(/\(x\d+ over/);
    // No RBAC object per relay (the one attribution binding lists its ServiceAccount instead).
    expect(describe).not.toMatch(/ClusterRoleBinding/);
    const table = await kubectl(kubectlBin, kubeconfig, 'get', 'er', '-n', NS);
    expect(table.split('\n')[0]).toMatch(/NAME\s+READY\s+REPLICAS\s+QUEUED\s+OLDEST\s+ENDPOINT\s+AGE/);
    expect(table).toContain('postfix-relay.email-server-prod.svc.cluster.local:25');
  });

  it('admits a namespace when it is labelled and stops when the label goes', async () => {
    await ensureNamespace(client, 'app-b', { [ACCESS]: 'true' });
    await eventually('app-b admitted', async () =>
      (await relayStatus())?.admittedNamespaces?.includes('app-b'),
    );
    await ensureNamespace(client, 'app-b', {});
    await eventually('app-b no longer admitted', async () => {
      const s = await relayStatus();
      return s && !s.admittedNamespaces.includes('app-b');
    });
  });

  it('a spec edit changes the ConfigMap and the pod template hash', async () => {
    const before = await getObject(client, 'StatefulSet', NS, 'postfix-relay');
    const hash = before.spec.template.metadata.annotations[CONFIG_HASH_ANNOTATION];
    await apply(client, minimalRelay({ smtp: { maxMessageSize: 20_000_000 } }));
    const after = await eventually('new hash', async () => {
      const s = await getObject(client, 'StatefulSet', NS, 'postfix-relay');
      return s.spec.template.metadata.annotations[CONFIG_HASH_ANNOTATION] !== hash ? s : undefined;
    });
    const cm = await getObject(client, 'ConfigMap', NS, 'postfix-relay-config');
    expect(cm.data['relay.yaml']).toContain('maxMessageSize: 20000000');
    expect((await relayStatus()).configHash).toBe(
      after.spec.template.metadata.annotations[CONFIG_HASH_ANNOTATION],
    );
  });

  it('puts back a child deleted or edited by hand', async () => {
    const svc = await getObject(client, 'Service', NS, 'postfix-relay');
    await client.request('DELETE', resourcePath(resourceType('Service'), NS, 'postfix-relay'));
    const back = await eventually('Service recreated', async () => {
      const s = await findObject(client, 'Service', NS, 'postfix-relay');
      return s && s.metadata.uid !== svc.metadata.uid ? s : undefined;
    });
    expect(back.spec.ports[0].port).toBe(25);

    await client.request('PATCH', resourcePath(resourceType('ConfigMap'), NS, 'postfix-relay-config'), {
      body: { data: { 'relay.yaml': 'hostname: hacked.example.com\n' } },
      contentType: 'application/merge-patch+json',
    });
    await eventually('ConfigMap restored', async () => {
      const cm = await getObject(client, 'ConfigMap', NS, 'postfix-relay-config');
      return cm.data['relay.yaml'].includes('mail.bionicaisolutions.com');
    });
  });

  it('removes a child no longer wanted (the PodDisruptionBudget at one replica)', async () => {
    await apply(client, minimalRelay({ smtp: { maxMessageSize: 20_000_000 }, replicas: 1 }));
    await eventually(
      'PDB deleted',
      async () => (await findObject(client, 'PodDisruptionBudget', NS, 'postfix-relay')) === undefined,
    );
  });

  it('writes nothing in a steady state', async () => {
    const sum = async (c: { get(): Promise<{ values: { value: number; labels: object }[] }> }, match = {}) =>
      (await c.get()).values
        .filter((v) => Object.entries(match).every(([k, want]) => Reflect.get(v.labels, k) === want))
        .reduce((n, v) => n + v.value, 0);
    const total = () => sum(manager.metrics.writes);
    const reconciles = () => sum(manager.metrics.reconciles, { controller: manager.relayController.name });
    // Let the last changes settle (the controller-manager updates workload status, which we watch).
    let last = -1;
    await eventually(
      'quiet',
      async () => {
        const now = await total();
        const quiet = now === last;
        last = now;
        if (!quiet) await new Promise((r) => setTimeout(r, 1500));
        return quiet;
      },
      60_000,
    );
    const before = await total();
    const reconciledBefore = await reconciles();
    const rv = (await getObject(client, 'EmailRelay', NS, 'postfix-relay')).metadata.resourceVersion;
    // Force reconciles with nothing to change: they must not write, not even status.
    const seen: string[] = [];
    const observer = manager.client.observer;
    manager.client.observer = (method, path, status) => {
      if (method !== 'GET') seen.push(`${method} ${path}`);
      observer?.(method, path, status);
    };
    // One at a time, each waited for: the reconciles must really run (a test that only waited could
    // pass with a stuck queue), and none of them may write.
    for (let i = 1; i <= 3; i++) {
      manager.relayController.enqueue(`${NS}/postfix-relay`);
      await eventually(
        `reconcile ${i} ran`,
        async () => (await reconciles()) >= reconciledBefore + i,
        30_000,
      );
    }
    manager.client.observer = observer;
    expect(seen).toEqual([]);
    expect(await total()).toBe(before);
    expect((await getObject(client, 'EmailRelay', NS, 'postfix-relay')).metadata.resourceVersion).toBe(rv);
  });

  it('rejects an invalid spec at admission (schema and CEL)', async () => {
    const err = (await apply(client, minimalRelay({ hostname: 'localhost' })).catch((e) => e)) as ApiError;
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(422);
    const cel = (await apply(
      client,
      minimalRelay({ queue: { retryInitialSeconds: 600, retryMaxSeconds: 300 } }),
    ).catch((e) => e)) as ApiError;
    expect(cel.status).toBe(422);
    expect(cel.message).toContain('retryMaxSeconds must be at least retryInitialSeconds');
  });

  it('reports what admission cannot know as a False condition (the relay refuses the config)', async () => {
    await apply(
      client,
      minimalRelay({
        smtp: { maxMessageSize: 20_000_000 },
        replicas: 1,
        access: { extraCIDRs: ['999.1.1.1'] },
      }),
    );
    const ready = await eventually('InvalidConfig', async () => {
      const c = (await relayStatus())?.conditions?.find((x: { type: string }) => x.type === 'Ready');
      return c?.reason === 'InvalidConfig' ? c : undefined;
    });
    expect(ready.status).toBe('False');
    expect(ready.message).toMatch(/access\.allow/);
    await apply(client, minimalRelay({ smtp: { maxMessageSize: 20_000_000 }, replicas: 1 }));
    await eventually('recovered', async () => {
      const c = (await relayStatus())?.conditions?.find((x: { type: string }) => x.type === 'Ready');
      return c?.reason === 'PodsNotReady';
    });
  });

  it('compiles an EmailPolicy into the relay ConfigMap and reports it on both', async () => {
    const policy = (maxRecipients: number) => ({
      apiVersion: 'email.bionicaisolutions.com/v1alpha1',
      kind: 'EmailPolicy',
      metadata: { name: 'limits', namespace: NS },
      spec: {
        relays: ['postfix-relay'],
        rules: { maxRecipients, senders: { domains: ['bionicaisolutions.com'] } },
      },
    });
    await apply(client, policy(10));
    await eventually('policy in ConfigMap', async () => {
      const cm = await getObject(client, 'ConfigMap', NS, 'postfix-relay-config');
      return cm.data['relay.yaml'].includes('maxRecipients: 10');
    });
    await apply(client, policy(20));
    await eventually('policy change in ConfigMap', async () => {
      const cm = await getObject(client, 'ConfigMap', NS, 'postfix-relay-config');
      return cm.data['relay.yaml'].includes('maxRecipients: 20');
    });
    expect((await relayStatus()).policies).toEqual(['limits']);
    const p = await eventually('policy status', async () => {
      const o = await getObject(client, 'EmailPolicy', NS, 'limits');
      return o.status?.relays?.length ? o : undefined;
    });
    expect(p.status.relays).toEqual(['postfix-relay']);
    expect(p.status.conditions.find((c: { type: string }) => c.type === 'Accepted').status).toBe('True');
  });
});
