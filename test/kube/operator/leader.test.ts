import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { KubeClient } from '../../../src/lib/kube/client.ts';
import { silentLogger } from '../../../src/lib/logger.ts';
import { LeaderElector } from '../../../src/operator/runtime/leader.ts';
import { ensureNamespace, eventually, kubeClient } from './harness.ts';

const kubeconfig = inject('kubeconfig');

describe('leader election on a Lease', () => {
  let client: KubeClient;
  const electors: LeaderElector[] = [];
  const candidate = (identity: string) => {
    const state = { leading: false, lost: 0 };
    const e = new LeaderElector(client, {
      namespace: 'email-relay-system',
      name: 'leader-test',
      identity,
      // Long enough that a hand-over by expiry (>= 20 s) cannot pass for a release, even on a
      // loaded machine.
      leaseDurationSeconds: 20,
      renewDeadlineSeconds: 15,
      retryPeriodSeconds: 0.5,
      logger: silentLogger,
      onStartedLeading: () => {
        state.leading = true;
      },
      onStoppedLeading: () => {
        state.leading = false;
        state.lost++;
      },
    });
    electors.push(e);
    return { e, state };
  };

  beforeAll(async () => {
    client = kubeClient(kubeconfig);
    await ensureNamespace(client, 'email-relay-system');
  });
  afterAll(async () => {
    await Promise.all(electors.map((e) => e.stop()));
    client?.close();
  });

  it('one of two replicas leads; a clean shutdown hands over at once', async () => {
    const a = candidate('a');
    a.e.start();
    await eventually('a leads', async () => a.state.leading);
    const b = candidate('b');
    b.e.start();
    await new Promise((r) => setTimeout(r, 1500));
    expect(b.state.leading).toBe(false);
    const lease = await client.get<{ spec: { holderIdentity: string } }>(
      '/apis/coordination.k8s.io/v1/namespaces/email-relay-system/leases/leader-test',
    );
    expect(lease.spec.holderIdentity).toBe('a');

    const t0 = Date.now();
    await a.e.stop();
    await eventually('b leads', async () => b.state.leading, 15_000);
    // Released, not expired: well inside the 20 s lease duration.
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});
