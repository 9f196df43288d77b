import { type ChildProcess, spawn } from 'node:child_process';
import { inject } from 'vitest';
import { loadNodeState, type NodeState, netnsArgv } from '../control-plane/node.ts';

// What node tests use: the cluster the `node` project's global setup brought up (or the one named by
// $EMAIL_RELAY_NODE_DIR), kubectl against it, commands on the node (inside its network namespace),
// and waits that fail with what they were waiting for.

declare module 'vitest' {
  export interface ProvidedContext {
    /** State dir of the node cluster (node.json). */
    nodeDir: string;
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Written to stdin. */
  input?: string;
  /** Kill after this long (default 60 s) and fail. */
  timeoutMs?: number;
  /** Resolve with a non-zero exit instead of throwing. */
  allowFail?: boolean;
}

export type Manifest = string | object | object[];

/** Image references in the node's containerd (imagePullPolicy: Never). */
export interface NodeImages {
  /** The product image (npm run image -- relay). */
  relay: string;
  /** node + nodemailer + python3, for client pods. */
  client: string;
}

export class NodeCluster {
  constructor(readonly state: NodeState) {}

  get kubeconfig(): string {
    return this.state.kubeconfig;
  }

  get netns(): string {
    return this.state.netns;
  }

  /** The node's IP: an SMTP sink started with `spawnOnNode` listens there, reachable from pods. */
  get nodeIp(): string {
    return this.state.nodeIp;
  }

  get images(): NodeImages {
    const name = (kind: string) => {
      const img = this.state.images.find((i) => i.kind === kind);
      if (!img) throw new Error(`node cluster has no ${kind} image`);
      return img.name;
    };
    return { relay: name('relay'), client: name('client') };
  }

  /** kubectl (same version as the apiserver) with the admin kubeconfig, run inside the namespace. */
  kubectl(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.onNode(this.state.binaries.kubectl, [`--kubeconfig=${this.kubeconfig}`, ...args], opts);
  }

  /** `kubectl ... -o json`, parsed. */
  async kubectlJson<T = unknown>(args: string[]): Promise<T> {
    return JSON.parse((await this.kubectl([...args, '-o', 'json'])).stdout) as T;
  }

  /** `kubectl apply -f -` of YAML text, an object or a list of objects. */
  async apply(manifest: Manifest, extraArgs: string[] = []): Promise<string> {
    const input =
      typeof manifest === 'string'
        ? manifest
        : JSON.stringify(
            Array.isArray(manifest) ? { apiVersion: 'v1', kind: 'List', items: manifest } : manifest,
          );
    return (await this.kubectl(['apply', ...extraArgs, '-f', '-'], { input })).stdout;
  }

  /** Runs a command on the node (in its network namespace, host filesystem) and collects its output. */
  onNode(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    const [bin, argv] = netnsArgv(this.state, cmd, args);
    const timeoutMs = opts.timeoutMs ?? 60_000;
    return new Promise((resolve, reject) => {
      const child = spawn(bin, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        stdout += d;
      });
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        stderr += d;
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('error', reject);
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const res = { code: code ?? -1, stdout, stderr };
        if (res.code === 0 || opts.allowFail) return resolve(res);
        const why = signal
          ? `killed (${signal}${signal === 'SIGKILL' ? `, ${timeoutMs} ms timeout` : ''})`
          : `exit ${code}`;
        reject(new Error(`${cmd} ${args.join(' ')}: ${why}\n${stderr.trim() || stdout.trim()}`));
      });
      child.stdin.end(opts.input);
    });
  }

  /** A long-running process on the node (e.g. an SMTP sink on nodeIp); the caller kills it. */
  spawnOnNode(cmd: string, args: string[]): ChildProcess {
    const [bin, argv] = netnsArgv(this.state, cmd, args);
    return spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** Pod names matching a label selector. */
  async pods(namespace: string, selector: string): Promise<string[]> {
    const out = await this.kubectl(['-n', namespace, 'get', 'pods', '-l', selector, '-o', 'name']);
    return out.stdout
      .split('\n')
      .filter(Boolean)
      .map((n) => n.replace(/^pod\//, ''));
  }

  /** Waits for `kubectl wait` semantics: e.g. ('pod/x', 'condition=Ready'). */
  async wait(namespace: string, target: string, condition: string, timeoutMs = 120_000): Promise<void> {
    await this.kubectl(
      ['-n', namespace, 'wait', target, `--for=${condition}`, `--timeout=${Math.round(timeoutMs / 1000)}s`],
      {
        timeoutMs: timeoutMs + 10_000,
      },
    );
  }

  /** Creates a one-shot pod (client image unless `image`); see finishPod. */
  async startPod(pod: OneShotPod): Promise<void> {
    await this.apply(oneShotPodManifest(pod, this.images.client));
  }

  /** Waits for a one-shot pod to end; returns its phase and logs (and deletes it unless keep). */
  async finishPod(
    pod: Pick<OneShotPod, 'namespace' | 'name' | 'keep'>,
    timeoutMs = 120_000,
  ): Promise<PodResult> {
    const phase = await waitUntil(
      `pod ${pod.namespace}/${pod.name} to finish`,
      async () => {
        const p = await this.kubectl([
          '-n',
          pod.namespace,
          'get',
          'pod',
          pod.name,
          '-o',
          'jsonpath={.status.phase}',
        ]);
        return p.stdout === 'Succeeded' || p.stdout === 'Failed' ? p.stdout : undefined;
      },
      timeoutMs,
    );
    const logs = (await this.kubectl(['-n', pod.namespace, 'logs', pod.name], { allowFail: true })).stdout;
    if (!pod.keep) await this.kubectl(['-n', pod.namespace, 'delete', 'pod', pod.name, '--wait=false']);
    return { phase, logs };
  }

  /** Runs a one-shot pod to completion: startPod + finishPod. */
  async runPod(pod: OneShotPod, timeoutMs = 120_000): Promise<PodResult> {
    await this.startPod(pod);
    return this.finishPod(pod, timeoutMs);
  }
}

export interface PodResult {
  phase: string;
  logs: string;
}

export interface OneShotPod {
  namespace: string;
  name: string;
  /** argv; the client image has /nodejs/bin/node and python3 on PATH. */
  command: string[];
  env?: Record<string, string>;
  /** Defaults to the client image. */
  image?: string;
  labels?: Record<string, string>;
  keep?: boolean;
}

/** Restricted-profile pod (as a platform team would run apps): non-root, read-only root, no caps. */
export function oneShotPodManifest(pod: OneShotPod, defaultImage: string): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: pod.name, namespace: pod.namespace, labels: { app: pod.name, ...pod.labels } },
    spec: {
      restartPolicy: 'Never',
      automountServiceAccountToken: false,
      securityContext: { runAsNonRoot: true, runAsUser: 65532, seccompProfile: { type: 'RuntimeDefault' } },
      containers: [
        {
          name: 'client',
          image: pod.image ?? defaultImage,
          imagePullPolicy: 'Never',
          command: pod.command,
          env: Object.entries(pod.env ?? {}).map(([name, value]) => ({ name, value })),
          securityContext: {
            allowPrivilegeEscalation: false,
            readOnlyRootFilesystem: true,
            capabilities: { drop: ['ALL'] },
          },
        },
      ],
    },
  };
}

/** Polls `check` until it returns a value other than undefined/false; fails naming `what`. */
export async function waitUntil<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  timeoutMs = 120_000,
  intervalMs = 500,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

let cached: NodeCluster | undefined;

/** The node cluster of this test run (brought up once by test/node/global-setup.ts). */
export async function nodeCluster(): Promise<NodeCluster> {
  cached ??= new NodeCluster(await loadNodeState(inject('nodeDir')));
  return cached;
}
