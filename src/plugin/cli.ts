#!/usr/bin/env node
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { addressRedactor, redactValue } from '../lib/redact.ts';
import { formatQueue } from '../relay/queue-format.ts';
import type { QueuedMessage } from '../relay/spool/types.ts';
import { cmd, type Kubectl, kubectlRunner, must } from './kubectl.ts';
import { formatStatus, listRelays, observe, type RelayObject, relayPods } from './observe.ts';
import { probeScript, queueIdOf } from './probe.ts';

const USAGE = `usage: kubectl email-relay [-n NS | -A] [--kubeconfig FILE] [--context CTX] COMMAND
  status [RELAY]                          per relay and pod: ready, queued, oldest, upstream, last refusal
  queue list RELAY [--pod POD] [--json]   the queue of every pod (like mailq)
  queue show RELAY ID                     one message, from whichever pod holds it
  queue flush RELAY [--pod POD]           retry everything now (postqueue -f)
  queue retry RELAY ID | queue delete RELAY ID
  drain POD                               the pod stops taking mail, hands its queue to the others, stops
  test-send RELAY --from ADDR --to ADDR [--probe-namespace NS] [--timeout SECONDS]
                                          send a probe through the relay as an app would, report the upstream's answer
  report RELAY [-o FILE]                  support bundle (resources, events, logs, status, config), addresses masked`;

export interface PluginIo {
  out: (s: string) => void;
  err: (s: string) => void;
  kubectl?: Kubectl;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

export async function main(argv: string[], io: PluginIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      namespace: { type: 'string', short: 'n' },
      'all-namespaces': { type: 'boolean', short: 'A', default: false },
      kubeconfig: { type: 'string' },
      context: { type: 'string' },
      pod: { type: 'string' },
      json: { type: 'boolean', default: false },
      from: { type: 'string' },
      to: { type: 'string' },
      'probe-namespace': { type: 'string' },
      timeout: { type: 'string' },
      output: { type: 'string', short: 'o' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  const usage = () => {
    io.err(`${USAGE}\n`);
    return 2;
  };
  if (values.help) {
    io.out(`${USAGE}\n`);
    return 0;
  }
  const kubectl =
    io.kubectl ??
    kubectlRunner({
      ...(values.kubeconfig ? { kubeconfig: values.kubeconfig } : {}),
      ...(values.context ? { context: values.context } : {}),
    });
  const sleep = io.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = io.now ?? Date.now;
  const ns = values['all-namespaces'] ? '*' : values.namespace;
  const timeoutMs = Number(values.timeout ?? 120) * 1000;
  const [command, ...rest] = positionals;

  const oneRelay = async (name: string | undefined): Promise<RelayObject> => {
    if (!name) throw new UsageError('name the EmailRelay');
    const [relay] = await listRelays(kubectl, ns, name);
    return relay!;
  };
  const podsOf = async (relay: RelayObject) => {
    const pods = (await relayPods(kubectl, relay)).filter((p) => p.status?.phase === 'Running');
    const chosen = values.pod ? pods.filter((p) => p.metadata.name === values.pod) : pods;
    if (!chosen.length)
      throw new Error(`no running pod${values.pod ? ` ${values.pod}` : ''} of ${relay.metadata.name}`);
    return chosen.map((p) => p.metadata.name);
  };
  const queueJson = async (namespace: string, pod: string) =>
    JSON.parse(await must(kubectl, cmd.queue(namespace, pod, ['list', '--json']))) as QueuedMessage[];

  try {
    switch (command) {
      case 'status': {
        if (rest.length > 1) return usage();
        io.out(formatStatus(await observe(kubectl, ns, rest[0])));
        return 0;
      }
      case 'queue': {
        const [action, name, id, ...extra] = rest;
        const needsId = action === 'show' || action === 'retry' || action === 'delete';
        if (!action || extra.length || (needsId && !id) || (!needsId && id)) return usage();
        if (!['list', 'show', 'flush', 'retry', 'delete'].includes(action)) return usage();
        const relay = await oneRelay(name);
        const namespace = relay.metadata.namespace;
        const pods = await podsOf(relay);
        if (action === 'list') {
          const all = await Promise.all(
            pods.map(async (pod) => ({ pod, messages: await queueJson(namespace, pod) })),
          );
          if (values.json) io.out(`${JSON.stringify(all, null, 2)}\n`);
          else for (const q of all) io.out(`# ${namespace}/${q.pod}\n${formatQueue(q.messages, now())}\n`);
          return 0;
        }
        if (action === 'flush') {
          for (const pod of pods)
            io.out(`${pod}: ${(await must(kubectl, cmd.queue(namespace, pod, ['flush']))).trim()}\n`);
          return 0;
        }
        // show, retry, delete: the message lives in one pod's spool; ask each until one has it.
        for (const pod of pods) {
          const r = await kubectl(cmd.queue(namespace, pod, [action, id!]));
          if (r.code === 0) {
            io.out(action === 'show' ? `# ${namespace}/${pod}\n${r.stdout}` : `${pod}: ${r.stdout.trim()}\n`);
            return 0;
          }
        }
        io.err(`${id}: no such message in any pod of ${namespace}/${relay.metadata.name}\n`);
        return 1;
      }
      case 'drain': {
        // The relay's own drain: it turns unready, takes no more mail, hands its queue to a ready
        // peer (or delivers it) and stops; the pod is then safe to remove.
        const [pod, ...extra] = rest;
        if (!pod || extra.length) return usage();
        const namespace = ns && ns !== '*' ? ns : undefined;
        const podJson = JSON.parse(
          await must(kubectl, ['get', 'pod', pod, ...(namespace ? ['-n', namespace] : []), '-o', 'json']),
        ) as { metadata: { namespace: string } };
        io.out(`${pod}: draining (unready, no new mail, queue handed to the other pods or delivered)\n`);
        const r = await kubectl(cmd.queue(podJson.metadata.namespace, pod, ['drain', '--json']));
        if (r.code !== 0) {
          io.err(`${pod}: ${r.stderr.trim() || r.stdout.trim() || `exit ${r.code}`}\n`);
          return 1;
        }
        io.out(`${pod}: drained ${r.stdout.trim()}\n`);
        return 0;
      }
      case 'test-send': {
        const [name, ...extra] = rest;
        if (!name || extra.length || !values.from || !values.to) return usage();
        return await testSend(
          kubectl,
          await oneRelay(name),
          values.from,
          values.to,
          values['probe-namespace'],
          {
            io,
            sleep,
            now,
            timeoutMs,
          },
        );
      }
      case 'report': {
        const [name, ...extra] = rest;
        if (!name || extra.length) return usage();
        const bundle = await report(kubectl, await oneRelay(name), now);
        const text = `${JSON.stringify(bundle, null, 2)}\n`;
        if (values.output) {
          await writeFile(values.output, text, { mode: 0o600 });
          io.out(`wrote ${values.output}\n`);
        } else io.out(text);
        return 0;
      }
      default:
        return usage();
    }
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`${err.message}\n`);
      return usage();
    }
    io.err(`kubectl email-relay: ${(err as Error).message}\n`);
    return 1;
  }
}

class UsageError extends Error {}

async function testSend(
  kubectl: Kubectl,
  relay: RelayObject,
  from: string,
  to: string,
  probeNamespace: string | undefined,
  ctx: { io: PluginIo; sleep: (ms: number) => Promise<void>; now: () => number; timeoutMs: number },
): Promise<number> {
  const { namespace, name } = relay.metadata;
  const probeNs = probeNamespace ?? relay.status?.admittedNamespaces?.[0];
  if (!probeNs) {
    ctx.io.err(
      `no namespace is admitted by ${namespace}/${name}: pass --probe-namespace NS (one that may relay)\n`,
    );
    return 1;
  }
  const pods = await relayPods(kubectl, relay);
  const image = pods[0]?.spec?.containers?.find((c) => c.name === 'relay')?.image;
  if (!image) throw new Error(`no pod of ${namespace}/${name} to take the relay image from`);
  const endpoint = relay.status?.endpoint ?? `${name}.${namespace}.svc:25`;
  const podName = `email-relay-probe-${ctx.now().toString(36)}`;
  ctx.io.out(`sending from ${probeNs}/${podName} to ${endpoint}: ${from} -> ${to}\n`);
  const sent = await kubectl(cmd.probe(probeNs, podName, image, probeScript({ endpoint, from, to })));
  const answer = sent.stdout.trim().split('\n').at(-1) ?? '';
  ctx.io.out(`relay answered: ${answer || sent.stderr.trim()}\n`);
  const id = queueIdOf(answer);
  if (sent.code !== 0 || !id) return 1;
  // Follow the relay pods' logs until one logs the upstream's answer for this queue id.
  const deadline = ctx.now() + ctx.timeoutMs;
  for (;;) {
    for (const pod of pods) {
      const logs = await kubectl(cmd.logs(namespace, pod.metadata.name, 5000));
      for (const line of logs.stdout.split('\n')) {
        if (!line.includes(id)) continue;
        try {
          const l = JSON.parse(line) as Record<string, unknown>;
          if (l['queueId'] === id && typeof l['outcome'] === 'string' && l['reply'] !== undefined) {
            ctx.io.out(`upstream answered (${pod.metadata.name}, ${l['outcome']}): ${String(l['reply'])}\n`);
            return l['outcome'] === 'sent' ? 0 : 1;
          }
        } catch {
          // not one of ours
        }
      }
    }
    if (ctx.now() > deadline) {
      ctx.io.err(
        `${id}: no delivery attempt logged within ${ctx.timeoutMs / 1000}s (see: queue show ${name} ${id})\n`,
      );
      return 1;
    }
    await ctx.sleep(2000);
  }
}

/** Everything support asks for first, addresses masked; Secrets are never read. */
async function report(kubectl: Kubectl, relay: RelayObject, now: () => number): Promise<unknown> {
  const { namespace, name } = relay.metadata;
  const json = async (args: string[]) => {
    const r = await kubectl(args);
    if (r.code !== 0) return { error: r.stderr.trim() };
    try {
      return JSON.parse(r.stdout) as unknown;
    } catch {
      return r.stdout;
    }
  };
  const pods = await relayPods(kubectl, relay);
  const port = relay.spec?.metrics?.port ?? 9090;
  const bundle = {
    generatedAt: new Date(now()).toISOString(),
    tool: 'kubectl email-relay report',
    relay,
    status: await observe(kubectl, namespace, name),
    children: await json(cmd.children(namespace, name)),
    policies: await json(cmd.policies(namespace)),
    events: await json(cmd.events(namespace, name)),
    pods: await Promise.all(
      pods.map(async (p) => ({
        pod: p,
        events: await json(cmd.events(namespace, p.metadata.name)),
        metrics: (await kubectl(cmd.metrics(namespace, p.metadata.name, port))).stdout,
        logs: (await kubectl(cmd.logs(namespace, p.metadata.name, 500))).stdout,
        queue:
          p.status?.phase === 'Running'
            ? await json(cmd.queue(namespace, p.metadata.name, ['list', '--json']))
            : [],
      })),
    ),
  };
  return redactValue(bundle, addressRedactor('mask'), 64);
}

const isMain = process.argv[1] && /kubectl-email_relay$|plugin[/\\]cli\.[jt]s$/.test(process.argv[1]);
if (isMain) {
  main(process.argv.slice(2), {
    out: (s) => process.stdout.write(s),
    err: (s) => process.stderr.write(s),
  }).then((code) => process.exit(code));
}
