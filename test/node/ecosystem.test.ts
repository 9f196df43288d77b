import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main as plugin } from '../../src/plugin/cli.ts';
import type { Kubectl } from '../../src/plugin/kubectl.ts';
import { cachedBinDir } from '../control-plane/paths.ts';
import { type NodeCluster, nodeCluster, waitUntil } from './cluster.ts';
import {
  APP_NAMESPACE,
  deploySamples,
  OPERATOR_NAMESPACE,
  RELAY_NAME,
  RELAY_NAMESPACE,
  removeOperator,
  removeRelays,
  waitForRelay,
} from './product.ts';
import { type NodeSink, startNodeSink } from './sink.ts';

// The operator installed with `helm upgrade --install` of deploy/helm/email-relay (the node's image
// set through the chart's values), the sample relay Ready on the node, and `kubectl email-relay`
// against its real pods: status, queue list, test-send through a probe pod, report. A platform team
// installs the operator one way, so this file starts from a node without the kustomize install
// (deploy/base) and the sample relay another file may have left, and removes its release after.

const CHART = join(import.meta.dirname, '../../deploy/helm/email-relay');

let cluster: NodeCluster;
let sink: NodeSink;

const kubectl: Kubectl = async (args) => {
  const r = await cluster.kubectl(args, { allowFail: true, timeoutMs: 180_000 });
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
};
async function kubectlEmailRelay(argv: string[]) {
  let out = '';
  let err = '';
  const code = await plugin(argv, { out: (s) => (out += s), err: (s) => (err += s), kubectl });
  return { code, out, err };
}

const helm = (args: string[], timeoutMs = 300_000) =>
  cluster.onNode(join(cachedBinDir(), 'helm'), [`--kubeconfig=${cluster.kubeconfig}`, ...args], {
    timeoutMs,
  });

beforeAll(async () => {
  cluster = await nodeCluster();
  sink = await startNodeSink(cluster, 2526);
  await removeRelays(cluster, [RELAY_NAMESPACE, APP_NAMESPACE]);
  await removeOperator(cluster);
}, 600_000);
afterAll(async () => {
  await sink?.dispose();
  if (!cluster) return;
  await removeRelays(cluster, [RELAY_NAMESPACE, APP_NAMESPACE]);
  await helm(['uninstall', 'email-relay', '--namespace', OPERATOR_NAMESPACE, '--wait', '--timeout=180s']);
  // helm uninstall keeps the chart's CRDs (crds/) and the namespace it created: gone too, as found.
  await cluster.kubectl([
    'delete',
    'crd',
    'emailrelays.email.bionicaisolutions.com',
    'emailpolicies.email.bionicaisolutions.com',
    '--ignore-not-found',
  ]);
  await cluster.kubectl(['delete', 'namespace', OPERATOR_NAMESPACE, '--ignore-not-found', '--wait=true']);
}, 600_000);

describe('Helm chart and kubectl plugin on a real node', () => {
  it('helm upgrade --install: the operator from the chart runs and leads', async () => {
    const image = cluster.images.relay;
    const i = image.lastIndexOf(':');
    const r = await helm([
      'upgrade',
      '--install',
      'email-relay',
      CHART,
      '--namespace',
      OPERATOR_NAMESPACE,
      '--create-namespace',
      '--set',
      `image.repository=${image.slice(0, i)}`,
      '--set',
      `image.tag=${image.slice(i + 1)}`,
      '--wait',
      '--timeout=240s',
    ]);
    expect(r.stdout).toMatch(/STATUS: deployed/);
    const dep = await cluster.kubectlJson<{
      metadata: { labels: Record<string, string> };
      status: { readyReplicas?: number };
    }>(['-n', OPERATOR_NAMESPACE, 'get', 'deployment', 'email-relay-operator']);
    expect(dep.metadata.labels['app.kubernetes.io/managed-by']).toBe('Helm');
    expect(dep.status.readyReplicas).toBe(2);
  });

  it('an EmailRelay becomes Ready under the Helm-installed operator', async () => {
    await deploySamples(cluster, { host: cluster.nodeIp, port: 2526 });
    await waitForRelay(cluster);
    await waitUntil(
      'the EmailRelay to be Ready',
      async () => {
        const relay = await cluster.kubectlJson<{
          status?: { conditions?: { type: string; status: string }[] };
        }>(['-n', RELAY_NAMESPACE, 'get', 'emailrelay', RELAY_NAME]);
        return relay.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') || undefined;
      },
      240_000,
    );
  });

  it('kubectl email-relay status: the relay and each pod, ready, with its upstream', async () => {
    const r = await kubectlEmailRelay(['status', '-n', RELAY_NAMESPACE]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(new RegExp(`${RELAY_NAMESPACE}/${RELAY_NAME}\\s+True`));
    expect(r.out).toMatch(new RegExp(`${RELAY_NAME}-0\\s+true\\s+\\d+`));
    expect(r.out).toContain(`${cluster.nodeIp}:2526=`);
    process.stderr.write(`[ecosystem] kubectl email-relay status:\n${r.out}\n`);
  });

  it('kubectl email-relay test-send: a probe from the app namespace, the upstream answer from the logs', async () => {
    const r = await kubectlEmailRelay([
      'test-send',
      RELAY_NAME,
      '-n',
      RELAY_NAMESPACE,
      '--probe-namespace',
      APP_NAMESPACE,
      '--from',
      'probe@bionicaisolutions.com',
      '--to',
      'someone@example.com',
      '--timeout',
      '120',
    ]);
    process.stderr.write(`[ecosystem] kubectl email-relay test-send:\n${r.out}${r.err}\n`);
    expect(r.out).toMatch(/relay answered: 250 2\.0\.0 Ok: queued as \S+/);
    expect(r.out).toMatch(/upstream answered \(postfix-relay-\d, sent\): 250/);
    expect(r.code).toBe(0);
    await sink.waitFor('the probe message', (m) =>
      m.some((x) => /Subject: email-relay test-send/.test(x.data)),
    );
  });

  it('kubectl email-relay queue list and report against the real pods', async () => {
    const list = await kubectlEmailRelay(['queue', 'list', RELAY_NAME, '-n', RELAY_NAMESPACE]);
    expect(list.err).toBe('');
    expect(list.code).toBe(0);
    expect(list.out).toContain(`# ${RELAY_NAMESPACE}/${RELAY_NAME}-0`);
    const report = await kubectlEmailRelay(['report', RELAY_NAME, '-n', RELAY_NAMESPACE]);
    expect(report.code).toBe(0);
    const bundle = JSON.parse(report.out) as { pods: { logs: string; metrics: string }[]; status: unknown[] };
    expect(bundle.pods.length).toBeGreaterThan(0);
    expect(bundle.pods[0]!.metrics).toContain('email_queue_size');
    expect(report.out).not.toContain('probe@bionicaisolutions.com');
    expect(report.out).toContain('p***@bionicaisolutions.com');
  });
});
