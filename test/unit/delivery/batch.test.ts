import { describe, expect, it } from 'vitest';
import { batchRecipients, effectiveOrcpt } from '../../../src/relay/delivery/batch.ts';
import type { RecipientInput } from '../../../src/relay/spool/types.ts';

const rcpts = (n: number, extra: Partial<RecipientInput> = {}): RecipientInput[] =>
  Array.from({ length: n }, (_, i) => ({ address: `u${i}@example.com`, ...extra }));

describe('batchRecipients', () => {
  it('splits 250 recipients into transactions of at most 100, in order', () => {
    const batches = batchRecipients(rcpts(250), { max: 100, passDsn: false });
    expect(batches.map((b) => b.recipients.length)).toEqual([100, 100, 50]);
    expect(batches.flatMap((b) => b.recipients.map((r) => r.address))).toEqual(
      rcpts(250).map((r) => r.address),
    );
    expect(batches.every((b) => b.dsn === undefined)).toBe(true);
  });

  it('keeps exactly max in one transaction', () => {
    expect(batchRecipients(rcpts(100), { max: 100, passDsn: false })).toHaveLength(1);
    expect(batchRecipients(rcpts(101), { max: 100, passDsn: false })).toHaveLength(2);
  });

  it('ignores DSN parameters when the upstream does not take them', () => {
    const mixed = [
      { address: 'a@x', notify: ['SUCCESS' as const] },
      { address: 'b@x', notify: ['NEVER' as const] },
      { address: 'c@x', orcpt: 'rfc822;other@x' },
    ];
    expect(batchRecipients(mixed, { max: 100, passDsn: false })).toHaveLength(1);
  });

  it('groups by NOTIFY/ORCPT when the upstream takes DSN (one NOTIFY per transaction)', () => {
    const list: RecipientInput[] = [
      { address: 'a@x', notify: ['SUCCESS', 'FAILURE'] },
      { address: 'b@x' },
      { address: 'c@x', notify: ['SUCCESS', 'FAILURE'] },
      { address: 'd@x', notify: ['NEVER'] },
      { address: 'e@x', orcpt: 'rfc822;alias@x' },
      { address: 'f@x', orcpt: 'rfc822;F@X' }, // repeats the address: not worth a transaction
    ];
    const batches = batchRecipients(list, { max: 100, passDsn: true });
    expect(batches.map((b) => [b.recipients.map((r) => r.address), b.dsn])).toEqual([
      [['a@x', 'c@x'], { notify: ['SUCCESS', 'FAILURE'] }],
      [['b@x', 'f@x'], undefined],
      [['d@x'], { notify: ['NEVER'] }],
      [['e@x'], { orcpt: 'rfc822;alias@x' }],
    ]);
  });

  it('splits each DSN group by max too', () => {
    const list = [
      ...rcpts(150, { notify: ['FAILURE'] }),
      ...rcpts(3).map((r) => ({ ...r, address: `z${r.address}` })),
    ];
    const batches = batchRecipients(list, { max: 100, passDsn: true });
    expect(batches.map((b) => b.recipients.length)).toEqual([100, 50, 3]);
  });
});

describe('effectiveOrcpt', () => {
  it('drops an ORCPT that only repeats the recipient', () => {
    expect(effectiveOrcpt({ address: 'a@x', orcpt: 'rfc822;a@x' })).toBeUndefined();
    expect(effectiveOrcpt({ address: 'a@x', orcpt: 'RFC822; A@X' })).toBeUndefined();
    expect(effectiveOrcpt({ address: 'a@x', orcpt: 'rfc822;b@x' })).toBe('rfc822;b@x');
    expect(effectiveOrcpt({ address: 'a@x' })).toBeUndefined();
  });
});
