import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { isNotFound, KubeClient } from '../../../src/lib/kube/client.ts';
import { loadKubeConnection } from '../../../src/lib/kube/connection.ts';
import { silentLogger } from '../../../src/lib/logger.ts';
import type { KubeObject } from '../../../src/operator/api/meta.ts';
import { Manager, type ManagerOptions } from '../../../src/operator/manager.ts';
import { serverSideApply } from '../../../src/operator/runtime/apply.ts';
import { createOperatorMetrics } from '../../../src/operator/runtime/metrics.ts';
import { resourcePath, resourceType } from '../../../src/operator/runtime/resources.ts';

export const TEST_IMAGE = 'example.invalid/email-relay:test';

/** As the operator reads a kubeconfig file (without @kubernetes/client-node). */
export function kubeClient(kubeconfig: string): KubeClient {
  return new KubeClient(loadKubeConnection(kubeconfig));
}

export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 30_000,
): Promise<Exclude<T, false | undefined>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as Exclude<T, false | undefined>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Installs crds/*.yaml (what users install) and waits until they are served. */
export async function installCrds(client: KubeClient): Promise<void> {
  const dir = join(import.meta.dirname, '../../../crds');
  for (const file of (await readdir(dir)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')) {
    const crd = parse(await readFile(join(dir, file), 'utf8')) as KubeObject;
    await client.request(
      'PATCH',
      `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`,
      {
        query: { fieldManager: 'test', force: true },
        body: crd,
        contentType: 'application/apply-patch+yaml',
      },
    );
    await eventually(`CRD ${crd.metadata.name} established`, async () => {
      const got = await client.get<{ status?: { conditions?: { type: string; status: string }[] } }>(
        `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`,
      );
      return got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True');
    });
  }
}

// biome-ignore lint/suspicious/noExplicitAny: tests poke at arbitrary object fields
export type Obj = Record<string, any>;

/** The object, or undefined when it does not exist. */
export async function findObject(
  client: KubeClient,
  kind: string,
  namespace: string,
  name: string,
): Promise<Obj | undefined> {
  try {
    return await client.get<Obj>(resourcePath(resourceType(kind), namespace, name));
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** The object; throws when it does not exist. */
export async function getObject(
  client: KubeClient,
  kind: string,
  namespace: string,
  name: string,
): Promise<Obj> {
  return client.get<Obj>(resourcePath(resourceType(kind), namespace, name));
}

export async function apply(client: KubeClient, obj: KubeObject): Promise<Obj> {
  return serverSideApply(client, obj, 'test-user') as Promise<Obj>;
}

export async function ensureNamespace(client: KubeClient, name: string, labels: Record<string, string> = {}) {
  return apply(client, { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
}

export function startManager(kubeconfig: string, opts: Partial<ManagerOptions> = {}): Manager {
  return new Manager({
    kubeConfig: loadKubeConnection(kubeconfig),
    logger: silentLogger,
    defaultImage: TEST_IMAGE,
    leaderElection: false,
    metrics: createOperatorMetrics({ defaultMetrics: false }),
    ...opts,
  });
}

export async function kubectl(bin: string, kubeconfig: string, ...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(bin, ['--kubeconfig', kubeconfig, ...args]);
  return stdout;
}
