import { describe, expect, it } from 'vitest';
import { ID_LENGTH, IdGenerator, idTime, isQueueId } from '../../../src/relay/spool/ids.ts';

describe('queue ids', () => {
  it('are 16 filesystem-safe uppercase alphanumerics carrying the time', () => {
    const now = Date.UTC(2025, 0, 2, 3, 4, 5, 678);
    const id = new IdGenerator(() => now).next();
    expect(id).toHaveLength(ID_LENGTH);
    expect(id).toMatch(/^[0-9A-Z]{16}$/);
    expect(id).not.toMatch(/[ILOU]/);
    expect(isQueueId(id)).toBe(true);
    expect(idTime(id)).toBe(now);
  });

  it('increase strictly, within a millisecond and when the clock steps back', () => {
    let t = 1_700_000_000_000;
    const clock = [0, 0, 0, 1, 1, -5000, -5000, 2, 0];
    let i = 0;
    const gen = new IdGenerator(() => t + (clock[i++ % clock.length] ?? 0));
    const ids = Array.from({ length: 50_000 }, () => gen.next());
    t += 1;
    for (let k = 1; k < ids.length; k++) expect(ids[k]! > ids[k - 1]!).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('stay ordered when the sequence wraps inside one millisecond', () => {
    const gen = new IdGenerator(() => 1_700_000_000_000, 2 ** 35 - 3);
    const ids = Array.from({ length: 6 }, () => gen.next());
    expect([...ids].sort()).toEqual(ids);
    expect(idTime(ids[5]!)).toBe(1_700_000_000_001);
  });

  it('stay above the newest queued id after a restart with the clock behind', () => {
    const old = new IdGenerator(() => 1_800_000_000_000).next();
    const gen = new IdGenerator(() => 1_700_000_000_000);
    gen.floor(old);
    expect(gen.next() > old).toBe(true);
  });

  it('differ across independent generators in the same millisecond', () => {
    const now = () => 1_700_000_000_000;
    const all = new Set<string>();
    for (let g = 0; g < 100; g++) {
      const gen = new IdGenerator(now);
      for (let k = 0; k < 100; k++) all.add(gen.next());
    }
    expect(all.size).toBe(10_000);
  });

  it('rejects malformed ids', () => {
    for (const s of [
      '',
      'abc',
      '1KQ4Z8M2B000000',
      '1KQ4Z8M2B00000001',
      '1kq4z8m2b0000001',
      '1KQ4Z8M2B000000O',
    ]) {
      expect(isQueueId(s)).toBe(false);
    }
  });
});
