/**
 * The Grafana dashboard of a relay, as data: scripts/gen-monitoring.ts writes it as JSON and as a
 * ConfigMap for Grafana's dashboard sidecar. Every query uses only metrics the relay exports (a
 * test scrapes a real relay with a real Prometheus and evaluates each one).
 */

export interface Panel {
  title: string;
  unit: string;
  description: string;
  /** PromQL with Grafana's $namespace, $relay and $__rate_interval. */
  targets: { expr: string; legend: string }[];
  type?: 'timeseries' | 'stat';
}

const sel = 'namespace=~"$namespace", relay=~"$relay"';
const rate = (metric: string, extra = '') => `rate(${metric}{${sel}${extra}}[$__rate_interval])`;

export const ROWS: { title: string; panels: Panel[] }[] = [
  {
    title: 'Traffic',
    panels: [
      {
        title: 'Accepted messages',
        unit: 'msg/s',
        description: 'Messages acknowledged with 250 (on disk, fsynced)',
        targets: [{ expr: `sum by (relay) (${rate('smtp_messages_received_total')})`, legend: '{{relay}}' }],
      },
      {
        title: 'Delivery attempts by outcome',
        unit: 'reqps',
        description: 'Per recipient and attempt: success (delivered), deferred (retried), bounced',
        targets: [{ expr: `sum by (status) (${rate('emails_sent_total')})`, legend: '{{status}}' }],
      },
      {
        title: 'Messages leaving the queue',
        unit: 'msg/s',
        description: 'sent, bounced, expired (lifetime over) or deleted by an administrator',
        targets: [{ expr: `sum by (outcome) (${rate('email_deliveries_total')})`, legend: '{{outcome}}' }],
      },
      {
        title: 'Sessions',
        unit: 'short',
        description: 'Inbound SMTP sessions open, and new connections per second',
        targets: [
          { expr: `sum by (relay) (smtp_connections_active{${sel}})`, legend: 'open {{relay}}' },
          { expr: `sum by (relay) (${rate('smtp_connections_total')})`, legend: 'new/s {{relay}}' },
        ],
      },
    ],
  },
  {
    title: 'Queue',
    panels: [
      {
        title: 'Queued messages',
        unit: 'short',
        description: 'email_queue_size per pod',
        targets: [{ expr: `sum by (relay, pod) (email_queue_size{${sel}})`, legend: '{{pod}}' }],
      },
      {
        title: 'Oldest queued message',
        unit: 's',
        description: "Age of the oldest message in each pod's queue",
        targets: [
          { expr: `max by (relay, pod) (email_queue_oldest_message_age_seconds{${sel}})`, legend: '{{pod}}' },
        ],
      },
      {
        title: 'Queued bytes',
        unit: 'bytes',
        description: 'Bytes of queued messages per pod',
        targets: [{ expr: `sum by (relay, pod) (email_queue_bytes{${sel}})`, legend: '{{pod}}' }],
      },
      {
        title: 'Spool free space',
        unit: 'percentunit',
        description: "Free share of each pod's spool file system (452 4.3.1 below spool.minFreeBytes)",
        targets: [
          {
            expr: `min by (relay, pod) (email_spool_filesystem_free_bytes{${sel}} / email_spool_filesystem_size_bytes{${sel}})`,
            legend: '{{pod}}',
          },
        ],
      },
    ],
  },
  {
    title: 'Latency',
    panels: [
      {
        title: 'End of DATA to 250',
        unit: 's',
        description: 'Includes the durable write (group-committed fsync)',
        targets: [0.5, 0.99].map((q) => ({
          expr: `histogram_quantile(${q}, sum by (le) (${rate('smtp_accept_duration_seconds_bucket')}))`,
          legend: `p${q * 100}`,
        })),
      },
      {
        title: 'Upstream transaction',
        unit: 's',
        description: 'From connection checkout to the final reply (email_send_duration_seconds)',
        targets: [0.5, 0.99].map((q) => ({
          expr: `histogram_quantile(${q}, sum by (le) (${rate('email_send_duration_seconds_bucket')}))`,
          legend: `p${q * 100}`,
        })),
      },
    ],
  },
  {
    title: 'Upstream and refusals',
    panels: [
      {
        title: 'Upstream replies by class',
        unit: 'reqps',
        description: '2xx, 4xx, 5xx, or network (no reply: connection, TLS, timeout)',
        targets: [{ expr: `sum by (class) (${rate('email_upstream_replies_total')})`, legend: '{{class}}' }],
      },
      {
        title: 'Upstream route state',
        unit: 'short',
        description:
          'email_upstream_state: ok, held (a relay-level refusal: identity, auth, config, quota), backoff (rate), probing, resuming, unreachable',
        targets: [
          {
            expr: `max by (relay, route, state) (email_upstream_state{${sel}}) == 1`,
            legend: '{{route}} {{state}}',
          },
        ],
      },
      {
        title: 'Mail waiting for a route',
        unit: 'short',
        description: 'Messages held back while their route is held, backing off or unreachable',
        targets: [
          { expr: `sum by (relay, route) (email_upstream_held_messages{${sel}})`, legend: '{{route}}' },
        ],
      },
      {
        title: 'Refusals by reason',
        unit: 'reqps',
        description: 'Commands and messages the relay refused (smtp_rejections_total)',
        targets: [{ expr: `sum by (reason) (${rate('smtp_rejections_total')})`, legend: '{{reason}}' }],
      },
      {
        title: 'Refusals by policy and rule',
        unit: 'reqps',
        description: 'smtp_policy_rejections_total: the EmailPolicy and the rule that refused',
        targets: [
          {
            expr: `sum by (policy, rule) (${rate('smtp_policy_rejections_total')})`,
            legend: '{{policy}} {{rule}}',
          },
        ],
      },
      {
        title: 'Pods ready',
        unit: 'short',
        description: 'Relay pods whose /readyz answers 200',
        targets: [{ expr: `sum by (relay) (email_relay_ready{${sel}})`, legend: '{{relay}}' }],
      },
    ],
  },
];

/** Grafana 10+ dashboard model (schemaVersion 39), datasource picked by a variable. */
export function dashboard(): Record<string, unknown> {
  const ds = { type: 'prometheus', uid: '$' + '{datasource}' }; // Grafana's variable, not a template literal
  const panels: unknown[] = [];
  let id = 1;
  let y = 0;
  for (const row of ROWS) {
    panels.push({
      type: 'row',
      title: row.title,
      id: id++,
      collapsed: false,
      gridPos: { h: 1, w: 24, x: 0, y },
    });
    y += 1;
    row.panels.forEach((p, i) => {
      const w = 24 / Math.min(row.panels.length, 4);
      panels.push({
        type: p.type ?? 'timeseries',
        title: p.title,
        description: p.description,
        id: id++,
        datasource: ds,
        gridPos: { h: 8, w, x: (i % 4) * w, y: y + Math.floor(i / 4) * 8 },
        fieldConfig: { defaults: { unit: p.unit }, overrides: [] },
        options: { legend: { displayMode: 'list', placement: 'bottom' }, tooltip: { mode: 'multi' } },
        targets: p.targets.map((t, j) => ({
          datasource: ds,
          expr: t.expr,
          legendFormat: t.legend,
          refId: String.fromCharCode(65 + j),
        })),
      });
    });
    y += 8 * Math.ceil(row.panels.length / 4);
  }
  const variable = (name: string, query: string) => ({
    name,
    type: 'query',
    datasource: ds,
    query: { query, refId: name },
    definition: query,
    includeAll: true,
    multi: true,
    allValue: '.*',
    current: { text: 'All', value: '$__all' },
    refresh: 2,
  });
  return {
    uid: 'email-relay',
    title: 'email-relay',
    description: 'SMTP relays managed by email-relay: traffic, queue, latency, upstream, refusals',
    tags: ['email-relay', 'smtp'],
    schemaVersion: 39,
    version: 1,
    editable: true,
    time: { from: 'now-6h', to: 'now' },
    refresh: '30s',
    timezone: 'browser',
    templating: {
      list: [
        { name: 'datasource', type: 'datasource', query: 'prometheus', current: {} },
        variable('namespace', 'label_values(email_queue_size, namespace)'),
        variable('relay', 'label_values(email_queue_size{namespace=~"$namespace"}, relay)'),
      ],
    },
    annotations: { list: [] },
    panels,
  };
}

/** Every PromQL query of the dashboard (panels and variables' label_values metrics). */
export function dashboardQueries(): { panel: string; expr: string }[] {
  return ROWS.flatMap((r) =>
    r.panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, expr: t.expr }))),
  );
}
