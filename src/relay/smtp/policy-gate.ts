import type { Policy } from '../../config/policy.ts';
import type { Logger } from '../../lib/logger.ts';
import {
  checkFromHeader,
  checkRecipient,
  checkSender,
  editHeaders,
  fromAddresses,
  type HeaderEdits,
  headerEdits,
  type PolicySet,
  type Refusal,
  strictest,
} from '../access/policy.ts';
import { RateCounter, type RemoteCounts } from '../access/rate-limit.ts';
import type { RelayMetrics } from '../metrics.ts';
import type { ClientInfo } from '../spool/types.ts';
import { headerValue } from './message-filter.ts';
import { period } from './replies.ts';

/**
 * Policies at each step of an SMTP transaction: MAIL (sender, declared size, message rate),
 * RCPT (recipient lists and count, recipient rate), DATA (From: header, real size, header edits,
 * sender rewriting) and commit (rate accounting). It decides; the server turns a refusal into
 * its reply (replies.ts). Every refusal is logged and counted with the policy and rule that made it.
 */
export class PolicyGate {
  /** One sliding-window counter per period length in use. */
  private readonly counters = new Map<number, RateCounter>();

  constructor(
    private readonly set: PolicySet,
    private readonly metrics: RelayMetrics,
    private readonly logger: Logger,
    /** Rate limits counted across the relay's replicas (relay/peers/rate-share.ts). */
    private readonly shared?: RemoteCounts & { track(counter: RateCounter): void },
  ) {}

  policiesFor(client: ClientInfo, namespaceLabels?: Record<string, string>): Policy[] {
    return this.set.forClient(client, namespaceLabels);
  }

  atMail(
    policies: Policy[],
    client: ClientInfo,
    sender: string,
    declaredSize: number | undefined,
  ): Refusal | undefined {
    const bad = checkSender(policies, sender);
    if (bad) return this.refuse(bad, client);
    const size = strictest(policies, (p) => p.rules.maxMessageSize);
    if (size && declaredSize !== undefined && declaredSize > size.limit)
      return this.refuse({ policy: size.policy, rule: 'size', detail: `SIZE=${declaredSize}` }, client);
    for (const { policy, limit, key, subject } of this.limits(policies, client, sender)) {
      if (
        limit.messages === undefined ||
        this.counter(limit.periodSeconds).count(`m ${key}`) < limit.messages
      )
        continue;
      const what = `${limit.messages} messages per ${period(limit.periodSeconds)} for ${subject}`;
      return this.refuse({ policy: policy.name, rule: 'rate', detail: what }, client);
    }
    return undefined;
  }

  atRcpt(
    policies: Policy[],
    client: ClientInfo,
    sender: string,
    rcpt: string,
    accepted: number,
  ): Refusal | undefined {
    const bad = checkRecipient(policies, rcpt);
    if (bad) return this.refuse(bad, client);
    const max = strictest(policies, (p) => p.rules.maxRecipients);
    if (max && accepted >= max.limit)
      return this.refuse(
        { policy: max.policy, rule: 'recipients', detail: `${max.limit} recipients` },
        client,
      );
    for (const { policy, limit, key, subject } of this.limits(policies, client, sender)) {
      if (limit.recipients === undefined) continue;
      if (this.counter(limit.periodSeconds).count(`r ${key}`) + accepted < limit.recipients) continue;
      const what = `${limit.recipients} recipients per ${period(limit.periodSeconds)} for ${subject}`;
      return this.refuse({ policy: policy.name, rule: 'rate', detail: what }, client);
    }
    return undefined;
  }

  /** The message size limit for these policies, if stricter than `configured`. */
  maxSize(policies: Policy[], configured: number): { limit: number; policy?: string } {
    const s = strictest(policies, (p) => p.rules.maxMessageSize);
    return s && s.limit < configured ? s : { limit: configured };
  }

  /** The header edits (added, removed, rewritten sender) of these policies for this sender. */
  headerEdits(policies: Policy[], sender: string): HeaderEdits {
    return headerEdits(policies, sender);
  }

  /** The From: header's verdict (the header block as received, CRLF). */
  atHeaders(policies: Policy[], client: ClientInfo, block: string): Refusal | undefined {
    const from = headerValue(block, 'from');
    const bad = from !== undefined ? checkFromHeader(policies, fromAddresses(from)) : undefined;
    return bad ? this.refuse(bad, client) : undefined;
  }

  /** The header block to store: `block` with the edits applied. */
  editHeaders(block: string, edits: HeaderEdits): string {
    if (!edits.add.length && !edits.remove.size && !edits.rewriteSender?.rewriteHeaderFrom) return block;
    return editHeaders(block, edits);
  }

  sizeRefused(policy: string, client: ClientInfo): void {
    this.note({ policy, rule: 'size', detail: 'message size' }, client);
  }

  /** Counts an accepted message against the rate limits. */
  committed(policies: Policy[], client: ClientInfo, sender: string, recipients: number): void {
    for (const { limit, key } of this.limits(policies, client, sender)) {
      const c = this.counter(limit.periodSeconds);
      if (limit.messages !== undefined) c.add(`m ${key}`);
      if (limit.recipients !== undefined) c.add(`r ${key}`, recipients);
    }
  }

  /** Each rate limit of the policies with the key it counts under (policy, limit, subject). */
  private *limits(policies: Policy[], client: ClientInfo, sender: string) {
    for (const policy of policies) {
      const limits = policy.rules.rateLimits ?? [];
      for (let i = 0; i < limits.length; i++) {
        const limit = limits[i]!;
        const subject =
          limit.per === 'namespace' && client.namespace
            ? `namespace ${client.namespace}`
            : limit.per === 'sender'
              ? `sender ${sender || '<>'}`
              : `client ${client.address}`;
        yield { policy, limit, subject, key: `${policy.name}\u0000${i}\u0000${subject}` };
      }
    }
  }

  private counter(periodSeconds: number): RateCounter {
    let c = this.counters.get(periodSeconds);
    if (!c) {
      c = new RateCounter(periodSeconds * 1000, 12, Date.now, this.shared);
      this.shared?.track(c);
      this.counters.set(periodSeconds, c);
    }
    return c;
  }

  private refuse(r: Refusal, client: ClientInfo): Refusal {
    this.note(r, client);
    return r;
  }

  private note(r: Refusal, client: ClientInfo): void {
    this.metrics.policyRejections.inc({ policy: r.policy, rule: r.rule });
    this.logger.info(
      { client: client.address, namespace: client.namespace, pod: client.pod, ...r },
      'refused by policy',
    );
  }
}
