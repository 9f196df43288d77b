import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { KubeClient } from '../../../src/lib/kube/client.ts';
import type { Manager } from '../../../src/operator/manager.ts';
import {
  apply,
  ensureNamespace,
  eventually,
  findObject,
  installCrds,
  kubeClient,
  startManager,
} from './harness.ts';

// An API server error that does not go away (here: a validating webhook that cannot be reached,
// failurePolicy Fail, so every ConfigMap write in the namespace gets a 500) must show on the
// EmailRelay, not only in the operator's log; and the relay recovers once the cause is gone.

const kubeconfig = inject('kubeconfig');
const NS = `apply-errors-${Date.now().toString(36)}`;
const WEBHOOK = `email-relay-test-unreachable-${NS}`;
const WEBHOOKS = '/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations';

describe('a lasting API server error while applying children', () => {
  let client: KubeClient;
  let manager: Manager;
  const degraded = async () =>
    (await findObject(client, 'EmailRelay', NS, 'relay'))?.status?.conditions?.find(
      (c: { type: string }) => c.type === 'Degraded',
    );

  beforeAll(async () => {
    client = kubeClient(kubeconfig);
    await installCrds(client);
    await ensureNamespace(client, NS);
    await client.request('POST', WEBHOOKS, {
      body: {
        apiVersion: 'admissionregistration.k8s.io/v1',
        kind: 'ValidatingWebhookConfiguration',
        metadata: { name: WEBHOOK },
        webhooks: [
          {
            name: 'unreachable.test.example.com',
            clientConfig: { url: 'https://127.0.0.1:1/validate' },
            rules: [
              {
                operations: ['CREATE', 'UPDATE'],
                apiGroups: [''],
                apiVersions: ['v1'],
                resources: ['configmaps'],
              },
            ],
            namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': NS } },
            failurePolicy: 'Fail',
            sideEffects: 'None',
            admissionReviewVersions: ['v1'],
            timeoutSeconds: 1,
          },
        ],
      },
    });
    manager = startManager(kubeconfig);
    await manager.start();
  });

  afterAll(async () => {
    await client?.request('DELETE', `${WEBHOOKS}/${WEBHOOK}`).catch(() => undefined);
    await manager?.stop();
    client?.close();
  });

  it('is reported as Degraded/ApplyRetrying naming the child, and clears once the API accepts it', async () => {
    await apply(client, {
      apiVersion: 'email.bionicaisolutions.com/v1alpha1',
      kind: 'EmailRelay',
      metadata: { name: 'relay', namespace: NS },
      spec: { hostname: 'mail.example.com', upstream: { host: 'smtp-relay.gmail.com', port: 587 } },
    });
    const c = await eventually('Degraded ApplyRetrying', async () => {
      const d = await degraded();
      return d?.reason === 'ApplyRetrying' ? d : undefined;
    });
    expect(c.status).toBe('True');
    expect(c.message).toMatch(/^ConfigMap relay-config: .*500.*\(retrying\)$/);
    // the rest of its round (identity, config, network) exists; the workload waits for the config
    expect(await findObject(client, 'ServiceAccount', NS, 'relay')).toBeDefined();
    expect(await findObject(client, 'Service', NS, 'relay')).toBeDefined();
    expect(await findObject(client, 'StatefulSet', NS, 'relay')).toBeUndefined();

    await client.request('DELETE', `${WEBHOOKS}/${WEBHOOK}`);
    // the retry backs off (100 ms doubling): a few seconds at most here
    await eventually('recovered', async () => (await degraded())?.status === 'False', 60_000);
    expect(await findObject(client, 'StatefulSet', NS, 'relay')).toBeDefined();
  });
});
