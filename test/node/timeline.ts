import type { ChildProcess } from 'node:child_process';
import type { NodeCluster } from './cluster.ts';

// What happened when, while a test rolls or evicts relay pods: the pods (IP, deletion, Ready), the
// Service's EndpointSlice (ready/serving/terminating per address) and the relay pods' own log
// lines, each stamped on arrival. Printed next to the client errors, it shows whether a client
// reached a pod after it stopped listening, before the endpoints forgot it, and so on.

export interface Timeline {
  /** Follows the logs of these pods from now on (kubectl logs -f). */
  followLogs(pods: string[]): void;
  /** Stops watching; the lines so far, oldest first, as "+<ms since start> <source> <line>". */
  stop(): string[];
  readonly startedAt: number;
}

export function startTimeline(
  cluster: NodeCluster,
  namespace: string,
  opts: { podSelector: string; service: string },
): Timeline {
  const startedAt = Date.now();
  const lines: { t: number; src: string; line: string }[] = [];
  const children: ChildProcess[] = [];
  const follow = (src: string, args: string[]) => {
    const kubectl = cluster.state.binaries.kubectl;
    const child = cluster.spawnOnNode(kubectl, [
      `--kubeconfig=${cluster.kubeconfig}`,
      '-n',
      namespace,
      ...args,
    ]);
    let buf = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      const parts = buf.split('\n');
      buf = parts.pop() ?? '';
      for (const line of parts) if (line.trim()) lines.push({ t: Date.now(), src, line });
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      for (const line of d.split('\n')) if (line.trim()) lines.push({ t: Date.now(), src: `${src}!`, line });
    });
    children.push(child);
  };
  follow('pods', [
    'get',
    'pods',
    '-l',
    opts.podSelector,
    '-w',
    '-o',
    'jsonpath={.metadata.name} ip={.status.podIP} deleting={.metadata.deletionTimestamp} ready={.status.conditions[?(@.type=="Ready")].status}{"\\n"}',
  ]);
  follow('endpoints', [
    'get',
    'endpointslices',
    '-l',
    `kubernetes.io/service-name=${opts.service}`,
    '-w',
    '-o',
    'jsonpath={range .endpoints[*]}{.addresses[0]}:r={.conditions.ready},s={.conditions.serving},t={.conditions.terminating} {end}{"\\n"}',
  ]);
  // What kube-proxy programmed: the Service's DNAT targets in the node's nat table.
  let stopped = false;
  let last = '';
  const tag = `"${namespace}/${opts.service}:smtp -> `;
  void (async () => {
    while (!stopped) {
      const nat = await cluster.onNode('iptables-save', ['-t', 'nat'], { allowFail: true });
      const targets = nat.stdout
        .split('\n')
        .filter((l) => l.includes(tag))
        .map((l) => l.slice(l.indexOf(tag) + tag.length).split('"')[0])
        .sort()
        .join(' ');
      if (targets !== last) lines.push({ t: Date.now(), src: 'iptables', line: targets });
      last = targets;
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  return {
    startedAt,
    followLogs(pods) {
      for (const p of pods) follow(p, ['logs', '-f', p]);
    },
    stop() {
      stopped = true;
      for (const c of children) c.kill('SIGTERM');
      return lines.sort((a, b) => a.t - b.t).map((l) => `+${l.t - startedAt} ${l.src} ${l.line}`);
    },
  };
}

/** The timeline lines within 3 s of each client error, the errors among them, for a failure report. */
export function aroundErrors(
  events: string[],
  errors: { id: string; error: string; t?: number; detail?: string }[],
  startedAt: number,
): string {
  const at = (l: string) => Number(l.slice(1, l.indexOf(' ')));
  const marks = errors.map(
    (e) => `+${(e.t ?? startedAt) - startedAt} CLIENT ${e.id} ${e.error} ${e.detail ?? ''}`,
  );
  const near = (l: string) => !l.includes('"queueId"') && marks.some((m) => Math.abs(at(m) - at(l)) <= 3000);
  return [...events.filter(near), ...marks]
    .sort((a, b) => at(a) - at(b))
    .map((l) => (l.length > 300 ? `${l.slice(0, 300)}...` : l))
    .join('\n');
}
