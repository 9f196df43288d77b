import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorSummary, nodemailerSnippet, pythonSnippet } from './clients.ts';
import { type NodeCluster, nodeCluster, waitUntil } from './cluster.ts';
import { startLoad } from './load.ts';
import {
  APP_NAMESPACE,
  deployOperator,
  deploySamples,
  OPERATOR_NAMESPACE,
  RELAY_HOSTS,
  RELAY_NAME,
  RELAY_NAMESPACE,
  RELAY_SELECTOR,
  waitForRelay,
} from './product.ts';
import { type NodeSink, startNodeSink } from './sink.ts';
import { aroundErrors, startTimeline } from './timeline.ts';

// The product as a platform team runs it, on a real node: the operator from deploy/base, the seed's
// relay from deploy/samples, clients in pods sending to the seed's DNS names through Services and
// NetworkPolicy, the queue on PersistentVolumes. The tests run in order and build on each other.

let cluster: NodeCluster;
let sink: NodeSink;

beforeAll(async () => {
  cluster = await nodeCluster();
  sink = await startNodeSink(cluster);
});
afterAll(async () => {
  await sink?.dispose();
});

const relayLogs = async () =>
  (await cluster.kubectl(['-n', RELAY_NAMESPACE, 'logs', '-l', RELAY_SELECTOR, '--tail=-1', '--prefix']))
    .stdout;

const subjects = (msgs: { data: string }[]) =>
  new Set(msgs.map((m) => /^Subject: (.*)$/m.exec(m.data)?.[1] ?? ''));

describe('the product on a real node', () => {
  it('deploy/base as shipped: the operator runs in-cluster under its ServiceAccount and RBAC, leader elected', async () => {
    const { leader, manifests } = await deployOperator(cluster);
    // Only the image reference differs from what `kubectl apply -k deploy/base` would apply.
    expect(manifests).toContain(`image: ${cluster.images.relay}`);
    const pods = await cluster.kubectlJson<{
      items: {
        metadata: { name: string };
        spec: { serviceAccountName: string };
        status: { phase: string };
      }[];
    }>(['-n', OPERATOR_NAMESPACE, 'get', 'pods', '-l', 'app.kubernetes.io/name=email-relay-operator']);
    expect(pods.items.length).toBe(2);
    for (const p of pods.items) {
      expect(p.spec.serviceAccountName).toBe('email-relay-operator');
      expect(p.status.phase).toBe('Running');
    }
    // The Lease holder is "<pod name>_<n>": one of the two pods leads.
    expect(pods.items.map((p) => p.metadata.name)).toContain(leader.replace(/_[^_]*$/, ''));
  });

  it('deploy/samples: postfix-relay in email-server-prod becomes Ready pods on bound PVCs', async () => {
    await deploySamples(cluster, sink);
    await waitForRelay(cluster);
    const table = await waitUntil('kubectl get emailrelays to show READY True', async () => {
      const out = (await cluster.kubectl(['-n', RELAY_NAMESPACE, 'get', 'emailrelays'])).stdout;
      return /\bTrue\b/.test(out.split('\n')[1] ?? '') ? out : undefined;
    });
    const [header, row] = table.split('\n');
    expect(header).toMatch(/^NAME\s+READY\s+REPLICAS\s+QUEUED\s+OLDEST\s+ENDPOINT/);
    // QUEUED, then OLDEST (blank while nothing is queued), come between.
    expect(row).toMatch(
      new RegExp(`^${RELAY_NAME}\\s+True\\s+2\\s+\\d+\\s+(\\d+[smhdy]\\w*\\s+)?${RELAY_HOSTS[0]}:25\\b`),
    );
    const pvcs = (
      await cluster.kubectl(['-n', RELAY_NAMESPACE, 'get', 'pvc', '-o', 'jsonpath={.items[*].status.phase}'])
    ).stdout;
    expect(pvcs.split(' ')).toEqual(['Bound', 'Bound']);
  });

  it('from an opted-in namespace the seed snippets get 250 queued on both names; mail reaches the upstream attributed to the pod', async () => {
    const runs = RELAY_HOSTS.flatMap((host, i) => [
      { name: `seed-python-${i}`, command: pythonSnippet(host, `seed python ${i}`) },
      { name: `seed-nodemailer-${i}`, command: nodemailerSnippet(host, `seed nodemailer ${i}`) },
    ]);
    const results = await Promise.all(
      runs.map((r) => cluster.runPod({ namespace: APP_NAMESPACE, keep: true, ...r })),
    );
    for (const [i, res] of results.entries()) {
      expect(res.phase, `${runs[i]?.name}: ${res.logs}`).toBe('Succeeded');
      expect(res.logs).toMatch(/250[ -]2\.0\.0 Ok: queued as \w+/);
    }
    const want = runs.map(
      (r) => (r.name.includes('python') ? 'seed python ' : 'seed nodemailer ') + r.name.at(-1),
    );
    const msgs = await sink.waitFor('the four seed messages', (m) => want.every((s) => subjects(m).has(s)));
    for (const m of msgs.filter((m) => want.includes(/^Subject: (.*)$/m.exec(m.data)?.[1] ?? ''))) {
      // The relay's own trace header, as Postfix writes it: "by <spec.hostname> ... with ESMTP id".
      expect(m.data).toMatch(/^Received: from .*\n?\s*by mail\.bionicaisolutions\.com .*with E?SMTP id \w+/m);
    }
    const logs = await relayLogs();
    for (const r of runs) {
      const line = logs
        .split('\n')
        .find((l) => l.includes('"msg":"queued"') && l.includes(`"pod":"${r.name}"`));
      expect(line, `relay log line naming ${r.name}`).toBeDefined();
      expect(line).toContain(`"namespace":"${APP_NAMESPACE}"`);
    }
    await Promise.all(
      runs.map((r) => cluster.kubectl(['-n', APP_NAMESPACE, 'delete', 'pod', r.name, '--wait=false'])),
    );
  });

  it('a namespace without the label is refused by NetworkPolicy, and with the policy out of the way by the relay (554 5.7.1)', async () => {
    await cluster.kubectl(['create', 'namespace', 'no-access']);
    const probe = (name: string) =>
      cluster.runPod({
        namespace: 'no-access',
        name,
        command: [
          '/nodejs/bin/node',
          '-e',
          `const t = require('nodemailer').createTransport({ host: '${RELAY_HOSTS[0]}', port: 25, connectionTimeout: 5000, greetingTimeout: 5000 });
           t.sendMail({ from: 'x@bionicaisolutions.com', to: 'y@example.com', text: 'no' })
             .then((i) => console.log('ACCEPTED ' + i.response), (e) => console.log('REFUSED ' + (e.response || e.code)));`,
        ],
      });
    const blocked = await probe('probe-policy');
    // kube-router rejects the SYN: the connection is refused (or times out), no SMTP greeting at all.
    expect(blocked.logs).toMatch(/^REFUSED (ECONNREFUSED|ETIMEDOUT|ESOCKET|ECONNECTION)/m);

    // NetworkPolicies are additive: one more allowing every namespace takes the policy layer out.
    const allowAll = {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'test-allow-all-smtp', namespace: RELAY_NAMESPACE },
      spec: {
        podSelector: { matchLabels: { 'app.kubernetes.io/instance': RELAY_NAME } },
        policyTypes: ['Ingress'],
        ingress: [{ from: [{ namespaceSelector: {} }], ports: [{ protocol: 'TCP', port: 25 }] }],
      },
    };
    await cluster.apply(allowAll);
    try {
      const refused = await waitUntil(
        'the relay itself to answer the unlabelled namespace',
        async () => {
          const r = await probe(`probe-relay-${Date.now() % 100000}`);
          return /^REFUSED 554/m.test(r.logs) ? r.logs : undefined;
        },
        90_000,
        1000,
      );
      expect(refused).toMatch(/^REFUSED 554 5\.7\.1 /m);
    } finally {
      await cluster.kubectl(['-n', RELAY_NAMESPACE, 'delete', 'networkpolicy', 'test-allow-all-smtp']);
      await cluster.kubectl(['delete', 'namespace', 'no-access', '--wait=false']);
    }
  });

  /**
   * Three load pods in the app namespace sending to the Service, each pausing 400 ms between
   * messages: together about 400 a minute, under the sample EmailPolicy's 600 per minute per
   * namespace, so every client error is the relay's, not the policy's.
   */
  const load = (prefix: string, seconds: number) =>
    startLoad(cluster, {
      namespace: APP_NAMESPACE,
      prefix,
      n: 3,
      host: RELAY_HOSTS[0] as string,
      seconds,
      pauseMs: 400,
    });

  const waitDelivered = async (acked: string[]) => {
    const want = acked.map((id) => `load ${id}`);
    const msgs = await sink.waitFor(
      `${acked.length} acknowledged messages`,
      (m) => {
        const s = subjects(m);
        return want.every((w) => s.has(w));
      },
      180_000,
    );
    const s = subjects(msgs);
    return want.filter((w) => s.has(w)).length;
  };

  it('a relay pod force-deleted under load: after it returns on its PVC, every 250-acknowledged message is delivered', async () => {
    // The sink stops first, so acknowledged mail waits in the pods' queues when pod 0 is killed.
    await sink.stop();
    const running = await load('load-kill', 40);
    await new Promise((r) => setTimeout(r, 15_000));
    // What pod 0 holds undelivered when it dies (the upstream is down, so everything it queued).
    const pod0 = (await cluster.kubectl(['-n', RELAY_NAMESPACE, 'logs', `${RELAY_NAME}-0`])).stdout;
    const heldByPod0 = pod0.split('\n').filter((l) => l.includes('"msg":"queued"')).length;
    await cluster.kubectl([
      '-n',
      RELAY_NAMESPACE,
      'delete',
      'pod',
      `${RELAY_NAME}-0`,
      '--grace-period=0',
      '--force',
    ]);
    const res = await running.finish();
    await waitForRelay(cluster);
    await sink.start();
    const delivered = await waitDelivered(res.acked);
    // A pod killed without a grace period cuts the sessions it had open: those clients may see an
    // error (and retry); what the issue asks here is that nothing acknowledged is lost.
    console.log(
      `force-delete under load: acked ${res.acked.length} (${heldByPod0} queued on the killed pod), delivered ${delivered}, client errors ${res.errors.length} (${errorSummary(res.errors)})`,
    );
    expect(heldByPod0).toBeGreaterThan(10);
    expect(res.acked.length).toBeGreaterThan(20);
    expect(delivered).toBe(res.acked.length);
  });

  it('a config change rolls the StatefulSet under one-message-per-connection load: 0 client errors, nothing acknowledged lost', async () => {
    const before = (
      await cluster.kubectl([
        '-n',
        RELAY_NAMESPACE,
        'get',
        'sts',
        RELAY_NAME,
        '-o',
        'jsonpath={.status.updateRevision}',
      ])
    ).stdout;
    const timeline = startTimeline(cluster, RELAY_NAMESPACE, {
      podSelector: RELAY_SELECTOR,
      service: RELAY_NAME,
    });
    timeline.followLogs(await cluster.pods(RELAY_NAMESPACE, RELAY_SELECTOR));
    const running = await load('load-roll', 75);
    await new Promise((r) => setTimeout(r, 5_000));
    // A new config hash: the operator rewrites the ConfigMap and the pod template's annotation.
    await cluster.kubectl([
      '-n',
      RELAY_NAMESPACE,
      'patch',
      'emailrelay',
      RELAY_NAME,
      '--type=merge',
      '-p',
      JSON.stringify({ spec: { queue: { retryMaxSeconds: 6 } } }),
    ]);
    await waitUntil(
      'a new StatefulSet revision',
      async () => {
        const rev = (
          await cluster.kubectl([
            '-n',
            RELAY_NAMESPACE,
            'get',
            'sts',
            RELAY_NAME,
            '-o',
            'jsonpath={.status.updateRevision}',
          ])
        ).stdout;
        return rev !== before;
      },
      60_000,
    );
    await waitForRelay(cluster);
    // The whole roll happened while the clients were sending.
    expect(Date.now()).toBeLessThan(running.endsAt);
    const res = await running.finish();
    const events = timeline.stop();
    const delivered = await waitDelivered(res.acked);
    const lost = res.acked.length - delivered;
    console.log(
      `rolling config change under load: acked ${res.acked.length}, delivered ${delivered}, lost ${lost}, client errors ${res.errors.length} (${errorSummary(res.errors)}); greetings each client needed before NetworkPolicy admitted it: ${running.probes.join('/')}`,
    );
    if (res.errors.length) console.log(aroundErrors(events, res.errors, timeline.startedAt));
    expect(res.acked.length).toBeGreaterThan(100);
    expect(lost).toBe(0);
    expect(res.errors).toEqual([]);
  });
});
