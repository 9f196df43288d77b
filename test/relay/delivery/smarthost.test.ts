import { afterEach, describe, expect, it } from 'vitest';
import type { RelayConfigInput } from '../../../src/config/schema.ts';
import { type GoogleSink, startGoogleSink } from '../../helpers/google-sink.ts';
import { type Harness, startHarness } from './harness.ts';

/**
 * Delivery through a smarthost that answers like Google's relay (test/helpers/google-sink.ts):
 * relay-level refusals hold the route and bounce nothing, rate refusals back the route off, a
 * bad EHLO name is caught by the preflight. Times are scaled down: "an hour" of "relay denied"
 * is a few seconds against a lifetime of minutes.
 */

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function sink(): Promise<GoogleSink> {
  const s = await startGoogleSink();
  closers.push(() => s.close());
  return s;
}

async function harness(input: RelayConfigInput): Promise<Harness> {
  const h = await startHarness(input);
  closers.push(() => h.dispose());
  return h;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Google's profile is picked for *.gmail.com; the loopback sink needs it named. */
const GOOGLE = { replyClasses: { profile: 'google' as const } };

describe('relay-level refusals hold the route', () => {
  it('550 5.7.0 "Mail relay denied" for a while, then accepted: nothing bounced, everything delivered', async () => {
    const g = await sink();
    g.mode.relayDenied = true;
    const h = await harness({
      upstream: {
        url: g.url,
        ...GOOGLE,
        maxConnections: 4,
        hold: { initialSeconds: 0.3, maxSeconds: 0.6 },
      },
      queue: { retryInitialSeconds: 0.2, retryMaxSeconds: 0.4, maxLifetimeSeconds: 120 },
    });
    const many = Array.from({ length: 150 }, (_, i) => `user${i}@example.net`);
    await h.submit({ to: many }); // two transactions of 100 and 50
    for (let i = 0; i < 29; i++) await h.submit({ to: [`rcpt${i}@example.net`] });

    await h.waitFor(() => h.agent.routeStates()[0]?.health.state === 'held', 15_000, 'the route held');
    const summary = h.agent.routeStates()[0]!.health;
    expect(summary.lastRefusal).toMatchObject({ code: 550, status: '5.7.0', reason: 'identity' });
    expect(summary.lastRefusal?.text).toMatch(/^550 5\.7\.0 Mail relay denied \[127\.0\.0\.1\]/);
    expect(
      await h.metric('email_upstream_state', { route: h.agent.routeStates()[0]!.name, state: 'held' }),
    ).toBe(1);
    expect(
      await h.metric('email_upstream_state', { route: h.agent.routeStates()[0]!.name, state: 'ok' }),
    ).toBe(0);
    const line = h.logs.find((l) => /refuses this relay/.test(String(l.msg)));
    expect(line?.['reply']).toMatch(/Mail relay denied/);
    expect(line?.['reason']).toBe('identity');

    // "The hour" of refusals; the route probes on its own schedule meanwhile.
    await sleep(3000);
    const duringHold = g.transactions.length;
    expect(h.agent.routeStates()[0]!.health.held).toBeGreaterThan(0);
    g.mode.relayDenied = false;
    await h.waitEmpty(30_000);

    // Google takes at most 100 recipients per transaction (the sink answers 452 4.5.3 past that).
    expect(Math.max(...g.messages.map((m) => m.to.length))).toBe(100);
    const delivered = g.messages.flatMap((m) => m.to);
    expect(new Set(delivered).size).toBe(150 + 29);
    expect(await h.metric('email_bounces_generated_total')).toBe(0);
    expect(await h.metric('email_deliveries_total', { outcome: 'sent' })).toBe(30);
    expect(await h.metric('email_deliveries_total', { outcome: 'bounced' })).toBe(0);
    expect(h.agent.routeStates()[0]!.health.state).toBe('ok');
    // Held, the route probes; it does not try every message on every retry (30 messages with
    // retries every 0.2-0.4 s for 3 s would be well over 200 transactions).
    expect(duringHold).toBeLessThan(60);
    console.log(
      `relay denied for ~3 s: ${duringHold} transactions while held (30 messages, 179 recipients), ` +
        `${g.messages.length} delivered, 0 bounced`,
    );
  }, 60_000);

  it('without the Google table the same refusal bounces at once (the behaviour this replaces)', async () => {
    const g = await sink();
    g.mode.relayDenied = true;
    const h = await harness({
      upstream: { url: g.url, replyClasses: { profile: 'generic' } },
      queue: { retryInitialSeconds: 0.2 },
    });
    await h.submit({ to: ['a@example.net'] });
    await h.waitEmpty();
    expect(await h.metric('email_bounces_generated_total')).toBe(1);
  });

  it("a rule of the route's own makes any reply relay-level", async () => {
    const g = await sink();
    g.mode.relayDenied = true;
    const h = await harness({
      upstream: {
        url: g.url,
        replyClasses: {
          profile: 'generic',
          rules: [{ reply: 'Mail relay denied', class: 'relay', reason: 'identity' }],
        },
        hold: { initialSeconds: 60 },
      },
    });
    await h.submit({ to: ['a@example.net'] });
    await h.waitFor(() => h.agent.routeStates()[0]?.health.state === 'held', 15_000, 'held');
    expect(await h.metric('email_deliveries_total', { outcome: 'bounced' })).toBe(0);
    expect(h.spool.stats().messages).toBe(1);
  });

  it('550 5.4.5 daily limit holds on the quota schedule and bounces nothing', async () => {
    const g = await sink();
    g.mode.dailyLimit = true;
    const h = await harness({
      upstream: { url: g.url, ...GOOGLE, hold: { quotaInitialSeconds: 0.5, quotaMaxSeconds: 1 } },
      queue: { retryInitialSeconds: 0.2 },
    });
    for (let i = 0; i < 5; i++) await h.submit({ to: [`q${i}@example.net`] });
    await h.waitFor(() => h.agent.routeStates()[0]?.health.state === 'held', 15_000, 'held');
    expect(h.agent.routeStates()[0]!.health.lastRefusal).toMatchObject({ status: '5.4.5', reason: 'quota' });
    g.mode.dailyLimit = false;
    await h.waitEmpty(20_000);
    expect(g.messages).toHaveLength(5);
    expect(await h.metric('email_bounces_generated_total')).toBe(0);
  });

  it("a message past its lifetime while the route is held is bounced then, with the upstream's words", async () => {
    const g = await sink();
    g.mode.relayDenied = true;
    const h = await harness({
      upstream: { url: g.url, ...GOOGLE, hold: { initialSeconds: 0.2, maxSeconds: 0.2 } },
      queue: { retryInitialSeconds: 0.2, retryMaxSeconds: 0.2, maxLifetimeSeconds: 1.5 },
    });
    await h.submit({ to: ['late@example.net'] });
    await h.waitFor(
      async () => (await h.metric('email_deliveries_total', { outcome: 'expired' })) === 1,
      20_000,
    );
    const dsn = h.logs.find((l) => l.msg === 'delivery status notification queued');
    expect(dsn?.['action']).toBe('failed');
  });
});

describe('rate refusals back the route off', () => {
  it('450 4.2.1 peak-limit bursts: the relay pauses and resumes slowly instead of hammering', async () => {
    const run = async (profile: 'google' | 'generic') => {
      const g = await sink();
      g.mode.peakLimit = { messages: 20, penaltyMs: 1500 };
      const h = await harness({
        upstream: {
          url: g.url,
          replyClasses: { profile },
          maxConnections: 10,
          hold: { rateInitialSeconds: 0.5, rateMaxSeconds: 2, resumeSeconds: 1 },
        },
        queue: { retryInitialSeconds: 0.25, retryMaxSeconds: 1, retryJitter: 0.1 },
      });
      const started = Date.now();
      for (let i = 0; i < 120; i++) await h.submit({ to: [`r${i}@example.net`] });
      await h.waitEmpty(90_000);
      const refused = g.refusals.filter((r) => /^450[ -]4\.2\.1/.test(r.reply)).length;
      return {
        transactions: g.transactions.length,
        connections: g.connections.length,
        refused,
        delivered: g.messages.length,
        seconds: (Date.now() - started) / 1000,
        bounced: await h.metric('email_bounces_generated_total'),
      };
    };
    const backoff = await run('google');
    const hammer = await run('generic');
    console.log(
      `120 messages, peak limit 20 then 1.5 s of 450 4.2.1: back-off ${JSON.stringify(backoff)}; ` +
        `per-message retries ${JSON.stringify(hammer)}`,
    );
    expect(backoff.delivered).toBe(120);
    expect(backoff.bounced).toBe(0);
    expect(hammer.delivered).toBe(120);
    // Every refused transaction is one the upstream counts against us; backing off sends far fewer.
    expect(backoff.refused * 2).toBeLessThan(hammer.refused);
  }, 120_000);
});

describe('deadlines: a tarpit defers, the other route keeps delivering', () => {
  it('an upstream trickling its replies byte by byte is cut off by the command deadline; another route delivers meanwhile', async () => {
    const tarpit = await sink();
    tarpit.mode.tarpitMs = 100; // 10 bytes a second; the EHLO reply alone takes ~15 s
    tarpit.mode.tarpitAfter = 1; // the greeting comes at once
    const good = await sink();
    const h = await harness({
      upstream: {
        url: good.url,
        routes: [{ senderDomains: ['slow.example'], url: tarpit.url }],
        maxConnections: 2,
        deadlines: { helo: 3, attempt: 8 },
      },
      queue: { retryInitialSeconds: 60 },
    });
    for (let i = 0; i < 6; i++) await h.submit({ from: `app@slow.example`, to: [`t${i}@example.net`] });
    for (let i = 0; i < 40; i++) await h.submit({ from: 'app@fast.example', to: [`f${i}@example.net`] });

    // Every slow message is deferred by a deadline, none delivered, none bounced...
    await h.waitFor(
      () =>
        h.attempts().filter((l) => l['outcome'] === 'deferred' && String(l['from']).endsWith('slow.example'))
          .length >= 6,
      30_000,
      'the tarpit route deferred',
    );
    // ...while the other route got everything through.
    await h.waitFor(() => good.messages.length === 40, 30_000, 'the other route delivered');
    // Meanwhile, not after: the first fast message went out while the tarpit still held its
    // sessions (the slow messages came first, and their deadline is 3 s).
    const firstSlowDeferral = Math.min(
      ...h
        .attempts()
        .filter((l) => l['outcome'] === 'deferred')
        .map((l) => Number(l['time'])),
    );
    expect(good.messages[0]!.at).toBeLessThan(firstSlowDeferral);
    const deferred = h.attempts().filter((l) => l['outcome'] === 'deferred');
    expect(deferred.some((l) => /upstream\.deadlines\.helo/.test(String(l['reply'])))).toBe(true);
    expect(tarpit.messages).toHaveLength(0);
    expect(await h.metric('email_bounces_generated_total')).toBe(0);
    // Two slow sessions at most were ever open: the tarpit never took the other route's connections,
    // and after a few deadlines its breaker stopped dialing it.
    expect(tarpit.connections.length).toBeLessThanOrEqual(4);
    expect(h.agent.routeStates().find((r) => r.name.endsWith(String(tarpit.port)))?.health.state).toBe(
      'unreachable',
    );
    console.log(
      `tarpit (10 B/s): ${tarpit.connections.length} connections, 6 messages deferred by deadlines, 0 delivered; ` +
        `other route: ${good.messages.length} delivered meanwhile`,
    );
  }, 60_000);

  it('the whole-attempt deadline cuts off an upstream whose every reply is just in time', async () => {
    const tarpit = await sink();
    tarpit.mode.tarpitMs = 30; // each reply in well under a second, the EHLO reply in ~4 s
    const h = await harness({
      upstream: { url: tarpit.url, deadlines: { helo: 60, attempt: 2 } },
      queue: { retryInitialSeconds: 60 },
    });
    await h.submit({ to: ['x@example.net'] });
    await h.waitFor(() => h.attempts().some((l) => l['outcome'] === 'deferred'), 20_000, 'a deferral');
    const line = h.attempts().find((l) => l['outcome'] === 'deferred')!;
    expect(line['reply']).toMatch(/did not finish within 2 s \(upstream\.deadlines\.attempt\)/);
    expect(line['status']).toBe('4.4.2');
    expect(await h.metric('email_upstream_timeouts_total')).toBeGreaterThanOrEqual(1);
  });
});

describe('preflight', () => {
  it('at start: EHLO with the configured name, QUIT; reported in the metric and the route health', async () => {
    const g = await sink();
    const h = await harness({ upstream: { url: g.url, ...GOOGLE, preflight: true } });
    await h.waitFor(() => h.agent.routeStates()[0]?.health.preflight !== undefined, 15_000, 'the preflight');
    expect(h.agent.routeStates()[0]!.health.preflight).toMatchObject({ ok: true });
    expect(await h.metric('email_upstream_preflight_ok', { route: h.agent.routeStates()[0]!.name })).toBe(1);
    expect(g.ehloNames).toEqual(['mail.example.com']);
    expect(g.transactions).toHaveLength(0);
  });

  it("a 421 to a generic EHLO name holds the route before any message meets it, in the upstream's words", async () => {
    const g = await sink();
    const h = await harness({
      hostname: 'relay-0',
      upstream: { url: g.url, ...GOOGLE, preflight: true, hold: { initialSeconds: 60 } },
    });
    await h.waitFor(() => h.agent.routeStates()[0]?.health.state === 'held', 15_000, 'held by the preflight');
    const health = h.agent.routeStates()[0]!.health;
    expect(health.preflight).toMatchObject({ ok: false });
    expect(health.lastRefusal).toMatchObject({ code: 421, status: '4.7.0', reason: 'config' });
    expect(health.lastRefusal?.text).toMatch(/^421 4\.7\.0 Try again later, closing connection\. \(EHLO\)/);
    const line = h.logs.find((l) => /^preflight failed/.test(String(l.msg)));
    expect(line?.['hint']).toMatch(/hostname/);
    expect(await h.metric('email_upstream_preflight_ok', { route: h.agent.routeStates()[0]!.name })).toBe(0);
    // Mail for the route waits without dialing.
    await h.submit({ to: ['a@example.net'] });
    await h.waitFor(() => h.attempts().some((l) => l['outcome'] === 'deferred'), 10_000, 'a deferral');
    expect(g.connections).toHaveLength(1);
    expect(h.spool.stats().messages).toBe(1);
  });

  it('a route held by the preflight with no mail waiting probes with another preflight when the hold ends', async () => {
    const g = await sink();
    g.mode.badEhlo = true;
    const h = await harness({
      upstream: { url: g.url, ...GOOGLE, preflight: true, hold: { initialSeconds: 0.3, maxSeconds: 0.3 } },
    });
    await h.waitFor(() => h.agent.routeStates()[0]?.health.state === 'held', 15_000, 'held by the preflight');
    g.mode.badEhlo = false; // fixed (a registered IP, a rotated Secret) without a restart
    await h.waitFor(() => h.agent.routeStates()[0]?.health.state === 'ok', 15_000, 'released by a preflight');
    expect(h.agent.routeStates()[0]!.health.preflight).toMatchObject({ ok: true });
    expect(g.transactions).toHaveLength(0);
  });
});
