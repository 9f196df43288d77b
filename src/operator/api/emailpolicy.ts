import { z } from 'zod';
import { conditionsSchema, dns1123Label, type KubeObject, labelSelectorSchema, withCel } from './meta.ts';

/**
 * EmailPolicy: rules for mail through the relays of its namespace. The operator validates them
 * and compiles the matching ones into each relay's ConfigMap (`policies.yaml`); the relay
 * enforces them.
 */

const DOMAIN =
  /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;
// local@domain, or @domain for a whole domain; *@domain and *.domain patterns too.
const ADDRESS_PATTERN =
  /^([^@\s]+)?@(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$/;
const HEADER_NAME = /^[!-9;-~]+$/; // RFC 5322 field name: printable ASCII but ':'

const domain = z.string().max(253).regex(DOMAIN, 'expected a domain, optionally *.domain');
const addressPattern = z
  .string()
  .max(320)
  .regex(ADDRESS_PATTERN, 'expected user@domain or @domain (domain may start with *.)');
const address = z
  .string()
  .max(320)
  .regex(/^[^@\s]+@[^@\s]+\.[^@\s]+$/, 'expected an e-mail address');

export const rateLimitSchema = z
  .object({
    per: z
      .enum(['namespace', 'sender', 'client'])
      .default('namespace')
      .describe('What is counted separately: client namespace, envelope sender, or client IP'),
    messages: z.number().int().min(1).describe('Messages allowed per period'),
    periodSeconds: z.number().int().min(1).max(86_400).default(60),
  })
  .describe('Token bucket; over the limit a client gets 450 4.7.1 and retries later');

export const policyRulesSchema = withCel(
  z
    .object({
      senders: z
        .object({
          domains: z.array(domain).max(256).optional().describe('Envelope sender domains that may send'),
          addresses: z.array(addressPattern).max(1024).optional().describe('Envelope senders that may send'),
        })
        .optional()
        .describe('Allowed envelope senders; unset: any sender (the upstream may still refuse it)'),
      recipients: z
        .object({
          allow: z.array(addressPattern).max(1024).optional().describe('Only these recipients (unset: any)'),
          deny: z.array(addressPattern).max(1024).optional().describe('Never these recipients; deny wins'),
        })
        .optional(),
      maxMessageSize: z
        .number()
        .int()
        .min(1024)
        .optional()
        .describe('Bytes; lower than the relay limit to matter'),
      maxRecipients: z.number().int().min(1).optional().describe('Recipients per message'),
      rateLimits: z.array(rateLimitSchema).max(16).optional(),
      rewriteSender: z
        .object({
          from: addressPattern.optional().describe('Rewrite only senders matching this; unset: every sender'),
          to: address.describe('The envelope sender (and From: when rewriteHeaderFrom) to use'),
          rewriteHeaderFrom: z.boolean().default(false).describe('Also rewrite the From: header'),
        })
        .optional()
        .describe('Replace the envelope sender, e.g. with an address the smarthost accepts'),
      headers: z
        .object({
          add: z
            .array(
              z.object({
                name: z.string().min(1).max(76).regex(HEADER_NAME, 'expected a header field name'),
                value: z
                  .string()
                  .max(998)
                  .regex(/^[^\r\n]*$/, 'a header value is one line'),
              }),
            )
            .max(32)
            .optional()
            .describe('Headers added to every message'),
          remove: z
            .array(z.string().min(1).max(76).regex(HEADER_NAME, 'expected a header field name'))
            .max(32)
            .optional()
            .describe('Header fields removed (case-insensitive)'),
        })
        .optional(),
    })
    .describe('What mail the policy allows and how it is changed'),
  [
    {
      rule:
        '!has(self.recipients) || !has(self.recipients.allow) || !has(self.recipients.deny) || ' +
        'self.recipients.allow.all(a, !(a in self.recipients.deny))',
      message: 'a recipient pattern cannot be both allowed and denied',
      check: (r) => {
        const deny = new Set(r.recipients?.deny ?? []);
        return !(r.recipients?.allow ?? []).some((a) => deny.has(a));
      },
      fieldPath: '.recipients',
    },
  ],
);

export const emailPolicySpecSchema = z
  .object({
    relays: z
      .array(dns1123Label)
      .max(64)
      .default([])
      .describe('EmailRelays (in this namespace) the policy applies to; empty: all of them'),
    clientNamespaces: z
      .object({
        names: z.array(dns1123Label).max(1024).optional().describe('Client namespaces by name'),
        selector: labelSelectorSchema.optional().describe('Client namespaces by label'),
      })
      .optional()
      .describe('Clients the policy applies to (both lists OR-ed); unset: every admitted namespace'),
    priority: z
      .number()
      .int()
      .min(0)
      .max(1000)
      .default(100)
      .describe('Lower first; policies with equal priority are ordered by name'),
    rules: policyRulesSchema,
  })
  .describe('Rules for mail relayed for some client namespaces through some relays');
export type EmailPolicySpec = z.output<typeof emailPolicySpecSchema>;
export type EmailPolicyRules = z.output<typeof policyRulesSchema>;

export const emailPolicyStatusSchema = z
  .object({
    observedGeneration: z.number().int().min(0).optional(),
    conditions: conditionsSchema.optional(),
    relays: z
      .array(z.string())
      .max(1000)
      .optional()
      .describe('Relays whose configuration includes this policy'),
  })
  .describe('Observed state of the policy');
export type EmailPolicyStatus = z.output<typeof emailPolicyStatusSchema>;

export interface EmailPolicy extends KubeObject {
  spec?: unknown;
  status?: EmailPolicyStatus;
}
