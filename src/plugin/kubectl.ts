import { spawn } from 'node:child_process';

/**
 * The plugin talks to the cluster only through kubectl, with the user's kubeconfig, context and
 * RBAC (`get`, `logs`, `exec` into relay pods): no new
 * network path, no credentials of its own. Every command line is built by a pure function here,
 * so tests check exactly what would run.
 */

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}
export type Kubectl = (args: string[]) => Promise<KubectlResult>;

/** Flags passed through to every kubectl call (kubeconfig, context). */
export interface Connection {
  kubeconfig?: string;
  context?: string;
}

export const GROUP_RESOURCE = 'emailrelays.email.bionicaisolutions.com';
export const POLICY_RESOURCE = 'emailpolicies.email.bionicaisolutions.com';
/** The relay's config inside its pods (the operator mounts the ConfigMap there). */
export const RELAY_CONFIG = '/etc/email-relay/config/relay.yaml';
/** The image's node and CLI (distroless: no shell, so exec runs node directly). */
export const RELAY_CLI = ['/nodejs/bin/node', '/app/dist/cli.js'];
export const RELAY_CONTAINER = 'relay';

export function kubectlRunner(conn: Connection = {}, bin = process.env['KUBECTL'] ?? 'kubectl'): Kubectl {
  const global = connectionArgs(conn);
  return (args) =>
    new Promise((resolve, reject) => {
      const child = spawn(bin, [...global, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', (err) =>
        reject(new Error(`cannot run ${bin}: ${err.message} (is kubectl on PATH? set KUBECTL)`)),
      );
      child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    });
}

export function connectionArgs(conn: Connection): string[] {
  return [
    ...(conn.kubeconfig ? ['--kubeconfig', conn.kubeconfig] : []),
    ...(conn.context ? ['--context', conn.context] : []),
  ];
}

/** '*': every namespace; undefined: the context's namespace, as kubectl itself does. */
const nsArgs = (ns: string | undefined) => (ns === '*' ? ['-A'] : ns ? ['-n', ns] : []);

/**
 * A path of a pod's HTTP port (/metrics, /summary), fetched inside the pod from loopback:
 * unaffected by the relay's NetworkPolicy (which admits scrapes only from the monitoring
 * namespace), needs only pods/exec.
 */
function fetchLocal(ns: string, pod: string, port: number, path: string): string[] {
  return [
    'exec',
    '-n',
    ns,
    pod,
    '-c',
    RELAY_CONTAINER,
    '--',
    RELAY_CLI[0]!,
    '-e',
    `fetch('http://127.0.0.1:${port}${path}').then((r) => { if (!r.ok) throw new Error('${path}: HTTP ' + r.status); return r.text(); }).then((t) => process.stdout.write(t), (e) => { console.error(e.message); process.exit(1); })`,
  ];
}

export const cmd = {
  relays: (ns: string | undefined) => ['get', GROUP_RESOURCE, ...nsArgs(ns), '-o', 'json'],
  relay: (ns: string | undefined, name: string) => [
    'get',
    GROUP_RESOURCE,
    name,
    ...(ns && ns !== '*' ? ['-n', ns] : []),
    '-o',
    'json',
  ],
  pods: (ns: string, relay: string) => [
    'get',
    'pods',
    '-n',
    ns,
    '-l',
    `app.kubernetes.io/name=email-relay,app.kubernetes.io/instance=${relay},app.kubernetes.io/component=relay`,
    '-o',
    'json',
  ],
  /** `email-relay queue ...` in a relay pod: talks to the running relay over its control socket. */
  queue: (ns: string, pod: string, args: string[]) => [
    'exec',
    '-n',
    ns,
    pod,
    '-c',
    RELAY_CONTAINER,
    '--',
    ...RELAY_CLI,
    'queue',
    ...args,
    '--config',
    RELAY_CONFIG,
  ],
  fetch: fetchLocal,
  metrics: (ns: string, pod: string, port: number) => fetchLocal(ns, pod, port, '/metrics'),
  summary: (ns: string, pod: string, port: number) => fetchLocal(ns, pod, port, '/summary'),
  logs: (ns: string, pod: string, tail: number) => [
    'logs',
    '-n',
    ns,
    pod,
    '-c',
    RELAY_CONTAINER,
    `--tail=${tail}`,
  ],
  events: (ns: string, name: string) => [
    'get',
    'events',
    '-n',
    ns,
    '--field-selector',
    `involvedObject.name=${name}`,
    '-o',
    'json',
  ],
  children: (ns: string, relay: string) => [
    'get',
    'statefulsets,deployments,services,configmaps,networkpolicies,poddisruptionbudgets,persistentvolumeclaims',
    '-n',
    ns,
    '-l',
    `app.kubernetes.io/instance=${relay}`,
    '-o',
    'json',
  ],
  policies: (ns: string) => ['get', POLICY_RESOURCE, '-n', ns, '-o', 'json'],
  /**
   * A one-off pod in a namespace the relay admits, sending one message to the relay's Service as
   * any app would (the relay image has node and nodemailer). Removed when it ends.
   */
  probe: (ns: string, podName: string, image: string, script: string) => [
    'run',
    podName,
    '-n',
    ns,
    `--image=${image}`,
    '--restart=Never',
    '--rm',
    '-i',
    '--quiet',
    '--labels=app.kubernetes.io/name=email-relay-probe',
    '--overrides',
    JSON.stringify({
      spec: {
        securityContext: { runAsNonRoot: true, runAsUser: 65532, seccompProfile: { type: 'RuntimeDefault' } },
        containers: [
          {
            name: podName,
            image,
            command: ['/nodejs/bin/node', '-e', script],
            securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
          },
        ],
      },
    }),
  ],
};

/** Runs a kubectl command; a non-zero exit becomes an error carrying kubectl's own message. */
export async function must(kubectl: Kubectl, args: string[]): Promise<string> {
  const r = await kubectl(args);
  if (r.code !== 0)
    throw new Error(`kubectl ${args.slice(0, 3).join(' ')}: ${r.stderr.trim() || `exit ${r.code}`}`);
  return r.stdout;
}
