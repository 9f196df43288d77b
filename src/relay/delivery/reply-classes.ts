import type { z } from 'zod';
import { isGoogleRelay, type replyClassesSchema, type replyRuleSchema } from '../../config/schema.ts';
import type { Verdict } from './reply.ts';

/**
 * Which level an upstream reply is about: one recipient, the relay itself (its identity,
 * credentials, quota or sending rate: every message of the route would get the same answer), or the
 * connection. A table per route, configurable; two built in: Google's relay and a generic default.
 * Pure.
 */

export type ReplyRule = z.output<typeof replyRuleSchema>;
export type ReplyClassesConfig = z.output<typeof replyClassesSchema>;
export type Level = ReplyRule['class'];
export type RelayReason = NonNullable<ReplyRule['reason']>;

export interface Classification {
  level: Level;
  reason?: RelayReason;
}

/**
 * Google Workspace's SMTP relay (texts as it sends them; every reply ends in "gsmtp"). Its quota
 * and "relay denied" refusals are 5xx, its peak-rate refusal 4xx: neither is about the message.
 */
export const GOOGLE_RULES: readonly ReplyRule[] = [
  // The egress IP or the sender's domain is not registered, or IP mode and SMTP AUTH are mixed up.
  { reply: '^5\\d\\d 5\\.7\\.0 .*Mail relay denied', class: 'relay', reason: 'identity' },
  { reply: '^5\\d\\d 5\\.7\\.1 .*Invalid credentials for relay', class: 'relay', reason: 'identity' },
  { reply: 'Daily (user )?SMTP relay limit exceeded', class: 'relay', reason: 'quota' },
  { reply: 'Peak SMTP relay limit exceeded', class: 'relay', reason: 'rate' },
  // A generic EHLO name (localhost, a single-label pod name): a configuration error dressed as 4xx.
  { reply: '^421 4\\.7\\.0 .*\\(EHLO\\)', class: 'relay', reason: 'config' },
  { reply: '^535 5\\.7\\.8 ', class: 'relay', reason: 'auth' },
  { reply: '^530 5\\.7\\.0 .*(Authentication Required|STARTTLS)', class: 'relay', reason: 'auth' },
  { reply: '^421 4\\.7\\.28 ', class: 'relay', reason: 'rate' },
];

/** What most smarthosts (Postfix, Exchange, SES, SendGrid...) say when the relay itself is refused. */
export const GENERIC_RULES: readonly ReplyRule[] = [
  { reply: '^535 ', class: 'relay', reason: 'auth' },
  { reply: '^530 ', class: 'relay', reason: 'auth' },
  {
    reply: '^5\\d\\d 5\\.7\\.1 .*\\b(relay(ing)? (access )?denied|not permitted to relay)',
    class: 'relay',
    reason: 'identity',
  },
  { reply: 'Helo command rejected: need fully-qualified hostname', class: 'relay', reason: 'config' },
  {
    reply: '^4\\d\\d 4\\.7\\.\\d+ .*\\b(rate limit|too many messages|throttl)',
    class: 'relay',
    reason: 'rate',
  },
];

export interface CompiledRule {
  re: RegExp;
  rule: ReplyRule;
}

/** The route's table: its own rules, then the profile's (auto picks Google's for *.gmail.com). */
export function compileReplyClasses(cfg: ReplyClassesConfig, upstreamUrl: string): CompiledRule[] {
  const profile = cfg.profile === 'auto' ? (isGoogleRelay(upstreamUrl) ? 'google' : 'generic') : cfg.profile;
  const builtin = profile === 'google' ? GOOGLE_RULES : GENERIC_RULES;
  return [...cfg.rules, ...builtin].map((rule) => ({ re: new RegExp(rule.reply, 'i'), rule }));
}

/**
 * A multi-line reply as one sentence: "550-5.7.0 Mail relay denied ... 550 5.7.0 https://..."
 * becomes "550 5.7.0 Mail relay denied ... https://...", the way a person quotes it (and the form
 * the rules are written against).
 */
export function replyText(reply: string): string {
  const m = /^(\d{3})[ -](?:([245]\.\d{1,3}\.\d{1,3}) )?/.exec(reply);
  if (!m) return reply;
  const [, code, status] = m;
  const cont = new RegExp(`\\s${code}[ -]${status ? `${status.replace(/\./g, '\\.')} ?` : ''}`, 'g');
  const rest = reply.slice(m[0].length).replace(cont, ' ').replace(/\s+/g, ' ').trim();
  return `${code} ${status ? `${status} ` : ''}${rest}`;
}

/** The level of a verdict: the first matching rule; without one, network failures are the connection's, replies the recipient's. */
export function classify(v: Verdict, rules: readonly CompiledRule[]): Classification {
  if (v.remote || v.class !== 'network') {
    const text = replyText(v.reply);
    for (const { re, rule } of rules) {
      if (re.test(text))
        return rule.reason ? { level: rule.class, reason: rule.reason } : { level: rule.class };
    }
    return { level: 'recipient' };
  }
  return { level: 'connection' };
}

/** A relay-level refusal never bounces the message: it is deferred (4.x.x) while the route is held. */
export function asHeld<V extends Verdict>(v: V): V {
  return v.outcome === 'sent' ? v : { ...v, outcome: 'deferred', status: `4${v.status.slice(1)}` };
}
