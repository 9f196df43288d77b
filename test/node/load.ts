import { type LoadResult, loadClient, parseLoad } from './clients.ts';
import { type NodeCluster, waitUntil } from './cluster.ts';

// Client load for the node tests: `n` pods of the client image, each sending one message per
// connection (loadClient) to `host` for `seconds`. startLoad resolves once every pod has been
// admitted (its first SMTP greeting): from then on every failure a pod sees counts. A pod is
// refused for its first second or so while kube-router adds its IP to the NetworkPolicy's
// namespace set; that is the CNI's start-up, not the relay, and happens before the measured load.

export interface LoadOptions {
  namespace: string;
  /** Pods are named <prefix>-0 .. <prefix>-(n-1). */
  prefix: string;
  n: number;
  host: string;
  seconds: number;
  /** Pause after each message (ms): 400 with 3 pods is about 400 messages a minute. */
  pauseMs: number;
}

export interface Load {
  /** When the last pod was admitted (ms epoch): the measured load runs from here. */
  startedAt: number;
  /** Greeting attempts each pod needed before it was admitted (1: at once). */
  probes: number[];
  /** When the pods stop sending (ms epoch). */
  endsAt: number;
  /** Waits for the pods to finish; their results (the pods are deleted). */
  finish(): Promise<LoadResult>;
}

export async function startLoad(cluster: NodeCluster, opts: LoadOptions): Promise<Load> {
  const names = Array.from({ length: opts.n }, (_, i) => `${opts.prefix}-${i}`);
  await Promise.all(
    names.map((name) =>
      cluster.startPod({
        namespace: opts.namespace,
        name,
        command: loadClient(opts.host, opts.seconds, opts.pauseMs),
      }),
    ),
  );
  const starts = await Promise.all(
    names.map((name) =>
      waitUntil(
        `${opts.namespace}/${name} admitted`,
        async () => {
          const logs = await cluster.kubectl(['-n', opts.namespace, 'logs', name], { allowFail: true });
          const line = logs.stdout.split('\n').find((l) => l.startsWith('{"started"'));
          if (logs.stdout.includes('"admitted":false'))
            throw new Error(`${name} never admitted: ${logs.stdout}`);
          return line ? (JSON.parse(line) as { t: number; probes: number }) : undefined;
        },
        120_000,
        500,
      ),
    ),
  );
  const startedAt = Math.max(...starts.map((s) => s.t));
  return {
    startedAt,
    probes: starts.map((s) => s.probes),
    endsAt: Math.min(...starts.map((s) => s.t)) + opts.seconds * 1000,
    async finish() {
      const res = await Promise.all(
        names.map((name) =>
          cluster.finishPod({ namespace: opts.namespace, name }, (opts.seconds + 180) * 1000),
        ),
      );
      return parseLoad(res.map((r) => r.logs).join('\n'));
    },
  };
}
