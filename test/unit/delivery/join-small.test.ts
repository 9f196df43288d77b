import { describe, expect, it } from 'vitest';
import { joinSmall } from '../../../src/relay/delivery/attempt.ts';

const b = (n: number, c = 'x') => Buffer.alloc(n, c);

describe('joinSmall (the pieces of a body as they are written upstream)', () => {
  it('joins a small message into one buffer, byte for byte', () => {
    const parts = [b(120, 'r'), b(400, 'h'), b(0), b(1500, 'b')];
    const out = joinSmall(parts, 16 * 1024);
    expect(out).toHaveLength(1);
    expect(out[0]).toEqual(Buffer.concat(parts));
  });

  it('leaves a large piece whole (the same buffer, not a copy) and joins the small ones around it', () => {
    const big = b(64 * 1024, 'B');
    const parts = [b(100, 'r'), b(300, 'h'), big, b(200, 't'), b(100, 'u')];
    const out = joinSmall(parts, 16 * 1024);
    expect(out.map((x) => x.length)).toEqual([400, 64 * 1024, 300]);
    expect(out[1]).toBe(big);
    expect(Buffer.concat(out)).toEqual(Buffer.concat(parts));
  });

  it('starts a new run when the next piece would take the run past the limit', () => {
    const out = joinSmall([b(10), b(10), b(10)], 25);
    expect(out.map((x) => x.length)).toEqual([20, 10]);
  });
});
