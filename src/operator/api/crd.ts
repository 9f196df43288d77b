import { z } from 'zod';
import { emailPolicySpecSchema, emailPolicyStatusSchema } from './emailpolicy.ts';
import { emailRelayRootRules, emailRelaySpecSchema, emailRelayStatusSchema } from './emailrelay.ts';
import { GROUP, VERSION } from './meta.ts';

/**
 * CRDs generated from the zod schemas the operator parses with (`npm run crds`), so admission
 * and the reconciler can never disagree about what a valid spec is.
 */

type JsonSchema = Record<string, unknown>;

// zod emits these bounds for every .int(); they only add noise to `kubectl explain`.
const SAFE_INT_BOUNDS = new Set([Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]);

/**
 * JSON Schema (zod, OpenAPI 3.0 target) -> a structural schema as apiextensions.k8s.io/v1 wants:
 * no $ref/$schema, no `additionalProperties: false` (pruning does that job), and no
 * `additionalProperties` next to x-kubernetes-preserve-unknown-fields.
 */
export function toStructural(node: unknown, path = '$'): unknown {
  if (Array.isArray(node)) return node.map((n, i) => toStructural(n, `${path}[${i}]`));
  if (typeof node !== 'object' || node === null) return node;
  const src = node as JsonSchema;
  if ('$ref' in src || '$defs' in src || 'definitions' in src) {
    throw new Error(`${path}: $ref is not allowed in a structural schema; inline the schema`);
  }
  const out: JsonSchema = {};
  for (const [key, value] of Object.entries(src)) {
    if (key === '$schema' || key === 'id' || key === '$id') continue;
    if (key === 'additionalProperties' && (value === false || src['properties'] !== undefined)) continue;
    if (key === 'additionalProperties' && src['x-kubernetes-preserve-unknown-fields']) continue;
    if ((key === 'minimum' || key === 'maximum') && SAFE_INT_BOUNDS.has(value as number)) continue;
    if (key === 'default' || key === 'enum' || key === 'x-kubernetes-validations' || key === 'example') {
      out[key] = value; // values, not schemas
      continue;
    }
    if (key === 'properties') {
      const props: JsonSchema = {};
      for (const [name, schema] of Object.entries(value as JsonSchema)) {
        props[name] = toStructural(schema, `${path}.${name}`);
      }
      out[key] = props;
      continue;
    }
    out[key] = toStructural(value, `${path}.${key}`);
  }
  if (out['type'] === 'object' && isPlainObject(out['default'])) {
    out['default'] = withNestedDefaults(out, out['default']);
  }
  if (out['anyOf'] !== undefined && !out['x-kubernetes-int-or-string']) {
    throw new Error(`${path}: anyOf is only allowed for int-or-string; model it as an enum or an object`);
  }
  if (
    out['type'] === undefined &&
    !out['x-kubernetes-int-or-string'] &&
    !out['x-kubernetes-preserve-unknown-fields']
  ) {
    throw new Error(`${path}: a structural schema needs a type`);
  }
  if (out['x-kubernetes-int-or-string'] && Array.isArray(out['anyOf'])) {
    // Structural int-or-string is exactly anyOf [{type: integer}, {type: string}]; a pattern
    // moves up next to it (as upstream's Quantity), and zod's integer bounds are dropped.
    const arms = out['anyOf'] as JsonSchema[];
    for (const arm of arms) if (arm['pattern'] !== undefined) out['pattern'] = arm['pattern'];
    out['anyOf'] = arms.map((arm) => ({ type: arm['type'] }));
  }
  return out;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * `default: {}` spelled out with the defaults of its properties. The apiserver applies nested
 * defaults to objects, but checks CEL rules against a default value as written.
 */
function withNestedDefaults(schema: JsonSchema, value: Record<string, unknown>): Record<string, unknown> {
  const out = { ...value };
  for (const [name, prop] of Object.entries((schema['properties'] ?? {}) as Record<string, JsonSchema>)) {
    if (out[name] === undefined && prop['default'] !== undefined) out[name] = prop['default'];
    if (isPlainObject(out[name]) && prop['type'] === 'object') {
      out[name] = withNestedDefaults(prop, out[name] as Record<string, unknown>);
    }
  }
  return out;
}

export function openApiSchema(schema: z.ZodType): JsonSchema {
  return toStructural(
    z.toJSONSchema(schema, { io: 'input', target: 'openapi-3.0', unrepresentable: 'throw' }),
  ) as JsonSchema;
}

interface KindDefinition {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  description: string;
  spec: z.ZodType;
  status: z.ZodType;
  rootRules?: { rule: string; message: string }[];
  printerColumns: { name: string; type: string; jsonPath: string; description: string; priority?: number }[];
  scale?: { specReplicasPath: string; statusReplicasPath: string; labelSelectorPath: string };
}

export const KINDS: KindDefinition[] = [
  {
    kind: 'EmailRelay',
    plural: 'emailrelays',
    singular: 'emailrelay',
    shortNames: ['er', 'relay'],
    description:
      'An SMTP relay: in-cluster apps send to <name>.<namespace>.svc:25 without credentials, the relay queues ' +
      'each message durably and delivers it through an upstream smarthost.',
    spec: emailRelaySpecSchema,
    status: emailRelayStatusSchema,
    rootRules: emailRelayRootRules,
    printerColumns: [
      {
        name: 'Ready',
        type: 'string',
        jsonPath: '.status.conditions[?(@.type=="Ready")].status',
        description: 'The relay takes mail',
      },
      {
        name: 'Replicas',
        type: 'integer',
        jsonPath: '.status.readyReplicas',
        description: 'Ready relay pods',
      },
      {
        name: 'Desired',
        type: 'integer',
        jsonPath: '.spec.replicas',
        description: 'Wanted relay pods',
        priority: 1,
      },
      {
        name: 'Queued',
        type: 'integer',
        jsonPath: '.status.queue.queued',
        description: 'Messages queued on the relay pods',
      },
      {
        name: 'Oldest',
        type: 'date',
        jsonPath: '.status.queue.oldestQueuedAt',
        description: 'Age of the oldest queued message',
      },
      { name: 'Endpoint', type: 'string', jsonPath: '.status.endpoint', description: 'Where apps send mail' },
      {
        name: 'Upstream',
        type: 'string',
        jsonPath: '.spec.upstream.host',
        description: 'Smarthost',
        priority: 1,
      },
      {
        name: 'Reason',
        type: 'string',
        jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
        description: 'Why (not) ready',
        priority: 1,
      },
      { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp', description: 'Age' },
    ],
    scale: {
      specReplicasPath: '.spec.replicas',
      statusReplicasPath: '.status.replicas',
      labelSelectorPath: '.status.selector',
    },
  },
  {
    kind: 'EmailPolicy',
    plural: 'emailpolicies',
    singular: 'emailpolicy',
    shortNames: ['epol'],
    description:
      'Rules (senders, recipients, size, rate limits, rewriting, headers) for mail that some client namespaces ' +
      'send through the EmailRelays of this namespace.',
    spec: emailPolicySpecSchema,
    status: emailPolicyStatusSchema,
    printerColumns: [
      {
        name: 'Accepted',
        type: 'string',
        jsonPath: '.status.conditions[?(@.type=="Accepted")].status',
        description: 'The rules are valid',
      },
      { name: 'Relays', type: 'string', jsonPath: '.status.relays', description: 'Relays applying it' },
      {
        name: 'Priority',
        type: 'integer',
        jsonPath: '.spec.priority',
        description: 'Lower first',
        priority: 1,
      },
      { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp', description: 'Age' },
    ],
  },
];

export function crdName(def: Pick<KindDefinition, 'plural'>): string {
  return `${def.plural}.${GROUP}`;
}

export function buildCrd(def: KindDefinition): Record<string, unknown> {
  const root: JsonSchema = {
    type: 'object',
    description: def.description,
    required: ['spec'],
    properties: {
      apiVersion: { type: 'string', description: 'APIVersion of this representation of the object' },
      kind: { type: 'string', description: 'Kind of the object' },
      metadata: { type: 'object' },
      spec: openApiSchema(def.spec),
      status: openApiSchema(def.status),
    },
  };
  if (def.rootRules?.length) root['x-kubernetes-validations'] = def.rootRules;
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: crdName(def),
      labels: { 'app.kubernetes.io/name': 'email-relay', 'app.kubernetes.io/part-of': 'email-relay' },
    },
    spec: {
      group: GROUP,
      scope: 'Namespaced',
      names: {
        kind: def.kind,
        listKind: `${def.kind}List`,
        plural: def.plural,
        singular: def.singular,
        shortNames: def.shortNames,
        categories: ['email'],
      },
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          schema: { openAPIV3Schema: root },
          subresources: {
            status: {},
            ...(def.scale ? { scale: def.scale } : {}),
          },
          additionalPrinterColumns: def.printerColumns,
        },
      ],
    },
  };
}

export function buildCrds(): Record<string, unknown>[] {
  return KINDS.map(buildCrd);
}
