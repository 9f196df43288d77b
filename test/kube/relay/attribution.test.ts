import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startTestRelay, type TestRelay } from '../../helpers/relay.ts';
import { SmtpDialog } from '../../helpers/smtp-dialog.ts';

// The relay attributes clients to pods through a real kube-apiserver and enforces the namespace
// opt-in label itself. There is no kubelet: pods are created and given an IP by writing their
// status, a loopback address each, so the test can connect "as" a pod.

const kubeconfig = inject('kubeconfig');
const OPT_IN = 'email.bionicaisolutions.com/relay-access';
const suffix = Date.now().toString(36);
const APP_NS = `attr-app-${suffix}`;
const OTHER_NS = `attr-other-${suffix}`;
const APP_IP = '127.0.0.21';
const OTHER_IP = '127.0.0.22';
const NOBODY_IP = '127.0.0.23';

async function eventually<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`condition not met, last value: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('client attribution through the Kubernetes API', () => {
  let core: CoreV1Api;
  let relay: TestRelay;

  async function createPodWithIp(namespace: string, name: string, ip: string): Promise<void> {
    const body: V1Pod = {
      metadata: { name, namespace },
      spec: {
        containers: [{ name: 'app', image: 'example.invalid/app:1' }],
        automountServiceAccountToken: false,
      },
    };
    // The namespace's default ServiceAccount appears a moment after the namespace.
    await eventually(
      () =>
        core.createNamespacedPod({ namespace, body }).then(
          () => true,
          () => false,
        ),
      (v) => v,
    );
    const pod = await core.readNamespacedPod({ name, namespace });
    pod.status = { ...pod.status, phase: 'Running', podIP: ip, podIPs: [{ ip }] };
    await core.replaceNamespacedPodStatus({ name, namespace, body: pod });
  }

  async function label(name: string, labels: Record<string, string | null>): Promise<void> {
    const ns = await core.readNamespace({ name });
    const next = { ...(ns.metadata?.labels ?? {}) };
    for (const [k, v] of Object.entries(labels)) {
      if (v === null) delete next[k];
      else next[k] = v;
    }
    ns.metadata = { ...ns.metadata, labels: next };
    await core.replaceNamespace({ name, body: ns });
  }

  /** What RCPT TO gets from a client address. */
  async function rcptFrom(address: string): Promise<string> {
    const c = await SmtpDialog.open(relay.port, '127.0.0.1', address);
    await c.reply();
    await c.cmd('EHLO pod.example.com');
    await c.cmd('MAIL FROM:<app@example.com>');
    const r = (await c.cmd('RCPT TO:<someone@example.org>'))[0]!;
    c.close();
    return r;
  }

  beforeAll(async () => {
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
    await core.createNamespace({
      body: { metadata: { name: APP_NS, labels: { [OPT_IN]: 'true', tier: 'gold' } } },
    });
    await core.createNamespace({ body: { metadata: { name: OTHER_NS } } });
    await createPodWithIp(APP_NS, 'billing-7d9f', APP_IP);
    await createPodWithIp(OTHER_NS, 'intruder-1', OTHER_IP);
    relay = await startTestRelay({
      access: { allow: ['127.0.0.1/32'], kubernetes: { enabled: true, kubeconfig, lookupWaitSeconds: 0.3 } },
      policies: [
        {
          name: 'gold-tier',
          match: { namespaceSelector: { matchLabels: { tier: 'gold' } } },
          rules: { headers: { add: [{ name: 'X-Tier', value: 'gold' }] } },
        },
      ],
    });
  });
  afterAll(async () => {
    await relay?.dispose();
    for (const name of [APP_NS, OTHER_NS]) await core?.deleteNamespace({ name }).catch(() => undefined);
  });

  it('admits pods of opted-in namespaces and refuses the others (never an open relay)', async () => {
    expect(
      await eventually(
        () => rcptFrom(APP_IP),
        (r) => !r.startsWith('451'),
      ),
    ).toBe('250 2.1.5 Ok');
    expect(await rcptFrom(OTHER_IP)).toBe('554 5.7.1 <someone@example.org>: Relay access denied');
    expect(await rcptFrom(NOBODY_IP)).toBe('554 5.7.1 <someone@example.org>: Relay access denied');
  });

  it('names the namespace and pod, and applies policies that select the namespace by label', async () => {
    const c = await SmtpDialog.open(relay.port, '127.0.0.1', APP_IP);
    await c.reply();
    await c.cmd('EHLO pod.example.com');
    await c.cmd('MAIL FROM:<app@example.com>');
    await c.cmd('RCPT TO:<someone@example.org>');
    await c.cmd('DATA');
    c.write('Subject: attributed\r\n\r\nhi\r\n');
    expect((await c.cmd('.'))[0]).toMatch(/^250 /);
    c.close();
    const dir = join(relay.dir, 'outbox');
    const eml = await eventually(
      async () => {
        const names = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.eml'));
        return names.length ? readFile(join(dir, names[0]!), 'latin1') : '';
      },
      (v) => v !== '',
    );
    expect(eml).toContain('X-Tier: gold\r\n');
  });

  it('follows label changes: opting in admits, opting out refuses', async () => {
    await label(OTHER_NS, { [OPT_IN]: 'true' });
    expect(
      await eventually(
        () => rcptFrom(OTHER_IP),
        (r) => r.startsWith('250'),
      ),
    ).toBe('250 2.1.5 Ok');
    await label(APP_NS, { [OPT_IN]: null });
    expect(
      await eventually(
        () => rcptFrom(APP_IP),
        (r) => r.startsWith('554'),
      ),
    ).toBe('554 5.7.1 <someone@example.org>: Relay access denied');
  });

  it('forgets a deleted pod', async () => {
    await core.deleteNamespacedPod({ name: 'intruder-1', namespace: OTHER_NS, gracePeriodSeconds: 0 });
    expect(
      await eventually(
        () => rcptFrom(OTHER_IP),
        (r) => r.startsWith('554'),
      ),
    ).toMatch(/^554 5\.7\.1 /);
  });
});
