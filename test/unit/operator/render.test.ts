import { describe, expect, it } from 'vitest';

// biome-ignore lint/suspicious/noExplicitAny: tests read arbitrary object fields
type Any = any;

import { parse } from 'yaml';
import { parseConfig } from '../../../src/config/load.ts';
import { emailRelaySpecSchema } from '../../../src/operator/api/emailrelay.ts';
import { parsePolicy, type ValidPolicy } from '../../../src/operator/emailpolicy/select.ts';
import { CONFIG_HASH_ANNOTATION } from '../../../src/operator/emailrelay/names.ts';
import { renderRelay } from '../../../src/operator/emailrelay/render.ts';

const relay = { name: 'postfix-relay', namespace: 'email-server-prod', uid: 'u-1' };
const spec = (extra: Record<string, unknown> = {}) =>
  emailRelaySpecSchema.parse({
    hostname: 'mail.bionicaisolutions.com',
    upstream: { host: 'smtp-relay.gmail.com', port: 587, tls: 'starttls' },
    ...extra,
  });
const render = (extra: Record<string, unknown> = {}, policies: ValidPolicy[] = []) =>
  renderRelay({ relay, spec: spec(extra), defaultImage: 'ghcr.io/x/email-relay:1', policies });
const find = (r: ReturnType<typeof render>, kind: string, name?: string) =>
  r.objects.find((o) => o.kind === kind && (name === undefined || o.metadata.name === name)) as Any;

describe('renderRelay', () => {
  it("the seed's endpoints: Services postfix-relay and postfix-relay-headless on port 25", () => {
    const r = render();
    const svc = find(r, 'Service', 'postfix-relay');
    expect(svc.spec.type).toBe('ClusterIP');
    expect(svc.spec.ports[0]).toMatchObject({ name: 'smtp', port: 25 });
    const headless = find(r, 'Service', 'postfix-relay-headless');
    expect(headless.spec.clusterIP).toBe('None');
    expect(headless.spec.ports[0]).toMatchObject({ port: 25 });
    // Headless clients reach pods directly: the pod itself must listen on 25.
    const pod = find(r, 'StatefulSet').spec.template.spec;
    expect(pod.containers[0].ports[0]).toEqual({ name: 'smtp', containerPort: 25, protocol: 'TCP' });
    expect(pod.securityContext.sysctls).toEqual([
      { name: 'net.ipv4.ip_unprivileged_port_start', value: '0' },
    ]);
  });

  it('owns, labels and namespaces every child', () => {
    for (const o of render().objects) {
      expect(o.metadata.namespace).toBe('email-server-prod');
      expect(o.metadata.ownerReferences).toEqual([
        expect.objectContaining({ kind: 'EmailRelay', name: 'postfix-relay', uid: 'u-1', controller: true }),
      ]);
      expect(o.metadata.labels).toMatchObject({
        'app.kubernetes.io/instance': 'postfix-relay',
        'app.kubernetes.io/managed-by': 'email-relay-operator',
      });
    }
  });

  it('renders a relay config the relay schema accepts, credentials as files only', () => {
    const r = render({
      upstream: {
        host: 'smtp-relay.gmail.com',
        port: 587,
        tls: 'starttls',
        credentialsSecretRef: { name: 'gmail' },
      },
    });
    const cfg = parseConfig(parse(r.configData['relay.yaml']!));
    expect(cfg.hostname).toBe('mail.bionicaisolutions.com');
    expect(cfg.listen).toBe('0.0.0.0:25');
    expect(cfg.upstream.url).toBe('smtp+starttls://smtp-relay.gmail.com:587');
    expect(cfg.upstream.auth).toMatchObject({
      userFile: '/etc/email-relay/upstream/username',
      passwordFile: '/etc/email-relay/upstream/password',
    });
    expect(cfg.smtp.maxMessageSize).toBe(10_240_000);
    expect(JSON.stringify(r.configData)).not.toMatch(/secret/i);
    const pod = find(r, 'StatefulSet').spec.template.spec;
    expect(pod.volumes).toContainEqual(expect.objectContaining({ name: 'upstream-credentials' }));
  });

  it('a persistent queue is a StatefulSet with a claim template; emptyDir is a Deployment', () => {
    const sts = find(render(), 'StatefulSet');
    expect(sts.spec.volumeClaimTemplates[0].spec.resources.requests.storage).toBe('1Gi');
    expect(sts.spec.serviceName).toBe('postfix-relay-headless');
    const r = render({ queue: { persistence: { enabled: false } } });
    expect(find(r, 'StatefulSet')).toBeUndefined();
    const dep = find(r, 'Deployment');
    expect(dep.spec.strategy.rollingUpdate).toEqual({ maxUnavailable: 0, maxSurge: 1 });
    expect(dep.spec.template.spec.volumes).toContainEqual({ name: 'spool', emptyDir: {} });
  });

  it('rolls the pods when the config changes, and only then', () => {
    const a = render();
    const b = render();
    const c = render({ smtp: { maxMessageSize: 20_000_000 } });
    const hash = (r: typeof a) =>
      find(r, 'StatefulSet').spec.template.metadata.annotations[CONFIG_HASH_ANNOTATION];
    expect(hash(a)).toBe(a.configHash);
    expect(hash(b)).toBe(hash(a));
    expect(hash(c)).not.toBe(hash(a));
  });

  it('drains on rollout: readiness, preStop, and a grace period longer than the drain', () => {
    const c = find(render({ shutdownGraceSeconds: 40 }), 'StatefulSet').spec.template.spec;
    expect(c.containers[0].readinessProbe.httpGet.path).toBe('/readyz');
    expect(c.containers[0].lifecycle.preStop.sleep.seconds).toBeGreaterThan(0);
    expect(c.terminationGracePeriodSeconds).toBeGreaterThan(
      40 + c.containers[0].lifecycle.preStop.sleep.seconds,
    );
    expect(c.containers[0].securityContext.readOnlyRootFilesystem).toBe(true);
  });

  it('admits selected namespaces and extra CIDRs to SMTP, monitoring to metrics', () => {
    const r = render({ access: { extraCIDRs: ['192.0.2.10', '198.51.100.0/24'] } });
    const smtp = find(r, 'NetworkPolicy', 'postfix-relay-smtp');
    expect(smtp.spec.ingress[0].from).toEqual([
      { namespaceSelector: { matchLabels: { 'email.bionicaisolutions.com/relay-access': 'true' } } },
      { ipBlock: { cidr: '192.0.2.10/32' } },
      { ipBlock: { cidr: '198.51.100.0/24' } },
    ]);
    expect(smtp.spec.ingress[0].ports).toEqual([{ protocol: 'TCP', port: 25 }]);
    expect(find(r, 'NetworkPolicy', 'postfix-relay-metrics').spec.ingress[0].ports[0].port).toBe(9090);
    expect(r.config.access.allow).toContain('192.0.2.10');
    expect(
      find(render({ metrics: { enabled: false } }), 'NetworkPolicy', 'postfix-relay-metrics'),
    ).toBeUndefined();
  });

  it('NetworkPolicies admit each port only from the peers they name, and nothing else', () => {
    // The NetworkPolicy semantics: a pod selected by any Ingress policy accepts a connection
    // only if some rule of some policy selecting it names both the peer and the port.
    type Peer = { nsLabels?: Record<string, string>; ip?: string };
    const matches = (sel: Any, labels: Record<string, string> = {}) =>
      Object.entries(sel.matchLabels ?? {}).every(([k, v]) => labels[k] === v) && !sel.matchExpressions;
    const inCidr = (ip: string, cidr: string) => {
      const [base, bits] = cidr.split('/');
      const n = (a: string) => a.split('.').reduce((x, o) => x * 256 + Number(o), 0);
      const mask = 2 ** 32 - 2 ** (32 - Number(bits));
      return (n(ip) & mask) >>> 0 === (n(base ?? '') & mask) >>> 0;
    };
    const admits = (r: ReturnType<typeof render>, peer: Peer, port: number) =>
      r.objects
        .filter((o) => o.kind === 'NetworkPolicy')
        .some((p: Any) => {
          expect(p.spec.podSelector).toEqual({
            matchLabels: find(r, 'StatefulSet').spec.selector.matchLabels,
          });
          expect(p.spec.policyTypes).toEqual(['Ingress']);
          return p.spec.ingress.some((rule: Any) => {
            // An empty `from` or `ports` would admit everyone or every port: never rendered.
            expect(rule.from?.length).toBeGreaterThan(0);
            expect(rule.ports?.length).toBeGreaterThan(0);
            return (
              rule.ports.some((p: Any) => p.port === port && p.protocol === 'TCP') &&
              rule.from.some((f: Any) =>
                f.namespaceSelector
                  ? peer.nsLabels !== undefined && matches(f.namespaceSelector, peer.nsLabels)
                  : f.ipBlock && peer.ip !== undefined && inCidr(peer.ip, f.ipBlock.cidr),
              )
            );
          });
        });
    const r = render({ access: { extraCIDRs: ['192.0.2.0/24'] } });
    const app = { nsLabels: { 'email.bionicaisolutions.com/relay-access': 'true' } };
    const monitoring = { nsLabels: { 'kubernetes.io/metadata.name': 'monitoring' } };
    const other = { nsLabels: { 'kubernetes.io/metadata.name': 'other' } };
    expect(find(r, 'NetworkPolicy', 'postfix-relay-metrics').spec.ingress[0].from).toEqual([
      { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
    ]);
    expect([admits(r, app, 25), admits(r, app, 9090)]).toEqual([true, false]);
    expect([admits(r, monitoring, 25), admits(r, monitoring, 9090)]).toEqual([false, true]);
    expect([admits(r, other, 25), admits(r, other, 9090)]).toEqual([false, false]);
    expect([admits(r, { ip: '192.0.2.7' }, 25), admits(r, { ip: '192.0.2.7' }, 9090)]).toEqual([true, false]);
    expect(admits(r, { ip: '198.51.100.1' }, 25)).toBe(false);
    // Metrics off: the HTTP port (probes) is named by no policy, so no pod may reach it.
    const off = render({ metrics: { enabled: false } });
    expect(find(off, 'StatefulSet').spec.template.spec.containers[0].ports.map((p: Any) => p.name)).toContain(
      'http',
    );
    expect([admits(off, monitoring, 9090), admits(off, app, 9090), admits(off, app, 25)]).toEqual([
      false,
      false,
      true,
    ]);
  });

  it('a PodDisruptionBudget only when replicas > 1', () => {
    expect(find(render(), 'PodDisruptionBudget').spec.maxUnavailable).toBe(1);
    expect(find(render({ replicas: 1 }), 'PodDisruptionBudget')).toBeUndefined();
  });

  it('compiles policies into the relay config in priority order, and they change the hash', () => {
    const policy = (name: string, priority: number) => {
      const p = parsePolicy({
        apiVersion: 'email.bionicaisolutions.com/v1alpha1',
        kind: 'EmailPolicy',
        metadata: { name, namespace: 'email-server-prod' },
        spec: { priority, clientNamespaces: { names: ['team-a'] }, rules: { maxRecipients: 10 } },
      });
      if (!p.ok) throw new Error(p.errors.join());
      return p.policy;
    };
    const r = render({}, [policy('b', 1), policy('a', 2)]);
    const doc = parse(r.configData['relay.yaml']!);
    expect(doc.policies.map((p: { name: string }) => p.name)).toEqual([
      'email-server-prod/b',
      'email-server-prod/a',
    ]);
    expect(doc.policies[0]).toMatchObject({
      match: { namespaces: ['team-a'] },
      rules: { maxRecipients: 10 },
    });
    // What the operator ships is what the relay accepts.
    expect(parseConfig(doc).policies).toHaveLength(2);
    expect(r.configHash).not.toBe(render().configHash);
  });

  it('client attribution (default): the relay enforces the namespace selector itself, with read-only RBAC', () => {
    const r = render();
    expect(r.config.access).toMatchObject({
      allow: [],
      kubernetes: {
        enabled: true,
        namespaceSelector: { matchLabels: { 'email.bionicaisolutions.com/relay-access': 'true' } },
      },
    });
    expect(find(r, 'ServiceAccount').automountServiceAccountToken).toBe(true);
    expect(find(r, 'StatefulSet').spec.template.spec.automountServiceAccountToken).toBe(true);
    // No RBAC object per relay: the attribution controller adds its ServiceAccount to the one binding.
    expect(r.objects.map((o) => o.kind)).not.toContain('ClusterRoleBinding');
  });

  it('without attribution: pod networks admitted, no token', () => {
    const r = render({ access: { attribution: false, extraCIDRs: ['192.0.2.0/24'] } });
    expect(r.config.access.allow).toContain('10.0.0.0/8');
    expect(r.config.access.allow).toContain('192.0.2.0/24');
    expect(r.config.access.kubernetes.enabled).toBe(false);
    expect(find(r, 'ServiceAccount').automountServiceAccountToken).toBe(false);
  });

  it('renders per-sender-domain routes into the relay config, credentials as mounted files', () => {
    const r = render({
      upstream: {
        host: 'smtp-relay.gmail.com',
        port: 587,
        tls: 'starttls',
        routes: [
          {
            senderDomains: ['billing.example.com'],
            host: 'smtp.sendgrid.net',
            port: 465,
            tls: 'implicit',
            credentialsSecretRef: { name: 'sendgrid' },
          },
        ],
      },
    });
    expect(r.config.upstream.routes).toEqual([
      {
        senderDomains: ['billing.example.com'],
        url: 'smtps://smtp.sendgrid.net:465',
        auth: expect.objectContaining({ userFile: '/etc/email-relay/routes/0/username' }),
      },
    ]);
    expect(r.configData['routes.yaml']).toBeUndefined();
  });

  it('uses spec.image over the default image', () => {
    const image = (r: ReturnType<typeof render>) =>
      find(r, 'StatefulSet').spec.template.spec.containers[0].image;
    expect(image(render())).toBe('ghcr.io/x/email-relay:1');
    expect(image(render({ image: 'example.com/relay:2' }))).toBe('example.com/relay:2');
  });
});
