import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { KubeClient } from '../../../src/lib/kube/client.ts';
import type { Manager } from '../../../src/operator/manager.ts';
import { freePort } from '../../helpers/ports.ts';
import { type SmtpSink, startSmtpSink } from '../../helpers/smtp-sink.ts';
import {
  apply,
  ensureNamespace,
  eventually,
  findObject,
  installCrds,
  kubeClient,
  type Obj,
  startManager,
} from './harness.ts';

// Control plane and data plane agree: run the relay locally exactly as the operator's pod spec
// says (args, env, the ConfigMap mounted where the pod mounts it) and relay a message to a sink.
// Two unavoidable differences from a pod: mount paths are re-rooted under a temp dir (we are the
// kubelet here), and --listen/--http move to free loopback ports (there is no pod network).

const kubeconfig = inject('kubeconfig');
const NS = 'dataplane-test';
const ROOT_DIR = join(import.meta.dirname, '../../..');

describe('the relay runs on what the operator renders', () => {
  let client: KubeClient;
  let manager: Manager;
  let sink: SmtpSink;
  let relay: ChildProcess | undefined;
  let root: string;

  beforeAll(async () => {
    client = kubeClient(kubeconfig);
    await installCrds(client);
    await ensureNamespace(client, NS);
    manager = startManager(kubeconfig, { namespaces: [NS] });
    await manager.start();
    sink = await startSmtpSink();
    root = await mkdtemp(join(tmpdir(), 'operator-pod-'));
  });

  afterAll(async () => {
    relay?.kill('SIGKILL');
    await manager?.stop();
    await sink?.dispose();
    client?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('delivers a message through a relay configured only by the rendered ConfigMap and pod spec', async () => {
    await apply(client, {
      apiVersion: 'email.bionicaisolutions.com/v1alpha1',
      kind: 'EmailRelay',
      metadata: { name: 'dp', namespace: NS },
      spec: {
        hostname: 'mail.bionicaisolutions.com',
        replicas: 1,
        upstream: { host: '127.0.0.1', port: sink.port, tls: 'opportunistic' },
        access: { extraCIDRs: ['127.0.0.1/32'] }, // this test is a non-pod client
        queue: { persistence: { enabled: false } },
        logLevel: 'warn',
      },
    });
    const deployment = await eventually('Deployment', () => findObject(client, 'Deployment', NS, 'dp'));
    const cm = (await findObject(client, 'ConfigMap', NS, 'dp-config')) as Obj;
    const pod = deployment.spec.template.spec;
    const container = pod.containers.find((c: { name: string }) => c.name === 'relay');

    // Be the kubelet: materialise each volume at its (re-rooted) mount path.
    const mounts = container.volumeMounts as { name: string; mountPath: string }[];
    // One pass over whole path prefixes only: the temp root itself may start with a mount path (/tmp).
    const escapeRe = (p: string) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const prefixes = mounts.map((m) => escapeRe(m.mountPath)).sort((a, b) => b.length - a.length);
    const pattern = new RegExp(`(^|[\\s'":=])(${prefixes.join('|')})(?=/|$|[\\s'"])`, 'gm');
    const reroot = (text: string) =>
      text.replace(pattern, (_m, lead: string, path: string) => lead + root + path);
    for (const m of mounts) {
      const volume = pod.volumes.find((v: { name: string }) => v.name === m.name);
      await mkdir(root + m.mountPath, { recursive: true });
      if (volume.configMap) {
        expect(volume.configMap.name).toBe('dp-config');
        for (const [key, value] of Object.entries(cm.data as Record<string, string>)) {
          await writeFile(join(root + m.mountPath, key), reroot(value));
        }
      } else expect(volume.emptyDir, `volume ${m.name}`).toBeDefined();
    }

    const smtpPort = await freePort();
    const httpPort = await freePort();
    const args = [
      ...(container.args as string[]).map(reroot),
      '--listen',
      `127.0.0.1:${smtpPort}`,
      '--http',
      `127.0.0.1:${httpPort}`,
    ];
    const env = Object.fromEntries(
      ((container.env ?? []) as { name: string; value?: string }[]).map((e) => [e.name, e.value ?? '']),
    );
    let output = '';
    relay = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
      cwd: ROOT_DIR,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    relay.stdout?.on('data', (d) => {
      output += d;
    });
    relay.stderr?.on('data', (d) => {
      output += d;
    });
    const exited = new Promise<number | null>((resolve) => relay?.once('exit', resolve));
    const started = await eventually(
      'relay ready',
      async () => {
        if (relay?.exitCode !== null) return 'exited';
        const res = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
        return res.status === 200 ? 'ready' : undefined;
      },
      60_000,
    );
    expect(started, output).toBe('ready');

    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort, secure: false });
    const info = await transport.sendMail({
      from: 'sender@bionicaisolutions.com',
      to: 'recipient@example.com',
      subject: 'operator renders, relay delivers',
      text: 'hello from the control plane',
    });
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as /);
    const [msg] = await sink.waitForMessages(1, 30_000);
    expect(msg?.from).toBe('sender@bionicaisolutions.com');
    expect(msg?.to).toEqual(['recipient@example.com']);
    expect(msg?.helo).toBe('mail.bionicaisolutions.com');
    expect(msg?.data).toContain('hello from the control plane');

    relay.kill('SIGTERM');
    expect(await exited).toBe(0);
    relay = undefined;
  });
});
