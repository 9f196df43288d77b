import { describe, expect, it } from 'vitest';
import type { EmailRelay } from '../../../src/operator/api/emailrelay.ts';
import type { KubeObject } from '../../../src/operator/api/meta.ts';
import { attributionSubjects, isLegacyBinding } from '../../../src/operator/emailrelay/attribution.ts';

const relay = (namespace: string, name: string, spec: Record<string, unknown> = {}, deleting = false) =>
  ({
    apiVersion: 'email.bionicaisolutions.com/v1alpha1',
    kind: 'EmailRelay',
    metadata: { namespace, name, ...(deleting ? { deletionTimestamp: '2026-01-01T00:00:00Z' } : {}) },
    spec: { hostname: 'mail.example.com', upstream: { host: 'smtp.example.com' }, ...spec },
  }) as unknown as EmailRelay;

describe('attributionSubjects: the one binding names exactly the attributing relays', () => {
  it('each relay that attributes (the default), sorted; not those that do not, nor relays being deleted', () => {
    expect(
      attributionSubjects([
        relay('b', 'r'),
        relay('a', 'z'),
        relay('a', 'off', { access: { attribution: false } }),
        relay('a', 'gone', {}, true),
        relay('a', 'b'),
      ]),
    ).toEqual([
      { kind: 'ServiceAccount', name: 'b', namespace: 'a' },
      { kind: 'ServiceAccount', name: 'z', namespace: 'a' },
      { kind: 'ServiceAccount', name: 'r', namespace: 'b' },
    ]);
    expect(attributionSubjects([])).toEqual([]);
  });

  it('a spec the schema refuses keeps its access unless it says attribution: false', () => {
    expect(attributionSubjects([relay('a', 'bad', { replicas: -1 })])).toHaveLength(1);
    expect(
      attributionSubjects([relay('a', 'bad', { replicas: -1, access: { attribution: false } })]),
    ).toEqual([]);
  });
});

describe('isLegacyBinding: the migration deletes only what operator 0.1 created', () => {
  const legacy = (over: Record<string, unknown> = {}, labels: Record<string, string | undefined> = {}) =>
    ({
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: {
        name: 'email-relay:team:r1',
        labels: Object.fromEntries(
          Object.entries({
            'app.kubernetes.io/managed-by': 'email-relay-operator',
            'email.bionicaisolutions.com/relay-namespace': 'team',
            'email.bionicaisolutions.com/relay-name': 'r1',
            ...labels,
          }).filter(([, v]) => v !== undefined),
        ),
      },
      roleRef: {
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'ClusterRole',
        name: 'email-relay-client-attribution',
      },
      subjects: [{ kind: 'ServiceAccount', name: 'r1', namespace: 'team' }],
      ...over,
    }) as unknown as KubeObject;

  it('our labels, our name pattern and the attribution roleRef', () => {
    expect(isLegacyBinding(legacy())).toBe(true);
  });
  it('not without our labels, with another name, or bound to another role', () => {
    expect(isLegacyBinding(legacy({}, { 'app.kubernetes.io/managed-by': 'someone-else' }))).toBe(false);
    expect(isLegacyBinding(legacy({}, { 'email.bionicaisolutions.com/relay-name': undefined }))).toBe(false);
    expect(isLegacyBinding(legacy({ metadata: { name: 'email-relay:team:r1', labels: {} } }))).toBe(false);
    const renamed = legacy();
    renamed.metadata.name = 'cluster-admin-for-team';
    expect(isLegacyBinding(renamed)).toBe(false);
    expect(
      isLegacyBinding(
        legacy({
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' },
        }),
      ),
    ).toBe(false);
  });
});
