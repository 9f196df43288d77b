import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manager } from '../../../src/operator/manager.ts';
import { main as plugin } from '../../../src/plugin/cli.ts';
import { kubectlRunner } from '../../../src/plugin/kubectl.ts';
import { type ControlPlane, startControlPlane, stopControlPlane } from '../../control-plane/control-plane.ts';
import { cachedBinDir } from '../../control-plane/paths.ts';
import { eventually, startManager } from '../operator/harness.ts';

// `helm install` of deploy/helm/email-relay into a real kube-apiserver (a private one: the shared
// control plane holds deploy/base's objects from other tests, which Helm would refuse to adopt), then
// an EmailRelay reconciled by the operator, seen through `kubectl email-relay status`, a
// `helm upgrade` and a `helm uninstall`. No kubelet here: pods never run (the node project does that).

const run = promisify(execFile);
const CHART = join(import.meta.dirname, '../../../deploy/helm/email-relay');
const NS = 'email-relay-system';

describe('Helm chart in a real kube-apiserver', () => {
  let cp: ControlPlane;
  let helm: string;
  let manager: Manager | undefined;
  const k = (...args: string[]) => run(cp.binaries.kubectl, ['--kubeconfig', cp.kubeconfig, ...args]);
  const h = (...args: string[]) => run(helm, ['--kubeconfig', cp.kubeconfig, ...args]);
  const pluginRun = async (argv: string[]) => {
    let out = '';
    let err = '';
    const code = await plugin(argv, {
      out: (s) => (out += s),
      err: (s) => (err += s),
      kubectl: kubectlRunner({ kubeconfig: cp.kubeconfig }, cp.binaries.kubectl),
    });
    return { code, out, err };
  };

  beforeAll(async () => {
    helm = join(cachedBinDir(), 'helm');
    if (!existsSync(helm)) throw new Error(`${helm} missing: run npm run control-plane -- build`);
    cp = await startControlPlane({ log: () => undefined });
  });
  afterAll(async () => {
    await manager?.stop();
    if (cp) await stopControlPlane(cp);
  });

  it('helm install creates the CRDs and every object of the chart; the API server accepts them all', async () => {
    const r = await h(
      'install',
      'email-relay',
      CHART,
      '--namespace',
      NS,
      '--create-namespace',
      '--set',
      'image.tag=9.9.9',
    );
    expect(r.stdout).toMatch(/STATUS: deployed/);
    const crds = (await k('get', 'crd', '-o', 'name')).stdout;
    expect(crds).toContain(
      'customresourcedefinition.apiextensions.k8s.io/emailrelays.email.bionicaisolutions.com',
    );
    expect(crds).toContain(
      'customresourcedefinition.apiextensions.k8s.io/emailpolicies.email.bionicaisolutions.com',
    );
    const dep = JSON.parse(
      (await k('get', 'deployment', '-n', NS, 'email-relay-operator', '-o', 'json')).stdout,
    );
    const c = dep.spec.template.spec.containers[0];
    expect(c.image).toBe('ghcr.io/bionicaisolutions/email-relay:9.9.9');
    expect(c.env.find((e: { name: string }) => e.name === 'EMAIL_RELAY_IMAGE').value).toBe(c.image);
    const manifest = (await h('get', 'manifest', 'email-relay', '-n', NS)).stdout;
    for (const kind of [
      'ServiceAccount',
      'ClusterRole',
      'ClusterRoleBinding',
      'Role',
      'RoleBinding',
      'Service',
      'Deployment',
    ]) {
      expect(manifest).toContain(`kind: ${kind}`);
    }
  });

  it('an EmailRelay in the installed CRDs is reconciled, and kubectl email-relay status shows it', async () => {
    await k('create', 'namespace', 'email-server-prod');
    await k('apply', '-f', join(import.meta.dirname, '../../../deploy/samples/postfix-relay.yaml'));
    manager = startManager(cp.kubeconfig);
    await manager.start();
    await eventually('the relay reconciled (status.endpoint)', async () => {
      const relay = JSON.parse(
        (await k('get', 'emailrelay', '-n', 'email-server-prod', 'postfix-relay', '-o', 'json')).stdout,
      );
      return relay.status?.endpoint ? relay : undefined;
    });
    const status = await pluginRun(['status', '-A']);
    expect(status.err).toBe('');
    expect(status.code).toBe(0);
    // No kubelet: the StatefulSet exists, its pods never run, so the relay is not ready yet.
    expect(status.out).toMatch(
      /email-server-prod\/postfix-relay\s+False \(\w+\)\s+0\/\d\s+0\s+-\s+postfix-relay\.email-server-prod\.svc\.cluster\.local:25/,
    );
    const queue = await pluginRun(['queue', 'list', 'postfix-relay', '-n', 'email-server-prod']);
    expect(queue.code).toBe(1);
    expect(queue.err).toMatch(/no running pod of postfix-relay/);
  });

  it('helm upgrade changes the operator; helm uninstall removes what it installed and keeps the CRDs', async () => {
    await h('upgrade', 'email-relay', CHART, '--namespace', NS, '--set', 'operator.replicas=1');
    const dep = JSON.parse(
      (await k('get', 'deployment', '-n', NS, 'email-relay-operator', '-o', 'json')).stdout,
    );
    expect(dep.spec.replicas).toBe(1);
    expect(dep.spec.template.spec.containers[0].image).toBe('ghcr.io/bionicaisolutions/email-relay:0.1.0');
    await h('uninstall', 'email-relay', '--namespace', NS, '--wait');
    const left = (
      await k('get', 'deployment,serviceaccount,role,rolebinding,service', '-n', NS, '-o', 'name')
    ).stdout;
    expect(left).not.toMatch(/email-relay-operator/);
    expect((await k('get', 'clusterrole', '-o', 'name')).stdout).not.toMatch(
      /clusterrole.rbac.authorization.k8s.io\/email-relay-operator\n/,
    );
    expect((await k('get', 'crd', '-o', 'name')).stdout).toContain('emailrelays.email.bionicaisolutions.com');
  });
});
