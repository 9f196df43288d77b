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
  private readonly messages = new RateCounter(60_000, 12);
  private readonly recipients = new RateCounter(24 * 3600_000, 24);

  constructor(
    private readonly set: PolicySet,
    private readonly metrics: RelayMetrics,
    private readonly logger: Logger,
  ) {}

  get active(): boolean {
    return this.set.size > 0;
  }

  policiesFor(client: ClientInfo): Policy[] {
    return this.set.forClient(client);
  }

  atMail(
    policies: Policy[],
    client: ClientInfo,
    sender: string,
    declaredSize: number | undefined,
  ): SmtpReplyError | undefined {
    const bad = checkSender(policies, sender);
    if (bad)
      return this.refuse(
        bad,
        client,
        553,
        `5.7.1 <${sender}>: Sender address rejected: ${bad.detail} (policy ${bad.policy})`,
      );
    const size = strictest(policies, (p) => p.maxMessageSize);
    if (size && declaredSize !== undefined && declaredSize > size.limit) {
      return this.refuse(
        { policy: size.policy, rule: 'size', detail: `SIZE=${declaredSize}` },
        client,
        552,
        '5.3.4 Message size exceeds fixed limit',
      );
    }
    for (const p of policies) {
      const limit = p.rateLimits?.messagesPerMinute;
      if (limit === undefined) continue;
      if (this.messages.count(rateKey(p, client)) >= limit) {
        return this.refuse(
          { policy: p.name, rule: 'rate', detail: `${limit} messages per minute` },
          client,
          450,
          `4.7.1 <${sender}>: Sender address rejected: rate limit exceeded (${limit} messages per minute for ${rateSubject(p, client)}, policy ${p.name}); try again later`,
        );
      }
    }
    return undefined;
  }

  atRcpt(policies: Policy[], client: ClientInfo, rcpt: string, accepted: number): SmtpReplyError | undefined {
    const bad = checkRecipient(policies, rcpt);
    if (bad)
      return this.refuse(
        bad,
        client,
        550,
        `5.7.1 <${rcpt}>: Recipient address rejected: ${bad.detail} (policy ${bad.policy})`,
      );
    const max = strictest(policies, (p) => p.maxRecipients);
    if (max && accepted >= max.limit) {
      return this.refuse(
        { policy: max.policy, rule: 'recipients', detail: `${max.limit} recipients` },
        client,
        452,
        '4.5.3 Error: too many recipients',
      );
    }
    for (const p of policies) {
      const limit = p.rateLimits?.recipientsPerDay;
      if (limit === undefined) continue;
      if (this.recipients.count(rateKey(p, client)) + accepted >= limit) {
        return this.refuse(
          { policy: p.name, rule: 'rate', detail: `${limit} recipients per day` },
          client,
          450,
          `4.7.1 <${rcpt}>: Recipient address rejected: rate limit exceeded (${limit} recipients per day for ${rateSubject(p, client)}, policy ${p.name}); try again later`,
        );
      }
    }
    return undefined;
  }

  /** The message size limit for these policies, if stricter than `configured`. */
  maxSize(policies: Policy[], configured: number): { limit: number; policy?: string } {
    const s = strictest(policies, (p) => p.maxMessageSize);
    return s && s.limit < configured ? s : { limit: configured };
  }

  /**
   * A header hook for MessageFilter: checks the From: header, applies edits. The From: verdict
   * is returned through `result` (the filter cannot refuse by itself).
   */
  headerHook(policies: Policy[]): {
    hook: (block: string) => string;
    result: { refusal?: Refusal };
    edits: HeaderEdits;
  } {
    const edits = headerEdits(policies);
    const result: { refusal?: Refusal } = {};
    const hook = (block: string) => {
      const from = headerValue(block, 'from');
      const bad = from !== undefined ? checkFromHeader(policies, fromAddresses(from)) : undefined;
      if (bad) result.refusal = bad;
      if (!edits.add.length && !edits.remove.size && !edits.rewriteSender) return block;
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
  committed(policies: Policy[], client: ClientInfo, recipients: number): void {
    for (const p of policies) {
      if (!p.rateLimits) continue;
      const key = rateKey(p, client);
      if (p.rateLimits.messagesPerMinute !== undefined) this.messages.add(key);
      if (p.rateLimits.recipientsPerDay !== undefined) this.recipients.add(key, recipients);
    }
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

function rateKey(p: Policy, client: ClientInfo): string {
  return `${p.name}\u0000${rateSubject(p, client)}`;
}

function rateSubject(p: Policy, client: ClientInfo): string {
  return p.rateLimits?.per === 'namespace' && client.namespace
    ? `namespace ${client.namespace}`
    : `client ${client.address}`;
}
