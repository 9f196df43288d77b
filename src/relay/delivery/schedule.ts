import type { RelayConfig } from '../../config/schema.ts';

/**
 * The retry schedule, as pure functions of (attempts, times, config, a random number) so it can be
 * tested without clocks. Postfix semantics: the delay doubles from `retryInitialSeconds` up to
 * `retryMaxSeconds`; a message still undelivered after `maxLifetimeSeconds` is bounced (bounces
 * themselves use `bounceLifetimeSeconds` and are dropped instead).
 */

export type QueuePolicy = RelayConfig['queue'];

/**
 * Delay before the next try after `attempts` failed tries (1 = the first one failed), in ms.
 * Jitter spreads messages deferred together (an upstream outage) so they do not all come back in
 * the same second: the delay is scaled by a factor in [1 - jitter, 1 + jitter].
 */
export function retryDelayMs(attempts: number, policy: QueuePolicy, random: number = Math.random()): number {
  const n = Math.max(1, attempts);
  const base = Math.min(
    policy.retryInitialSeconds * policy.retryMultiplier ** (n - 1),
    policy.retryMaxSeconds,
  );
  const factor = 1 + policy.retryJitter * (2 * random - 1);
  return Math.max(0, Math.round(base * factor * 1000));
}

/** How long a message may stay queued, in ms. Bounces get their own lifetime (Postfix bounce_queue_lifetime). */
export function lifetimeMs(msg: { from: string; isBounce?: boolean }, policy: QueuePolicy): number {
  const s = msg.isBounce || msg.from === '' ? policy.bounceLifetimeSeconds : policy.maxLifetimeSeconds;
  return s * 1000;
}

export type NextStep = { kind: 'retry'; at: number } | { kind: 'expire' };

/**
 * After a try that left recipients deferred: retry at some time, or give up (the message is
 * older than its lifetime). The retry is clipped to the expiry time so the last try happens when
 * the lifetime ends rather than up to `retryMaxSeconds` later; `notBefore` (an open circuit
 * breaker) pushes it later.
 */
export function nextStep(
  msg: { from: string; isBounce?: boolean; receivedAt: number; attempts: number },
  now: number,
  policy: QueuePolicy,
  random: number = Math.random(),
  notBefore = 0,
): NextStep {
  const expiresAt = msg.receivedAt + lifetimeMs(msg, policy);
  if (now >= expiresAt) return { kind: 'expire' };
  const at = Math.min(now + retryDelayMs(msg.attempts, policy, random), expiresAt);
  return { kind: 'retry', at: Math.max(at, notBefore, now) };
}

/** Whether a deferred recipient is owed a "delayed" DSN now (RFC 3461 NOTIFY=DELAY; off when delayWarningSeconds is 0). */
export function delayWarningDue(
  msg: { receivedAt: number },
  rcpt: { notify?: readonly string[]; delayNotified?: boolean },
  now: number,
  policy: QueuePolicy,
): boolean {
  if (!policy.delayWarningSeconds || rcpt.delayNotified) return false;
  const wants = rcpt.notify === undefined || rcpt.notify.includes('DELAY');
  return wants && now - msg.receivedAt >= policy.delayWarningSeconds * 1000;
}
