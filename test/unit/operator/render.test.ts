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
    /** A pod (namespace, its labels, the pod's labels) or an address outside the cluster. */
    type Peer =
      | { ns: string; nsLabels?: Record<string, string>; pod?: Record<string, string> }
      | { ip: string };
    const matches = (sel: Any, labels: Record<string, string> = {}) =>
      !sel.matchExpressions && Object.entries(sel.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
    const inCidr = (ip: string, cidr: string) => {
      const [base, bits] = cidr.split('/');
      const n = (a: string) => a.split('.').reduce((x, o) => x * 256 + Number(o), 0);
      const mask = 2 ** 32 - 2 ** (32 - Number(bits));
      return (n(ip) & mask) >>> 0 === (n(base ?? '') & mask) >>> 0;
    };
    const peerMatches = (f: Any, peer: Peer) => {
      if ('ip' in peer) return !!f.ipBlock && inCidr(peer.ip, f.ipBlock.cidr);
      if (f.ipBlock) return false;
      const nsLabels = { 'kubernetes.io/metadata.name': peer.ns, ...peer.nsLabels };
      // podSelector alone: pods of the policy's own namespace.
      const nsOk = f.namespaceSelector ? matches(f.namespaceSelector, nsLabels) : peer.ns === relay.namespace;
      return nsOk && (!f.podSelector || matches(f.podSelector, peer.pod));
    };
    const admits = (r: ReturnType<typeof render>, peer: Peer, port: number, protocol = 'TCP') =>
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
              rule.ports.some((p: Any) => p.port === port && p.protocol === protocol) &&
              rule.from.some((f: Any) => peerMatches(f, peer))
            );
          });
        });
    const withOperator = (extra: Record<string, unknown> = {}) =>
      renderRelay({
        relay,
        spec: spec(extra),
        defaultImage: 'ghcr.io/x/email-relay:1',
        policies: [],
        operatorNamespace: 'email-relay-system',
      });
    const r = withOperator({ access: { extraCIDRs: ['192.0.2.0/24'] } });
    const pod = find(r, 'StatefulSet').spec.template.metadata.labels;
    const app: Peer = {
      ns: 'my-app',
      nsLabels: { 'email.bionicaisolutions.com/relay-access': 'true' },
      pod: {},
    };
    const monitoring: Peer = { ns: 'monitoring', pod: {} };
    const other: Peer = { ns: 'other', pod: {} };
    const operator: Peer = {
      ns: 'email-relay-system',
      pod: { 'app.kubernetes.io/name': 'email-relay-operator' },
    };
    const besideOperator: Peer = { ns: 'email-relay-system', pod: { app: 'something-else' } };
    const sibling: Peer = { ns: relay.namespace, pod }; // another pod of this relay (or its drain Job)
    const neighbour: Peer = { ns: relay.namespace, pod: { app: 'not-the-relay' } };
    const otherRelayPod: Peer = { ns: 'other', pod }; // same labels, another namespace
    const ports = (peer: Peer) => [admits(r, peer, 25), admits(r, peer, 9090), admits(r, peer, 2526)];
    //                                   smtp   http   peers
    expect(ports(app)).toEqual([true, false, false]);
    expect(ports(monitoring)).toEqual([false, true, false]);
    expect(ports(operator)).toEqual([false, true, false]);
    expect(ports(besideOperator)).toEqual([false, false, false]);
    expect(ports(sibling)).toEqual([false, false, true]);
    expect(admits(r, sibling, 2526, 'UDP')).toBe(true);
    expect(ports(neighbour)).toEqual([false, false, false]);
    expect(ports(otherRelayPod)).toEqual([false, false, false]);
    expect(ports(other)).toEqual([false, false, false]);
    expect(ports({ ip: '192.0.2.7' })).toEqual([true, false, false]);
    expect(ports({ ip: '198.51.100.1' })).toEqual([false, false, false]);
    // Every port the pod listens on is one of those three.
    const listening = find(r, 'StatefulSet').spec.template.spec.containers.flatMap((c: Any) =>
      c.ports.map((p: Any) => p.containerPort),
    );
    expect([...new Set(listening)].sort()).toEqual([25, 2526, 9090]);
    // Metrics off: the HTTP port admits the operator only (its /summary), no scraper.
    const off = withOperator({ metrics: { enabled: false } });
    expect([admits(off, monitoring, 9090), admits(off, operator, 9090), admits(off, app, 25)]).toEqual([
      false,
      true,
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
