import { describe, expect, it } from 'vitest';
import { type Policy, policySchema } from '../../../src/config/policy.ts';
import {
  addressMatches,
  checkFromHeader,
  checkRecipient,
  checkSender,
  domainMatches,
  editHeaders,
  fromAddresses,
  headerEdits,
  PolicySet,
  strictest,
} from '../../../src/relay/access/policy.ts';
import { RateCounter } from '../../../src/relay/access/rate-limit.ts';

const P = (p: Record<string, unknown>): Policy => policySchema.parse(p);

describe('policy matching', () => {
  const set = new PolicySet([
    P({ name: 'b-team', match: { namespaces: ['team-b'] } }),
    P({ name: 'a-all' }),
    P({ name: 'c-net', match: { clients: ['10.1.0.0/16'] } }),
    P({ name: 'd-label', match: { namespaceSelector: { matchLabels: { tier: 'gold' } } } }),
  ]);
  it('matches by namespace name or label and by network, in the given order', () => {
    expect(set.forClient({ address: '10.1.2.3', namespace: 'team-b' }).map((p) => p.name)).toEqual([
      'b-team',
      'a-all',
      'c-net',
    ]);
    expect(
      set.forClient({ address: '10.2.0.1', namespace: 'x' }, { tier: 'gold' }).map((p) => p.name),
    ).toEqual(['a-all', 'd-label']);
    // Unattributed clients only get policies that do not select namespaces.
    expect(set.forClient({ address: '10.1.0.1' }).map((p) => p.name)).toEqual(['a-all', 'c-net']);
  });
});

describe('the strictest policy wins', () => {
  const team = P({
    name: 'team',
    rules: { senders: { domains: ['example.com', '*.example.org'] }, maxMessageSize: 5000 },
  });
  const global = P({
    name: 'global',
    rules: { senders: { domains: ['example.com'], addresses: ['ops@example.org'] }, maxMessageSize: 9000 },
  });

  it('a sender must be allowed by every matching policy, and the refusal names the policy', () => {
    expect(checkSender([team, global], 'app@example.com')).toBeUndefined();
    expect(checkSender([team, global], 'x@mail.example.org')).toEqual({
      policy: 'global',
      rule: 'sender',
      detail: 'sender x@mail.example.org is not allowed',
    });
    expect(checkSender([team], 'x@example.org')?.policy).toBe('team'); // *.example.org is subdomains only
    expect(checkSender([team, global], '')).toBeUndefined(); // the null sender
  });

  it('takes the smallest limit', () => {
    expect(strictest([team, global], (p) => p.rules.maxMessageSize)).toEqual({ limit: 5000, policy: 'team' });
    expect(strictest([team, global], (p) => p.rules.maxRecipients)).toBeUndefined();
  });

  it('recipient denials win over any allow, and every allow list must pass', () => {
    const a = P({
      name: 'a',
      rules: { recipients: { allow: ['@example.com', '@partner.com'], deny: ['ceo@example.com'] } },
    });
    const b = P({
      name: 'b',
      rules: { recipients: { allow: ['@example.com', '@*.example.com'], deny: ['@*.example.com'] } },
    });
    expect(checkRecipient([a, b], 'x@example.com')).toBeUndefined();
    expect(checkRecipient([a, b], 'x@partner.com')).toMatchObject({ policy: 'b', rule: 'recipient-allow' });
    expect(checkRecipient([a, b], 'CEO@example.com')).toMatchObject({ policy: 'a', rule: 'recipient-deny' });
    expect(checkRecipient([a, b], 'x@eu.example.com')).toMatchObject({ policy: 'b', rule: 'recipient-deny' });
  });

  it('checks every From: address', () => {
    expect(fromAddresses('"Ops, Team" <ops@example.com>, other@evil.com (comment)')).toEqual([
      'ops@example.com',
      'other@evil.com',
    ]);
    expect(checkFromHeader([team], ['ops@example.com', 'other@evil.com'])).toMatchObject({
      rule: 'from-header',
      policy: 'team',
    });
  });

  it('matches domains and address patterns', () => {
    expect(domainMatches('Example.COM.', 'example.com')).toBe(true);
    expect(domainMatches('a.example.com', '*.example.com')).toBe(true);
    expect(domainMatches('example.com', '*.example.com')).toBe(false);
    expect(domainMatches('badexample.com', '*.example.com')).toBe(false);
    expect(addressMatches('Bob@Example.com', 'bob@example.com')).toBe(true);
    expect(addressMatches('bob@example.com', '@example.com')).toBe(true);
    expect(addressMatches('bob@a.example.com', '*@*.example.com')).toBe(true);
    expect(addressMatches('bob@example.com', 'alice@example.com')).toBe(false);
  });
});

describe('header edits and sender rewriting', () => {
  it('removes, rewrites From: keeping the display name, adds; the first applicable rewrite wins', () => {
    const edits = headerEdits(
      [
        P({ name: 'x', rules: { rewriteSender: { from: '@other.local', to: 'never@example.com' } } }),
        P({
          name: 'a',
          rules: {
            headers: {
              add: [
                { name: 'X-Team', value: 'a' },
                { name: 'X-Relay', value: 'yes' },
              ],
              remove: ['X-Internal'],
            },
            rewriteSender: { to: 'noreply@example.com', rewriteHeaderFrom: true },
          },
        }),
        P({
          name: 'b',
          rules: {
            headers: { add: [{ name: 'X-Team', value: 'b' }] },
            rewriteSender: { to: 'second@example.com' },
          },
        }),
      ],
      'app@internal.local',
    );
    expect(edits.rewriteSender).toEqual({ to: 'noreply@example.com', rewriteHeaderFrom: true, policy: 'a' });
    const out = editHeaders(
      'From: "App" <app@internal.local>\r\nX-Internal: secret\r\n\tfolded\r\nSubject: hi\r\n',
      edits,
    );
    expect(out).toBe(
      'X-Original-From: "App" <app@internal.local>\r\nFrom: "App" <noreply@example.com>\r\nSubject: hi\r\nX-Team: a\r\nX-Relay: yes\r\n',
    );
  });

  it('leaves From: alone unless rewriteHeaderFrom, and never rewrites the null sender', () => {
    const p = [P({ name: 'a', rules: { rewriteSender: { to: 'noreply@example.com' } } })];
    const edits = headerEdits(p, 'app@internal.local');
    expect(editHeaders('From: app@internal.local\r\n', edits)).toBe('From: app@internal.local\r\n');
    expect(headerEdits(p, '').rewriteSender).toBeUndefined();
  });
});

describe('policy schema', () => {
  it('names bad fields', () => {
    const r = policySchema.safeParse({
      name: 'x',
      rules: { senders: { domains: ['not a domain'] }, headers: { add: [{ name: 'Bad Name', value: 'v' }] } },
    });
    expect(r.success).toBe(false);
    expect(r.error?.issues.map((i) => i.path.join('.'))).toEqual(
      expect.arrayContaining(['rules.senders.domains.0', 'rules.headers.add.0.name']),
    );
  });
});

describe('RateCounter', () => {
  it('counts over a sliding window and forgets old events', () => {
    let now = 0;
    const c = new RateCounter(60_000, 12, () => now);
    c.add('k', 3);
    now = 30_000;
    c.add('k', 2);
    expect(c.count('k')).toBe(5);
    now = 62_000; // the first 3 fell out of the window
    expect(c.count('k')).toBe(2);
    now = 200_000;
    expect(c.count('k')).toBe(0);
    expect(c.count('other')).toBe(0);
  });
});
