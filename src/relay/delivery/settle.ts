import type { QueuedMessage, QueuedRecipient } from '../spool/types.ts';
import type { RecipientResult } from './reply.ts';
import { delayWarningDue, lifetimeMs, nextStep, type QueuePolicy } from './schedule.ts';

/**
 * What one attempt means for a message, as a pure function: recipient statuses, the attempt
 * count, when to try again or whether the message expired, and which notifications (DSNs) are
 * owed to the sender under RFC 3461 NOTIFY.
 */

export interface Notice {
  rcpt: QueuedRecipient;
  result: RecipientResult;
}

export interface Notices {
  failed: Notice[];
  delayed: Notice[];
  /** NOTIFY=SUCCESS recipients handed to an upstream that will not report further. */
  relayed: Notice[];
}

export interface Settlement {
  msg: QueuedMessage;
  /** No recipient left pending: the message leaves the queue. */
  done: boolean;
  /** Recipients given up on because the message outlived its lifetime. */
  expired: QueuedRecipient[];
  /** Addresses bounced by this attempt (5xx or expiry). */
  bouncedNow: string[];
  notices: Notices;
  /** For email_deliveries_total when done. */
  outcome: 'sent' | 'bounced' | 'expired';
  /** A DSN was owed but the message is itself a bounce (or has the null sender): none is sent. */
  suppressed: boolean;
}

export interface SettleInput {
  msg: QueuedMessage;
  /** Verdicts for the recipients this attempt tried, by address. */
  results: ReadonlyMap<string, RecipientResult>;
  /** Recipients whose DSN parameters went upstream (it reports success itself). */
  dsnPassed: ReadonlySet<string>;
  now: number;
  policy: QueuePolicy;
  random: number;
  /** Earliest next try (an open circuit breaker). */
  notBefore?: number;
}

function wants(r: QueuedRecipient, what: 'FAILURE' | 'SUCCESS'): boolean {
  // RFC 3461: no NOTIFY means FAILURE (and DELAY) at the MTA's discretion.
  if (!r.notify) return what === 'FAILURE';
  return r.notify.includes(what);
}

export function settle(input: SettleInput): Settlement {
  const { now, policy } = input;
  const msg: QueuedMessage = {
    ...input.msg,
    recipients: input.msg.recipients.map((r) => ({ ...r })),
    attempts: input.msg.attempts + 1,
  };
  const notices: Notices = { failed: [], delayed: [], relayed: [] };
  const bouncedNow: string[] = [];
  const deferred: Notice[] = [];

  for (const rcpt of msg.recipients) {
    if (rcpt.status !== 'pending') continue;
    const result = input.results.get(rcpt.address);
    if (!result) continue;
    rcpt.lastReply = result.reply;
    if (result.outcome === 'sent') {
      rcpt.status = 'sent';
      if (wants(rcpt, 'SUCCESS') && !input.dsnPassed.has(rcpt.address))
        notices.relayed.push({ rcpt, result });
    } else if (result.outcome === 'bounced') {
      rcpt.status = 'bounced';
      bouncedNow.push(rcpt.address);
      if (wants(rcpt, 'FAILURE')) notices.failed.push({ rcpt, result });
    } else {
      deferred.push({ rcpt, result });
    }
  }

  const expired: QueuedRecipient[] = [];
  const stillPending = msg.recipients.filter((r) => r.status === 'pending');
  if (stillPending.length) {
    const step = nextStep(msg, now, policy, input.random, input.notBefore ?? 0);
    if (step.kind === 'expire') {
      for (const rcpt of stillPending) {
        rcpt.status = 'bounced';
        expired.push(rcpt);
        bouncedNow.push(rcpt.address);
        if (!wants(rcpt, 'FAILURE')) continue;
        const last = deferred.find((d) => d.rcpt === rcpt)?.result;
        const result: RecipientResult = {
          address: rcpt.address,
          outcome: 'bounced',
          reply: last?.reply ?? rcpt.lastReply ?? 'delivery time expired',
          // RFC 3463 4.4.7: delivery time expired; the last reply says why.
          status: '4.4.7',
          remote: last?.remote ?? false,
          class: last?.class ?? 'network',
          ...(last?.command ? { command: last.command } : {}),
        };
        notices.failed.push({ rcpt, result });
      }
    } else {
      msg.nextAttemptAt = step.at;
      for (const d of deferred) {
        if (!delayWarningDue(msg, d.rcpt, now, policy)) continue;
        d.rcpt.delayNotified = true;
        notices.delayed.push(d);
      }
    }
  }

  // Never bounce a bounce: a DSN (or anything with the null sender) that cannot be delivered is
  // logged and dropped, or two MTAs could bounce at each other forever.
  const suppressed =
    (msg.isBounce || msg.from === '') &&
    notices.failed.length + notices.delayed.length + notices.relayed.length > 0;
  if (msg.isBounce || msg.from === '') {
    notices.failed = [];
    notices.delayed = [];
    notices.relayed = [];
  }

  const done = msg.recipients.every((r) => r.status !== 'pending');
  const outcome = expired.length
    ? 'expired'
    : msg.recipients.every((r) => r.status === 'sent')
      ? 'sent'
      : 'bounced';
  return { msg, done, expired, bouncedNow, notices, outcome, suppressed };
}

/** When a delayed recipient will be given up on (Will-Retry-Until). */
export function giveUpAt(msg: QueuedMessage, policy: QueuePolicy): number {
  return msg.receivedAt + lifetimeMs(msg, policy);
}
