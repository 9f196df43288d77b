import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { loadKubeConnection } from '../../../src/lib/kube/connection.ts';
import { type KubeObject, listWatch } from '../../../src/lib/kube/list-watch.ts';
import { silentLogger } from '../../../src/lib/logger.ts';

// The relay's own list+watch (it does not load @kubernetes/client-node) against a real
// kube-apiserver: paging, watches the server ends every second, and deletions.

const kubeconfig = inject('kubeconfig');
const prefix = `lw-${Date.now().toString(36)}`;

describe('listWatch', () => {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const core = kc.makeApiClient(CoreV1Api);
  const made: string[] = [];
  afterAll(async () => {
    for (const name of made) await core.deleteNamespace({ name }).catch(() => undefined);
  });

  it('lists in pages, then follows changes across watches the server keeps ending', async () => {
    for (let i = 0; i < 3; i++) {
      made.push(`${prefix}-a${i}`);
      await core.createNamespace({ body: { metadata: { name: `${prefix}-a${i}`, labels: { v: '1' } } } });
    }
    const seen = new Map<string, string | undefined>();
    const name = (o: KubeObject & { metadata?: { labels?: Record<string, string> } }) =>
      o.metadata?.name ?? '';
    let replaced = 0;
    const w = listWatch<KubeObject & { metadata?: { labels?: Record<string, string> } }>(
      loadKubeConnection(kubeconfig),
      '/api/v1/namespaces',
      {
        replace(items) {
          replaced++;
          seen.clear();
          for (const o of items) seen.set(name(o), o.metadata?.labels?.v);
        },
        upsert: (o) => seen.set(name(o), o.metadata?.labels?.v),
        remove: (o) => seen.delete(name(o)),
      },
      { logger: silentLogger, watchTimeoutSeconds: 1, pageSize: 2 },
    );
    try {
      await until(() => w.synced());
      expect([0, 1, 2].map((i) => seen.get(`${prefix}-a${i}`))).toEqual(['1', '1', '1']);
      // changes spread over several 1-2 s watches
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 900));
        made.push(`${prefix}-b${i}`);
        await core.createNamespace({ body: { metadata: { name: `${prefix}-b${i}` } } });
        await core.patchNamespace({
          name: `${prefix}-a${i}`,
          body: [{ op: 'replace', path: '/metadata/labels/v', value: '2' }],
        });
      }
      await until(() =>
        [0, 1, 2].every((i) => seen.has(`${prefix}-b${i}`) && seen.get(`${prefix}-a${i}`) === '2'),
      );
      await core.deleteNamespace({ name: `${prefix}-a0` });
      // a namespace is deleted once its finalizer ran (kube-controller-manager's namespace controller)
      await until(() => !seen.has(`${prefix}-a0`), 30_000);
      expect(replaced).toBe(1);
    } finally {
      w.stop();
    }
  });
});

async function until(ok: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}
