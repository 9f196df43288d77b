import { z } from 'zod';
import { policyRulesSchema as baseRulesSchema } from '../../config/policy.ts';
import { conditionsSchema, dns1123Label, type KubeObject, labelSelectorSchema, withCel } from './meta.ts';

/**
 * EmailPolicy: rules for mail through the relays of its namespace. The operator validates them
 * and compiles the matching ones into each relay's configuration (`relay.yaml`, `policies`);
 * the relay enforces them.
 */

/** The rules are the relay's own (src/config/policy.ts); the CRD adds a cross-field CEL rule. */
export const policyRulesSchema = withCel(baseRulesSchema, [
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
]);

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
