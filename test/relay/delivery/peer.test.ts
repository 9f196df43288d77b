import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { RelayConfigInput } from '../../../src/config/schema.ts';
import { parseDsn } from '../../helpers/dsn-parse.ts';
import { type Harness, makeMessage, startHarness } from './harness.ts';
import { type Peer, type PeerOptions, startPeer } from './peer.ts';

/** Delivery to a scripted smtp-server peer: per-recipient replies, bounces and DSNs, AUTH, TLS. */

const fast = { retryInitialSeconds: 0.2, retryMaxSeconds: 0.5, retryJitter: 0 };

let peer: Peer | undefined;
let h: Harness | undefined;
afterEach(async () => {
  await h?.dispose();
  await peer?.close();
  h = undefined;
  peer = undefined;
});

async function setup(peerOpts: PeerOptions = {}, input: RelayConfigInput = {}) {
  peer = await startPeer(peerOpts);
  h = await startHarness({
    ...input,
    upstream: { url: peer.url, ...input.upstream },
    queue: { ...fast, ...input.queue },
  });
  return { peer, h };
}

describe('per-recipient outcomes', () => {
  it('250 / 451 / 550 in one transaction: sent, retried until sent, bounced with a DSN the sender receives', async () => {
    const { peer, h } = await setup({
      onRcpt: (a, n) => {
        if (a === 'later@example.net' && n === 1) return '451 4.3.0 Try again later';
        if (a === 'gone@example.net') return '550 5.1.1 No such user';
        return undefined;
      },
    });
    const body = makeMessage({ subject: 'Mixed', size: 1500 });
    const msg = await h.submit({
      from: 'app@example.com',
      to: [
        'ok@example.net',
        'later@example.net',
        { address: 'gone@example.net', orcpt: 'rfc822;Gone@Example.NET' },
      ],
      body,
      dsn: { envid: 'ENV-42' },
    });
    await h.waitEmpty();
    // first transaction: ok; retry: later; then the DSN to the sender
    const original = peer.messages.filter((m) => m.from === 'app@example.com');
    expect(original.map((m) => m.to)).toEqual([['ok@example.net'], ['later@example.net']]);
    const dsnMsg = peer.messages.find((m) => m.from === '')!;
    expect(dsnMsg.to).toEqual(['app@example.com']);

    const dsn = parseDsn(dsnMsg.raw);
    expect(dsn.headers.get('from')).toMatch(/^MAILER-DAEMON@mail\.example\.com/);
    expect(dsn.headers.get('content-type')).toMatch(/^multipart\/report; report-type=delivery-status;/);
    expect(dsn.status.message.get('reporting-mta')).toBe('dns; mail.example.com');
    expect(dsn.status.message.get('original-envelope-id')).toBe('ENV-42');
    expect(dsn.status.message.get('x-email-relay-queue-id')).toBe(msg.id);
    expect(dsn.status.recipients).toHaveLength(1);
    expect(Object.fromEntries(dsn.status.recipients[0]!)).toMatchObject({
      'final-recipient': 'rfc822; gone@example.net',
      'original-recipient': 'rfc822; Gone@Example.NET',
      action: 'failed',
      status: '5.1.1',
      'remote-mta': 'dns; 127.0.0.1',
      'diagnostic-code': 'smtp; 550 5.1.1 No such user',
    });
    expect(dsn.original?.headers.get('content-type')).toBe('message/rfc822');
    expect(dsn.original?.body).toBe(body);

    const outcomes = h.attempts().map((l) => [l['outcome'], l['to']]);
    expect(outcomes).toEqual(
      expect.arrayContaining([
        ['sent', ['ok@example.net']],
        ['deferred', ['later@example.net']],
        ['bounced', ['gone@example.net']],
        ['sent', ['later@example.net']],
      ]),
    );
    expect(await h.metric('emails_sent_total', { status: 'success' })).toBe(3); // ok, later, the DSN
    expect(await h.metric('emails_sent_total', { status: 'deferred' })).toBe(1);
    expect(await h.metric('emails_sent_total', { status: 'bounced' })).toBe(1);
    expect(await h.metric('email_bounces_generated_total')).toBe(1);
    expect(await h.metric('email_deliveries_total', { outcome: 'bounced' })).toBe(1);
  });

  it('RET=HDRS returns only the headers (text/rfc822-headers)', async () => {
    const { peer, h } = await setup({
      onRcpt: (a) => (a.startsWith('gone') ? '550 5.1.1 No such user' : undefined),
    });
    const body = makeMessage({ subject: 'Headers only', size: 3000 });
    await h.submit({ to: ['gone@example.net'], body, dsn: { ret: 'HDRS' } });
    await h.waitEmpty();
    const dsn = parseDsn(peer.messages[0]!.raw);
    expect(dsn.original?.headers.get('content-type')).toBe('text/rfc822-headers');
    expect(dsn.original?.body).toBe(body.slice(0, body.indexOf('\r\n\r\n') + 2));
  });

  it('452 (too many recipients / storage) defers, then delivers', async () => {
    const { peer, h } = await setup({
      onRcpt: (a, n) => (a === 'b@example.net' && n === 1 ? '452 4.5.3 Too many recipients' : undefined),
    });
    await h.submit({ to: ['a@example.net', 'b@example.net'] });
    await h.waitEmpty();
    expect(peer.messages.map((m) => m.to)).toEqual([['a@example.net'], ['b@example.net']]);
    expect(h.attempts().find((l) => l['outcome'] === 'deferred')?.['reply']).toMatch(/^452/);
  });

  it('421 at connect defers; the next attempt connects and delivers', async () => {
    const { peer, h } = await setup({
      onConnect: (n) => (n === 1 ? '421 4.7.0 Try again later, closing connection' : undefined),
    });
    await h.submit({ to: ['a@example.net'] });
    await h.waitEmpty();
    expect(peer.messages).toHaveLength(1);
    const first = h.attempts()[0]!;
    expect(first).toMatchObject({ outcome: 'deferred' });
    expect(first['reply']).toMatch(/^421 /);
    expect(peer.connections).toBe(2);
  });

  it('550 to MAIL FROM bounces every recipient (Google: 550 5.7.0 Mail relay denied)', async () => {
    const { peer, h } = await setup({
      onMail: (a) => (a === 'stranger@other.org' ? '550 5.7.0 Mail relay denied' : undefined),
    });
    await h.submit({ from: 'stranger@other.org', to: ['a@example.net', 'b@example.net'] });
    await h.waitFor(() => h!.attempts().length >= 1);
    await h.waitEmpty();
    const dsn = parseDsn(peer.messages.find((m) => m.to[0] === 'stranger@other.org')!.raw);
    expect(dsn.status.recipients.map((r) => [r.get('final-recipient'), r.get('status')])).toEqual([
      ['rfc822; a@example.net', '5.7.0'],
      ['rfc822; b@example.net', '5.7.0'],
    ]);
    expect(dsn.human.replace(/\s+/g, ' ')).toContain(
      'said: 550 5.7.0 Mail relay denied (in reply to MAIL FROM command)',
    );
  });

  it('expires after maxLifetimeSeconds: bounced with the last reply, status 4.4.7', async () => {
    const { peer, h } = await setup(
      { onRcpt: (a) => (a === 'slow@example.net' ? '451 4.3.0 Mailbox busy' : undefined) },
      // 2 s at 0.2-0.5 s back-off: room for the 3 deferred attempts asserted below on a loaded machine.
      { queue: { ...fast, maxLifetimeSeconds: 2 } },
    );
    const msg = await h.submit({ from: 'app@example.com', to: ['slow@example.net'] });
    await h.waitEmpty(15_000);
    const dsnMsg = peer.messages.find((m) => m.from === '')!;
    const dsn = parseDsn(dsnMsg.raw);
    expect(Object.fromEntries(dsn.status.recipients[0]!)).toMatchObject({
      action: 'failed',
      status: '4.4.7',
      'diagnostic-code': 'smtp; 451 4.3.0 Mailbox busy',
    });
    expect(h.logs.some((l) => l.msg === 'message expired: giving up' && l['queueId'] === msg.id)).toBe(true);
    expect(await h.metric('email_deliveries_total', { outcome: 'expired' })).toBe(1);
    const attempts = h.attempts().filter((l) => l['queueId'] === msg.id);
    expect(attempts.length).toBeGreaterThanOrEqual(3);
    expect(attempts.every((l) => l['outcome'] === 'deferred')).toBe(true);
  });

  it('NOTIFY=NEVER: a bounced recipient yields no DSN', async () => {
    const { peer, h } = await setup({ onRcpt: () => '550 5.1.1 No such user' });
    await h.submit({ to: [{ address: 'gone@example.net', notify: ['NEVER'] }] });
    await h.waitEmpty();
    await new Promise((r) => setTimeout(r, 300));
    expect(peer.messages).toEqual([]);
    expect(await h.metric('email_bounces_generated_total')).toBe(0);
    expect(await h.metric('email_deliveries_total', { outcome: 'bounced' })).toBe(1);
  });

  it('a bounce that fails is dropped after bounceLifetimeSeconds, never bounced', async () => {
    const { peer, h } = await setup(
      { onRcpt: () => '451 4.3.0 Not now' },
      { queue: { ...fast, bounceLifetimeSeconds: 1 } },
    );
    await h.submit({ from: '', to: ['someone@example.net'], isBounce: true });
    await h.waitEmpty(10_000);
    expect(peer.messages).toEqual([]);
    expect(
      h.logs.some((l) => l.msg === 'undeliverable notification dropped (a bounce is never bounced)'),
    ).toBe(true);
    expect(await h.metric('email_bounces_generated_total')).toBe(0);
  });
});

describe('upstream authentication and TLS', () => {
  it.each(['PLAIN', 'LOGIN'] as const)(
    'AUTH %s with the password from a file, re-read for new connections',
    async (method) => {
      const secrets = await mkdtemp(join(tmpdir(), 'delivery-secret-'));
      const passwordFile = join(secrets, 'password');
      await writeFile(passwordFile, 's3cret\n');
      let password = 's3cret';
      try {
        const { peer, h } = await setup(
          {
            authMethods: ['PLAIN', 'LOGIN'],
            checkAuth: (a) => a.username === 'relay@example.com' && a.password === password,
          },
          {
            upstream: {
              maxMessagesPerConnection: 1,
              auth: { method, user: 'relay@example.com', passwordFile },
            },
          },
        );
        await h.submit({ to: ['a@example.net'] });
        await h.waitEmpty();
        // The Secret is rotated: the next connection logs in with the new password.
        password = 'rotated';
        await writeFile(passwordFile, 'rotated\n');
        await h.submit({ to: ['b@example.net'] });
        await h.waitEmpty();
        expect(peer.auths.map((a) => [a.method, a.username, a.password])).toEqual([
          [method, 'relay@example.com', 's3cret'],
          [method, 'relay@example.com', 'rotated'],
        ]);
        expect(peer.messages.map((m) => m.user)).toEqual(['relay@example.com', 'relay@example.com']);
      } finally {
        await rm(secrets, { recursive: true, force: true });
      }
    },
  );

  it('AUTH XOAUTH2 with the access token from EMAIL_RELAY_UPSTREAM_PASSWORD', async () => {
    peer = await startPeer({
      authMethods: ['XOAUTH2'],
      checkAuth: (a) =>
        a.method === 'XOAUTH2' && a.username === 'relay@example.com' && a.accessToken === 'ya29.token',
    });
    process.env['EMAIL_RELAY_UPSTREAM_USER'] = 'relay@example.com';
    process.env['EMAIL_RELAY_UPSTREAM_PASSWORD'] = 'ya29.token';
    try {
      h = await startHarness({ upstream: { url: peer.url, auth: { method: 'XOAUTH2' } }, queue: fast });
      await h.submit({ to: ['a@example.net'] });
      await h.waitEmpty();
    } finally {
      delete process.env['EMAIL_RELAY_UPSTREAM_USER'];
      delete process.env['EMAIL_RELAY_UPSTREAM_PASSWORD'];
    }
    expect(peer.messages).toHaveLength(1);
    expect(peer.auths).toEqual([
      { method: 'XOAUTH2', username: 'relay@example.com', accessToken: 'ya29.token' },
    ]);
  });

  it('a refused login defers the mail (credentials may be rotated) and trips no bounce', async () => {
    const { peer, h } = await setup(
      { checkAuth: () => false },
      { upstream: { auth: { method: 'PLAIN', user: 'u' } } },
    );
    process.env['EMAIL_RELAY_UPSTREAM_PASSWORD'] = 'wrong';
    try {
      await h.submit({ to: ['a@example.net'] });
      await h.waitFor(() => h!.attempts().length > 0);
    } finally {
      delete process.env['EMAIL_RELAY_UPSTREAM_PASSWORD'];
    }
    expect(h.attempts()[0]).toMatchObject({ outcome: 'deferred' });
    expect(h.attempts()[0]!['reply']).toMatch(/^535 /);
    expect(peer.messages).toEqual([]);
    expect(await h.metric('email_bounces_generated_total')).toBe(0);
  });

  it('STARTTLS when offered (smtp://), then AUTH over the encrypted session', async () => {
    const { peer, h } = await setup(
      { starttls: true, checkAuth: (a) => a.password === 'pw' },
      { upstream: { tlsRejectUnauthorized: false, auth: { method: 'PLAIN', user: 'u' } } },
    );
    process.env['EMAIL_RELAY_UPSTREAM_PASSWORD'] = 'pw';
    try {
      await h.submit({ to: ['a@example.net'] });
      await h.waitEmpty();
    } finally {
      delete process.env['EMAIL_RELAY_UPSTREAM_PASSWORD'];
    }
    expect(peer.messages).toHaveLength(1);
  });

  it('smtps:// (implicit TLS); an untrusted certificate defers unless tlsRejectUnauthorized is false', async () => {
    peer = await startPeer({ secure: true });
    h = await startHarness({ upstream: { url: peer.url }, queue: fast });
    await h.submit({ to: ['a@example.net'] });
    await h.waitFor(() => h!.attempts().length > 0);
    expect(h.attempts()[0]).toMatchObject({ outcome: 'deferred', status: '4.7.5' });
    expect(h.attempts()[0]!['reply']).toMatch(/certificate/i);
    await h.dispose();
    h = await startHarness({ upstream: { url: peer.url, tlsRejectUnauthorized: false }, queue: fast });
    await h.submit({ to: ['b@example.net'] });
    await h.waitEmpty();
    expect(peer.messages.map((m) => m.to)).toEqual([['b@example.net']]);
  });

  it('EHLO uses the configured hostname', async () => {
    const { peer, h } = await setup({}, { hostname: 'relay.prod.example.com' });
    await h.submit({ to: ['a@example.net'] });
    await h.waitEmpty();
    expect(peer.ehloNames).toEqual(['relay.prod.example.com']);
  });
});
