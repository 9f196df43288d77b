import { describe, expect, it } from 'vitest';
import { SessionPlacement } from '../../../src/relay/delivery/placement.ts';

/** Samples `times` times; checks that sample() says true exactly when `local` changes (the log line). */
const feed = (p: SessionPlacement, inFlight: number, times: number) => {
  for (let i = 0; i < times; i++) {
    const before = p.local;
    expect(p.sample(inFlight)).toBe(p.local !== before);
  }
};

describe('SessionPlacement', () => {
  it('keeps sessions on the main thread while one attempt at a time runs', () => {
    const p = new SessionPlacement();
    feed(p, 1, 1000);
    expect(p.local).toBe(true);
    feed(p, 2, 1000); // the next message's attempt overlapping the last one's
    expect(p.local).toBe(true);
  });

  it('moves them to the delivery thread under sustained load, and back once it is quiet again', () => {
    const p = new SessionPlacement();
    feed(p, 20, 10);
    expect(p.local).toBe(false);
    feed(p, 1, 20);
    expect(p.local).toBe(false); // a lull of 20 attempts is not enough
    feed(p, 1, 200);
    expect(p.local).toBe(true);
  });

  it('does not flip for a short burst, nor back and forth between the thresholds', () => {
    const p = new SessionPlacement();
    feed(p, 1, 100);
    feed(p, 30, 1);
    expect(p.local).toBe(true);
    feed(p, 20, 50);
    expect(p.local).toBe(false);
    let flips = 0;
    let last = p.local;
    for (let i = 0; i < 1000; i++) {
      p.sample(i % 2 ? 2 : 3); // averages 2.5: inside the gap
      if (p.local !== last) flips++;
      last = p.local;
    }
    expect(flips).toBeLessThanOrEqual(1);
  });
});
