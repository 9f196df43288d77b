import { z } from 'zod';

/** The API group and version of DESIGN.md's public contract. */
export const GROUP = 'email.bionicaisolutions.com';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

/** The label an app namespace carries to opt in (the default `spec.access.namespaceSelector`). */
export const RELAY_ACCESS_LABEL = `${GROUP}/relay-access`;

/** A CEL rule carried twice: into the CRD (admission) and into zod (the operator's own parse). */
export interface CelRule<T> {
  rule: string;
  message: string;
  /** The same invariant in TypeScript, so a spec that slipped past a stale CRD is still caught. */
  check: (value: T) => boolean;
  /** Field the error is reported on (CEL fieldPath), relative to the object the rule sits on. */
  fieldPath?: string;
}

/** Attaches CEL rules to an object schema: `x-kubernetes-validations` in the CRD, a refinement in zod. */
export function withCel<S extends z.ZodType>(schema: S, rules: CelRule<z.output<S>>[]): S {
  const refined = schema.superRefine((value, ctx) => {
    for (const r of rules) {
      if (!r.check(value as z.output<S>)) {
        ctx.addIssue({
          code: 'custom',
          message: r.message,
          path: r.fieldPath ? r.fieldPath.replace(/^\./, '').split('.') : [],
        });
      }
    }
  });
  return refined.meta({
    'x-kubernetes-validations': rules.map(({ rule, message, fieldPath }) =>
      fieldPath ? { rule, message, fieldPath } : { rule, message },
    ),
  }) as unknown as S;
}

export const dns1123Label = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'expected a DNS-1123 label (lower case, digits, "-")');

export const dns1123Subdomain = z
  .string()
  .min(1)
  .max(253)
  .regex(
    /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
    'expected a DNS-1123 subdomain (lower case, digits, "-" and ".")',
  );

/** metav1.LabelSelector. Atomic, as upstream: a selector is replaced whole, never merged. */
export const labelSelectorSchema = z
  .object({
    matchLabels: z
      .record(z.string(), z.string())
      .optional()
      .describe('Labels that must all be present with these values'),
    matchExpressions: z
      .array(
        z.object({
          key: z.string().min(1).describe('Label key'),
          operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']),
          values: z.array(z.string()).optional().describe('For In and NotIn'),
        }),
      )
      .max(32)
      .optional()
      .describe('Label requirements that must all hold'),
  })
  .meta({ 'x-kubernetes-map-type': 'atomic' })
  .describe('A Kubernetes label selector; {} selects everything');
export type LabelSelector = z.output<typeof labelSelectorSchema>;

const QUANTITY =
  /^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$/;

/** resource.Quantity: `1`, `500m`, `128Mi`. */
export const quantitySchema = z
  .union([z.number().int(), z.string().regex(QUANTITY, 'expected a quantity such as 500m or 128Mi')])
  .meta({ 'x-kubernetes-int-or-string': true });

/** A reference to a key-bearing Secret in the same namespace. */
export const secretRefSchema = z.object({
  name: dns1123Subdomain.describe('Secret in the namespace of the resource'),
});

/** metav1.Condition, as in the Kubernetes API conventions. */
export const conditionSchema = z.object({
  type: z.string().max(316).describe('Ready, Available, Progressing, Degraded, ...'),
  status: z.enum(['True', 'False', 'Unknown']),
  reason: z.string().max(1024).describe('CamelCase reason for the last transition'),
  message: z.string().max(32768).describe('Human-readable details'),
  lastTransitionTime: z.string().describe('When status last changed (RFC 3339)'),
  observedGeneration: z
    .number()
    .int()
    .min(0)
    .optional()
    .describe('metadata.generation this was computed from'),
});
export type Condition = z.output<typeof conditionSchema>;

/** `status.conditions` as a map-list keyed by type, so server-side apply merges per condition. */
export const conditionsSchema = z
  .array(conditionSchema)
  .max(16)
  .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'] })
  .describe('Latest observations of the resource state');

export type { KubeObject, ObjectMeta, OwnerReference } from '../../lib/kube/object.ts';
