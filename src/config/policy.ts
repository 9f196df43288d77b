import { z } from 'zod';
import { cidr, labelSelector } from './primitives.ts';

/**
 * Policy rules: what mail one set of clients may send and how it is changed. One definition for
 * both planes: EmailPolicy.spec.rules (the operator adds CEL rules and compiles matching
 * policies into each relay's config) and the relay's `policies` (also usable in a plain config
 * file). Every constraint is optional; an absent one allows everything.
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
const headerName = z.string().min(1).max(76).regex(HEADER_NAME, 'expected a header field name');

export const rateLimitSchema = z
  .object({
    per: z
      .enum(['namespace', 'sender', 'client'])
      .default('namespace')
      .describe('What is counted separately: client namespace, envelope sender, or client IP'),
    messages: z.number().int().min(1).optional().describe('Messages allowed per period'),
    recipients: z.number().int().min(1).optional().describe('Recipients allowed per period'),
    periodSeconds: z.number().int().min(1).max(86_400).default(60),
  })
  .describe('Sliding window; over the limit a client gets 450 4.7.1 and retries later');

export const policyRulesSchema = z
  .object({
    senders: z
      .object({
        domains: z.array(domain).max(256).optional().describe('Envelope sender domains that may send'),
        addresses: z.array(addressPattern).max(1024).optional().describe('Envelope senders that may send'),
      })
      .optional()
      .describe(
        'Allowed senders (envelope and From: header); unset: any sender (the upstream may still refuse it)',
      ),
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
              name: headerName,
              value: z
                .string()
                .max(998)
                .regex(/^[^\r\n]*$/, 'a header value is one line'),
            }),
          )
          .max(32)
          .optional()
          .describe('Headers added to every message'),
        remove: z.array(headerName).max(32).optional().describe('Header fields removed (case-insensitive)'),
      })
      .optional(),
  })
  .describe('What mail the policy allows and how it is changed');

export type PolicyRules = z.output<typeof policyRulesSchema>;

/** A policy in the relay config: rules plus the clients they apply to. Order matters: first wins. */
export const policySchema = z
  .object({
    name: z.string().min(1).describe('Shown in logs, metrics and refusals, e.g. "email-server-prod/team-a"'),
    match: z
      .object({
        namespaces: z.array(z.string()).optional().describe('Client namespaces by name'),
        namespaceSelector: labelSelector.optional().describe('Client namespaces by label'),
        clients: z.array(cidr).optional().describe('Client networks'),
      })
      .prefault({})
      .describe('Namespace name or selector (OR-ed), and client network; unset: every client'),
    rules: policyRulesSchema.prefault({}),
  })
  .strict();

export type Policy = z.output<typeof policySchema>;
