import { cmd, type Kubectl, must } from './kubectl.ts';

/** What the plugin reads of the cluster: relays, their pods, each pod's metrics and last refusal. */

export interface RelayObject {
  metadata: { name: string; namespace: string };
  spec?: { replicas?: number; metrics?: { port?: number }; upstream?: { host?: string; port?: number } };
  status?: {
    readyReplicas?: number;
    replicas?: number;
    endpoint?: string;
    admittedNamespaces?: string[];
    conditions?: { type: string; status: string; reason?: string; message?: string }[];
  };
}

interface PodObject {
  metadata: { name: string; namespace: string };
  spec?: { containers?: { name: string; image?: string }[] };
  status?: { phase?: string; conditions?: { type: string; status: string }[] };
}

export interface PodView {
  name: string;
  ready: boolean;
  phase: string;
  queued?: number;
  oldestSeconds?: number;
  /** route -> state, from email_upstream_state (where the relay exports it). */
  upstream: Record<string, string>;
  lastRefusal?: { time: string; reply: string; outcome: string };
  /** Why metrics or logs could not be read (RBAC, pod not running). */
  problems: string[];
}

export interface RelayView {
  namespace: string;
  name: string;
  ready: string;
  reason: string;
  replicas: string;
  endpoint: string;
  pods: PodView[];
}

/** Prometheus text format -> samples (enough for gauges and counters). */
export function parseMetrics(
  text: string,
): { name: string; labels: Record<string, string>; value: number }[] {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, '$1');
    out.push({ name: m[1]!, labels, value: Number(m[4]) });
  }
  return out;
}

/** The last delivery attempt the upstream did not accept, from the relay's JSON log lines. */
export function lastRefusal(logs: string): PodView['lastRefusal'] {
  let last: PodView['lastRefusal'];
  for (const line of logs.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const l = JSON.parse(line) as Record<string, unknown>;
      const outcome = l['outcome'];
      if ((outcome === 'deferred' || outcome === 'bounced') && typeof l['reply'] === 'string') {
        last = { time: String(l['time'] ?? ''), reply: l['reply'], outcome };
      }
    } catch {
      // not one of ours
    }
  }
  return last;
}

const podReady = (p: PodObject) =>
  p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

export async function listRelays(
  kubectl: Kubectl,
  ns: string | undefined,
  name?: string,
): Promise<RelayObject[]> {
  if (name) return [JSON.parse(await must(kubectl, cmd.relay(ns, name))) as RelayObject];
  return (JSON.parse(await must(kubectl, cmd.relays(ns))) as { items: RelayObject[] }).items;
}

export async function relayPods(kubectl: Kubectl, relay: RelayObject): Promise<PodObject[]> {
  const { namespace, name } = relay.metadata;
  const pods = (JSON.parse(await must(kubectl, cmd.pods(namespace, name))) as { items: PodObject[] }).items;
  return pods.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name, 'en', { numeric: true }));
}

export async function observePod(kubectl: Kubectl, relay: RelayObject, pod: PodObject): Promise<PodView> {
  const ns = relay.metadata.namespace;
  const view: PodView = {
    name: pod.metadata.name,
    ready: podReady(pod),
    phase: pod.status?.phase ?? 'Unknown',
    upstream: {},
    problems: [],
  };
  if (view.phase !== 'Running') return view;
  const port = relay.spec?.metrics?.port ?? 9090;
  // The relay's own /summary says it all; older relays without it: /metrics and the log.
  const summary = await kubectl(cmd.summary(ns, pod.metadata.name, port));
  if (summary.code === 0) {
    try {
      applySummary(view, JSON.parse(summary.stdout) as RelaySummaryLike);
      return view;
    } catch {
      // not JSON: fall back
    }
  }
  const [metrics, logs] = await Promise.all([
    kubectl(cmd.metrics(ns, pod.metadata.name, port)),
    kubectl(cmd.logs(ns, pod.metadata.name, 2000)),
  ]);
  if (metrics.code === 0) {
    for (const s of parseMetrics(metrics.stdout)) {
      if (s.name === 'email_queue_size') view.queued = s.value;
      else if (s.name === 'email_queue_oldest_message_age_seconds') view.oldestSeconds = s.value;
      else if (s.name === 'email_upstream_state' && s.value === 1 && s.labels['state']) {
        view.upstream[s.labels['route'] ?? 'default'] = s.labels['state'];
      }
    }
  } else view.problems.push(`metrics: ${metrics.stderr.trim()}`);
  if (logs.code === 0) {
    const refusal = lastRefusal(logs.stdout);
    if (refusal) view.lastRefusal = refusal;
  } else view.problems.push(`logs: ${logs.stderr.trim()}`);
  return view;
}

/** The parts of the relay's GET /summary (src/relay/summary.ts) the plugin shows. */
export interface RelaySummaryLike {
  draining?: boolean;
  queue?: { messages?: number; oldestAgeSeconds?: number };
  upstreams?: {
    name: string;
    state: string;
    healthy?: boolean;
    lastRefusal?: { reply: string; at: string };
  }[];
}

export function applySummary(view: PodView, s: RelaySummaryLike): void {
  if (s.queue?.messages !== undefined) view.queued = s.queue.messages;
  if (s.queue?.oldestAgeSeconds !== undefined) view.oldestSeconds = s.queue.oldestAgeSeconds;
  for (const u of s.upstreams ?? []) {
    view.upstream[u.name] = u.healthy === false ? `${u.state},refusing` : u.state;
    const r = u.lastRefusal;
    if (r && (!view.lastRefusal || r.at > view.lastRefusal.time)) {
      view.lastRefusal = { time: r.at, reply: r.reply, outcome: `${u.name} refused` };
    }
  }
  if (s.draining) view.problems.push('draining');
}

export async function observe(kubectl: Kubectl, ns: string | undefined, name?: string): Promise<RelayView[]> {
  const relays = await listRelays(kubectl, ns, name);
  return Promise.all(
    relays.map(async (relay) => {
      const ready = relay.status?.conditions?.find((c) => c.type === 'Ready');
      const pods = await relayPods(kubectl, relay);
      return {
        namespace: relay.metadata.namespace,
        name: relay.metadata.name,
        ready: ready?.status ?? 'Unknown',
        reason: ready?.reason ?? '',
        replicas: `${relay.status?.readyReplicas ?? 0}/${relay.spec?.replicas ?? 2}`,
        endpoint: relay.status?.endpoint ?? '',
        pods: await Promise.all(pods.map((p) => observePod(kubectl, relay, p))),
      };
    }),
  );
}

export function age(seconds: number | undefined): string {
  if (seconds === undefined) return '-';
  if (seconds < 120) return `${Math.round(seconds)}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172_800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86_400)}d`;
}

function table(rows: string[][], indent = ''): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map(
    (r) =>
      indent +
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
  );
}

/** `kubectl email-relay status`: one block per relay, one line per pod. */
export function formatStatus(relays: RelayView[]): string {
  if (!relays.length) return 'No EmailRelays found.\n';
  const out: string[] = [];
  for (const r of relays) {
    const queued = r.pods.reduce((n, p) => n + (p.queued ?? 0), 0);
    const oldest = Math.max(-1, ...r.pods.map((p) => p.oldestSeconds ?? -1));
    out.push(
      ...table([
        ['RELAY', 'READY', 'PODS', 'QUEUED', 'OLDEST', 'ENDPOINT'],
        [
          `${r.namespace}/${r.name}`,
          r.reason ? `${r.ready} (${r.reason})` : r.ready,
          r.replicas,
          String(queued),
          oldest < 0 ? '-' : age(oldest),
          r.endpoint,
        ],
      ]),
    );
    if (r.pods.length) {
      out.push('');
      out.push(
        ...table(
          [
            ['POD', 'READY', 'QUEUED', 'OLDEST', 'UPSTREAM', 'LAST REFUSAL'],
            ...r.pods.map((p) => [
              p.name,
              p.phase === 'Running' ? String(p.ready) : p.phase,
              p.queued === undefined ? '-' : String(p.queued),
              age(p.oldestSeconds),
              Object.entries(p.upstream)
                .map(([route, state]) => `${route}=${state}`)
                .join(',') || '-',
              p.lastRefusal ? `${p.lastRefusal.time} ${p.lastRefusal.outcome}: ${p.lastRefusal.reply}` : '-',
            ]),
          ],
          '  ',
        ),
      );
      for (const p of r.pods) for (const problem of p.problems) out.push(`  ${p.name}: ${problem}`);
    }
    out.push('');
  }
  return `${out.join('\n')}`;
}
