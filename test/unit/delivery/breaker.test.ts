import { describe, expect, it } from 'vitest';
import { CircuitBreaker } from '../../../src/relay/delivery/breaker.ts';

function setup(threshold = 3) {
  let now = 1_000_000;
  const events: string[] = [];
  const b = new CircuitBreaker({ threshold, initialMs: 1000, multiplier: 2, maxMs: 5000 }, () => now, {
    onTrip: (until, reason) => events.push(`trip ${until - now} ${reason}`),
    onRecover: () => events.push('recover'),
  });
  return { b, events, advance: (ms: number) => (now += ms), now: () => now };
}

describe('CircuitBreaker', () => {
  it('starts half-open: one probe dials, others wait for it', async () => {
    const { b } = setup();
    expect(b.state()).toBe('half-open');
    expect(b.permit()).toBe('dial');
    expect(b.permit()).toBe('wait');
    const waited = b.settled();
    b.success();
    await waited;
    expect(b.state()).toBe('closed');
    expect(b.permit()).toBe('dial');
    expect(b.permit()).toBe('dial');
  });

  it('a failed probe opens it at once', () => {
    const { b, events } = setup();
    b.permit();
    b.failure('connect ECONNREFUSED');
    expect(b.state()).toBe('open');
    expect(b.permit()).toBe('open');
    expect(b.lastError).toBe('connect ECONNREFUSED');
    expect(events).toEqual(['trip 1000 connect ECONNREFUSED']);
  });

  it('when healthy, opens after `threshold` consecutive failures; a success resets the count', () => {
    const { b } = setup(3);
    b.permit();
    b.success();
    b.failure('x');
    b.failure('x');
    b.success();
    b.failure('x');
    b.failure('x');
    expect(b.state()).toBe('closed');
    b.failure('x');
    expect(b.state()).toBe('open');
  });

  it('backs off exponentially across trips, capped, and lets one probe through after each wait', () => {
    const { b, events, advance, now } = setup();
    for (let i = 0; i < 5; i++) {
      expect(b.permit()).toBe('dial');
      b.failure('down');
      expect(b.permit()).toBe('open');
      advance(b.reopenAt - now());
    }
    expect(events.map((e) => Number(e.split(' ')[1]))).toEqual([1000, 2000, 4000, 5000, 5000]);
  });

  it('dials that were already under way when it opened do not extend the outage', () => {
    const { b, events } = setup(2);
    b.permit();
    b.success();
    b.failure('a');
    b.failure('b');
    b.failure('c');
    b.failure('d');
    expect(events).toHaveLength(1);
  });

  it('reports recovery after an outage, and reset() (flush) allows a probe at once', () => {
    const { b, events, advance } = setup();
    b.permit();
    b.failure('down');
    expect(b.permit()).toBe('open');
    b.reset();
    expect(b.permit()).toBe('dial');
    b.failure('down');
    advance(5000);
    expect(b.permit()).toBe('dial');
    b.success();
    expect(events.at(-1)).toBe('recover');
  });

  it('abandon() releases a probe without a verdict', async () => {
    const { b } = setup();
    expect(b.permit()).toBe('dial');
    const waited = b.settled();
    b.abandon();
    await waited;
    expect(b.permit()).toBe('dial');
  });
});
