import { describe, expect, it } from 'vitest';
import { greetedSession, relaysPerTest } from '../../helpers/relay.ts';

// smtp_rejections_total{reason} takes the reason the refusal carries, not a guess from its text:
// a policy's 553 is "policy", a rate limit's 450 is "rate", a relay denial is "relay_denied".
const startRelay = relaysPerTest();

async function rejections(relay: Awaited<ReturnType<typeof startRelay>>): Promise<Record<string, number>> {
  const text = await relay.metrics.registry.metrics();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^smtp_rejections_total\{reason="([^"]+)"\} (\d+)$/gm))
    out[m[1]!] = Number(m[2]);
  return out;
}

describe('rejection metric reasons', () => {
  it('counts policy, rate, size, recipient and access refusals under their own reasons', async () => {
    const relay = await startRelay({
      access: { allow: ['127.0.0.1/32'] },
      policies: [
        {
          name: 'p',
          rules: {
            senders: { domains: ['example.com'] },
            recipients: { deny: ['@blocked.example'] },
            maxMessageSize: 10_000,
            rateLimits: [{ per: 'client', messages: 1 }],
          },
        },
      ],
    });
    const c = await greetedSession(relay.port);
    expect((await c.cmd('MAIL FROM:<a@gmail.com>'))[0]).toMatch(/^553 5\.7\.1 /);
    expect((await c.cmd('MAIL FROM:<a@example.com> SIZE=20000'))[0]).toMatch(/^552 5\.3\.4 /);
    expect((await c.cmd('MAIL FROM:<a@example.com>'))[0]).toMatch(/^250 /);
    expect((await c.cmd('RCPT TO:<x@blocked.example>'))[0]).toMatch(/^550 5\.7\.1 /);
    expect((await c.cmd('RCPT TO:<x@example.org>'))[0]).toMatch(/^250 /);
    await c.cmd('DATA');
    c.write('Subject: s\r\n\r\nb\r\n');
    expect((await c.cmd('.'))[0]).toMatch(/^250 /);
    expect((await c.cmd('MAIL FROM:<a@example.com>'))[0]).toMatch(/^450 4\.7\.1 /);
    c.close();
    // a client outside access.allow: relay access denied
    const other = await greetedSession(relay.port, '127.0.0.2');
    await other.cmd('MAIL FROM:<a@example.com>');
    expect((await other.cmd('RCPT TO:<x@example.org>'))[0]).toMatch(/^554 5\.7\.1 /);
    other.close();
    expect(await rejections(relay)).toEqual({ policy: 2, size: 1, rate: 1, relay_denied: 1 });
  });
});
