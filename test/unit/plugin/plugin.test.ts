import { describe, expect, it } from 'vitest';
import { main } from '../../../src/plugin/cli.ts';
import { cmd, connectionArgs, type KubectlResult } from '../../../src/plugin/kubectl.ts';
import { formatStatus, lastRefusal, parseMetrics } from '../../../src/plugin/observe.ts';
import { probeScript, queueIdOf } from '../../../src/plugin/probe.ts';

// The plugin's command lines, and its flows against a scripted kubectl (the real-cluster run is in
// the node project). A route table maps each kubectl call to its answer; every call is recorded.

const relay = {
  metadata: { name: 'postfix-relay', namespace: 'mail' },
  spec: { replicas: 2, metrics: { port: 9090 } },
  status: {
    readyReplicas: 2,
    endpoint: 'postfix-relay.mail.svc.cluster.local:25',
    admittedNamespaces: ['team-a'],
    conditions: [{ type: 'Ready', status: 'True', reason: 'RelayReady' }],
  },
};
const pod = (name: string) => ({
  metadata: { name, namespace: 'mail' },
  spec: { containers: [{ name: 'relay', image: 'ghcr.io/bionicaisolutions/email-relay:0.1.0' }] },
  status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] },
});
const METRICS = [
  '# HELP email_queue_size Messages in the queue',
  'email_queue_size 3',
  'email_queue_oldest_message_age_seconds 420',
  'email_upstream_state{route="smtp-relay.gmail.com:587",state="held"} 1',
  'email_upstream_state{route="smtp-relay.gmail.com:587",state="ok"} 0',
].join('\n');
const LOGS = [
  '{"level":30,"time":"2026-12-01T10:40:00.000Z","queueId":"A1","outcome":"sent","reply":"250 2.0.0 OK"}',
  '{"level":30,"time":"2026-12-01T10:42:07.000Z","queueId":"A2","outcome":"deferred","reply":"550 5.7.0 Mail relay denied [203.0.113.7]. gsmtp"}',
  'not json',
].join('\n');
const message = (id: string) => ({
  id,
  from: 'app@example.com',
  size: 100,
  receivedAt: 0,
  nextAttemptAt: 0,
  recipients: [],
});

type Route = [RegExp, KubectlResult | ((args: string[]) => KubectlResult)];
const ok = (stdout: string): KubectlResult => ({ code: 0, stdout, stderr: '' });
const fail = (stderr: string): KubectlResult => ({ code: 1, stdout: '', stderr });

function fakeKubectl(routes: Route[]) {
  const calls: string[][] = [];
  const kubectl = async (args: string[]) => {
    calls.push(args);
    const line = args.join(' ');
    for (const [re, answer] of routes)
      if (re.test(line)) return typeof answer === 'function' ? answer(args) : answer;
    return fail(`unexpected: kubectl ${line}`);
  };
  return { kubectl, calls };
}

const base: Route[] = [
  [/^get emailrelays\.email\.bionicaisolutions\.com postfix-relay/, ok(JSON.stringify(relay))],
  [/^get emailrelays\.email\.bionicaisolutions\.com -A/, ok(JSON.stringify({ items: [relay] }))],
  [/^get pods -n mail -l /, ok(JSON.stringify({ items: [pod('postfix-relay-1'), pod('postfix-relay-0')] }))],
  [
    /^exec -n mail postfix-relay-\d -c relay -- \/nodejs\/bin\/node -e fetch\('http:\/\/127\.0\.0\.1:9090\/metrics'\)/,
    ok(METRICS),
  ],
  [/^logs -n mail postfix-relay-\d -c relay --tail=/, ok(LOGS)],
];

async function run(argv: string[], routes: Route[]) {
  const k = fakeKubectl(routes);
  let out = '';
  let err = '';
  let clock = 0;
  const code = await main(argv, {
    out: (s) => (out += s),
    err: (s) => (err += s),
    kubectl: k.kubectl,
    sleep: async () => {
      clock += 2000;
    },
    now: () => clock,
  });
  return { code, out, err, calls: k.calls };
}

describe('kubectl email-relay: command lines', () => {
  it('exec runs the relay CLI of the image (no shell in distroless) against the mounted config', () => {
    expect(cmd.queue('mail', 'postfix-relay-0', ['list', '--json'])).toEqual([
      'exec',
      '-n',
      'mail',
      'postfix-relay-0',
      '-c',
      'relay',
      '--',
      '/nodejs/bin/node',
      '/app/dist/cli.js',
      'queue',
      'list',
      '--json',
      '--config',
      '/etc/email-relay/config/relay.yaml',
    ]);
  });
  it('metrics are read on loopback inside the pod (the NetworkPolicy admits only scrapers); pods by the operator labels', () => {
    const m = cmd.metrics('mail', 'p-0', 9090);
    expect(m.slice(0, 9)).toEqual([
      'exec',
      '-n',
      'mail',
      'p-0',
      '-c',
      'relay',
      '--',
      '/nodejs/bin/node',
      '-e',
    ]);
    expect(m[9]).toContain("fetch('http://127.0.0.1:9090/metrics')");
    expect(cmd.pods('mail', 'r').join(' ')).toBe(
      'get pods -n mail -l app.kubernetes.io/name=email-relay,app.kubernetes.io/instance=r,app.kubernetes.io/component=relay -o json',
    );
  });
  it('namespaces: -A for all, -n NS, nothing for the context namespace; kubeconfig and context pass through', () => {
    expect(cmd.relays('*')).toContain('-A');
    expect(cmd.relays('mail')).toEqual(expect.arrayContaining(['-n', 'mail']));
    expect(cmd.relays(undefined)).not.toContain('-n');
    expect(cmd.relays(undefined)).not.toContain('-A');
    expect(connectionArgs({ kubeconfig: '/k', context: 'c' })).toEqual([
      '--kubeconfig',
      '/k',
      '--context',
      'c',
    ]);
  });
  it('the probe pod runs non-root with the relay image and is removed afterwards', () => {
    const args = cmd.probe('team-a', 'email-relay-probe-x', 'img:1', 'console.log(1)');
    expect(args.slice(0, 8)).toEqual([
      'run',
      'email-relay-probe-x',
      '-n',
      'team-a',
      '--image=img:1',
      '--restart=Never',
      '--rm',
      '-i',
    ]);
    const overrides = JSON.parse(args[args.indexOf('--overrides') + 1]!);
    expect(overrides.spec.securityContext.runAsNonRoot).toBe(true);
    expect(overrides.spec.containers[0].command).toEqual(['/nodejs/bin/node', '-e', 'console.log(1)']);
  });
  it('parses metrics, the last refusal and the queue id', () => {
    expect(
      parseMetrics(METRICS).find((s) => s.name === 'email_upstream_state' && s.value === 1)?.labels,
    ).toEqual({
      route: 'smtp-relay.gmail.com:587',
      state: 'held',
    });
    expect(lastRefusal(LOGS)).toEqual({
      time: '2026-12-01T10:42:07.000Z',
      outcome: 'deferred',
      reply: '550 5.7.0 Mail relay denied [203.0.113.7]. gsmtp',
    });
    expect(queueIdOf('250 2.0.0 Ok: queued as 4Xk2Lm9Q')).toBe('4Xk2Lm9Q');
    expect(probeScript({ endpoint: 'r.mail.svc.cluster.local:25', from: 'a@x.io', to: 'b@y.io' })).toContain(
      '"host":"r.mail.svc.cluster.local","port":25',
    );
  });
});

describe('kubectl email-relay: flows', () => {
  it('status: per relay and per pod, ready, queued, oldest, upstream state, last refusal', async () => {
    const r = await run(['status', '-A'], base);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/mail\/postfix-relay\s+True \(RelayReady\)\s+2\/2\s+6\s+7m/);
    expect(r.out).toMatch(
      /postfix-relay-0\s+true\s+3\s+7m\s+smtp-relay\.gmail\.com:587=held\s+2026-12-01T10:42:07\.000Z deferred: 550 5\.7\.0/,
    );
    expect(r.out.indexOf('postfix-relay-0')).toBeLessThan(r.out.indexOf('postfix-relay-1'));
  });

  it("status prefers the relay's /summary: queue, oldest, each upstream's state and last refusal", async () => {
    const summary = {
      queue: { messages: 5, oldestAgeSeconds: 3600 },
      upstreams: [
        {
          name: 'smtp-relay.gmail.com:587',
          state: 'open',
          healthy: false,
          lastRefusal: {
            reply: '550 5.7.1 Invalid credentials for relay [203.0.113.7] - gsmtp',
            at: '2026-12-01T10:50:00.000Z',
          },
        },
      ],
    };
    const routes: Route[] = [
      [/fetch\('http:\/\/127\.0\.0\.1:9090\/summary'\)/, ok(JSON.stringify(summary))],
      ...base,
    ];
    const r = await run(['status', '-A'], routes);
    expect(r.out).toMatch(/mail\/postfix-relay\s+True \(RelayReady\)\s+2\/2\s+10\s+60m/);
    expect(r.out).toMatch(
      /postfix-relay-0\s+true\s+5\s+60m\s+smtp-relay\.gmail\.com:587=open,refusing\s+2026-12-01T10:50:00\.000Z smtp-relay\.gmail\.com:587 refused: 550 5\.7\.1 Invalid credentials/,
    );
    expect(r.calls.some((c) => c[0] === 'logs')).toBe(false);
  });

  it('status says why a pod could not be read (RBAC)', async () => {
    const routes: Route[] = [
      [/127\.0\.0\.1:9090\/metrics/, fail('Error from server (Forbidden): pods "x" is forbidden')],
      ...base,
    ];
    const r = await run(['status', '-A'], routes);
    expect(r.out).toMatch(/postfix-relay-0: metrics: Error from server \(Forbidden\)/);
  });

  it('queue list asks every pod and prints each queue like mailq', async () => {
    const routes: Route[] = [
      [/exec -n mail postfix-relay-0 .* queue list --json/, ok(JSON.stringify([message('AAA')]))],
      [/exec -n mail postfix-relay-1 .* queue list --json/, ok('[]')],
      ...base,
    ];
    const r = await run(['queue', 'list', 'postfix-relay', '-n', 'mail'], routes);
    expect(r.code).toBe(0);
    expect(r.out).toContain('# mail/postfix-relay-0');
    expect(r.out).toContain('AAA');
    expect(r.out).toContain('# mail/postfix-relay-1\nMail queue is empty');
  });

  it('queue show/delete find the pod that holds the message', async () => {
    const routes: Route[] = [
      [/exec -n mail postfix-relay-0 .* queue delete BBB/, fail('BBB: no such message')],
      [/exec -n mail postfix-relay-1 .* queue delete BBB/, ok('BBB: deleted (running relay, pid 1)\n')],
      ...base,
    ];
    const r = await run(['queue', 'delete', 'postfix-relay', 'BBB', '-n', 'mail'], routes);
    expect(r.code).toBe(0);
    expect(r.out).toBe('postfix-relay-1: BBB: deleted (running relay, pid 1)\n');
    const missing = await run(['queue', 'show', 'postfix-relay', 'ZZZ', '-n', 'mail'], base);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/ZZZ: no such message in any pod of mail\/postfix-relay/);
  });

  it('queue flush runs in every pod; --pod narrows it to one', async () => {
    const routes: Route[] = [[/queue flush/, ok('flushing the queue (running relay, pid 1)\n')], ...base];
    const all = await run(['queue', 'flush', 'postfix-relay'], routes);
    expect(all.calls.filter((c) => c.includes('flush')).map((c) => c[3])).toEqual([
      'postfix-relay-0',
      'postfix-relay-1',
    ]);
    const one = await run(['queue', 'flush', 'postfix-relay', '--pod', 'postfix-relay-1'], routes);
    expect(one.calls.filter((c) => c.includes('flush')).map((c) => c[3])).toEqual(['postfix-relay-1']);
  });

  it("drain runs the relay's own drain in the pod and reports what it handed off", async () => {
    const routes: Route[] = [
      [/^get pod postfix-relay-0 -n mail -o json$/, ok(JSON.stringify(pod('postfix-relay-0')))],
      [
        /^exec -n mail postfix-relay-0 -c relay -- .* queue drain --json --config /,
        ok('{"handedOff":2,"left":0}\n'),
      ],
    ];
    const r = await run(['drain', 'postfix-relay-0', '-n', 'mail'], routes);
    expect(r.code).toBe(0);
    expect(r.out).toContain('postfix-relay-0: drained {"handedOff":2,"left":0}');
    const stuck = await run(
      ['drain', 'postfix-relay-0', '-n', 'mail'],
      [
        [/^get pod/, ok(JSON.stringify(pod('postfix-relay-0')))],
        [/queue drain/, { code: 1, stdout: '{"handedOff":0,"left":1}\n', stderr: '' }],
      ],
    );
    expect(stuck.code).toBe(1);
    expect(stuck.err).toContain('"left":1');
  });

  it('test-send: a probe pod in an admitted namespace, then the upstream answer from the relay logs', async () => {
    const routes: Route[] = [
      [/^run email-relay-probe-/, ok('250 2.0.0 Ok: queued as QID42\n')],
      [
        /^logs -n mail postfix-relay-1/,
        ok('{"queueId":"QID42","outcome":"sent","reply":"250 2.0.0 OK 1733 - gsmtp","msg":"sent"}\n'),
      ],
      ...base,
    ];
    const r = await run(
      ['test-send', 'postfix-relay', '-n', 'mail', '--from', 'a@example.com', '--to', 'b@example.org'],
      routes,
    );
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const probe = r.calls.find((c) => c[0] === 'run')!;
    expect(probe.slice(2, 5)).toEqual([
      '-n',
      'team-a',
      '--image=ghcr.io/bionicaisolutions/email-relay:0.1.0',
    ]);
    expect(r.out).toContain('relay answered: 250 2.0.0 Ok: queued as QID42');
    expect(r.out).toContain('upstream answered (postfix-relay-1, sent): 250 2.0.0 OK 1733 - gsmtp');
  });

  it('test-send fails when the relay refuses the probe', async () => {
    const routes: Route[] = [
      [/^run /, { code: 1, stdout: '554 5.7.1 <b@example.org>: Relay access denied\n', stderr: '' }],
      ...base,
    ];
    const r = await run(
      ['test-send', 'postfix-relay', '--from', 'a@example.com', '--to', 'b@example.org'],
      routes,
    );
    expect(r.code).toBe(1);
    expect(r.out).toContain('relay answered: 554 5.7.1');
  });

  it('report: one JSON bundle with resources, events, logs, metrics and queues, addresses masked', async () => {
    const routes: Route[] = [
      [
        /^get statefulsets,/,
        ok(JSON.stringify({ items: [{ kind: 'StatefulSet', metadata: { name: 'postfix-relay' } }] })),
      ],
      [
        /^get emailpolicies/,
        ok(
          JSON.stringify({ items: [{ spec: { rules: { rewriteSender: { to: 'noreply@example.com' } } } }] }),
        ),
      ],
      [/^get events/, ok(JSON.stringify({ items: [] }))],
      [/queue list --json/, ok(JSON.stringify([{ ...message('Q'), from: 'secret.person@example.com' }]))],
      ...base,
    ];
    const r = await run(['report', 'postfix-relay', '-n', 'mail'], routes);
    expect(r.code).toBe(0);
    const bundle = JSON.parse(r.out);
    expect(Object.keys(bundle)).toEqual([
      'generatedAt',
      'tool',
      'relay',
      'status',
      'children',
      'policies',
      'events',
      'pods',
    ]);
    expect(bundle.pods).toHaveLength(2);
    expect(bundle.pods[0].logs).toContain('550 5.7.0');
    expect(r.out).not.toMatch(/secret\.person|noreply@/);
    expect(r.out).toContain('s***@example.com');
    expect(r.calls.some((c) => c.join(' ').includes('secret'))).toBe(false); // Secrets are never read
  });

  it('usage errors exit 2', async () => {
    expect((await run([], base)).code).toBe(2);
    expect((await run(['queue', 'show', 'postfix-relay'], base)).code).toBe(2);
    expect((await run(['test-send', 'postfix-relay', '--from', 'a@b.c'], base)).code).toBe(2);
  });

  it('formatStatus with no relays', () => {
    expect(formatStatus([])).toBe('No EmailRelays found.\n');
  });
});
