import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  ApiException,
  ApiextensionsV1Api,
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  type V1CustomResourceDefinition,
  Watch,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

// Proves the control plane from test/control-plane is a real one: CRDs with CEL validation, watches,
// kubectl with the generated kubeconfig, and the controllers of kube-controller-manager.

const kubeconfig = inject('kubeconfig');
const kubectl = inject('kubectl');
const controllerManager = inject('controllerManager');

const GROUP = 'smoke.email-relay.test';
const VERSION = 'v1';
const PLURAL = 'widgets';
const CEL_MESSAGE = 'minReplicas must not exceed replicas';

const crd: V1CustomResourceDefinition = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: `${PLURAL}.${GROUP}` },
  spec: {
    group: GROUP,
    scope: 'Namespaced',
    names: { plural: PLURAL, singular: 'widget', kind: 'Widget', listKind: 'WidgetList' },
    versions: [
      {
        name: VERSION,
        served: true,
        storage: true,
        additionalPrinterColumns: [{ name: 'Replicas', type: 'integer', jsonPath: '.spec.replicas' }],
        schema: {
          openAPIV3Schema: {
            type: 'object',
            properties: {
              spec: {
                type: 'object',
                required: ['replicas'],
                properties: {
                  replicas: { type: 'integer', minimum: 0 },
                  minReplicas: { type: 'integer', minimum: 0 },
                },
                x_kubernetes_validations: [
                  {
                    rule: '!has(self.minReplicas) || self.minReplicas <= self.replicas',
                    message: CEL_MESSAGE,
                  },
                ],
              },
            },
          },
        },
      },
    ],
  },
};

const widget = (namespace: string, name: string, spec: Record<string, number>) => ({
  apiVersion: `${GROUP}/${VERSION}`,
  kind: 'Widget',
  metadata: { name, namespace },
  spec,
});

async function eventually<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Watch.watch reports a failed start through its `done` callback. A just-established CRD answers 429
 * until the apiserver's watch cache for it is initialised, so retry that like client-go's reflector does.
 */
async function startWatch(
  kc: KubeConfig,
  path: string,
  onEvent: (phase: string, obj: unknown) => void,
): Promise<{ abort: () => void; closed: Promise<never> }> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    let started = false;
    let startError: unknown;
    let onClosed: (err: unknown) => void = () => {};
    const closed = new Promise<never>((_, reject) => {
      onClosed = reject;
    });
    closed.catch(() => {}); // observed only by the test's Promise.race
    const ctl = await new Watch(kc).watch(path, {}, onEvent, (err: unknown) => {
      if (started) onClosed(err ?? new Error('watch closed'));
      else startError = err ?? new Error('watch closed');
    });
    if (startError === undefined) {
      started = true;
      return { abort: () => ctl.abort(), closed };
    }
    if ((startError as { statusCode?: number }).statusCode !== 429 || Date.now() > deadline) throw startError;
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe('control plane smoke', () => {
  const kc = new KubeConfig();
  const namespace = `smoke-${Date.now().toString(36)}`;
  let core: CoreV1Api;

  beforeAll(async () => {
    kc.loadFromFile(kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: namespace } } });
  });

  afterAll(async () => {
    await core?.deleteNamespace({ name: namespace }).catch(() => {});
  });

  it('hands the kubeconfig to tests via inject() and $KUBECONFIG', () => {
    expect(process.env['KUBECONFIG']).toBe(kubeconfig);
  });

  it('serves the pinned Kubernetes version to kubectl', async () => {
    const { stdout } = await promisify(execFile)(kubectl, [
      '--kubeconfig',
      kubeconfig,
      'version',
      '-o',
      'json',
    ]);
    const v = JSON.parse(stdout) as {
      clientVersion: { gitVersion: string };
      serverVersion: { gitVersion: string };
    };
    expect(v.serverVersion.gitVersion).toMatch(/^v1\.(3[4-9]|[4-9]\d)\.\d+$/);
    expect(v.clientVersion.gitVersion).toBe(v.serverVersion.gitVersion);
  });

  it('installs a CRD, watches an object, enforces its CEL rule and lists it with kubectl', async () => {
    const ext = kc.makeApiClient(ApiextensionsV1Api);
    const objects = kc.makeApiClient(CustomObjectsApi);
    await ext.createCustomResourceDefinition({ body: crd });
    await eventually('CRD Established', async () => {
      const got = await ext.readCustomResourceDefinition({ name: `${PLURAL}.${GROUP}` });
      return (
        got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True') || undefined
      );
    });

    // Watch first, then create: the ADDED event must arrive through the watch.
    type Widget = { metadata: { name: string }; spec: { replicas: number } };
    let onAdded: (w: Widget) => void = () => {};
    const added = new Promise<Widget>((resolve) => {
      onAdded = resolve;
    });
    const watch = await startWatch(
      kc,
      `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${PLURAL}`,
      (phase, obj) => {
        const w = obj as Widget;
        if (phase === 'ADDED' && w.metadata.name === 'good') onAdded(w);
      },
    );
    try {
      await objects.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace,
        plural: PLURAL,
        body: widget(namespace, 'good', { replicas: 3, minReplicas: 1 }),
      });
      expect((await Promise.race([added, watch.closed])).spec.replicas).toBe(3);
    } finally {
      watch.abort();
    }

    const rejected = await objects
      .createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace,
        plural: PLURAL,
        body: widget(namespace, 'bad', { replicas: 1, minReplicas: 2 }),
      })
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    expect(rejected).toBeInstanceOf(ApiException);
    const apiErr = rejected as ApiException<string>;
    expect(apiErr.code).toBe(422);
    const status = JSON.parse(apiErr.body) as { reason: string; message: string };
    expect(status.reason).toBe('Invalid');
    expect(status.message).toContain(CEL_MESSAGE);

    const { stdout } = await promisify(execFile)(kubectl, [
      '--kubeconfig',
      kubeconfig,
      'get',
      `${PLURAL}.${GROUP}`,
      '--namespace',
      namespace,
    ]);
    const lines = stdout.trim().split('\n');
    // additionalPrinterColumns replace the default AGE column.
    expect(lines[0]).toMatch(/^NAME\s+REPLICAS$/);
    expect(lines.slice(1)).toHaveLength(1);
    expect(lines[1]).toMatch(/^good\s+3$/);

    await ext.deleteCustomResourceDefinition({ name: `${PLURAL}.${GROUP}` });
  });

  it('runs kube-controller-manager: Deployment -> ReplicaSet, owner-reference garbage collection', async () => {
    expect(controllerManager).toBe(true);
    const apps = kc.makeApiClient(AppsV1Api);
    const labels = { app: 'smoke' };
    await apps.createNamespacedDeployment({
      namespace,
      body: {
        metadata: { name: 'smoke' },
        spec: {
          replicas: 0,
          selector: { matchLabels: labels },
          template: {
            metadata: { labels },
            spec: { containers: [{ name: 'c', image: 'example.invalid/none' }] },
          },
        },
      },
    });
    const rs = await eventually('ReplicaSet owned by the Deployment', async () => {
      const list = await apps.listNamespacedReplicaSet({ namespace });
      return list.items.find((r) => r.metadata?.ownerReferences?.some((o) => o.kind === 'Deployment'));
    });
    expect(rs.metadata?.ownerReferences?.[0]?.name).toBe('smoke');

    await apps.deleteNamespacedDeployment({ name: 'smoke', namespace, propagationPolicy: 'Background' });
    await eventually('ReplicaSet garbage-collected', async () => {
      const list = await apps.listNamespacedReplicaSet({ namespace });
      return list.items.length === 0 || undefined;
    });
  });
});
