import { describe, expect, it } from 'vitest';
import { configSchema } from '../../../src/config/schema.ts';
import { delayWarningDue, lifetimeMs, nextStep, retryDelayMs } from '../../../src/relay/delivery/schedule.ts';

const policy = configSchema.parse({}).queue;
const noJitter = { ...policy, retryJitter: 0 };
const DAY = 86_400_000;

describe('retryDelayMs', () => {
  it('doubles from 300 s and caps at 4000 s (Postfix defaults)', () => {
    const delays = [1, 2, 3, 4, 5, 6, 10].map((n) => retryDelayMs(n, noJitter) / 1000);
    expect(delays).toEqual([300, 600, 1200, 2400, 4000, 4000, 4000]);
  });

  it('treats attempt 0 like attempt 1', () => {
    expect(retryDelayMs(0, noJitter)).toBe(300_000);
  });

  it('spreads by at most the jitter fraction either way', () => {
    const p = { ...policy, retryJitter: 0.1 };
    expect(retryDelayMs(1, p, 0)).toBe(270_000);
    expect(retryDelayMs(1, p, 0.5)).toBe(300_000);
    expect(retryDelayMs(1, p, 1)).toBe(330_000);
    for (let i = 0; i < 100; i++) {
      const d = retryDelayMs(3, p);
      expect(d).toBeGreaterThanOrEqual(1_080_000);
      expect(d).toBeLessThanOrEqual(1_320_000);
    }
  });

  it('honours a custom multiplier and sub-second delays (tests)', () => {
    const p = { ...noJitter, retryInitialSeconds: 0.2, retryMultiplier: 3, retryMaxSeconds: 1 };
    expect([1, 2, 3].map((n) => retryDelayMs(n, p))).toEqual([200, 600, 1000]);
  });
});

describe('nextStep', () => {
  const msg = { from: 'a@example.com', receivedAt: 0, attempts: 1 };

  it('retries after the backoff', () => {
    expect(nextStep(msg, 1000, noJitter, 0.5)).toEqual({ kind: 'retry', at: 301_000 });
  });

  it('expires once the message is older than maxLifetimeSeconds (5 days)', () => {
    expect(nextStep(msg, 5 * DAY - 1, noJitter).kind).toBe('retry');
    expect(nextStep(msg, 5 * DAY, noJitter)).toEqual({ kind: 'expire' });
  });

  it('clips the last retry to the expiry time', () => {
    const m = { ...msg, attempts: 20 };
    expect(nextStep(m, 5 * DAY - 10_000, noJitter)).toEqual({ kind: 'retry', at: 5 * DAY });
  });

  it('uses bounceLifetimeSeconds for bounces and null-sender mail', () => {
    const p = { ...noJitter, bounceLifetimeSeconds: 60 };
    expect(nextStep({ ...msg, isBounce: true }, 60_000, p)).toEqual({ kind: 'expire' });
    expect(nextStep({ ...msg, from: '' }, 60_000, p)).toEqual({ kind: 'expire' });
    expect(nextStep(msg, 60_000, p).kind).toBe('retry');
    expect(lifetimeMs({ from: '' }, p)).toBe(60_000);
  });

  it('does not retry before notBefore (an open circuit breaker)', () => {
    expect(nextStep(msg, 1000, noJitter, 0.5, 900_000)).toEqual({ kind: 'retry', at: 900_000 });
  });
});

describe('delayWarningDue', () => {
  const p = { ...policy, delayWarningSeconds: 3600 };
  it('is off when delayWarningSeconds is 0 (the default)', () => {
    expect(delayWarningDue({ receivedAt: 0 }, {}, DAY, policy)).toBe(false);
  });
  it('fires once, after the configured time, for NOTIFY unset or containing DELAY', () => {
    expect(delayWarningDue({ receivedAt: 0 }, {}, 3_599_000, p)).toBe(false);
    expect(delayWarningDue({ receivedAt: 0 }, {}, 3_600_000, p)).toBe(true);
    expect(delayWarningDue({ receivedAt: 0 }, { notify: ['DELAY'] }, 3_600_000, p)).toBe(true);
    expect(delayWarningDue({ receivedAt: 0 }, { notify: ['FAILURE'] }, 3_600_000, p)).toBe(false);
    expect(delayWarningDue({ receivedAt: 0 }, { notify: ['NEVER'] }, 3_600_000, p)).toBe(false);
    expect(delayWarningDue({ receivedAt: 0 }, { delayNotified: true }, 3_600_000, p)).toBe(false);
  });
});
