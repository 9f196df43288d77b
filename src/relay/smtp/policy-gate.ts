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
import { RateCounter } from '../access/rate-limit.ts';
import type { RelayMetrics } from '../metrics.ts';
import type { ClientInfo } from '../spool/types.ts';
import { headerValue } from './message-filter.ts';
import { SmtpReplyError } from './replies.ts';

/**
 * Policies at each step of an SMTP transaction: MAIL (sender, declared size, message rate),
 * RCPT (recipient lists and count, recipient rate), DATA (From: header, real size, header edits,
 * sender rewriting) and commit (rate accounting). Every refusal is logged and counted with the
 * policy and rule that made it.
 */
export class PolicyGate {
  /** One sliding-window counter per period length in use. */
  private readonly counters = new Map<number, RateCounter>();

  constructor(
    private readonly set: PolicySet,
    private readonly metrics: RelayMetrics,
    private readonly logger: Logger,
  ) {}

  policiesFor(client: ClientInfo, namespaceLabels?: Record<string, string>): Policy[] {
    return this.set.forClient(client, namespaceLabels);
  }

  atMail(
    policies: Policy[],
    client: ClientInfo,
    sender: string,
    declaredSize: number | undefined,
  ): SmtpReplyError | undefined {
    const bad = checkSender(policies, sender);
    if (bad) {
      return this.refuse(
        bad,
        client,
        553,
        `5.7.1 <${sender}>: Sender address rejected: ${bad.detail} (policy ${bad.policy})`,
      );
    }
    const size = strictest(policies, (p) => p.rules.maxMessageSize);
    if (size && declaredSize !== undefined && declaredSize > size.limit) {
      return this.refuse(
        { policy: size.policy, rule: 'size', detail: `SIZE=${declaredSize}` },
        client,
        552,
        '5.3.4 Message size exceeds fixed limit',
      );
    }
    for (const { policy, limit, key, subject } of this.limits(policies, client, sender)) {
      if (
        limit.messages === undefined ||
        this.counter(limit.periodSeconds).count(`m ${key}`) < limit.messages
      )
        continue;
      const what = `${limit.messages} messages per ${period(limit.periodSeconds)} for ${subject}`;
      return this.refuse(
        { policy: policy.name, rule: 'rate', detail: what },
        client,
        450,
        `4.7.1 <${sender}>: Sender address rejected: rate limit exceeded (${what}, policy ${policy.name}); try again later`,
      );
    }
    return undefined;
  }

  atRcpt(
    policies: Policy[],
    client: ClientInfo,
    sender: string,
    rcpt: string,
    accepted: number,
  ): SmtpReplyError | undefined {
    const bad = checkRecipient(policies, rcpt);
    if (bad) {
      return this.refuse(
        bad,
        client,
        550,
        `5.7.1 <${rcpt}>: Recipient address rejected: ${bad.detail} (policy ${bad.policy})`,
      );
    }
    const max = strictest(policies, (p) => p.rules.maxRecipients);
    if (max && accepted >= max.limit) {
      return this.refuse(
        { policy: max.policy, rule: 'recipients', detail: `${max.limit} recipients` },
        client,
        452,
        '4.5.3 Error: too many recipients',
      );
    }
    for (const { policy, limit, key, subject } of this.limits(policies, client, sender)) {
      if (limit.recipients === undefined) continue;
      if (this.counter(limit.periodSeconds).count(`r ${key}`) + accepted < limit.recipients) continue;
      const what = `${limit.recipients} recipients per ${period(limit.periodSeconds)} for ${subject}`;
      return this.refuse(
        { policy: policy.name, rule: 'rate', detail: what },
        client,
        450,
        `4.7.1 <${rcpt}>: Recipient address rejected: rate limit exceeded (${what}, policy ${policy.name}); try again later`,
      );
    }
    return undefined;
  }

  /** The message size limit for these policies, if stricter than `configured`. */
  maxSize(policies: Policy[], configured: number): { limit: number; policy?: string } {
    const s = strictest(policies, (p) => p.rules.maxMessageSize);
    return s && s.limit < configured ? s : { limit: configured };
  }

  /**
   * A header hook for MessageFilter: checks the From: header, applies edits. The From: verdict
   * is returned through `result` (the filter cannot refuse by itself).
   */
  headerHook(
    policies: Policy[],
    sender: string,
  ): { hook: (block: string) => string; result: { refusal?: Refusal }; edits: HeaderEdits } {
    const edits = headerEdits(policies, sender);
    const result: { refusal?: Refusal } = {};
    const hook = (block: string) => {
      const from = headerValue(block, 'from');
      const bad = from !== undefined ? checkFromHeader(policies, fromAddresses(from)) : undefined;
      if (bad) result.refusal = bad;
      if (!edits.add.length && !edits.remove.size && !edits.rewriteSender?.rewriteHeaderFrom) return block;
      return editHeaders(block, edits);
    };
    return { hook, result, edits };
  }

  fromRefused(refusal: Refusal, client: ClientInfo): SmtpReplyError {
    return this.refuse(
      refusal,
      client,
      550,
      `5.7.1 Error: message refused: ${refusal.detail} (policy ${refusal.policy})`,
    );
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
      c = new RateCounter(periodSeconds * 1000, 12);
      this.counters.set(periodSeconds, c);
    }
    return c;
  }

  private refuse(r: Refusal, client: ClientInfo, code: number, text: string): SmtpReplyError {
    this.note(r, client);
    return new SmtpReplyError(code, text, `policy_${r.rule}`);
  }

  private note(r: Refusal, client: ClientInfo): void {
    this.metrics.policyRejections.inc({ policy: r.policy, rule: r.rule });
    this.logger.info(
      { client: client.address, namespace: client.namespace, pod: client.pod, ...r },
      'refused by policy',
    );
  }
}

function period(seconds: number): string {
  if (seconds === 60) return 'minute';
  if (seconds === 3600) return 'hour';
  if (seconds === 86_400) return 'day';
  return `${seconds} s`;
}
