import { describe, expect, it } from 'vitest';
import { configSchema } from '../../../src/config/schema.ts';
import { localDeferral, type RecipientResult, verdictOfReply } from '../../../src/relay/delivery/reply.ts';
import { settle } from '../../../src/relay/delivery/settle.ts';
import type { QueuedMessage, QueuedRecipient } from '../../../src/relay/spool/types.ts';

const policy = { ...configSchema.parse({}).queue, retryJitter: 0 };
const DAY = 86_400_000;

function message(recipients: Partial<QueuedRecipient>[], over: Partial<QueuedMessage> = {}): QueuedMessage {
  return {
    id: 'Q1',
    from: 'app@example.com',
    recipients: recipients.map((r, i) => ({ address: `r${i}@example.net`, status: 'pending', ...r })),
    client: { address: '10.0.0.5' },
    size: 1000,
    receivedAt: 0,
    nextAttemptAt: 0,
    attempts: 0,
    ...over,
  };
}

const reply = (address: string, text: string, command = 'RCPT TO'): [string, RecipientResult] => [
  address,
  { ...verdictOfReply(text, command), address },
];

function run(msg: QueuedMessage, results: [string, RecipientResult][], now = 1000, dsnPassed: string[] = []) {
  return settle({ msg, results: new Map(results), dsnPassed: new Set(dsnPassed), now, policy, random: 0.5 });
}

describe('settle', () => {
  it('all sent: done, no notices, attempts counted', () => {
    const s = run(message([{}, {}]), [
      reply('r0@example.net', '250 ok', 'DATA'),
      reply('r1@example.net', '250 ok'),
    ]);
    expect(s.done).toBe(true);
    expect(s.outcome).toBe('sent');
    expect(s.msg.attempts).toBe(1);
    expect(s.msg.recipients.map((r) => [r.status, r.lastReply])).toEqual([
      ['sent', '250 ok'],
      ['sent', '250 ok'],
    ]);
    expect(s.notices).toEqual({ failed: [], delayed: [], relayed: [] });
  });

  it('does not change its input', () => {
    const msg = message([{}]);
    run(msg, [reply('r0@example.net', '550 5.1.1 no')]);
    expect(msg.recipients[0]!.status).toBe('pending');
    expect(msg.attempts).toBe(0);
  });

  it('mixed 250 / 451 / 550: one sent, one deferred with backoff, one bounced with a failure notice', () => {
    const s = run(message([{}, {}, {}]), [
      reply('r0@example.net', '250 2.1.5 ok'),
      reply('r1@example.net', '451 4.3.0 later'),
      reply('r2@example.net', '550 5.1.1 no such user'),
    ]);
    expect(s.done).toBe(false);
    expect(s.msg.recipients.map((r) => r.status)).toEqual(['sent', 'pending', 'bounced']);
    expect(s.msg.nextAttemptAt).toBe(1000 + 300_000);
    expect(s.bouncedNow).toEqual(['r2@example.net']);
    expect(s.notices.failed.map((n) => [n.rcpt.address, n.result.status])).toEqual([
      ['r2@example.net', '5.1.1'],
    ]);
  });

  it('all bounced: done with outcome bounced', () => {
    const s = run(message([{}]), [reply('r0@example.net', '550 5.7.0 Mail relay denied', 'MAIL FROM')]);
    expect(s).toMatchObject({ done: true, outcome: 'bounced' });
    expect(s.notices.failed).toHaveLength(1);
  });

  it('honours NOTIFY: NEVER and SUCCESS-only get no failure notice; FAILURE and default do', () => {
    const s = run(
      message([{ notify: ['NEVER'] }, { notify: ['SUCCESS'] }, { notify: ['FAILURE', 'DELAY'] }, {}]),
      ['r0', 'r1', 'r2', 'r3'].map((r) => reply(`${r}@example.net`, '550 5.1.1 no')),
    );
    expect(s.notices.failed.map((n) => n.rcpt.address)).toEqual(['r2@example.net', 'r3@example.net']);
  });

  it('NOTIFY=SUCCESS: a relayed notice unless the upstream took the DSN parameters', () => {
    const msg = message([{ notify: ['SUCCESS'] }, { notify: ['SUCCESS', 'FAILURE'] }, {}]);
    const results = ['r0', 'r1', 'r2'].map((r) => reply(`${r}@example.net`, '250 2.0.0 ok', 'DATA'));
    expect(run(msg, results).notices.relayed.map((n) => n.rcpt.address)).toEqual([
      'r0@example.net',
      'r1@example.net',
    ]);
    expect(
      run(msg, results, 1000, ['r0@example.net', 'r1@example.net', 'r2@example.net']).notices.relayed,
    ).toEqual([]);
  });

  it('expires deferred recipients after maxLifetimeSeconds with status 4.4.7 and the last reply', () => {
    const s = run(
      message([{}, { notify: ['NEVER'] }], { attempts: 30 }),
      [reply('r0@example.net', '451 4.3.0 still busy'), reply('r1@example.net', '451 4.3.0 still busy')],
      5 * DAY,
    );
    expect(s).toMatchObject({ done: true, outcome: 'expired' });
    expect(s.expired.map((r) => r.address)).toEqual(['r0@example.net', 'r1@example.net']);
    expect(s.notices.failed).toHaveLength(1);
    expect(s.notices.failed[0]!.result).toMatchObject({
      status: '4.4.7',
      reply: '451 4.3.0 still busy',
      remote: true,
    });
  });

  it('expires recipients not even tried this time (breaker open) with their last reply', () => {
    const s = run(message([{ lastReply: '421 4.7.0 go away' }]), [], 5 * DAY);
    expect(s.notices.failed[0]!.result.reply).toBe('421 4.7.0 go away');
  });

  it('a bounce is never bounced: null sender or isBounce get no notices, flagged as suppressed', () => {
    for (const over of [{ from: '' }, { isBounce: true, from: '' }, { isBounce: true }]) {
      const s = run(message([{}], over), [reply('r0@example.net', '550 5.1.1 no')]);
      expect(s.done).toBe(true);
      expect(s.suppressed).toBe(true);
      expect(s.notices.failed).toEqual([]);
    }
  });

  it('bounces expire after bounceLifetimeSeconds and are dropped silently', () => {
    const p = { ...policy, bounceLifetimeSeconds: 60 };
    const s = settle({
      msg: message([{}], { from: '', isBounce: true }),
      results: new Map([reply('r0@example.net', '451 later')]),
      dsnPassed: new Set(),
      now: 60_000,
      policy: p,
      random: 0.5,
    });
    expect(s).toMatchObject({ done: true, outcome: 'expired', suppressed: true });
  });

  it('delay notices once, when delayWarningSeconds is set and NOTIFY allows', () => {
    const p = { ...policy, delayWarningSeconds: 3600 };
    const msg = message([{}, { notify: ['FAILURE'] }, { notify: ['DELAY'] }]);
    const results = new Map(['r0', 'r1', 'r2'].map((r) => reply(`${r}@example.net`, '451 later')));
    const first = settle({ msg, results, dsnPassed: new Set(), now: 3_600_000, policy: p, random: 0.5 });
    expect(first.notices.delayed.map((n) => n.rcpt.address)).toEqual(['r0@example.net', 'r2@example.net']);
    const second = settle({
      msg: first.msg,
      results,
      dsnPassed: new Set(),
      now: 7_200_000,
      policy: p,
      random: 0.5,
    });
    expect(second.notices.delayed).toEqual([]);
  });

  it('an open breaker pushes the next try to when it closes', () => {
    const s = settle({
      msg: message([{}]),
      results: new Map([['r0@example.net', { ...localDeferral('suspended'), address: 'r0@example.net' }]]),
      dsnPassed: new Set(),
      now: 1000,
      policy,
      random: 0.5,
      notBefore: 2_000_000,
    });
    expect(s.msg.nextAttemptAt).toBe(2_000_000);
  });
});
