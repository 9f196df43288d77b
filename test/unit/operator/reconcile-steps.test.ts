import { describe, expect, it } from 'vitest';
import type { KubeObject } from '../../../src/operator/api/meta.ts';
import { applyPlan, prunePlan } from '../../../src/operator/emailrelay/reconciler.ts';

// The EmailRelay reconcile's apply and prune steps as plans, without an API server.

const UID = 'uid-1';
const owner = (uid = UID, controller = true) => [
  { apiVersion: 'email.bionicaisolutions.com/v1alpha1', kind: 'EmailRelay', name: 'r', uid, controller },
];
const obj = (kind: string, name: string, extra: Partial<KubeObject> = {}): KubeObject => ({
  apiVersion: 'v1',
  kind,
  metadata: { name, namespace: 'ns', ownerReferences: owner(), annotations: { h: '1' } },
  ...extra,
});

describe('apply step', () => {
  it('applies identity, config and network first, then the workload and PDB; skips what is up to date', () => {
    const desired = [
      obj('ServiceAccount', 'r'),
      obj('StatefulSet', 'r', { spec: { replicas: 2 } }),
      obj('ConfigMap', 'r', { data: { a: '1' } }),
      obj('PodDisruptionBudget', 'r'),
    ];
    const cache = new Map<string, KubeObject>([
      // the same as rendered (plus what the API server adds): nothing to do
      ['ConfigMap/r', { ...obj('ConfigMap', 'r', { data: { a: '1' } }), status: {} }],
      // drifted by hand: applied again
      ['StatefulSet/r', obj('StatefulSet', 'r', { spec: { replicas: 5 } })],
    ]);
    const plan = applyPlan(desired, (kind, name) => cache.get(`${kind}/${name}`));
    expect(plan.map((round) => round.map((s) => `${s.obj.kind}:${s.apply}`))).toEqual([
      ['ServiceAccount:true', 'ConfigMap:false'],
      ['StatefulSet:true', 'PodDisruptionBudget:true'],
    ]);
    expect(plan[1]![0]!.actual).toBe(cache.get('StatefulSet/r'));
  });
});

describe('prune step', () => {
  it('deletes only children this relay controls and no longer renders', () => {
    const cached: Record<string, KubeObject[]> = {
      Deployment: [obj('Deployment', 'r')], // the workload became a StatefulSet
      StatefulSet: [obj('StatefulSet', 'r')],
      PodDisruptionBudget: [obj('PodDisruptionBudget', 'r')], // replicas went to 1
      ConfigMap: [
        obj('ConfigMap', 'r'),
        obj('ConfigMap', 'someone-else', {
          metadata: { name: 'someone-else', ownerReferences: owner('other') },
        }),
        obj('ConfigMap', 'not-controller', {
          metadata: { name: 'not-controller', ownerReferences: owner(UID, false) },
        }),
      ],
    };
    const desired = [obj('StatefulSet', 'r'), obj('ConfigMap', 'r')];
    const gone = prunePlan((kind) => cached[kind] ?? [], UID, desired);
    expect(gone.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual([
      'Deployment/r',
      'PodDisruptionBudget/r',
    ]);
  });
});
