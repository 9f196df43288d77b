import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorSummary } from './clients.ts';
import { type NodeCluster, nodeCluster, waitUntil } from './cluster.ts';
import { type Load, startLoad } from './load.ts';
import { deployOperator, OPERATOR_NAMESPACE } from './product.ts';
import { type NodeSink, startNodeSink } from './sink.ts';

// The queue as data the operator owns, on a real node: a scale-down with the upstream down moves
// every queued message to the pod that stays (hand-off over SMTP through the headless Service),
// drain Jobs confirm the leaving volumes empty, and once the upstream is back every acknowledged
// message arrives (duplicates counted), with nothing left on any volume.

const NS = 'stateful';
const APP = 'stateful-app';
const NAME = 'burst';
const PER_POD = 10;
const CLI = ['/nodejs/bin/node', '/app/dist/cli.js'];
const CONFIG = '/etc/email-relay/config/relay.yaml';

let cluster: NodeCluster;
let sink: NodeSink;

beforeAll(async () => {
  cluster = await nodeCluster();
  sink = await startNodeSink(cluster, 2600);
  await deployOperator(cluster);
  await cluster.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: APP, labels: { 'email.bionicaisolutions.com/relay-access': 'true' } },
    },
  ]);
}, 400_000);
afterAll(async () => {
  await sink?.dispose();
});

/** Messages queued on one relay pod, as its own queue CLI lists them. */
async function queuedOn(pod: string): Promise<number> {
  const out = await cluster.kubectl([
    '-n',
    NS,
    'exec',
    pod,
    '--',
    ...CLI,
    'queue',
    'list',
    '--json',
    '--config',
    CONFIG,
  ]);
  return (JSON.parse(out.stdout) as unknown[]).length;
}

/** One message per connection to each pod's own DNS name; prints "ACK <subject>" per 250. */
function sendToEveryPod(): string[] {
  const script = `
import smtplib, socket, sys, time
for i in range(3):
    host = '${NAME}-%d.${NAME}-headless.${NS}.svc.cluster.local' % i
    for n in range(${PER_POD}):
        subject = 'stateful %d %d' % (i, n)
        deadline = time.time() + 90
        while True:
            try:
                s = smtplib.SMTP(host, 25, timeout=30)
                break
            except (OSError, socket.gaierror) as e:
                if time.time() > deadline:
                    print('connect failed: %r' % (e,)); sys.exit(1)
                time.sleep(1)
        s.sendmail('app@bionicaisolutions.com', 'to@example.com', 'Subject: %s\\n\\nbody' % subject)
        s.quit()
        print('ACK ' + subject, flush=True)
`;
  return ['/usr/bin/python3', '-c', script];
}

/** Of the load's acknowledged ids, how many never reached the sink (waits up to 5 minutes). */
/** Three clients on the relay's Service, one message per connection, for `seconds`. */
function relayLoad(prefix: string, seconds: number): Promise<Load> {
  return startLoad(cluster, {
    namespace: APP,
    prefix,
    n: 3,
    host: `${NAME}.${NS}.svc.cluster.local`,
    seconds,
    pauseMs: 400,
  });
}

/** The load ran to its end (the disruption did not outlast it): every 250 delivered, no client error. */
async function expectNothingLost(running: Load, label: string): Promise<void> {
  expect(Date.now()).toBeLessThan(running.endsAt);
  const load = await running.finish();
  const lost = await lostOf(load.acked);
  console.log(
    `${label}: acked ${load.acked.length}, lost ${lost}, client errors ${load.errors.length} (${errorSummary(load.errors)})`,
  );
  expect(load.acked.length).toBeGreaterThan(50);
  expect(lost).toBe(0);
  expect(load.errors).toEqual([]);
}

async function lostOf(acked: string[]): Promise<number> {
  const want = acked.map((id) => `load ${id}`);
  const subjects = (m: { data: string }[]) => new Set(m.map((x) => /^Subject: (.*)$/m.exec(x.data)?.[1]));
  const msgs = await sink
    .waitFor(`${want.length} acknowledged`, (m) => want.every((w) => subjects(m).has(w)), 300_000)
    .catch(() => sink.messages());
  const got = subjects(msgs);
  return want.filter((w) => !got.has(w)).length;
}

interface RelayStatus {
  status?: {
    queue?: { queued: number; pods: number };
    strandedQueues?: { claim: string }[];
  };
}

describe('stateful relay on a real node', () => {
  it('scale 3 -> 1 with the upstream down and mail on every pod, then the upstream back: every acknowledged message delivered, none left on any volume', async () => {
    await cluster.apply({
      apiVersion: 'email.bionicaisolutions.com/v1alpha1',
      kind: 'EmailRelay',
      metadata: { name: NAME, namespace: NS },
      spec: {
        hostname: 'mail.bionicaisolutions.com',
        replicas: 3,
        upstream: { host: cluster.nodeIp, port: sink.port, tls: 'opportunistic' },
        queue: { retryInitialSeconds: 2, retryMaxSeconds: 5, drainTimeoutSeconds: 120 },
        resources: { requests: { cpu: '10m', memory: '64Mi' }, limits: { memory: '512Mi' } },
      },
    });
    await waitUntil(
      'StatefulSet burst',
      async () => (await cluster.kubectl(['-n', NS, 'get', 'sts', NAME], { allowFail: true })).code === 0,
      120_000,
    );
    await cluster.kubectl(['-n', NS, 'rollout', 'status', `sts/${NAME}`, '--timeout=300s'], {
      timeoutMs: 320_000,
    });

    await sink.stop();
    const run = await cluster.runPod(
      { namespace: APP, name: 'fill-every-pod', command: sendToEveryPod() },
      300_000,
    );
    expect(run.phase, run.logs).toBe('Succeeded');
    const acked = run.logs
      .split('\n')
      .filter((l) => l.startsWith('ACK '))
      .map((l) => l.slice(4));
    expect(acked).toHaveLength(3 * PER_POD);

    const perPod = await Promise.all([0, 1, 2].map((i) => queuedOn(`${NAME}-${i}`)));
    console.log(`queued per pod before the scale-down: ${perPod.join('/')}`);
    expect(perPod).toEqual([PER_POD, PER_POD, PER_POD]);
    // QUEUED in kubectl get is what the pods hold.
    const row = await waitUntil(
      'QUEUED 30 in kubectl get emailrelays',
      async () => {
        const out = (await cluster.kubectl(['-n', NS, 'get', 'emailrelays'])).stdout.trim().split('\n');
        const cols = out[1]?.split(/\s+/) ?? [];
        return cols[3] === String(3 * PER_POD) && out;
      },
      120_000,
    );
    console.log(row.join('\n'));

    const t0 = Date.now();
    await cluster.kubectl([
      '-n',
      NS,
      'patch',
      'emailrelay',
      NAME,
      '--type=merge',
      '-p',
      '{"spec":{"replicas":1}}',
    ]);
    await waitUntil(
      'pods 1 and 2 gone',
      async () => {
        const pods = await cluster.pods(
          NS,
          `app.kubernetes.io/instance=${NAME},app.kubernetes.io/component=relay`,
        );
        return pods.length === 1 && pods[0] === `${NAME}-0`;
      },
      300_000,
    );
    const leftAt = Date.now();
    const onZero = await queuedOn(`${NAME}-0`);
    console.log(
      `after the scale-down (${Math.round((leftAt - t0) / 1000)} s): ${onZero} queued on ${NAME}-0`,
    );
    expect(onZero).toBe(3 * PER_POD);
    // The leaving volumes: a drain Job each confirms them empty; the status lists none at the end.
    await waitUntil(
      'drain Jobs succeeded, no stranded queue',
      async () => {
        const relay = await cluster.kubectlJson<RelayStatus>(['-n', NS, 'get', 'emailrelay', NAME]);
        const jobs = await cluster.kubectlJson<{
          items: { metadata: { name: string }; status: { succeeded?: number } }[];
        }>(['-n', NS, 'get', 'jobs']);
        const done = jobs.items
          .filter((j) => (j.status.succeeded ?? 0) > 0)
          .map((j) => j.metadata.name)
          .sort();
        return (
          done.join(',') === `${NAME}-drain-1,${NAME}-drain-2` &&
          (relay.status?.strandedQueues ?? []).length === 0
        );
      },
      300_000,
    );
    const events = (
      await cluster.kubectl([
        '-n',
        NS,
        'get',
        'events',
        '--field-selector',
        `involvedObject.name=${NAME}`,
        '-o',
        'custom-columns=REASON:.reason,MESSAGE:.message',
        '--no-headers',
      ])
    ).stdout;
    console.log(
      events
        .split('\n')
        .filter((l) => /Queue|ScalingDown|Upstream/.test(l))
        .join('\n'),
    );

    await sink.start();
    const msgs = await sink.waitFor(
      'every acknowledged message',
      (m) => {
        const got = new Set(m.map((x) => /^Subject: (.*)$/m.exec(x.data)?.[1]));
        return acked.every((s) => got.has(s));
      },
      300_000,
    );
    const count = new Map<string, number>();
    for (const m of msgs) {
      const s = /^Subject: (.*)$/m.exec(m.data)?.[1] ?? '';
      if (s.startsWith('stateful ')) count.set(s, (count.get(s) ?? 0) + 1);
    }
    const dups = [...count.values()].filter((n) => n > 1).length;
    console.log(`delivered ${count.size} distinct of ${acked.length} acknowledged, ${dups} duplicated`);
    expect(count.size).toBe(acked.length);
    await waitUntil(`${NAME}-0 empty`, async () => (await queuedOn(`${NAME}-0`)) === 0, 120_000);
    const relay = await waitUntil(
      'status QUEUED 0',
      async () => {
        const r = await cluster.kubectlJson<RelayStatus>(['-n', NS, 'get', 'emailrelay', NAME]);
        return r.status?.queue?.queued === 0 && r;
      },
      120_000,
    );
    expect(relay.status?.strandedQueues).toEqual([]);
  });
  it('a pod removed while the operator is stopped: its volume is found and drained by a Job once the operator returns', async () => {
    const patch = (replicas: number) =>
      cluster.kubectl([
        '-n',
        NS,
        'patch',
        'emailrelay',
        NAME,
        '--type=merge',
        '-p',
        JSON.stringify({ spec: { replicas } }),
      ]);
    await patch(3);
    await cluster.kubectl(['-n', NS, 'rollout', 'status', `sts/${NAME}`, '--timeout=300s'], {
      timeoutMs: 320_000,
    });
    await sink.stop();
    const script = `
import smtplib, socket, sys, time
for n in range(${PER_POD}):
    deadline = time.time() + 90
    while True:
        try:
            s = smtplib.SMTP('${NAME}-2.${NAME}-headless.${NS}.svc.cluster.local', 25, timeout=30)
            break
        except (OSError, socket.gaierror) as e:
            if time.time() > deadline:
                print('connect failed: %r' % (e,)); sys.exit(1)
            time.sleep(1)
    s.sendmail('app@bionicaisolutions.com', 'to@example.com', 'Subject: stranded %d\\n\\nbody' % n)
    s.quit()
    print('ACK stranded %d' % n, flush=True)
`;
    const run = await cluster.runPod(
      { namespace: APP, name: 'fill-pod-2', command: ['/usr/bin/python3', '-c', script] },
      300_000,
    );
    expect(run.phase, run.logs).toBe('Succeeded');
    expect(await queuedOn(`${NAME}-2`)).toBe(PER_POD);

    // The operator goes; the relay is scaled down behind its back (spec and StatefulSet).
    await cluster.kubectl(['-n', OPERATOR_NAMESPACE, 'scale', 'deploy/email-relay-operator', '--replicas=0']);
    await waitUntil(
      'operator pods gone',
      async () =>
        (await cluster.pods(OPERATOR_NAMESPACE, 'app.kubernetes.io/name=email-relay-operator')).length === 0,
      120_000,
    );
    await patch(2);
    await cluster.kubectl(['-n', NS, 'scale', `sts/${NAME}`, '--replicas=2']);
    await waitUntil(
      'pod 2 gone',
      async () =>
        !(
          await cluster.pods(NS, `app.kubernetes.io/instance=${NAME},app.kubernetes.io/component=relay`)
        ).includes(`${NAME}-2`),
      300_000,
    );
    // Unmarked, it kept its queue on the volume: nobody reads it now.
    const t0 = Date.now();
    await cluster.kubectl(['-n', OPERATOR_NAMESPACE, 'scale', 'deploy/email-relay-operator', '--replicas=2']);
    const drained = await waitUntil(
      'QueueDrained for spool-burst-2',
      async () => {
        const ev = (
          await cluster.kubectl([
            '-n',
            NS,
            'get',
            'events',
            '--field-selector',
            `involvedObject.name=${NAME},reason=QueueDrained`,
            '-o',
            'jsonpath={range .items[*]}{.message}{"\\n"}{end}',
          ])
        ).stdout;
        return ev.split('\n').find((l) => l.startsWith(`spool-${NAME}-2 is empty: ${PER_POD} messages`));
      },
      300_000,
    );
    console.log(`operator back: ${drained} (${Math.round((Date.now() - t0) / 1000)} s after it was started)`);
    const held = (await queuedOn(`${NAME}-0`)) + (await queuedOn(`${NAME}-1`));
    expect(held).toBe(PER_POD);
    await sink.start();
    const msgs = await sink.waitFor(
      'the stranded messages',
      (m) => {
        const got = new Set(m.map((x) => /^Subject: (.*)$/m.exec(x.data)?.[1]));
        return Array.from({ length: PER_POD }, (_, n) => `stranded ${n}`).every((x) => got.has(x));
      },
      300_000,
    );
    const n = msgs.filter((m) => /^Subject: stranded /m.test(m.data)).length;
    console.log(`stranded: delivered ${n} for ${PER_POD} acknowledged`);
    expect(n).toBe(PER_POD);
  });

  it('kubectl rollout restart under one-message-per-connection load: 0 client errors, 0 lost', async () => {
    const running = await relayLoad('roll', 90);
    await new Promise((r) => setTimeout(r, 5_000));
    await cluster.kubectl(['-n', NS, 'rollout', 'restart', `sts/${NAME}`]);
    await cluster.kubectl(['-n', NS, 'rollout', 'status', `sts/${NAME}`, '--timeout=300s'], {
      timeoutMs: 320_000,
    });
    await expectNothingLost(running, 'rollout restart under load');
  });
  it('kubectl drain of the relay pods with the PDB, under load: one pod at a time, 0 client errors, 0 lost', async () => {
    // One node: a drain cordons the only node, so an evicted pod cannot come back until uncordon.
    // What this proves: evictions go through the PDB (the second is refused with 429 while the
    // first pod is away), the evicted pod leaves the Service before it stops listening, the pod
    // that stays serves every client, and the pod returns on its own volume. What one node cannot
    // show: a pod rescheduled onto another node, its volume following it there.
    const selector = `app.kubernetes.io/instance=${NAME},app.kubernetes.io/component=relay`;
    const pdb = await cluster.kubectlJson<{
      spec: { maxUnavailable: number };
      status: { disruptionsAllowed: number };
    }>(['-n', NS, 'get', 'pdb', NAME]);
    expect(pdb.spec.maxUnavailable).toBe(1);
    expect((await cluster.pods(NS, selector)).sort()).toEqual([`${NAME}-0`, `${NAME}-1`]);
    const node = (await cluster.kubectl(['get', 'nodes', '-o', 'jsonpath={.items[0].metadata.name}'])).stdout;
    const running = await relayLoad('drain', 160);
    await new Promise((r) => setTimeout(r, 5_000));
    let drain: { code: number; stdout: string; stderr: string };
    let readyWhileCordoned: number;
    try {
      // kubectl drain evicts through the Eviction API and retries a 429 every 5 s, as an upgrade does.
      drain = await cluster.kubectl(
        ['drain', node, `--pod-selector=${selector}`, '--delete-emptydir-data', '--timeout=40s'],
        { allowFail: true, timeoutMs: 90_000 },
      );
      readyWhileCordoned = (
        await cluster.kubectl([
          '-n',
          NS,
          'get',
          'pods',
          '-l',
          selector,
          '-o',
          'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        ])
      ).stdout
        .split('\n')
        .filter((l) => l === 'True').length;
    } finally {
      await cluster.kubectl(['uncordon', node]);
    }
    const out = `${drain.stdout}\n${drain.stderr}`;
    const evicted = [...out.matchAll(/pod\/(\S+) evicted/g)].map((m) => m[1]);
    const refusals = out.split('\n').filter((l) => l.includes("violate the pod's disruption budget")).length;
    console.log(
      `kubectl drain (40 s, one node): evicted ${evicted.join(', ') || 'none'}, ${refusals} evictions refused by the PDB (429), ${readyWhileCordoned} relay pod ready while cordoned, drain exit ${drain.code}`,
    );
    // One pod went; the other was refused (429) as long as the first could not come back.
    expect(evicted).toHaveLength(1);
    expect(refusals).toBeGreaterThan(0);
    expect(drain.code).not.toBe(0);
    expect(readyWhileCordoned).toBe(1);
    // Uncordoned, the evicted pod returns on its volume; then the other one is evicted in turn.
    await cluster.kubectl(['-n', NS, 'rollout', 'status', `sts/${NAME}`, '--timeout=180s'], {
      timeoutMs: 200_000,
    });
    await waitUntil(
      'the PDB to allow a disruption again',
      async () =>
        (await cluster.kubectlJson<typeof pdb>(['-n', NS, 'get', 'pdb', NAME])).status.disruptionsAllowed ===
        1,
      120_000,
    );
    // The other pod through the Eviction API itself; while it is away the PDB refuses a second one.
    const evict = (pod: string) =>
      cluster.kubectl(['create', '--raw', `/api/v1/namespaces/${NS}/pods/${pod}/eviction`, '-f', '-'], {
        input: JSON.stringify({
          apiVersion: 'policy/v1',
          kind: 'Eviction',
          metadata: { name: pod, namespace: NS },
        }),
        allowFail: true,
      });
    const other = [`${NAME}-0`, `${NAME}-1`].find((p) => p !== evicted[0]) as string;
    const podState = (pod: string) =>
      cluster.kubectl([
        '-n',
        NS,
        'get',
        'pod',
        pod,
        '-o',
        'jsonpath={.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}',
      ]);
    const uid = (await podState(other)).stdout.split(' ')[0];
    const second = await evict(other);
    const third = await evict(evicted[0] as string);
    console.log(
      `eviction of ${other}: exit ${second.code}; of ${evicted[0]} right after: ${third.stderr.trim() || `exit ${third.code}`}`,
    );
    expect(second.code, second.stderr).toBe(0);
    expect(third.code).not.toBe(0);
    expect(third.stderr).toMatch(/TooManyRequests.*disruption budget/);
    await waitUntil(
      `${other} back (a new pod on its volume) and Ready`,
      async () => {
        const [u, ready] = (await podState(other)).stdout.split(' ');
        return u !== uid && ready === 'True';
      },
      180_000,
    );
    await expectNothingLost(running, 'node drain and eviction under load');
  });

  it('a namespace rate limit holds across 3 replicas (shared counts), however the Service spreads connections', async () => {
    const LIMIT = 120;
    await cluster.apply({
      apiVersion: 'email.bionicaisolutions.com/v1alpha1',
      kind: 'EmailPolicy',
      metadata: { name: 'team-rate', namespace: NS },
      spec: {
        relays: [NAME],
        rules: { rateLimits: [{ per: 'namespace', messages: LIMIT, periodSeconds: 120 }] },
      },
    });
    await cluster.kubectl([
      '-n',
      NS,
      'patch',
      'emailrelay',
      NAME,
      '--type=merge',
      '-p',
      '{"spec":{"replicas":3}}',
    ]);
    await waitUntil(
      'the policy in the rendered config',
      async () => {
        const cm = (
          await cluster.kubectl([
            '-n',
            NS,
            'get',
            'configmap',
            `${NAME}-config`,
            '-o',
            'jsonpath={.data.relay\\.yaml}',
          ])
        ).stdout;
        return cm.includes('team-rate');
      },
      120_000,
    );
    await new Promise((r) => setTimeout(r, 3000));
    await cluster.kubectl(['-n', NS, 'rollout', 'status', `sts/${NAME}`, '--timeout=300s'], {
      timeoutMs: 320_000,
    });
    const load = await (
      await startLoad(cluster, {
        namespace: APP,
        prefix: 'rate',
        n: 3,
        host: `${NAME}.${NS}.svc.cluster.local`,
        seconds: 40,
        pauseMs: 50,
      })
    ).finish();
    const limited = load.errors.filter((e) => /^450 4\.7\.1/.test(e.error ?? '')).length;
    const logs = (
      await cluster.kubectl([
        '-n',
        NS,
        'logs',
        '-l',
        `app.kubernetes.io/instance=${NAME},app.kubernetes.io/component=relay`,
        '--tail=-1',
        '--prefix',
      ])
    ).stdout;
    const perPod = [0, 1, 2].map(
      (i) =>
        logs
          .split('\n')
          .filter(
            (l) =>
              l.startsWith(`[pod/${NAME}-${i}/`) &&
              l.includes('"msg":"queued"') &&
              l.includes(`"namespace":"${APP}"`),
          ).length,
    );
    console.log(
      `rate limit ${LIMIT}/120 s across 3 replicas: tried ${load.acked.length + load.errors.length}, accepted ${load.acked.length} (per pod ${perPod.join('/')}), refused 450 ${limited}, other errors ${load.errors.length - limited}`,
    );
    expect(load.acked.length + load.errors.length).toBeGreaterThan(2 * LIMIT);
    expect(load.acked.length).toBeGreaterThanOrEqual(LIMIT);
    // A loose ceiling: what the other two replicas admit in one full report interval (500 ms).
    // Three clients that pause 50 ms between messages send at most 3 x 500 / 50 = 30 in an
    // interval, two thirds of them to the other replicas. The documented bound
    // (src/relay/peers/rate-share.ts) is tighter, the counts moved reach the peers within 50 ms;
    // this test keeps the ceiling because pod networking on a loaded node may delay datagrams.
    expect(load.acked.length).toBeLessThanOrEqual(LIMIT + (2 / 3) * 3 * (500 / 50));
  });
});
