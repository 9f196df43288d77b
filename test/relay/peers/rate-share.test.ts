import { describe, expect, it } from 'vitest';
import type { RelayConfigInput } from '../../../src/config/schema.ts';
import { freePort } from '../../helpers/ports.ts';
import { relaysPerTest, type TestRelay } from '../../helpers/relay.ts';
import { SmtpDialog } from '../../helpers/smtp-dialog.ts';

/**
 * One rate limit for the relay across three real replicas on loopback: clients spread over the
 * three (as a Service spreads connections), one message per connection, at three times the limit.
 */

const startRelay = relaysPerTest();
const LIMIT = 30;
const PERIOD = 30;

async function attempt(relay: TestRelay, n: number): Promise<boolean> {
  const c = await SmtpDialog.open(relay.port);
  try {
    await c.reply();
    await c.cmd('EHLO app.example.com');
    const mail = (await c.cmd('MAIL FROM:<app@bionicaisolutions.com>'))[0] ?? '';
    if (mail.startsWith('450 4.7.1')) return false;
    expect(mail).toMatch(/^250 /);
    await c.cmd(`RCPT TO:<u${n}@example.net>`);
    await c.cmd('DATA');
    expect((await c.cmd(`From: app@bionicaisolutions.com\r\nSubject: ${n}\r\n\r\nx\r\n.`))[0]).toMatch(
      /^250 /,
    );
    return true;
  } finally {
    await c.cmd('QUIT').catch(() => undefined);
  }
}

async function threeRelays(shared: boolean, reportIntervalMs = 200): Promise<TestRelay[]> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const relays: TestRelay[] = [];
  for (const [i, port] of ports.entries()) {
    const input: RelayConfigInput = {
      policies: [
        {
          name: 'team-a',
          rules: { rateLimits: [{ per: 'sender', messages: LIMIT, periodSeconds: PERIOD }] },
        },
      ],
      peers: {
        listen: `127.0.0.1:${port}`,
        addresses: ports.filter((_, j) => j !== i).map((p) => `127.0.0.1:${p}`),
        trust: { networks: ['127.0.0.0/8'] },
        sharedRateLimits: shared,
        reportIntervalMs,
      },
    };
    relays.push(await startRelay(input));
  }
  return relays;
}

/** Three senders, one per replica, each trying a message every 150 ms for 6 s (about 3x the limit). */
async function flood(relays: TestRelay[]): Promise<{ tried: number; accepted: number; perRelay: number[] }> {
  const until = Date.now() + 6000;
  const perRelay = [0, 0, 0];
  let tried = 0;
  await Promise.all(
    relays.map(async (r, i) => {
      for (let n = 0; Date.now() < until; n++) {
        tried++;
        if (await attempt(r, i * 1000 + n)) perRelay[i]!++;
        await new Promise((res) => setTimeout(res, 150));
      }
    }),
  );
  return { tried, accepted: perRelay.reduce((a, b) => a + b, 0), perRelay };
}

describe('rate limits across replicas', () => {
  it(`${LIMIT} messages per ${PERIOD} s holds for three replicas together (peers report their counts every 200 ms)`, async () => {
    const relays = await threeRelays(true);
    const r = await flood(relays);
    console.log(`shared: tried ${r.tried}, accepted ${r.accepted} (${r.perRelay.join('/')}), limit ${LIMIT}`);
    expect(r.tried).toBeGreaterThan(2.5 * LIMIT);
    // Bound: what the other replicas admit within one report interval (plus delay), here ~3.
    expect(r.accepted).toBeGreaterThanOrEqual(LIMIT);
    expect(r.accepted).toBeLessThanOrEqual(LIMIT + 6);
  });

  it('a replica tells its peers of the counts it moved within 50 ms, whatever the report interval (10 s here)', async () => {
    // Every key is reported each interval; the keys just counted go out within 50 ms. With only
    // the interval, each replica would admit up to the limit on its own for the first 10 s.
    const relays = await threeRelays(true, 10_000);
    const r = await flood(relays);
    console.log(
      `prompt reports: tried ${r.tried}, accepted ${r.accepted} (${r.perRelay.join('/')}), limit ${LIMIT}`,
    );
    expect(r.tried).toBeGreaterThan(2.5 * LIMIT);
    expect(r.accepted).toBeGreaterThanOrEqual(LIMIT);
    expect(r.accepted).toBeLessThanOrEqual(LIMIT + 6);
  });

  it('without sharing each replica counts alone: three times the limit gets through (the control)', async () => {
    const relays = await threeRelays(false);
    const r = await flood(relays);
    console.log(
      `per replica: tried ${r.tried}, accepted ${r.accepted} (${r.perRelay.join('/')}), limit ${LIMIT}`,
    );
    expect(r.accepted).toBeGreaterThan(2 * LIMIT);
  });
});
