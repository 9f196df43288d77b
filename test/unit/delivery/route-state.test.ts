import { describe, expect, it } from 'vitest';
import { configSchema } from '../../../src/config/schema.ts';
import { RouteGate } from '../../../src/relay/delivery/route-state.ts';

const hold = configSchema.parse({}).upstream.hold; // 60 s x2 up to 900 s; rate 60 s up to 900 s; resume 60 s
const refusal = (reason: 'identity' | 'rate' | 'quota') => ({
  text: '550 5.7.0 Mail relay denied',
  status: '5.7.0',
  reason,
});

function gate() {
  let t = 1_000_000;
  const events: string[] = [];
  const g = new RouteGate(10, hold, () => t, {
    onHold: (until, _r, again) => events.push(`hold ${(until - t) / 1000}${again ? ' again' : ''}`),
    onRelease: () => events.push('release'),
  });
  return { g, events, advance: (s: number) => (t += s * 1000) };
}

describe('route gate', () => {
  it('lets maxConnections attempts through, then parks', () => {
    const { g } = gate();
    for (let i = 0; i < 10; i++) expect(g.admit().kind).toBe('go');
    expect(g.admit().kind).toBe('park');
    g.finished({ accepted: true });
    expect(g.admit().kind).toBe('go');
  });

  it('holds on a relay-level refusal, probes once the hold ends, holds longer when refused again, reopens on success', () => {
    const { g, events, advance } = gate();
    g.admit();
    g.admit();
    g.finished({ refusal: refusal('identity'), accepted: false });
    // The other attempt under way meets the same refusal: the hold is neither restarted nor lengthened.
    g.finished({ refusal: refusal('identity'), accepted: false });
    expect(events).toEqual(['hold 60']);
    expect(g.state()).toBe('held');
    expect(g.admit()).toMatchObject({ kind: 'hold', refusal: { reason: 'identity' } });
    advance(60);
    expect(g.admit().kind).toBe('go'); // the probe
    expect(g.state()).toBe('probing');
    expect(g.admit().kind).toBe('hold'); // one probe at a time
    g.finished({ refusal: refusal('identity'), accepted: false });
    expect(events).toEqual(['hold 60', 'hold 120 again']);
    advance(120);
    expect(g.admit().kind).toBe('go');
    g.finished({ accepted: true });
    expect(events.at(-1)).toBe('release');
    expect(g.state()).toBe('ok');
    expect(g.window()).toBe(10);
  });

  it('an attempt admitted before the hold that is accepted afterwards does not end the hold', () => {
    const { g, events } = gate();
    g.admit();
    g.admit();
    g.finished({ refusal: refusal('rate'), accepted: false });
    g.finished({ accepted: true });
    expect(events).toEqual(['hold 60']);
    expect(g.state()).toBe('backoff');
  });

  it('after a rate back-off resumes with one connection and grows back over resumeSeconds', () => {
    const { g, advance } = gate();
    g.admit();
    g.finished({ refusal: refusal('rate'), accepted: false });
    expect(g.state()).toBe('backoff');
    advance(60);
    expect(g.admit().kind).toBe('go');
    g.finished({ accepted: true });
    expect(g.state()).toBe('resuming');
    expect(g.window()).toBe(1);
    expect(g.admit().kind).toBe('go');
    expect(g.admit().kind).toBe('park');
    g.finished({ accepted: true });
    advance(30);
    expect(g.window()).toBe(5);
    g.dispose();
    advance(30);
    expect(g.window()).toBe(10);
    expect(g.state()).toBe('ok');
  });

  it('quota refusals hold on their own (longer) schedule; the hold never exceeds its maximum', () => {
    const { g, events, advance } = gate();
    g.admit();
    g.finished({ refusal: refusal('quota'), accepted: false });
    for (let i = 0; i < 5; i++) {
      advance(10_000);
      g.admit();
      g.finished({ refusal: refusal('quota'), accepted: false });
    }
    expect(events).toEqual([
      'hold 900',
      'hold 1800 again',
      'hold 3600 again',
      'hold 3600 again',
      'hold 3600 again',
      'hold 3600 again',
    ]);
  });

  it('a preflight refusal holds the route before any attempt; flush ends the hold', () => {
    const { g } = gate();
    g.refuse(refusal('identity'));
    expect(g.admit().kind).toBe('hold');
    g.reset();
    expect(g.admit().kind).toBe('go');
  });
});
