import { z } from 'zod';
import {
  conditionsSchema,
  dns1123Label,
  dns1123Subdomain,
  type KubeObject,
  labelSelectorSchema,
  quantitySchema,
  RELAY_ACCESS_LABEL,
  secretRefSchema,
  withCel,
} from './meta.ts';

/**
 * EmailRelay: one SMTP relay (a Deployment or StatefulSet of `email-relay relay` pods, two
 * Services, NetworkPolicies and a ConfigMap). Everything but `hostname` and `upstream` has a
 * default, and the defaults here are the defaults in the CRD: one definition, two enforcers.
 */

const FQDN = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;
const HOST = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;
const DOMAIN =
  /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;
const CIDR = /^([0-9]{1,3}(\.[0-9]{1,3}){3}(\/[0-9]{1,2})?|[0-9a-fA-F:]*:[0-9a-fA-F:.]*(\/[0-9]{1,3})?)$/;

const port = z.number().int().min(1).max(65535);

export const tlsModeSchema = z
  .enum(['starttls', 'implicit', 'opportunistic'])
  .describe(
    'starttls: STARTTLS required (port 587); implicit: TLS from the first byte (port 465); ' +
      'opportunistic: STARTTLS when offered, plain text otherwise',
  );

export const upstreamCredentialsSchema = secretRefSchema
  .extend({
    usernameKey: z
      .string()
      .min(1)
      .max(253)
      .default('username')
      .describe('Key of the user name in the Secret'),
    passwordKey: z
      .string()
      .min(1)
      .max(253)
      .default('password')
      .describe('Key of the password (or OAuth2 access token) in the Secret'),
    method: z.enum(['PLAIN', 'LOGIN', 'XOAUTH2']).default('PLAIN').describe('SASL mechanism'),
  })
  .describe('Secret with the smarthost credentials; mounted as files, never copied into the ConfigMap');

export const replyRuleSpecSchema = withCel(
  z
    .object({
      reply: z
        .string()
        .min(1)
        .max(1024)
        .describe(
          'Regular expression (case-insensitive) tested against the one-line reply, e.g. "^550 5\\.7\\.0 "',
        ),
      class: z
        .enum(['recipient', 'relay', 'connection'])
        .describe(
          'recipient: bounce (5xx) or defer (4xx) that recipient; relay: hold all mail of the route, bounce nothing ' +
            "before the message's lifetime ends; connection: counts towards the circuit breaker",
        ),
      reason: z
        .enum(['identity', 'auth', 'quota', 'rate', 'config'])
        .optional()
        .describe('For class relay: what is wrong (rate backs off and resumes slowly; quota holds longer)'),
    })
    .describe('How to read one kind of upstream reply'),
  [
    {
      rule: "self.class != 'relay' || has(self.reason)",
      message: 'a relay-level rule needs a reason',
      check: (r) => r.class !== 'relay' || r.reason !== undefined,
      fieldPath: '.reason',
    },
  ],
);

export const replyClassesSpecSchema = z
  .object({
    profile: z
      .enum(['auto', 'google', 'generic'])
      .default('auto')
      .describe("Built-in table tried after the rules; auto: Google's for *.gmail.com, else generic"),
    rules: z
      .array(replyRuleSpecSchema)
      .max(64)
      .optional()
      .describe('Tried first, in order; the first match wins'),
  })
  .describe("Which of the smarthost's refusals are about the relay itself rather than one recipient");

const upstreamEndpoint = {
  host: z.string().min(1).max(253).regex(HOST, 'expected a host name or IPv4 address').describe('Smarthost'),
  port: port.default(587).describe('Smarthost port'),
  tls: tlsModeSchema.default('starttls'),
  credentialsSecretRef: upstreamCredentialsSchema.optional(),
  replyClasses: replyClassesSpecSchema.optional(),
};

const noCleartextCredentials = {
  rule: "!has(self.credentialsSecretRef) || self.tls != 'opportunistic'",
  message: 'credentials are only sent over TLS: use tls starttls or implicit with credentialsSecretRef',
  check: (u: { tls: string; credentialsSecretRef?: unknown }) =>
    u.credentialsSecretRef === undefined || u.tls !== 'opportunistic',
};

export const routeSchema = withCel(
  z
    .object({
      senderDomains: z
        .array(z.string().max(253).regex(DOMAIN, 'expected a domain, optionally *.domain'))
        .min(1)
        .max(64)
        .describe('Envelope sender domains this route takes (*.example.com matches subdomains)'),
      ...upstreamEndpoint,
    })
    .describe('Mail from these sender domains goes to this smarthost instead'),
  [noCleartextCredentials],
);

export const upstreamSchema = withCel(
  z
    .object({
      ...upstreamEndpoint,
      maxConnections: z
        .number()
        .int()
        .min(1)
        .max(1000)
        .default(20)
        .describe('Concurrent upstream connections'),
      routes: z
        .array(routeSchema)
        .max(32)
        .optional()
        .describe('Per-sender-domain smarthosts; the first match wins, else the default upstream'),
    })
    .describe('The smarthost every message is relayed through, e.g. smtp-relay.gmail.com:587'),
  [noCleartextCredentials],
);

export const smtpSchema = z
  .object({
    port: port.default(25).describe('SMTP port of the Services and the pods'),
    maxMessageSize: z
      .number()
      .int()
      .min(1024)
      .max(1 << 30)
      .default(10_240_000)
      .describe('Bytes; advertised in EHLO as SIZE'),
    maxRecipients: z.number().int().min(1).max(100_000).default(1000).describe('Recipients per message'),
    maxClients: z.number().int().min(1).max(100_000).default(1000).describe('Concurrent sessions per pod'),
    addMissingFrom: z
      .boolean()
      .default(true)
      .describe('Add From: <envelope sender> to messages without one (Gmail refuses them)'),
  })
  .describe('Inbound SMTP limits');

export const accessSchema = z
  .object({
    namespaceSelector: labelSelectorSchema
      .default({ matchLabels: { [RELAY_ACCESS_LABEL]: 'true' } })
      .describe(`Namespaces whose pods may relay; default: those labelled ${RELAY_ACCESS_LABEL}: "true"`),
    extraCIDRs: z
      .array(z.string().max(64).regex(CIDR, 'expected an IP address or CIDR'))
      .max(64)
      .default([])
      .describe('Non-pod clients (VMs, nodes, other networks) that may relay'),
    attribution: z
      .boolean()
      .default(true)
      .describe(
        'The relay looks up the pod and namespace of each client (read-only watch of pods and namespaces, ' +
          'granted by the operator) and enforces namespaceSelector itself, even where the CNI ignores ' +
          'NetworkPolicy; false: podCIDRs are admitted and only the NetworkPolicy selects namespaces',
      ),
    podCIDRs: z
      .array(z.string().max(64).regex(CIDR, 'expected an IP address or CIDR'))
      .min(1)
      .max(16)
      .default(['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', 'fc00::/7'])
      .describe(
        'Pod networks of the cluster, admitted by the relay when attribution is off (the NetworkPolicy ' +
          'then narrows them to the selected namespaces)',
      ),
  })
  .describe(
    'Who may relay: pods of selected namespaces (enforced by the relay and by NetworkPolicy) and extra networks',
  );

const persistenceSchema = z
  .object({
    enabled: z
      .boolean()
      .default(true)
      .describe(
        'Keep the queue on a PersistentVolumeClaim per pod (a StatefulSet); false: emptyDir (a Deployment)',
      ),
    size: quantitySchema.default('1Gi').describe('Size of each queue volume'),
    storageClassName: z.string().max(253).optional().describe('StorageClass; default: the cluster default'),
  })
  .describe('Where the queue lives; persistent by default so a restarted pod loses nothing');

export const queueSchema = withCel(
  z
    .object({
      retryInitialSeconds: z.number().int().min(1).default(300).describe('First retry delay (Postfix: 300)'),
      retryMaxSeconds: z.number().int().min(1).default(4000).describe('Longest retry delay (Postfix: 4000)'),
      retryMultiplier: z.number().min(1).max(10).default(2).describe('Delay growth per attempt'),
      lifetimeSeconds: z
        .number()
        .int()
        .min(60)
        .default(5 * 24 * 3600)
        .describe('Bounce mail still undelivered after this long (Postfix: 5 days)'),
      persistence: persistenceSchema.prefault({}),
      drainTimeoutSeconds: z
        .number()
        .int()
        .min(10)
        .max(86_400)
        .default(600)
        .describe(
          'A pod removed by a scale-down hands its queue to the other pods (or delivers it) for up to this ' +
            'long before it stops; what is left stays on its volume and a drain Job takes it',
        ),
    })
    .describe('Retry schedule, lifetime and storage of the queue'),
  [
    {
      rule: 'self.retryMaxSeconds >= self.retryInitialSeconds',
      message: 'retryMaxSeconds must be at least retryInitialSeconds',
      check: (q) => q.retryMaxSeconds >= q.retryInitialSeconds,
      fieldPath: '.retryMaxSeconds',
    },
    {
      rule: 'self.lifetimeSeconds >= self.retryInitialSeconds',
      message: 'lifetimeSeconds must be at least retryInitialSeconds',
      check: (q) => q.lifetimeSeconds >= q.retryInitialSeconds,
      fieldPath: '.lifetimeSeconds',
    },
  ],
);

export const tlsSchema = z
  .object({
    secretName: dns1123Subdomain.describe(
      'A kubernetes.io/tls Secret (tls.crt, tls.key), e.g. from cert-manager',
    ),
    required: z.boolean().default(false).describe('Refuse MAIL before STARTTLS'),
  })
  .describe(
    'Offer STARTTLS to clients with this certificate (off by default: clients verify what is offered)',
  );

export const resourcesSchema = z
  .object({
    requests: z.record(z.string(), quantitySchema).optional().describe('e.g. {cpu: 100m, memory: 128Mi}'),
    limits: z.record(z.string(), quantitySchema).optional().describe('e.g. {memory: 512Mi}'),
  })
  .describe('Compute resources of the relay container');

const preserved = (description: string) =>
  z
    .record(z.string(), z.unknown())
    .meta({ 'x-kubernetes-preserve-unknown-fields': true })
    .describe(description);

export const schedulingSchema = z
  .object({
    nodeSelector: z.record(z.string(), z.string()).optional().describe('Pod nodeSelector'),
    tolerations: z.array(preserved('A core/v1 Toleration')).max(64).optional().describe('Pod tolerations'),
    affinity: preserved('A core/v1 Affinity').optional(),
    topologySpreadConstraints: z
      .array(preserved('A core/v1 TopologySpreadConstraint'))
      .max(16)
      .optional()
      .describe('Default: spread replicas over nodes when possible'),
    priorityClassName: z.string().max(253).optional(),
  })
  .describe('Where the relay pods run');

export const metricsSchema = z
  .object({
    enabled: z.boolean().default(true).describe('Serve /metrics and admit scrapes'),
    port: port.default(9090).describe('HTTP port of /healthz, /readyz and /metrics'),
    namespaceSelector: labelSelectorSchema
      .default({ matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } })
      .describe('Namespaces whose pods may scrape /metrics (the NetworkPolicy); default: "monitoring"'),
  })
  .describe('Prometheus metrics');

export const emailRelaySpecSchema = withCel(
  z
    .object({
      hostname: z
        .string()
        .max(253)
        .regex(FQDN, 'expected a fully qualified domain name (Google refuses "localhost" in EHLO)')
        .describe('FQDN in the 220 banner and the EHLO sent upstream, e.g. mail.example.com'),
      replicas: z
        .number()
        .int()
        .min(0)
        .max(100)
        .default(2)
        .describe('Relay pods; > 1 adds a PodDisruptionBudget'),
      image: z
        .string()
        .max(512)
        .optional()
        .describe("Relay image; default: the operator's own (one image, two roles)"),
      imagePullPolicy: z.enum(['Always', 'IfNotPresent', 'Never']).optional(),
      upstream: upstreamSchema,
      smtp: smtpSchema.prefault({}),
      access: accessSchema.prefault({}),
      queue: queueSchema.prefault({}),
      tls: tlsSchema.optional(),
      resources: resourcesSchema
        .default({ requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } })
        .describe('Compute resources of the relay container'),
      scheduling: schedulingSchema.prefault({}),
      metrics: metricsSchema.prefault({}),
      shutdownGraceSeconds: z
        .number()
        .int()
        .min(1)
        .max(3600)
        .default(30)
        .describe(
          'On SIGTERM, time to finish transactions in flight; the pod gets this plus the preStop delay',
        ),
      logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
      logAddresses: z
        .enum(['plain', 'mask', 'hash'])
        .default('plain')
        .describe(
          'Mail addresses in the relay logs: plain, mask (j***@example.com) or hash (h-<keyed hash>@example.com); ' +
            'for privacy rules',
        ),
    })
    .describe('Desired state of an SMTP relay'),
  [
    {
      rule: '!self.metrics.enabled || self.metrics.port != self.smtp.port',
      message: 'metrics.port and smtp.port must differ',
      check: (s) => !s.metrics.enabled || s.metrics.port !== s.smtp.port,
      fieldPath: '.metrics.port',
    },
  ],
);
export type EmailRelaySpec = z.output<typeof emailRelaySpecSchema>;
export type EmailRelaySpecInput = z.input<typeof emailRelaySpecSchema>;

export const emailRelayStatusSchema = z
  .object({
    observedGeneration: z.number().int().min(0).optional().describe('metadata.generation last reconciled'),
    conditions: conditionsSchema.optional(),
    replicas: z.number().int().min(0).optional().describe('Relay pods that exist'),
    readyReplicas: z.number().int().min(0).optional().describe('Relay pods ready to take mail'),
    selector: z.string().optional().describe('Label selector of the pods (for the scale subresource)'),
    endpoint: z.string().optional().describe('host:port apps send to (the ClusterIP Service)'),
    endpoints: z
      .array(z.string())
      .max(4)
      .optional()
      .describe('Every host:port that reaches the relay: the Service and the headless Service'),
    admittedNamespaces: z
      .array(z.string())
      .max(10_000)
      .optional()
      .describe('Namespaces currently selected by spec.access.namespaceSelector'),
    policies: z.array(z.string()).max(1000).optional().describe('EmailPolicies compiled into the config'),
    configHash: z.string().optional().describe('Hash of the rendered configuration (on the pod template)'),
    workload: z.string().optional().describe('Deployment/<name> or StatefulSet/<name>'),
    queue: z
      .object({
        queued: z.number().int().min(0).describe('Messages queued on all relay pods'),
        deferred: z.number().int().min(0).describe('Of which waiting for a retry'),
        oldestQueuedAt: z.string().optional().describe('Arrival time of the oldest queued message'),
        deliveredLastHour: z.number().int().min(0),
        bouncedLastHour: z.number().int().min(0),
        lastRefusal: z
          .object({
            reply: z.string().describe("The upstream's reply as given, e.g. 550 5.7.0 Mail relay denied ..."),
            at: z.string(),
            upstream: z.string(),
            pod: z.string(),
          })
          .optional()
          .describe('The latest refusal of the relay itself by an upstream, on any pod'),
        pods: z.number().int().min(0).describe('Pods whose summary these totals add up'),
      })
      .optional()
      .describe("Totals of the pods' queues, read from each pod's /summary"),
    strandedQueues: z
      .array(
        z.object({
          claim: z.string().describe('PersistentVolumeClaim of an ordinal at or above spec.replicas'),
          ordinal: z.number().int().min(0),
          job: z.string().describe('The drain Job emptying it'),
          queued: z.number().int().min(0).optional().describe("Messages left, from the Job's /summary"),
        }),
      )
      .max(1000)
      .optional()
      .describe('Queue volumes no relay pod serves that may still hold mail, until a drain Job empties them'),
  })
  .describe('Observed state of the relay');
export type EmailRelayStatus = z.output<typeof emailRelayStatusSchema>;

export interface EmailRelay extends KubeObject {
  spec?: unknown;
  status?: EmailRelayStatus;
}

/** Root-level rules: names end up in Service and pod names, which are DNS-1035 labels of at most 63. */
export const emailRelayRootRules = [
  {
    rule: "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 52",
    message:
      'metadata.name must be a DNS-1035 label of at most 52 characters (it names Services, <name>-headless and pods)',
  },
];

export const RELAY_NAME_MAX = 52;
export const relayNameSchema = dns1123Label.max(RELAY_NAME_MAX).regex(/^[a-z]/, 'must start with a letter');
