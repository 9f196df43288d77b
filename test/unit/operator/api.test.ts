import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

// biome-ignore lint/suspicious/noExplicitAny: tests read arbitrary schema fields
type Any = any;

import { parse } from 'yaml';
import { buildCrds, toStructural } from '../../../src/operator/api/crd.ts';
import { emailPolicySpecSchema } from '../../../src/operator/api/emailpolicy.ts';
import { emailRelaySpecSchema } from '../../../src/operator/api/emailrelay.ts';
import { renderRelayConfig } from '../../../src/operator/emailrelay/config.ts';

const minimal = {
  hostname: 'mail.bionicaisolutions.com',
  upstream: { host: 'smtp-relay.gmail.com', port: 587, tls: 'starttls' },
};

describe('EmailRelay spec', () => {
  it("accepts DESIGN.md's smallest relay and defaults everything else", () => {
    const spec = emailRelaySpecSchema.parse(minimal);
    expect(spec.replicas).toBe(2);
    expect(spec.smtp).toEqual({
      port: 25,
      maxMessageSize: 10_240_000,
      maxRecipients: 1000,
      maxClients: 1000,
      addMissingFrom: true,
    });
    expect(spec.access.namespaceSelector).toEqual({
      matchLabels: { 'email.bionicaisolutions.com/relay-access': 'true' },
    });
    expect(spec.queue.persistence).toEqual({ enabled: true, size: '1Gi' });
    expect(spec.queue.retryInitialSeconds).toBe(300);
    expect(spec.queue.retryMaxSeconds).toBe(4000);
    expect(spec.metrics.port).toBe(9090);
  });

  it('refuses a host name Google refuses, and cross-field mistakes (the CEL rules, in zod)', () => {
    expect(emailRelaySpecSchema.safeParse({ ...minimal, hostname: 'localhost' }).success).toBe(false);
    const cleartext = emailRelaySpecSchema.safeParse({
      ...minimal,
      upstream: { ...minimal.upstream, tls: 'opportunistic', credentialsSecretRef: { name: 'gmail' } },
    });
    expect(cleartext.success).toBe(false);
    expect(cleartext.error?.issues[0]?.message).toMatch(/only sent over TLS/);
    const retry = emailRelaySpecSchema.safeParse({
      ...minimal,
      queue: { retryInitialSeconds: 600, retryMaxSeconds: 300 },
    });
    expect(retry.error?.issues[0]?.path).toEqual(['queue', 'retryMaxSeconds']);
    const ports = emailRelaySpecSchema.safeParse({ ...minimal, metrics: { port: 25 } });
    expect(ports.error?.issues[0]?.message).toMatch(/must differ/);
  });

  it('takes reply classes per upstream and route, and renders them into the relay config', () => {
    const spec = emailRelaySpecSchema.parse({
      ...minimal,
      upstream: {
        ...minimal.upstream,
        replyClasses: { rules: [{ reply: 'Mail relay denied', class: 'relay', reason: 'identity' }] },
        routes: [
          {
            senderDomains: ['other.example'],
            host: 'smtp.other.example',
            replyClasses: { profile: 'generic' },
          },
        ],
      },
    });
    const config = renderRelayConfig(spec);
    expect(config.upstream.replyClasses).toEqual({
      profile: 'auto',
      rules: [{ reply: 'Mail relay denied', class: 'relay', reason: 'identity' }],
    });
    expect(config.upstream.routes[0]?.replyClasses).toEqual({ profile: 'generic', rules: [] });
    const noReason = emailRelaySpecSchema.safeParse({
      ...minimal,
      upstream: { ...minimal.upstream, replyClasses: { rules: [{ reply: 'x', class: 'relay' }] } },
    });
    expect(noReason.error?.issues[0]?.message).toMatch(/needs a reason/);
    // A pattern the relay cannot compile is refused when rendering, naming the field.
    const bad = emailRelaySpecSchema.parse({
      ...minimal,
      upstream: { ...minimal.upstream, replyClasses: { rules: [{ reply: '(', class: 'recipient' }] } },
    });
    expect(() => renderRelayConfig(bad)).toThrow(/upstream\.replyClasses\.rules\.0\.reply/);
  });
});

describe('EmailPolicy spec', () => {
  it('parses rules and refuses a recipient both allowed and denied', () => {
    const ok = emailPolicySpecSchema.parse({
      rules: { senders: { domains: ['bionicaisolutions.com'] }, rateLimits: [{ messages: 100 }] },
    });
    expect(ok.relays).toEqual([]);
    expect(ok.rules.rateLimits?.[0]).toEqual({ per: 'namespace', messages: 100, periodSeconds: 60 });
    const bad = emailPolicySpecSchema.safeParse({
      rules: { recipients: { allow: ['@example.com'], deny: ['@example.com'] } },
    });
    expect(bad.success).toBe(false);
  });
});

describe('CRDs', () => {
  const crds = buildCrds();
  const versionOf = (i: number) =>
    (crds[i] as { spec: { versions: Record<string, unknown>[] } }).spec.versions[0] as Record<string, Any>;

  it('are structural: no $ref, no anyOf outside int-or-string, a type everywhere', () => {
    const walk = (node: unknown, path: string): void => {
      if (Array.isArray(node)) {
        node.forEach((n, i) => {
          walk(n, `${path}[${i}]`);
        });
        return;
      }
      if (!node || typeof node !== 'object') return;
      const o = node as Record<string, unknown>;
      expect(o['$ref'], path).toBeUndefined();
      if (o['anyOf']) expect(o['x-kubernetes-int-or-string'], path).toBe(true);
      expect(o['additionalProperties'] === false, path).toBe(false);
      for (const [k, v] of Object.entries(o)) if (k !== 'default' && k !== 'enum') walk(v, `${path}.${k}`);
    };
    for (const i of [0, 1]) walk(versionOf(i)['schema'], `crd${i}`);
  });

  it('carry descriptions, defaults, CEL, status subresource, printer columns and short names', () => {
    const relay = versionOf(0);
    const spec = relay['schema'].openAPIV3Schema.properties.spec;
    expect(spec.required).toEqual(['hostname', 'upstream']);
    expect(spec.properties.hostname.description).toMatch(/FQDN/);
    expect(spec.properties.smtp.properties.port.default).toBe(25);
    expect(spec.properties.queue['x-kubernetes-validations']).toHaveLength(2);
    expect(relay['subresources'].status).toEqual({});
    expect(relay['additionalPrinterColumns'].map((c: { name: string }) => c.name)).toEqual(
      expect.arrayContaining(['Ready', 'Replicas', 'Endpoint', 'Age']),
    );
    expect((crds[0] as Any).spec.names.shortNames).toContain('er');
    expect(
      relay['schema'].openAPIV3Schema.properties.status.properties.conditions['x-kubernetes-list-type'],
    ).toBe('map');
  });

  it('are checked in up to date (npm run crds)', async () => {
    for (const crd of crds) {
      const name = (crd as { metadata: { name: string } }).metadata.name;
      const [plural, ...group] = name.split('.');
      const file = join(import.meta.dirname, '../../../crds', `${group.join('.')}_${plural}.yaml`);
      expect(parse(await readFile(file, 'utf8'))).toEqual(JSON.parse(JSON.stringify(crd)));
    }
  });

  it('toStructural refuses what Kubernetes would', () => {
    expect(() => toStructural({ anyOf: [{ type: 'string' }, { type: 'object' }] })).toThrow(/anyOf/);
    expect(() => toStructural({ $ref: '#/x' })).toThrow(/\$ref/);
  });
});
