import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { dashboard, dashboardQueries } from '../../../scripts/monitoring/dashboard.ts';
import { freePort } from '../../helpers/ports.ts';
import { metricNames } from '../../helpers/promql.ts';
import { startTestRelay, type TestRelay } from '../../helpers/relay.ts';
import { type SmtpSink, startSmtpSink } from '../../helpers/smtp-sink.ts';
import { requireTool } from '../../helpers/tools.ts';

// A real Prometheus (Debian's package) on loopback scrapes a relay that delivers to smtp-sink under
// a little load; then every query of the dashboard is evaluated through Prometheus' HTTP API: each
// must return data, and none may name a metric the relay does not export.

const root = resolve(import.meta.dirname, '../../..');
const LABELS = { namespace: 'mail', relay: 'postfix-relay', pod: 'postfix-relay-0' };

/** Grafana's variables as the dashboard's "All" selection sends them. */
const grafanaToPromql = (expr: string) =>
  expr.replaceAll('$__rate_interval', '1m').replaceAll('$namespace', '.*').replaceAll('$relay', '.*');

interface PromResult {
  metric: Record<string, string>;
  value: [number, string];
}

describe('Grafana dashboard against a real Prometheus', () => {
  let dir: string;
  let sink: SmtpSink;
  let relay: TestRelay;
  let prometheus: ChildProcess | undefined;
  let api: string;
  let promLog = '';

  const query = async (expr: string): Promise<PromResult[]> => {
    const res = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = (await res.json()) as { status: string; error?: string; data: { result: PromResult[] } };
    if (body.status !== 'success') throw new Error(`${expr}: ${body.error}`);
    return body.data.result;
  };
  const until = async <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await fn().catch(() => undefined);
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${promLog.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };

  beforeAll(async () => {
    const bin = requireTool('prometheus', 'prometheus');
    dir = await mkdtemp(join(tmpdir(), 'email-relay-prometheus-'));
    sink = await startSmtpSink();
    relay = await startTestRelay({
      http: '127.0.0.1:0',
      upstream: { url: sink.url },
      policies: [{ name: 'mail/no-competitors', rules: { recipients: { deny: ['@competitor.example'] } } }],
    });
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    await writeFile(
      join(dir, 'prometheus.yml'),
      stringify({
        global: { scrape_interval: '1s', evaluation_interval: '1s' },
        scrape_configs: [
          {
            job_name: 'email-relay',
            static_configs: [{ targets: [`127.0.0.1:${relay.http!.port}`], labels: LABELS }],
          },
        ],
      }),
    );
    prometheus = spawn(
      bin,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    prometheus.stderr?.on('data', (d: Buffer) => {
      promLog = (promLog + d.toString()).slice(-8000);
    });
    await until('prometheus to scrape the relay', async () =>
      (await query('up{job="email-relay"} == 1')).length ? true : undefined,
    );

    // A little load: accepted and delivered messages, and one policy refusal.
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, secure: false, pool: true });
    for (let i = 0; i < 40; i++) {
      await t.sendMail({
        from: 'app@example.com',
        to: `r${i}@example.net`,
        subject: `load ${i}`,
        text: 'x'.repeat(500),
      });
    }
    await expect(
      t.sendMail({ from: 'app@example.com', to: 'someone@competitor.example', subject: 'no', text: 'x' }),
    ).rejects.toThrow(/550|554/);
    t.close();
    await sink.waitForMessages(40);
    await until('prometheus to see the deliveries', async () => {
      const r = await query('sum(email_deliveries_total{outcome="sent"})');
      return Number(r[0]?.value[1]) >= 40 ? true : undefined;
    });
  });

  afterAll(async () => {
    prometheus?.kill('SIGTERM');
    await relay?.dispose();
    await sink?.dispose();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the metric-name extractor finds names and skips functions, labels and keywords', () => {
    expect(
      metricNames(
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[1m]))) / b_total and on (pod) c or vector(0)',
      ).sort(),
    ).toEqual(['a_bucket', 'b_total', 'c']);
  });

  it('every panel query names only metrics the relay exports', async () => {
    const exported = new Set(
      (
        (await (await fetch(`${api}/api/v1/label/__name__/values?match[]={job="email-relay"}`)).json()) as {
          data: string[];
        }
      ).data,
    );
    expect(exported).toContain('email_queue_size');
    const unknown: string[] = [];
    for (const q of dashboardQueries()) {
      for (const name of metricNames(grafanaToPromql(q.expr)))
        if (!exported.has(name)) unknown.push(`${q.panel}: ${name}`);
    }
    expect(unknown).toEqual([]);
  });

  it('every panel query returns data', async () => {
    const empty: string[] = [];
    for (const q of dashboardQueries()) {
      const result = await until(
        `data for ${q.panel}`,
        async () => {
          const r = await query(grafanaToPromql(q.expr));
          return r.some((s) => Number.isFinite(Number(s.value[1]))) ? r : undefined;
        },
        20_000,
      ).catch(() => undefined);
      if (!result) empty.push(`${q.panel}: ${q.expr}`);
    }
    expect(empty).toEqual([]);
  });

  it('the variables find the relay, and refusals carry policy and rule', async () => {
    const ns = (await (
      await fetch(`${api}/api/v1/label/namespace/values?match[]=email_queue_size`)
    ).json()) as {
      data: string[];
    };
    expect(ns.data).toContain('mail');
    const policy = await query('sum by (policy, rule) (smtp_policy_rejections_total)');
    expect(policy.map((s) => s.metric)).toEqual([{ policy: 'mail/no-competitors', rule: 'recipient-deny' }]);
  });

  it('the checked-in dashboard JSON and ConfigMap are this dashboard', async () => {
    const json = JSON.parse(await readFile(join(root, 'deploy/monitoring/dashboard.json'), 'utf8'));
    expect(json).toEqual(dashboard());
    const targets = (json.panels as { targets?: { expr: string }[] }[]).flatMap((p) => p.targets ?? []);
    expect(targets.map((t) => t.expr)).toEqual(dashboardQueries().map((q) => q.expr));
    const cm = await readFile(join(root, 'deploy/monitoring/dashboard-configmap.yaml'), 'utf8');
    expect(cm).toMatch(/grafana_dashboard: "1"/);
  });
});
