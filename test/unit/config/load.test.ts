import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfig } from '../../../src/config/load.ts';

async function file(name: string, text: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'email-relay-config-'));
  const p = join(dir, name);
  await writeFile(p, text);
  return p;
}

describe('relay configuration', () => {
  it('has Postfix-like defaults', () => {
    const c = parseConfig({});
    expect(c.smtp.maxMessageSize).toBe(10_240_000);
    expect(c.smtp.maxRecipients).toBe(1000);
    expect(c.upstream.maxConnections).toBe(20);
    expect(c.upstream.maxRecipientsPerTransaction).toBe(100);
    expect(c.queue).toMatchObject({
      retryInitialSeconds: 300,
      retryMaxSeconds: 4000,
      maxLifetimeSeconds: 432_000,
    });
    expect(c.access.allow).toEqual(['127.0.0.0/8', '::1/128']);
    expect(c.smtp.tls).toBeUndefined();
  });

  it('layers file < environment < flags', async () => {
    const p = await file(
      'relay.yaml',
      'hostname: from-file.example.com\nlisten: 127.0.0.1:2600\nsmtp:\n  maxRecipients: 5\n',
    );
    const c = await loadConfig({
      file: p,
      env: { EMAIL_RELAY_LISTEN: '127.0.0.1:2700', EMAIL_RELAY_ALLOW: '10.0.0.0/8, 192.168.0.0/16' },
      flags: { listen: '127.0.0.1:2800', upstream: 'smtps://smtp.example.com:465' },
    });
    expect(c.hostname).toBe('from-file.example.com');
    expect(c.listen).toBe('127.0.0.1:2800');
    expect(c.access.allow).toEqual(['10.0.0.0/8', '192.168.0.0/16']);
    expect(c.upstream.url).toBe('smtps://smtp.example.com:465');
    expect(c.smtp.maxRecipients).toBe(5);
    expect(c.smtp.maxMessageSize).toBe(10_240_000);
  });

  it('reads JSON as well', async () => {
    const p = await file('relay.json', JSON.stringify({ hostname: 'json.example.com' }));
    expect((await loadConfig({ file: p, env: {} })).hostname).toBe('json.example.com');
  });

  it('names every bad field', async () => {
    const p = await file(
      'bad.yaml',
      'smtp:\n  maxMessageSize: -1\naccess:\n  allow: [10.0.0.0/33]\nupstreem: {}\n',
    );
    const err = await loadConfig({ file: p, env: {} }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    expect(msg).toContain('smtp.maxMessageSize');
    expect(msg).toContain('access.allow.0');
    expect(msg).toMatch(/upstreem/);
  });

  it('refuses an upstream URL with an unknown scheme, naming the field', () => {
    expect(() => parseConfig({ upstream: { url: 'http://smtp.example.com' } })).toThrow(/upstream\.url/);
  });

  it("refuses a hostname that is not a FQDN when an upstream is Google's relay, and only then", () => {
    const google = 'smtp+starttls://smtp-relay.gmail.com:587';
    for (const hostname of ['localhost', 'relay-0', '10.0.0.5']) {
      expect(() => parseConfig({ hostname, upstream: { url: google } })).toThrow(
        /hostname: .*not a fully qualified/,
      );
      expect(() =>
        parseConfig({
          hostname,
          upstream: { url: 'smtp://mx.example.com', routes: [{ senderDomains: ['a.example'], url: google }] },
        }),
      ).toThrow(/hostname/);
    }
    expect(parseConfig({ hostname: 'mail.example.com', upstream: { url: google } }).hostname).toBe(
      'mail.example.com',
    );
    // Other smarthosts: a warning at start, not a refusal (default hostname is localhost).
    expect(parseConfig({ upstream: { url: 'smtp://mx.example.com' } }).hostname).toBe('localhost');
  });

  it('reads reply classes per route and refuses a relay-level rule without a reason or with a bad pattern', () => {
    const c = parseConfig({
      upstream: {
        url: 'smtp://mx.example.com',
        replyClasses: { rules: [{ reply: '^554 5\\.7\\.1 ', class: 'relay', reason: 'identity' }] },
        routes: [
          { senderDomains: ['a.example'], url: 'smtp://b.example', replyClasses: { profile: 'google' } },
        ],
      },
    });
    expect(c.upstream.replyClasses.profile).toBe('auto');
    expect(c.upstream.routes[0]?.replyClasses?.profile).toBe('google');
    expect(c.upstream.deadlines).toMatchObject({
      helo: 300,
      mail: 300,
      rcpt: 300,
      dataInit: 120,
      dataXfer: 180,
      dataDone: 600,
      attempt: 600,
    });
    expect(() =>
      parseConfig({ upstream: { replyClasses: { rules: [{ reply: 'x', class: 'relay' }] } } }),
    ).toThrow(/upstream\.replyClasses\.rules\.0\.reason/);
    expect(() =>
      parseConfig({ upstream: { replyClasses: { rules: [{ reply: '(', class: 'recipient' }] } } }),
    ).toThrow(/upstream\.replyClasses\.rules\.0\.reply: expected a regular expression/);
  });

  it('reports unreadable and malformed files clearly', async () => {
    await expect(loadConfig({ file: '/nonexistent/relay.yaml', env: {} })).rejects.toThrow(
      /cannot read config file/,
    );
    const p = await file('broken.yaml', 'hostname: [unclosed\n');
    await expect(loadConfig({ file: p, env: {} })).rejects.toThrow(/not valid YAML/);
  });
});
