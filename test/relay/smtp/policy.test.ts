import { describe, expect, it } from 'vitest';
import type { RelayConfigInput } from '../../../src/config/schema.ts';
import { greetedSession, outboxMessages, relaysPerTest, type TestRelay } from '../../helpers/relay.ts';
import type { SmtpDialog } from '../../helpers/smtp-dialog.ts';

const startRelay = relaysPerTest();
const relayWith = (policies: RelayConfigInput['policies']) => startRelay({ policies });
const session = greetedSession;
async function send(c: SmtpDialog, from: string, to: string[], data: string): Promise<string> {
  const m = await c.cmd(`MAIL FROM:<${from}>`);
  if (!m[0]!.startsWith('250')) return m[0]!;
  for (const t of to) {
    const r = await c.cmd(`RCPT TO:<${t}>`);
    if (!r[0]!.startsWith('250')) return r[0]!;
  }
  await c.cmd('DATA');
  c.write(data);
  return (await c.cmd('.'))[0]!;
}
async function outbox(relay: TestRelay): Promise<string[]> {
  return [...(await outboxMessages(relay, 1)).values()];
}

describe('policies in the relay', () => {
  it('allows only the registered sender domains, for the envelope and the From: header', async () => {
    const relay = await relayWith([
      { name: 'prod/senders', rules: { senders: { domains: ['bionicaisolutions.com'] } } },
    ]);
    const c = await session(relay.port);
    expect(await c.cmd('MAIL FROM:<app@gmail.com>')).toEqual([
      '553 5.7.1 <app@gmail.com>: Sender address rejected: sender app@gmail.com is not allowed (policy prod/senders)',
    ]);
    const r = await send(
      c,
      'app@bionicaisolutions.com',
      ['x@example.com'],
      'From: boss@gmail.com\r\nSubject: s\r\n\r\nb\r\n',
    );
    expect(r).toBe(
      '550 5.7.1 Error: message refused: From: boss@gmail.com is not allowed (policy prod/senders)',
    );
    expect(
      await send(
        c,
        'app@bionicaisolutions.com',
        ['x@example.com'],
        'From: App <app@bionicaisolutions.com>\r\n\r\nb\r\n',
      ),
    ).toMatch(/^250 /);
    c.close();
    const metrics = await relay.metrics.registry.metrics();
    expect(metrics).toContain('smtp_policy_rejections_total{policy="prod/senders",rule="sender"} 1');
    expect(metrics).toContain('smtp_policy_rejections_total{policy="prod/senders",rule="from-header"} 1');
  });

  it('applies recipient deny/allow lists and the smallest recipient and size limits', async () => {
    const relay = await relayWith([
      {
        name: 'a',
        rules: { recipients: { deny: ['@competitor.com'] }, maxRecipients: 5, maxMessageSize: 50_000 },
      },
      { name: 'b', rules: { recipients: { allow: ['@example.com', '@competitor.com'] }, maxRecipients: 2 } },
    ]);
    const c = await session(relay.port);
    await c.cmd('MAIL FROM:<a@example.com>');
    expect((await c.cmd('RCPT TO:<x@competitor.com>'))[0]).toBe(
      '550 5.7.1 <x@competitor.com>: Recipient address rejected: recipient x@competitor.com is denied (policy a)',
    );
    expect((await c.cmd('RCPT TO:<x@elsewhere.net>'))[0]).toBe(
      '550 5.7.1 <x@elsewhere.net>: Recipient address rejected: recipient x@elsewhere.net is not allowed (policy b)',
    );
    expect(await c.cmd('RCPT TO:<r1@example.com>')).toEqual(['250 2.1.5 Ok']);
    expect(await c.cmd('RCPT TO:<r2@example.com>')).toEqual(['250 2.1.5 Ok']);
    expect(await c.cmd('RCPT TO:<r3@example.com>')).toEqual(['452 4.5.3 Error: too many recipients']);
    await c.cmd('DATA');
    c.write(`Subject: big\r\n\r\n${'x'.repeat(998)}\r\n`.repeat(60));
    expect(await c.cmd('.')).toEqual(['552 5.3.4 Message size exceeds fixed limit']);
    expect(await c.cmd('MAIL FROM:<a@example.com> SIZE=60000')).toEqual([
      '552 5.3.4 Message size exceeds fixed limit',
    ]);
    c.close();
  });

  it('rate-limits messages per minute per client with 450 4.7.1, other clients unaffected', async () => {
    const relay = await relayWith([
      { name: 'limits', rules: { rateLimits: [{ per: 'client', messages: 3 }] } },
    ]);
    const c = await session(relay.port);
    for (let i = 0; i < 3; i++)
      expect(await send(c, 'a@example.com', ['b@example.com'], 'Subject: n\r\n\r\nb\r\n')).toMatch(/^250 /);
    expect(await c.cmd('MAIL FROM:<a@example.com>')).toEqual([
      '450 4.7.1 <a@example.com>: Sender address rejected: rate limit exceeded (3 messages per minute for client 127.0.0.1, policy limits); try again later',
    ]);
    c.close();
    const other = await session(relay.port, '127.0.0.2');
    expect(await send(other, 'a@example.com', ['b@example.com'], 'Subject: n\r\n\r\nb\r\n')).toMatch(/^250 /);
    other.close();
  });

  it('rate-limits recipients per day', async () => {
    const relay = await relayWith([
      { name: 'daily', rules: { rateLimits: [{ per: 'sender', recipients: 3, periodSeconds: 86_400 }] } },
    ]);
    const c = await session(relay.port);
    expect(
      await send(c, 'a@example.com', ['r1@example.com', 'r2@example.com'], 'Subject: n\r\n\r\nb\r\n'),
    ).toMatch(/^250 /);
    await c.cmd('MAIL FROM:<a@example.com>');
    expect(await c.cmd('RCPT TO:<r3@example.com>')).toEqual(['250 2.1.5 Ok']);
    expect((await c.cmd('RCPT TO:<r4@example.com>'))[0]).toMatch(
      /^450 4\.7\.1 <r4@example\.com>: Recipient address rejected: rate limit exceeded \(3 recipients per day for sender a@example\.com, policy daily\)/,
    );
    c.close();
  });

  it('rewrites the sender to a registered address and edits headers; bounces keep the null sender', async () => {
    const relay = await relayWith([
      {
        name: 'rewrite',
        rules: {
          rewriteSender: { to: 'noreply@bionicaisolutions.com', rewriteHeaderFrom: true },
          headers: { add: [{ name: 'X-Relay-Policy', value: 'rewrite' }], remove: ['X-Internal-Token'] },
        },
      },
    ]);
    const c = await session(relay.port);
    expect(
      await send(
        c,
        'app@internal.local',
        ['x@example.com'],
        'From: "Billing" <app@internal.local>\r\nX-Internal-Token: s3cret\r\nSubject: s\r\n\r\nbody\r\n',
      ),
    ).toMatch(/^250 /);
    c.close();
    const [eml] = await outbox(relay);
    expect(eml).toContain('X-Envelope-From: <noreply@bionicaisolutions.com>');
    expect(eml).toContain('From: "Billing" <noreply@bionicaisolutions.com>\r\n');
    expect(eml).toContain('X-Original-From: "Billing" <app@internal.local>\r\n');
    expect(eml).toContain('X-Relay-Policy: rewrite\r\n');
    expect(eml).not.toContain('s3cret');
  });

  it('a policy for other clients does not apply', async () => {
    const relay = await relayWith([
      {
        name: 'others',
        match: { clients: ['10.0.0.0/8'] },
        rules: { senders: { domains: ['nowhere.example'] } },
      },
    ]);
    const c = await session(relay.port);
    expect(await send(c, 'a@example.com', ['b@example.com'], 'Subject: n\r\n\r\nb\r\n')).toMatch(/^250 /);
    c.close();
  });
});
