import { z } from 'zod';
import { cidr } from './primitives.ts';

/**
 * A policy as the relay enforces it: what one set of clients may send. EmailPolicy resources
 * compile into these (the operator writes them into the relay config), and a plain config file
 * may list them too. Every constraint is optional; an absent one allows everything.
 */

const domain = z
  .string()
  .regex(
    /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/,
    'expected a domain, e.g. example.com or *.example.com',
  );
const address = z.string().regex(/^[^@\s<>]+@[^@\s<>]+$/, 'expected an address, e.g. noreply@example.com');
const headerName = z.string().regex(/^[!-9;-~]+$/, 'expected a header field name');

export const policySchema = z
  .object({
    name: z.string().min(1).describe('Shown in logs, metrics and refusals, e.g. "email-server-prod/team-a"'),
    match: z
      .object({
        namespaces: z
          .array(z.string())
          .optional()
          .describe('Client namespaces (from pod attribution); unset: any client'),
        clients: z.array(cidr).optional().describe('Client networks; unset: any client'),
      })
      .prefault({}),
    senders: z
      .object({
        domains: z.array(domain).default([]),
        addresses: z.array(address).default([]),
      })
      .optional()
      .describe('Allowed senders, for the envelope sender and the From: header'),
    recipients: z
      .object({
        allowDomains: z.array(domain).optional().describe('If set, only these recipient domains'),
        denyDomains: z.array(domain).default([]),
        denyAddresses: z.array(address).default([]),
      })
      .optional(),
    maxMessageSize: z.number().int().positive().optional(),
    maxRecipients: z.number().int().positive().optional(),
    rateLimits: z
      .object({
        per: z
          .enum(['namespace', 'client'])
          .default('client')
          .describe('Who a limit counts: a namespace or a client address'),
        messagesPerMinute: z.number().int().positive().optional(),
        recipientsPerDay: z.number().int().positive().optional(),
      })
      .optional(),
    rewriteSender: address
      .optional()
      .describe('Replace the envelope sender and the From: address (a registered Workspace sender)'),
    headers: z
      .object({
        add: z.record(headerName, z.string().regex(/^[^\r\n]*$/, 'no line breaks')).default({}),
        remove: z.array(headerName).default([]),
      })
      .optional(),
  })
  .strict();

export type Policy = z.output<typeof policySchema>;
