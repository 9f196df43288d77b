import { describe, expect, it } from 'vitest';
import { Networks } from '../../../src/relay/access/networks.ts';

describe('Networks', () => {
  const n = new Networks(['10.0.0.0/8', '192.168.1.7', '::1/128', 'fd00::/8']);
  it.each([
    ['10.1.2.3', true],
    ['::ffff:10.200.0.1', true],
    ['192.168.1.7', true],
    ['192.168.1.8', false],
    ['11.0.0.1', false],
    ['::1', true],
    ['fd12::5', true],
    ['fe80::1', false],
    ['not-an-ip', false],
  ])('%s -> %s', (addr, expected) => {
    expect(n.contains(addr)).toBe(expected);
  });
  it('an empty list admits nobody (never an open relay)', () => {
    expect(new Networks([]).contains('127.0.0.1')).toBe(false);
  });
  it('answers the same from memory, also past the memory limit', () => {
    const m = new Networks(['10.0.0.0/8']);
    for (let round = 0; round < 2; round++)
      for (let i = 0; i < 5000; i++) {
        const addr = `${i % 2 ? 10 : 11}.0.${i >> 8}.${i & 255}`;
        expect(m.contains(addr), addr).toBe(i % 2 === 1);
      }
  });
});
