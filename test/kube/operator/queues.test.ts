import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseConfig } from '../../../src/config/load.ts';
import { DRAIN_ANNOTATION } from '../../../src/config/peers.ts';
import type { KubeClient } from '../../../src/lib/kube/client.ts';
import { silentLogger } from '../../../src/lib/logger.ts';
import { commonLabels, selectorLabels } from '../../../src/operator/emailrelay/names.ts';
import type { Manager } from '../../../src/operator/manager.ts';
import { resourcePath, resourceType } from '../../../src/operator/runtime/resources.ts';
import { runDrainOnly } from '../../../src/relay/drain-only.ts';
import { leavingForGood } from '../../../src/relay/peers/leaving.ts';
import { freePort } from '../../helpers/ports.ts';
import { startTestRelay, type TestRelay } from '../../helpers/relay.ts';
import { SmtpDialog } from '../../helpers/smtp-dialog.ts';
import { type SmtpSink, startSmtpSink } from '../../helpers/smtp-sink.ts';
import {
  apply,
  ensureNamespace,
  eventually,
  findObject,
  getObject,
  installCrds,
  kubeClient,
  kubectl,
  type Obj,
  startManager,
} from './harness.ts';

/**
 * The queue as the operator sees it, against a real kube-apiserver (no kubelet: the test plays
 * the StatefulSet and Job controllers by creating and deleting Pod objects) and real relays on
 * loopback addresses standing in for the pods: the operator reads their /summary at the pod IP.
 */

const kubeconfig = inject('kubeconfig');
const kubectlBin = inject('kubectl');
const NS = 'queues';
const NAME = 'mail';

describe('queues in the EmailRelay status', () => {
  let client: KubeClient;
  let manager: Manager;
  let sink: SmtpSink;
  let port: number;
  const relays: TestRelay[] = [];

  const podPath = (name: string) => resourcePath(resourceType('Pod'), NS, name);
  const status = async () => (await findObject(client, 'EmailRelay', NS, NAME))?.status as Obj | undefined;
  const events = async (reason: string) =>
    ((await client.get<Obj>(`/api/v1/namespaces/${NS}/events`)).items as Obj[]).filter(
      (e) => e.reason === reason && e.involvedObject?.name === NAME,
    );

  /** A Pod object standing for a relay pod at `ip` (what the StatefulSet controller would make). */
  async function fakePod(name: string, ip: string, labels: Record<string, string>) {
    await apply(client, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: NS, labels },
      spec: { containers: [{ name: 'relay', image: 'example.invalid/email-relay:test' }] },
    } as never);
    await client.request('PATCH', `${podPath(name)}/status`, {
      body: { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } },
      contentType: 'application/merge-patch+json',
    });
  }

  async function send(relay: TestRelay, n: number) {
    const c = await SmtpDialog.open(relay.port);
    await c.reply();
    await c.cmd('EHLO app.example.com');
    await c.cmd('MAIL FROM:<app@example.com>');
    await c.cmd(`RCPT TO:<u${n}@example.net>`);
    await c.cmd('DATA');
    expect((await c.cmd(`From: app@example.com\r\nSubject: ${n}\r\n\r\nx\r\n.`))[0]).toMatch(/^250 /);
    await c.cmd('QUIT');
  }

  beforeAll(async () => {
    client = kubeClient(kubeconfig);
    await installCrds(client);
    await ensureNamespace(client, NS);
    // The upstream defers every MAIL FROM with its own text: mail stays queued, the refusal is news.
    sink = await startSmtpSink(['-r', 'mail']);
    port = await freePort();
    for (const [i, ip] of ['127.0.0.2', '127.0.0.3', '127.0.0.4'].entries()) {
      relays.push(
        await startTestRelay({
          http: `${ip}:${port}`,
          upstream: { url: sink.url },
          queue: { retryInitialSeconds: 3600, retryMaxSeconds: 3600 },
          peers: { listen: `${ip}:0`, trust: { networks: ['127.0.0.0/8'] } },
        }),
      );
      await fakePod(`${NAME}-${i}`, ip, commonLabels(NAME));
      await apply(client, {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: { name: `spool-${NAME}-${i}`, namespace: NS, labels: selectorLabels(NAME) },
        spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
      } as never);
    }
    manager = startManager(kubeconfig, { summaryIntervalMs: 500 });
    await manager.start();
  });

  afterAll(async () => {
    await manager?.stop();
    await Promise.all(relays.map((r) => r.dispose()));
    await sink?.dispose();
    client?.close();
  });

  it("QUEUED and OLDEST in kubectl get add up what the pods hold; UpstreamHealthy carries the upstream's own refusal, with one Event per transition", async () => {
    await apply(client, {
      apiVersion: 'email.bionicaisolutions.com/v1alpha1',
      kind: 'EmailRelay',
      metadata: { name: NAME, namespace: NS },
      spec: {
        hostname: 'mail.bionicaisolutions.com',
        replicas: 3,
        upstream: { host: '127.0.0.1', port: sink.port, tls: 'opportunistic' },
        metrics: { port },
      },
    } as never);
    const counts = [2, 3, 1];
    for (const [i, n] of counts.entries()) for (let k = 0; k < n; k++) await send(relays[i]!, i * 10 + k);
    const oldest = Math.min(...relays.map((r) => r.spool.stats().oldestReceivedAt!));

    const s = await eventually('queue totals', async () => {
      const st = await status();
      return st?.queue?.queued === 6 && st.queue.deferred === 6 && st.queue.pods === 3 && st;
    });
    expect(s.queue.pods).toBe(3);
    expect(Date.parse(s.queue.oldestQueuedAt)).toBe(Math.floor(oldest / 1000) * 1000);
    expect(s.queue.lastRefusal.reply).toMatch(/^4\d\d /);
    const up = s.conditions.find((c: Obj) => c.type === 'UpstreamHealthy');
    expect(up).toMatchObject({ status: 'False', reason: 'UpstreamRefused' });
    expect(up.message).toContain(`127.0.0.1:${sink.port}: ${s.queue.lastRefusal.reply}`);

    const table = await kubectl(kubectlBin, kubeconfig, 'get', 'emailrelays', '-n', NS);
    const [head, row] = table.trim().split('\n');
    expect(head).toMatch(/^NAME\s+READY\s+REPLICAS\s+QUEUED\s+OLDEST\s+ENDPOINT\s+AGE$/);
    expect(row!.split(/\s+/)[3]).toBe('6');
    expect(row!.split(/\s+/)[4]).toMatch(/^\d+s$/);

    // Polled every 500 ms: still one Event for the one transition.
    await new Promise((r) => setTimeout(r, 2000));
    expect(await events('UpstreamRefused')).toHaveLength(1);

    await sink.restart([]);
    for (const r of relays) r.delivery.flush();
    const healthy = await eventually('upstream healthy again', async () => {
      const st = await status();
      const c = st?.conditions?.find((x: Obj) => x.type === 'UpstreamHealthy');
      // All three must have answered (a pod that does not is left out of the totals).
      return (
        st?.queue?.queued === 0 &&
        st.queue.pods === 3 &&
        st.queue.deliveredLastHour === 6 &&
        c?.status === 'True' &&
        st
      );
    });
    expect(healthy.queue.deliveredLastHour).toBe(6);
    expect(healthy.queue.oldestQueuedAt).toBeUndefined();
    expect(await events('Accepting')).toHaveLength(1);
  });

  it('a scale-down marks the pods it removes; queue volumes no pod serves get a drain Job, are listed until it succeeds, and an Event says when one is drained', async () => {
    await sink.stop(); // down: what the leaving pods hold must move, not be delivered
    for (let k = 0; k < 4; k++) await send(relays[2]!, 100 + k);
    await send(relays[1]!, 200);
    await client.request('PATCH', resourcePath(resourceType('EmailRelay'), NS, NAME), {
      body: { spec: { replicas: 1 } },
      contentType: 'application/merge-patch+json',
    });
    // Marked before the StatefulSet shrinks.
    await eventually('drain marks', async () => {
      const pods = await Promise.all([1, 2].map((i) => client.get<Obj>(podPath(`${NAME}-${i}`))));
      return pods.every((p) => p.metadata.annotations?.[DRAIN_ANNOTATION] === 'true');
    });
    expect(
      (await client.get<Obj>(podPath(`${NAME}-0`))).metadata.annotations?.[DRAIN_ANNOTATION],
    ).toBeUndefined();
    // The operator writes the marks first and the StatefulSet's new size right after, in the same
    // reconcile: read just after the marks, it may still say 3 (a CI run saw that).
    await eventually(
      'the StatefulSet shrunk to 1',
      async () => (await getObject(client, 'StatefulSet', NS, NAME)).spec.replicas === 1,
    );
    // A marked pod asks the API server whether it leaves for good (POD_NAME, POD_NAMESPACE).
    const peers = parseConfig({ peers: { drainOnShutdown: 'whenMarked' } }).peers;
    process.env.POD_NAMESPACE = NS;
    process.env.POD_NAME = `${NAME}-2`;
    expect(await leavingForGood(peers, { kubeconfig, logger: silentLogger })).toBe(true);
    process.env.POD_NAME = `${NAME}-0`;
    expect(await leavingForGood(peers, { kubeconfig, logger: silentLogger })).toBe(false);
    delete process.env.POD_NAME;
    delete process.env.POD_NAMESPACE;

    // The pods go (here: as if killed before they could hand off; their queues stay on the volumes).
    for (const i of [1, 2]) {
      await relays[i]!.stop('SIGKILL stand-in');
      await client.request('DELETE', podPath(`${NAME}-${i}`), { query: { gracePeriodSeconds: 0 } });
    }
    const stranded = await eventually('stranded queues', async () => {
      const st = await status();
      return st?.strandedQueues?.length === 2 && st.strandedQueues;
    });
    expect(stranded.map((q: Obj) => [q.claim, q.ordinal, q.job])).toEqual([
      [`spool-${NAME}-1`, 1, `${NAME}-drain-1`],
      [`spool-${NAME}-2`, 2, `${NAME}-drain-2`],
    ]);
    expect(await events('QueueStranded')).toHaveLength(2);
    // The StrandedQueue alert's source: the operator's gauge says the same as the status.
    const gauge = async () =>
      (await manager.metrics.stranded.get()).values.find(
        (v) => v.labels['namespace'] === NS && v.labels['relay'] === NAME,
      )?.value;
    expect(await gauge()).toBe(2);
    const job = await getObject(client, 'Job', NS, `${NAME}-drain-2`);
    const pod = job.spec.template.spec;
    expect(pod.containers[0].args).toEqual([
      'relay',
      '--config',
      '/etc/email-relay/config/relay.yaml',
      '--drain-only',
    ]);
    expect(pod.volumes).toContainEqual({
      name: 'spool',
      persistentVolumeClaim: { claimName: `spool-${NAME}-2` },
    });
    expect(job.spec.template.metadata.labels['app.kubernetes.io/component']).toBe('drain');
    expect(job.metadata.ownerReferences[0]).toMatchObject({ kind: 'EmailRelay', name: NAME });

    // The Job's pod runs the relay in drain-only mode on the volume: it hands the mail to pod 0.
    const config = relays[2]!.config;
    const report = await runDrainOnly(
      {
        ...config,
        http: undefined,
        peers: { ...config.peers, addresses: [`127.0.0.2:${relays[0]!.peers!.port}`] },
      },
      silentLogger,
      { terminationLog: '/dev/null' },
    );
    expect(report).toMatchObject({ handedOff: 4, left: 0 });
    expect(relays[0]!.spool.stats().messages).toBe(4);
    await fakePod(`${NAME}-drain-2-x7k2p`, '127.0.0.9', {
      ...commonLabels(NAME),
      'app.kubernetes.io/component': 'drain',
      'job-name': `${NAME}-drain-2`,
    });
    await client.request('PATCH', `${podPath(`${NAME}-drain-2-x7k2p`)}/status`, {
      body: {
        status: {
          phase: 'Succeeded',
          containerStatuses: [
            {
              name: 'relay',
              image: 'x',
              imageID: '',
              ready: false,
              restartCount: 0,
              state: { terminated: { exitCode: 0, message: JSON.stringify(report) } },
            },
          ],
        },
      },
      contentType: 'application/merge-patch+json',
    });
    await client.request('PATCH', `${resourcePath(resourceType('Job'), NS, `${NAME}-drain-2`)}/status`, {
      body: { status: { succeeded: 1 } },
      contentType: 'application/merge-patch+json',
    });
    const left = await eventually('one stranded queue left', async () => {
      const st = await status();
      return st?.strandedQueues?.length === 1 && st.strandedQueues;
    });
    expect(left[0].claim).toBe(`spool-${NAME}-1`);
    await eventually('gauge follows the status', async () => (await gauge()) === 1);
    const drained = await eventually('QueueDrained', async () => {
      const e = await events('QueueDrained');
      return e.length > 0 && e;
    });
    expect(drained[0]!.message).toBe(
      `spool-${NAME}-2 is empty: 4 messages handed to the relay pods, 0 delivered`,
    );
    // The volume still holding mail is never deleted, nor is its Job.
    expect(await findObject(client, 'PersistentVolumeClaim', NS, `spool-${NAME}-1`)).toBeDefined();
    expect(await findObject(client, 'Job', NS, `${NAME}-drain-1`)).toBeDefined();

    // Scaled up again: ordinal 2 serves again, its finished Job goes (a later scale-down needs a new one).
    await client.request('PATCH', resourcePath(resourceType('EmailRelay'), NS, NAME), {
      body: { spec: { replicas: 3 } },
      contentType: 'application/merge-patch+json',
    });
    await eventually(
      'finished Job removed',
      async () => !(await findObject(client, 'Job', NS, `${NAME}-drain-2`)),
    );
  });
});
