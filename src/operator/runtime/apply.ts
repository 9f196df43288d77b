import type { KubeClient } from '../../lib/kube/client.ts';
import type { KubeObject } from '../api/meta.ts';
import { resourcePath, resourceType } from './resources.ts';

/**
 * Server-side apply: PATCH with application/apply-patch+yaml (JSON is YAML), one field manager,
 * force so a hand edit of a field we own is taken back. Fields others own stay theirs.
 */
export async function serverSideApply<T extends KubeObject>(
  client: KubeClient,
  obj: T,
  fieldManager: string,
  subresource?: string,
): Promise<T> {
  const t = resourceType(obj.kind);
  return client.request<T>('PATCH', resourcePath(t, obj.metadata.namespace, obj.metadata.name, subresource), {
    query: { fieldManager, force: true },
    body: obj,
    contentType: 'application/apply-patch+yaml',
  });
}

export async function deleteObject(
  client: KubeClient,
  obj: Pick<KubeObject, 'kind' | 'metadata'>,
): Promise<void> {
  const t = resourceType(obj.kind);
  await client.request('DELETE', resourcePath(t, obj.metadata.namespace, obj.metadata.name), {
    body: {
      apiVersion: 'v1',
      kind: 'DeleteOptions',
      propagationPolicy: 'Background',
      // Only the object we decided to delete, not a same-named successor.
      ...(obj.metadata.uid ? { preconditions: { uid: obj.metadata.uid } } : {}),
    },
  });
}

/**
 * Whether `actual` already holds every field of `desired` with the same value. The API adds
 * defaults (protocol: TCP, clusterIP, ...), so a subset is what "already applied" means.
 */
export function isSubset(desired: unknown, actual: unknown): boolean {
  if (desired === actual) return true;
  // Go's omitempty drops zero values: `false`, 0, "", [] and {} come back absent.
  if (actual === undefined && isZero(desired)) return true;
  if (Array.isArray(desired)) {
    if (!Array.isArray(actual) || actual.length !== desired.length) return false;
    return desired.every((d, i) => isSubset(d, actual[i]));
  }
  if (desired && typeof desired === 'object') {
    if (!actual || typeof actual !== 'object' || Array.isArray(actual)) return false;
    const a = actual as Record<string, unknown>;
    return Object.entries(desired as Record<string, unknown>).every(
      ([k, v]) => v === undefined || isSubset(v, a[k]),
    );
  }
  // int-or-string fields may come back in the other form
  if ((typeof desired === 'number' || typeof desired === 'string') && String(desired) === String(actual))
    return true;
  return false;
}

function isZero(v: unknown): boolean {
  if (v === false || v === 0 || v === '' || v === null) return true;
  if (Array.isArray(v)) return v.length === 0;
  return typeof v === 'object' && v !== null && Object.keys(v).length === 0;
}
