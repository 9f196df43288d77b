/**
 * The alerts, in one place: scripts/gen-monitoring.ts writes them as a plain Prometheus rules file
 * and as a PrometheusRule (deploy/monitoring, the Helm chart), so the two cannot drift. Every alert
 * links to its runbook, a heading of docs/operations.md (a test checks the anchors exist).
 *
 * Labels the expressions rely on: `namespace`, `relay` and `pod` on relay targets (the PodMonitor
 * and the scrape config of docs/operations.md set them), `namespace` on the operator's.
 */

export const RUNBOOK_BASE = 'https://github.com/bionicaisolutions/email-relay/blob/main/docs/operations.md';

export interface AlertRule {
  alert: string;
  expr: string;
  for: string;
  severity: 'warning' | 'critical';
  summary: string;
  description: string;
}

/** Thresholds, named so the runbooks and the tests can quote them. */
export const THRESHOLDS = {
  queueSize: 100,
  oldestSeconds: 1800,
  deferralRatio: 0.2,
  bounceRatio: 0.05,
  /** Attempts in the window below which a ratio means nothing. */
  minAttempts: 10,
  networkRatio: 0.5,
  spoolFreeRatio: 0.1,
};

const T = THRESHOLDS;
const byRelay = 'by (namespace, relay)';

export const ALERTS: AlertRule[] = [
  {
    alert: 'EmailRelayQueueGrowing',
    expr: `sum ${byRelay} (email_queue_size) > ${T.queueSize} and sum ${byRelay} (deriv(email_queue_size[30m])) > 0`,
    for: '15m',
    severity: 'warning',
    summary: 'The queue of {{ $labels.namespace }}/{{ $labels.relay }} keeps growing',
    description:
      '{{ $value | humanize }} messages queued and still growing: mail comes in faster than it leaves.',
  },
  {
    alert: 'EmailRelayOldestMessageTooOld',
    expr: `max ${byRelay} (email_queue_oldest_message_age_seconds) > ${T.oldestSeconds}`,
    for: '5m',
    severity: 'warning',
    summary: 'Mail has waited in {{ $labels.namespace }}/{{ $labels.relay }} for more than 30 minutes',
    description: 'The oldest queued message is {{ $value | humanizeDuration }} old.',
  },
  {
    alert: 'EmailRelayDeferralRateHigh',
    expr:
      `sum ${byRelay} (rate(emails_sent_total{status="deferred"}[15m])) / sum ${byRelay} (rate(emails_sent_total[15m])) > ${T.deferralRatio}` +
      ` and sum ${byRelay} (increase(emails_sent_total[15m])) >= ${T.minAttempts}`,
    for: '10m',
    severity: 'warning',
    summary: 'Many deliveries from {{ $labels.namespace }}/{{ $labels.relay }} are deferred',
    description: '{{ $value | humanizePercentage }} of delivery attempts over 15 minutes were deferred.',
  },
  {
    alert: 'EmailRelayBounceRateHigh',
    expr:
      `sum ${byRelay} (rate(emails_sent_total{status="bounced"}[15m])) / sum ${byRelay} (rate(emails_sent_total[15m])) > ${T.bounceRatio}` +
      ` and sum ${byRelay} (increase(emails_sent_total[15m])) >= ${T.minAttempts}`,
    for: '10m',
    severity: 'warning',
    summary: 'Many deliveries from {{ $labels.namespace }}/{{ $labels.relay }} bounce',
    description: '{{ $value | humanizePercentage }} of delivery attempts over 15 minutes bounced.',
  },
  {
    alert: 'EmailRelayUpstreamRefusing',
    expr: `max by (namespace, relay, route) (email_upstream_state{state="held"}) > 0`,
    for: '5m',
    severity: 'critical',
    summary: 'The smarthost {{ $labels.route }} refuses relay {{ $labels.namespace }}/{{ $labels.relay }}',
    description:
      'A relay-wide refusal (identity, credentials, quota): mail for this route is held. `kubectl email-relay status` shows the reply.',
  },
  {
    alert: 'EmailRelayUpstreamUnreachable',
    expr:
      `max by (namespace, relay, route) (email_upstream_state{state="unreachable"}) > 0` +
      ` or sum ${byRelay} (rate(email_upstream_replies_total{class="network"}[10m])) / sum ${byRelay} (rate(email_upstream_replies_total[10m])) > ${T.networkRatio}`,
    for: '10m',
    severity: 'critical',
    summary: 'Relay {{ $labels.namespace }}/{{ $labels.relay }} cannot reach its smarthost',
    description: 'Connections to the upstream fail (network, TLS or timeouts); mail is queued, not lost.',
  },
  {
    alert: 'EmailRelaySpoolFilesystemNearlyFull',
    expr: `min by (namespace, relay, pod) (email_spool_filesystem_free_bytes / email_spool_filesystem_size_bytes) < ${T.spoolFreeRatio}`,
    for: '10m',
    severity: 'warning',
    summary: 'The spool of {{ $labels.namespace }}/{{ $labels.pod }} is nearly full',
    description:
      'Only {{ $value | humanizePercentage }} of the spool file system is free; below spool.minFreeBytes the pod refuses mail with 452 4.3.1.',
  },
  {
    alert: 'EmailRelayPodNotReady',
    expr: `min by (namespace, relay, pod) (email_relay_ready) == 0 or min by (namespace, relay, pod) (up{relay!=""}) == 0`,
    for: '10m',
    severity: 'warning',
    summary: 'Relay pod {{ $labels.namespace }}/{{ $labels.pod }} is not ready',
    description: 'Its /readyz fails or it cannot be scraped; it takes no new mail.',
  },
  {
    alert: 'EmailRelayStrandedQueue',
    expr: `max ${byRelay} (email_relay_stranded_queues) > 0`,
    for: '30m',
    severity: 'warning',
    summary: 'A removed pod of {{ $labels.namespace }}/{{ $labels.relay }} left mail on its volume',
    description: '{{ $value }} queue volume(s) of scaled-away pods still hold mail.',
  },
  {
    alert: 'EmailRelayOperatorReconcileErrors',
    expr: `sum by (namespace, controller) (rate(controller_runtime_reconcile_errors_total[10m])) > 0`,
    for: '15m',
    severity: 'warning',
    summary: 'The email-relay operator fails to reconcile {{ $labels.controller }}',
    description:
      "Reconciles keep failing; relays may not reflect their spec. See the resources' conditions and Events.",
  },
  {
    alert: 'EmailRelayOperatorNoLeader',
    expr: `max by (namespace) (leader_election_master_status{name="email-relay-operator"}) < 1`,
    for: '10m',
    severity: 'warning',
    summary: 'No email-relay operator replica leads in {{ $labels.namespace }}',
    description: 'Nothing reconciles EmailRelays and EmailPolicies (running relays keep working).',
  },
];

/** The anchor of an alert's runbook heading (GitHub lower-cases headings). */
export const runbookAnchor = (alert: string) => alert.toLowerCase();

/** The rules as Prometheus wants them in a rule group. */
export function ruleGroups(base = RUNBOOK_BASE) {
  return [
    {
      name: 'email-relay',
      rules: ALERTS.map((a) => ({
        alert: a.alert,
        expr: a.expr,
        for: a.for,
        labels: { severity: a.severity },
        annotations: {
          summary: a.summary,
          description: a.description,
          runbook_url: `${base}#${runbookAnchor(a.alert)}`,
        },
      })),
    },
  ];
}
