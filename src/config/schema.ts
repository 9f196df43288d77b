import { z } from 'zod';
import { peersSchema } from './peers.ts';
import { policySchema } from './policy.ts';
import { cidr, hostPort, labelSelector, seconds } from './primitives.ts';

/**
 * The relay configuration: the one contract between the operator (which renders it into a
 * ConfigMap) and the relay (which reads it). Durations are seconds, sizes bytes.
 * Secrets (upstream password, TLS key) are never values here, only paths to mounted files.
 */

const upstreamUrl = z
  .string()
  .regex(
    /^(smtp|smtp\+starttls|smtps):\/\/[^/\s:]+(:\d{1,5})?\/?$/,
    'expected smtp://, smtp+starttls:// or smtps://HOST[:PORT]',
  );

const upstreamAuthSchema = z.object({
  method: z.enum(['PLAIN', 'LOGIN', 'XOAUTH2']).default('PLAIN'),
  user: z.string().optional().describe('Or EMAIL_RELAY_UPSTREAM_USER, or userFile'),
  userFile: z.string().optional(),
  passwordFile: z
    .string()
    .optional()
    .describe('File with the password or OAuth2 access token; or EMAIL_RELAY_UPSTREAM_PASSWORD'),
});

export const tlsFilesSchema = z.object({
  certFile: z.string().describe('PEM certificate chain (e.g. a cert-manager Secret, tls.crt)'),
  keyFile: z.string().describe('PEM private key (tls.key)'),
});

export const configSchema = z
  .object({
    hostname: z
      .string()
      .min(1)
      .regex(
        /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/,
        'expected a host name',
      )
      .default('localhost')
      .describe('Name in the 220 banner, the EHLO sent upstream (Google refuses "localhost") and Received:'),
    listen: hostPort.default('127.0.0.1:2525').describe('SMTP listener, HOST:PORT'),
    http: hostPort.optional().describe('HTTP listener for /healthz, /readyz and /metrics'),
    spool: z
      .object({
        dir: z.string().default('./var/spool').describe('Queue directory; a persistent volume in Kubernetes'),
        minFreeBytes: z
          .number()
          .int()
          .nonnegative()
          .default(100 * 1024 * 1024)
          .describe('Refuse mail with 452 4.3.1 when less than this is free on the spool filesystem'),
        fsync: z.boolean().default(true).describe('fsync before 250; turn off only for throwaway tests'),
      })
      .prefault({}),
    smtp: z
      .object({
        maxMessageSize: z.number().int().positive().default(10_240_000).describe('Bytes; advertised as SIZE'),
        maxRecipients: z.number().int().positive().default(1000),
        maxClients: z.number().int().positive().default(1000).describe('Concurrent sessions in total'),
        maxClientsPerAddress: z.number().int().positive().default(100),
        maxCommandLength: z.number().int().min(512).default(2048).describe('Bytes per command line'),
        maxLineLength: z.number().int().min(1000).default(100_000).describe('Bytes per message line'),
        maxHeaderBytes: z
          .number()
          .int()
          .min(1000)
          .default(1024 * 1024)
          .describe('Bytes of the header section of a message'),
        greetDelaySeconds: seconds
          .default(0)
          .describe('Pause before the 220 greeting; clients that talk first are refused (pregreet test)'),
        idleTimeoutSeconds: seconds.default(300).describe('Between commands'),
        dataTimeoutSeconds: seconds.default(600).describe('For a whole DATA phase'),
        addMissingFrom: z
          .boolean()
          .default(true)
          .describe(
            'Add From: <envelope sender> to a message without one (Gmail refuses those), as Postfix ' +
              'always_add_missing_headers; a present From: is never rewritten except by a policy',
          ),
        bareLineEndings: z
          .enum(['normalize', 'reject'])
          .default('normalize')
          .describe('Bare CR or LF in a message: rewrite to CRLF, or refuse with 550 5.5.2'),
        tls: tlsFilesSchema
          .extend({
            required: z.boolean().default(false).describe('Refuse MAIL before STARTTLS'),
            reloadSeconds: seconds
              .min(0.1)
              .default(30)
              .describe('How often to look for a renewed certificate (reloaded without a restart)'),
          })
          .optional()
          .describe('Offer STARTTLS with this certificate; off by default (clients verify what is offered)'),
        auth: z
          .object({
            usersFile: z
              .string()
              .describe('Lines "user:password" or "user:scrypt:<salt>:<hash>" (a mounted Secret)'),
          })
          .optional()
          .describe(
            'SMTP AUTH PLAIN/LOGIN after STARTTLS, for clients that are not pods; they may relay from anywhere',
          ),
      })
      .refine((smtp) => !smtp.auth || smtp.tls, {
        message: 'auth needs tls: credentials are only accepted after STARTTLS',
        path: ['auth'],
      })
      .prefault({}),
    access: z
      .object({
        allow: z
          .array(cidr)
          .default(['127.0.0.0/8', '::1/128'])
          .describe('Client networks that may relay (Postfix mynetworks)'),
        kubernetes: z
          .object({
            enabled: z
              .boolean()
              .default(false)
              .describe('Attribute clients to pods and admit opted-in namespaces'),
            kubeconfig: z.string().optional().describe('Default: in-cluster service account'),
            namespaceSelector: labelSelector
              .default({ matchLabels: { 'email.bionicaisolutions.com/relay-access': 'true' } })
              .describe('Namespaces whose pods may relay'),
            lookupWaitSeconds: seconds
              .default(2)
              .describe('How long to wait for a pod the watch has not seen yet'),
          })
          .prefault({}),
      })
      .prefault({}),
    policies: z
      .array(policySchema)
      .default([])
      .describe(
        'Per-client rules (compiled from EmailPolicy resources); when several match, the strictest wins',
      ),
    upstream: z
      .object({
        url: upstreamUrl
          .optional()
          .describe('Smarthost. Unset: messages are written as .eml files into outboxDir'),
        outboxDir: z.string().default('./var/outbox'),
        auth: upstreamAuthSchema.optional(),
        routes: z
          .array(
            z
              .object({
                senderDomains: z
                  .array(z.string().regex(/^(\*\.)?[A-Za-z0-9.-]+$/, 'expected a domain or *.domain'))
                  .min(1),
                url: upstreamUrl,
                auth: upstreamAuthSchema
                  .optional()
                  .describe('Credentials of this smarthost (never the default ones)'),
              })
              .strict(),
          )
          .default([])
          .describe('Per-sender-domain smarthosts, tried in order; other mail goes to url'),
        maxConnections: z.number().int().positive().default(20),
        maxRecipientsPerTransaction: z.number().int().positive().default(100),
        maxMessagesPerConnection: z.number().int().positive().default(1000),
        connectTimeoutSeconds: seconds.default(30),
        greetingTimeoutSeconds: seconds.default(30),
        socketTimeoutSeconds: seconds.default(300),
        tlsRejectUnauthorized: z.boolean().default(true),
        caFile: z.string().optional().describe('Extra CA bundle to trust for the upstream'),
      })
      .prefault({}),
    queue: z
      .object({
        retryInitialSeconds: seconds.default(300),
        retryMaxSeconds: seconds.default(4000),
        retryMultiplier: z.number().min(1).default(2),
        retryJitter: z
          .number()
          .min(0)
          .max(1)
          .default(0.1)
          .describe('Fraction of random spread on each delay'),
        maxLifetimeSeconds: seconds.default(5 * 24 * 3600).describe('Bounce deferred mail older than this'),
        bounceLifetimeSeconds: seconds
          .default(5 * 24 * 3600)
          .describe('Drop undeliverable bounces older than this'),
        delayWarningSeconds: seconds.default(0).describe('Send a delay DSN after this long (0: never)'),
      })
      .prefault({}),
    peers: peersSchema,
    shutdownGraceSeconds: seconds.default(30).describe('On SIGTERM, time to finish in-flight transactions'),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    logAddresses: z
      .enum(['plain', 'mask', 'hash'])
      .default('plain')
      .describe(
        'Mail addresses in logs: plain, mask (j***@example.com) or hash (h-<keyed hash>@example.com, key from ' +
          'EMAIL_RELAY_LOG_HASH_KEY); the domain stays, field names never change',
      ),
  })
  .strict();

export type RelayConfig = z.output<typeof configSchema>;
export type RelayConfigInput = z.input<typeof configSchema>;
