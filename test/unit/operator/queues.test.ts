import { describe, expect, it } from 'vitest';
import type { KubeObject } from '../../../src/operator/api/meta.ts';
import {
  drainMarks,
  type PodSummary,
  planStranded,
  upstreamCondition,
} from '../../../src/operator/emailrelay/queues.ts';

const obj = (name: string, extra: Partial<KubeObject['metadata']> = {}, status?: unknown): KubeObject =>
  ({
    apiVersion: 'v1',
    kind: 'X',
    metadata: { name, namespace: 'ns', ...extra },
    ...(status ? { status } : {}),
  }) as KubeObject;

const summary = (u: Partial<PodSummary['upstreams'][number]>): PodSummary => ({
  queue: { messages: 0, deferred: 0 },
  lastHour: { delivered: 0, bounced: 0 },
  upstreams: [{ name: 'smtp-relay.gmail.com:587', state: 'closed', healthy: true, ...u }],
});

describe('queues: pure plans', () => {
  it('marks exactly the ordinals at or above replicas, and unmarks those back in service', () => {
    const pods = [
      obj('mail-0', { annotations: { d: 'true' } }),
      obj('mail-1'),
      obj('mail-2'),
      obj('mail-drain-2-abcde'),
      obj('other-3'),
    ];
    expect(drainMarks('mail', 1, pods, 'd')).toEqual({ mark: ['mail-1', 'mail-2'], unmark: ['mail-0'] });
    expect(drainMarks('mail', 3, pods, 'd')).toEqual({ mark: [], unmark: ['mail-0'] });
  });

  it('a claim is stranded while no pod serves it and no Job of it succeeded; Jobs of ordinals back in service go', () => {
    const claims = [obj('spool-mail-0'), obj('spool-mail-1'), obj('spool-mail-2'), obj('spool-mail-3')];
    const jobs = [
      obj('mail-drain-2', {}, { succeeded: 1 }),
      obj('mail-drain-3', {}, { active: 1 }),
      obj('mail-drain-0', {}, { succeeded: 1 }),
    ];
    const plan = planStranded('mail', 1, [obj('mail-0'), obj('mail-1')], claims, jobs);
    // 1: its pod still runs (handing off); 2: drained; 3: its Job runs.
    expect(plan.stranded).toEqual([{ claim: 'spool-mail-3', ordinal: 3, job: 'mail-drain-3' }]);
    expect(plan.create).toEqual([]);
    expect(plan.drained.map((d) => d.ordinal)).toEqual([2]);
    expect(plan.remove).toEqual(['mail-drain-0']);
    const gone = planStranded('mail', 1, [obj('mail-0')], claims, []);
    expect(gone.create).toEqual([1, 2, 3]);
  });

  it("UpstreamHealthy: the latest word across pods decides, and the message is the upstream's own reply", () => {
    const denied =
      '550 5.7.0 Mail relay denied [10.0.0.5]. Invalid credentials for relay for one of the domains in: example.com gsmtp';
    const bad = upstreamCondition(
      new Map([
        [
          'a',
          summary({
            lastSuccessAt: '2026-12-01T10:00:00Z',
            lastRefusal: { reply: denied, at: '2026-12-01T10:05:00Z' },
          }),
        ],
        ['b', summary({ lastSuccessAt: '2026-12-01T10:01:00Z' })],
      ]),
      3,
    );
    expect(bad).toMatchObject({
      status: 'False',
      reason: 'UpstreamRefused',
      message: `smtp-relay.gmail.com:587: ${denied}`,
    });
    const good = upstreamCondition(
      new Map([
        ['a', summary({ lastRefusal: { reply: denied, at: '2026-12-01T10:05:00Z' } })],
        ['b', summary({ lastSuccessAt: '2026-12-01T10:06:00Z' })],
      ]),
      3,
    );
    expect(good).toMatchObject({ status: 'True', reason: 'Accepting' });
    const down = upstreamCondition(
      new Map([
        [
          'a',
          summary({
            state: 'open',
            lastRefusal: { reply: 'connect ECONNREFUSED', at: '2026-12-01T10:05:00Z' },
          }),
        ],
      ]),
      3,
    );
    expect(down).toMatchObject({ status: 'False', reason: 'UpstreamUnreachable' });
    expect(upstreamCondition(new Map(), 3)).toMatchObject({ status: 'Unknown', reason: 'NoSummary' });
    // A route held for a relay-wide refusal: who refuses, in Google's words, since when, how much waits.
    const held = (since: string, n: number) =>
      summary({
        lastRefusal: { reply: denied, at: since },
        health: { state: 'held', since, held: n, lastRefusal: { text: denied } },
      });
    const holding = upstreamCondition(
      new Map([
        ['a', held('2026-12-01T10:42:10Z', 200)],
        ['b', held('2026-12-01T10:44:00Z', 112)],
      ]),
      3,
    );
    expect(holding).toMatchObject({
      status: 'False',
      reason: 'UpstreamRefused',
      message: `smtp-relay.gmail.com:587 refuses this relay: ${denied} since 10:42 UTC, 312 messages held`,
    });
  });
});
