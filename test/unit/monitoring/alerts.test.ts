import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { ALERTS, RUNBOOK_BASE, ruleGroups } from '../../../scripts/monitoring/alerts.ts';
import { createOperatorMetrics } from '../../../src/operator/runtime/metrics.ts';
import { createRelayMetrics } from '../../../src/relay/metrics.ts';
import { anchorsOfFile } from '../../helpers/markdown.ts';
import { metricNames } from '../../helpers/promql.ts';
import { requireTool } from '../../helpers/tools.ts';

// The alerts under `promtool test rules` (Debian's prometheus package; scripts/test.sh installs it):
// for each alert a case that fires (labels and rendered annotations checked) and one that stays
// silent (below the threshold, too little traffic, or still pending within `for`).

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '../../..');
const rulesFile = join(root, 'deploy/monitoring/email-relay.rules.yaml');

type Series = [string, string];
interface Case {
  alert: string;
  fire: { series: Series[]; at: string; labels: Record<string, string>; description: string }[];
  silent: { series: Series[]; at: string; why: string }[];
}

const R = 'namespace="mail",relay="r",pod="r-0"';
const at = (alert: string) => ALERTS.find((a) => a.alert === alert)!;
const mail = { namespace: 'mail', relay: 'r' };
const pod = { ...mail, pod: 'r-0' };

const CASES: Case[] = [
  {
    alert: 'EmailRelayQueueGrowing',
    fire: [
      {
        series: [[`email_queue_size{${R}}`, '50+5x60']],
        at: '40m',
        labels: mail,
        description: '250 messages queued and still growing: mail comes in faster than it leaves.',
      },
    ],
    silent: [
      { series: [[`email_queue_size{${R}}`, '500x60']], at: '40m', why: 'large but not growing' },
      { series: [[`email_queue_size{${R}}`, '0+1x60']], at: '40m', why: 'growing but small' },
    ],
  },
  {
    alert: 'EmailRelayOldestMessageTooOld',
    fire: [
      {
        series: [[`email_queue_oldest_message_age_seconds{${R}}`, '0+60x60']],
        at: '45m',
        labels: mail,
        description: 'The oldest queued message is 45m 0s old.',
      },
    ],
    silent: [
      {
        series: [[`email_queue_oldest_message_age_seconds{${R}}`, '0+60x60']],
        at: '34m',
        why: 'over 30 minutes for less than 5',
      },
    ],
  },
  {
    alert: 'EmailRelayDeferralRateHigh',
    fire: [
      {
        series: [
          [`emails_sent_total{${R},status="deferred"}`, '0+5x60'],
          [`emails_sent_total{${R},status="success"}`, '0+5x60'],
        ],
        at: '30m',
        labels: mail,
        description: '50% of delivery attempts over 15 minutes were deferred.',
      },
    ],
    silent: [
      {
        series: [
          [`emails_sent_total{${R},status="deferred"}`, '0+1x60'],
          [`emails_sent_total{${R},status="success"}`, '0+99x60'],
        ],
        at: '30m',
        why: '1 % deferred',
      },
      {
        series: [
          [`emails_sent_total{${R},status="deferred"}`, '0+0.2x60'],
          [`emails_sent_total{${R},status="success"}`, '0+0.2x60'],
        ],
        at: '30m',
        why: 'half deferred, but only 6 attempts in 15 minutes',
      },
    ],
  },
  {
    alert: 'EmailRelayBounceRateHigh',
    fire: [
      {
        series: [
          [`emails_sent_total{${R},status="bounced"}`, '0+1x60'],
          [`emails_sent_total{${R},status="success"}`, '0+9x60'],
        ],
        at: '30m',
        labels: mail,
        description: '10% of delivery attempts over 15 minutes bounced.',
      },
    ],
    silent: [
      {
        series: [
          [`emails_sent_total{${R},status="bounced"}`, '0+1x60'],
          [`emails_sent_total{${R},status="success"}`, '0+99x60'],
        ],
        at: '30m',
        why: '1 % bounced',
      },
    ],
  },
  {
    alert: 'EmailRelayUpstreamRefusing',
    fire: [
      {
        series: [[`email_upstream_state{${R},route="smtp-relay.gmail.com:587",state="held"}`, '1x30']],
        at: '10m',
        labels: { ...mail, route: 'smtp-relay.gmail.com:587' },
        description: at('EmailRelayUpstreamRefusing').description,
      },
    ],
    silent: [
      {
        series: [
          [`email_upstream_state{${R},route="smtp-relay.gmail.com:587",state="held"}`, '0x30'],
          [`email_upstream_state{${R},route="smtp-relay.gmail.com:587",state="ok"}`, '1x30'],
        ],
        at: '10m',
        why: 'the route is ok',
      },
      {
        series: [[`email_upstream_state{${R},route="smtp-relay.gmail.com:587",state="held"}`, '1x30']],
        at: '4m',
        why: 'held for less than 5 minutes',
      },
    ],
  },
  {
    alert: 'EmailRelayUpstreamUnreachable',
    fire: [
      {
        series: [
          [`email_upstream_replies_total{${R},class="network"}`, '0+9x60'],
          [`email_upstream_replies_total{${R},class="2xx"}`, '0+1x60'],
        ],
        at: '30m',
        labels: mail,
        description: at('EmailRelayUpstreamUnreachable').description,
      },
      {
        series: [[`email_upstream_state{${R},route="smtp.example.com:25",state="unreachable"}`, '1x30']],
        at: '15m',
        labels: { ...mail, route: 'smtp.example.com:25' },
        description: at('EmailRelayUpstreamUnreachable').description,
      },
    ],
    silent: [
      {
        series: [
          [`email_upstream_replies_total{${R},class="network"}`, '0+1x60'],
          [`email_upstream_replies_total{${R},class="2xx"}`, '0+9x60'],
        ],
        at: '30m',
        why: '10 % network failures',
      },
    ],
  },
  {
    alert: 'EmailRelaySpoolFilesystemNearlyFull',
    fire: [
      {
        series: [
          [`email_spool_filesystem_free_bytes{${R}}`, '5x60'],
          [`email_spool_filesystem_size_bytes{${R}}`, '100x60'],
        ],
        at: '20m',
        labels: pod,
        description:
          'Only 5% of the spool file system is free; below spool.minFreeBytes the pod refuses mail with 452 4.3.1.',
      },
    ],
    silent: [
      {
        series: [
          [`email_spool_filesystem_free_bytes{${R}}`, '50x60'],
          [`email_spool_filesystem_size_bytes{${R}}`, '100x60'],
        ],
        at: '20m',
        why: 'half free',
      },
    ],
  },
  {
    alert: 'EmailRelayPodNotReady',
    fire: [
      {
        series: [
          [`email_relay_ready{${R}}`, '0x30'],
          [`up{job="email-relay",${R}}`, '1x30'],
        ],
        at: '20m',
        labels: pod,
        description: at('EmailRelayPodNotReady').description,
      },
      {
        series: [[`up{job="email-relay",${R}}`, '0x30']],
        at: '20m',
        labels: pod,
        description: at('EmailRelayPodNotReady').description,
      },
    ],
    silent: [
      {
        series: [
          [`email_relay_ready{${R}}`, '1x30'],
          [`up{job="email-relay",${R}}`, '1x30'],
          [`up{job="something-else",namespace="mail",pod="web-0"}`, '0x30'],
        ],
        at: '20m',
        why: 'ready (a down target of another job is not a relay)',
      },
    ],
  },
  {
    alert: 'EmailRelayStrandedQueue',
    fire: [
      {
        series: [['email_relay_stranded_queues{namespace="mail",relay="r"}', '1x60']],
        at: '40m',
        labels: mail,
        description: '1 queue volume(s) of scaled-away pods still hold mail.',
      },
    ],
    silent: [
      {
        series: [['email_relay_stranded_queues{namespace="mail",relay="r"}', '0x60']],
        at: '40m',
        why: 'none',
      },
      {
        series: [['email_relay_stranded_queues{namespace="mail",relay="r"}', '1x60']],
        at: '20m',
        why: 'draining for less than 30 minutes',
      },
    ],
  },
  {
    alert: 'EmailRelayOperatorReconcileErrors',
    fire: [
      {
        series: [
          [
            'controller_runtime_reconcile_errors_total{namespace="email-relay-system",pod="op-0",controller="emailrelay"}',
            '0+1x60',
          ],
        ],
        at: '30m',
        labels: { namespace: 'email-relay-system', controller: 'emailrelay' },
        description: at('EmailRelayOperatorReconcileErrors').description,
      },
    ],
    silent: [
      {
        series: [
          [
            'controller_runtime_reconcile_errors_total{namespace="email-relay-system",pod="op-0",controller="emailrelay"}',
            '5x60',
          ],
        ],
        at: '30m',
        why: 'errors in the past, none now',
      },
    ],
  },
  {
    alert: 'EmailRelayOperatorNoLeader',
    fire: [
      {
        series: [
          [
            'leader_election_master_status{namespace="email-relay-system",pod="op-0",name="email-relay-operator"}',
            '0x30',
          ],
          [
            'leader_election_master_status{namespace="email-relay-system",pod="op-1",name="email-relay-operator"}',
            '0x30',
          ],
        ],
        at: '20m',
        labels: { namespace: 'email-relay-system' },
        description: at('EmailRelayOperatorNoLeader').description,
      },
    ],
    silent: [
      {
        series: [
          [
            'leader_election_master_status{namespace="email-relay-system",pod="op-0",name="email-relay-operator"}',
            '1x30',
          ],
          [
            'leader_election_master_status{namespace="email-relay-system",pod="op-1",name="email-relay-operator"}',
            '0x30',
          ],
        ],
        at: '20m',
        why: 'one replica leads',
      },
    ],
  },
];

/** `summary` with the labels filled in, as Prometheus renders the template. */
function summaryOf(alert: string, labels: Record<string, string>): string {
  return at(alert).summary.replace(/\{\{ \$labels\.(\w+) \}\}/g, (_, k: string) => labels[k] ?? '');
}

function promtoolTests(cases: Case[]) {
  const tests = [];
  for (const c of cases) {
    const rule = at(c.alert);
    for (const f of c.fire) {
      tests.push({
        name: `${c.alert} fires`,
        interval: '1m',
        input_series: f.series.map(([series, values]) => ({ series, values })),
        alert_rule_test: [
          {
            eval_time: f.at,
            alertname: c.alert,
            exp_alerts: [
              {
                exp_labels: { ...f.labels, severity: rule.severity },
                exp_annotations: {
                  summary: summaryOf(c.alert, f.labels),
                  description: f.description,
                  runbook_url: `${RUNBOOK_BASE}#${c.alert.toLowerCase()}`,
                },
              },
            ],
          },
        ],
      });
    }
    for (const s of c.silent) {
      tests.push({
        name: `${c.alert} stays silent: ${s.why}`,
        interval: '1m',
        input_series: s.series.map(([series, values]) => ({ series, values })),
        alert_rule_test: [{ eval_time: s.at, alertname: c.alert, exp_alerts: [] }],
      });
    }
  }
  return tests;
}

// promtool is a real process: on a loaded machine it takes longer than the unit project's 5 s default.
describe('alerts', { timeout: 60_000 }, () => {
  let dir: string;
  beforeAll(async () => {
    requireTool('promtool', 'prometheus');
    dir = await mkdtemp(join(tmpdir(), 'email-relay-promtool-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const promtool = async (name: string, cases: Case[]) => {
    const file = join(dir, name);
    await writeFile(
      file,
      stringify({ rule_files: [rulesFile], evaluation_interval: '1m', tests: promtoolTests(cases) }),
    );
    return run('promtool', ['test', 'rules', file]).then(
      (r) => ({ code: 0, out: r.stdout + r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout + e.stderr }),
    );
  };

  it('every alert has a firing and a silent case', () => {
    expect(CASES.map((c) => c.alert).sort()).toEqual(ALERTS.map((a) => a.alert).sort());
    for (const c of CASES) {
      expect(c.fire.length).toBeGreaterThan(0);
      expect(c.silent.length).toBeGreaterThan(0);
    }
  });

  it('promtool check rules accepts the rules file (expressions and templates parse)', async () => {
    const r = await run('promtool', ['check', 'rules', rulesFile]);
    expect(r.stdout).toContain(`SUCCESS: ${ALERTS.length} rules found`);
  });

  it('promtool test rules: each alert fires and stays silent as its cases say', async () => {
    const r = await promtool('all.yaml', CASES);
    expect(r.out).toContain('SUCCESS');
    expect(r.code).toBe(0);
  });

  it('promtool test rules fails when a case expects the wrong thing (the test can fail)', async () => {
    // The firing series of each alert, expected silent: every one of them must be reported.
    const flipped = CASES.map((c) => ({
      ...c,
      fire: [],
      silent: c.fire.map((f) => ({ series: f.series, at: f.at, why: 'flipped' })),
    }));
    const r = await promtool('flipped.yaml', flipped);
    expect(r.code).not.toBe(0);
    for (const c of CASES) expect(r.out).toContain(`alertname: ${c.alert}`);
  });

  it('the checked-in rules file and PrometheusRule hold exactly these rules', async () => {
    const plain = parse(await readFile(rulesFile, 'utf8')) as { groups: unknown };
    const crd = parse(await readFile(join(root, 'deploy/monitoring/prometheusrule.yaml'), 'utf8')) as {
      spec: { groups: unknown };
    };
    expect(plain.groups).toEqual(ruleGroups());
    expect(crd.spec.groups).toEqual(ruleGroups());
  });

  it('every alert names only metrics the relay or the operator export (or Prometheus: up)', async () => {
    const exported = new Set(['up']);
    for (const registry of [
      createRelayMetrics({ defaultMetrics: false }).registry,
      createOperatorMetrics({ defaultMetrics: false }).registry,
    ]) {
      for (const m of await registry.getMetricsAsJSON()) {
        exported.add(m.name);
        if (String(m.type) === 'histogram')
          for (const s of ['_bucket', '_sum', '_count']) exported.add(m.name + s);
      }
    }
    const unknown = ALERTS.flatMap((a) =>
      metricNames(a.expr)
        .filter((n) => !exported.has(n))
        .map((n) => `${a.alert}: ${n}`),
    );
    expect(unknown).toEqual([]);
    expect(metricNames('sum(rate(email_queue_sizes[5m]))')).toEqual(['email_queue_sizes']);
  });

  it('every runbook_url points at a heading of docs/operations.md', () => {
    const anchors = anchorsOfFile(join(root, 'docs/operations.md'));
    for (const rule of ruleGroups()[0]!.rules) {
      const [base, anchor] = rule.annotations.runbook_url.split('#');
      expect(base).toBe(RUNBOOK_BASE);
      expect(RUNBOOK_BASE.endsWith('/docs/operations.md')).toBe(true);
      expect(anchors, rule.alert).toContain(anchor);
    }
  });
});
