import { describe, expect, it } from 'vitest';
import { RecentMessages } from '../../../src/relay/spool/recent.ts';
import type { QueuedMessage } from '../../../src/relay/spool/types.ts';

const msg = (id: string, size: number): QueuedMessage => ({
  id,
  from: 'a@example.com',
  recipients: [{ address: 'b@example.org', status: 'pending' }],
  client: { address: '10.0.0.1' },
  size,
  receivedAt: 0,
  nextAttemptAt: 0,
  attempts: 0,
});

describe('RecentMessages', () => {
  it('evicts the oldest past its byte bound and skips messages too big to be worth it', () => {
    const r = new RecentMessages(1000, 60_000);
    r.put(msg('a', 200), [Buffer.alloc(200)], 0);
    r.put(msg('b', 200), [Buffer.alloc(200)], 1);
    r.put(msg('huge', 300), [Buffer.alloc(300)], 2); // over a quarter of the bound
    expect(r.message('huge')).toBeUndefined();
    for (const id of ['c', 'd', 'e', 'f']) r.put(msg(id, 200), [Buffer.alloc(200)], 3);
    expect(r.message('a')).toBeUndefined();
    expect(r.size).toBe(5);
    expect(r.message('b')?.id).toBe('b');
    expect(r.body('e')?.[0]?.length).toBe(200);
  });

  it('forgets entries past their age and on drop', () => {
    const r = new RecentMessages(1000, 10);
    r.put(msg('old', 10), [], 0);
    r.put(msg('new', 10), [], 15);
    r.expire(20);
    expect(r.message('old')).toBeUndefined();
    expect(r.message('new')?.id).toBe('new');
    r.drop('new');
    expect(r.size).toBe(0);
  });
});
