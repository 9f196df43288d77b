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

/**
 * How an upstream's replies are read. `recipient`: about that recipient (5xx bounces it, 4xx
 * defers it); `relay`: about this relay's identity, credentials, quota or rate (the whole route is
 * held and retried on its own schedule; nothing is bounced before the message's lifetime ends);
 * `connection`: the session failed (counts towards the circuit breaker).
 */
export const replyRuleSchema = z
  .object({
    reply: z
      .string()
      .min(1)
      .refine((v) => {
        try {
          new RegExp(v, 'i');
          return true;
        } catch {
          return false;
        }
      }, 'expected a regular expression')
      .describe(
        'Regular expression (case-insensitive) tested against the one-line reply, e.g. "^550 5\\.7\\.0 "',
      ),
    class: z.enum(['recipient', 'relay', 'connection']),
    reason: z
      .enum(['identity', 'auth', 'quota', 'rate', 'config'])
      .optional()
      .describe(
        'For class relay: what is wrong (picks the hold schedule; rate backs off and resumes slowly)',
      ),
  })
  .strict()
  .refine((r) => r.class !== 'relay' || r.reason !== undefined, {
    message: 'a relay-level rule needs a reason',
    path: ['reason'],
  });

export const replyClassesSchema = z
  .object({
    profile: z
      .enum(['auto', 'google', 'generic'])
      .default('auto')
      .describe(
        "Built-in table after the rules; auto: google for Google's relay (*.gmail.com), else generic",
      ),
    rules: z.array(replyRuleSchema).default([]).describe('Tried first, in order; the first match wins'),
  })
  .strict();

const upstreamDeadlinesSchema = z
  .object({
    // Postfix's smtp_*_timeout values, except where noted; each bounds the wait for one whole reply.
    helo: seconds.min(1).default(300).describe('EHLO and STARTTLS replies (Postfix smtp_helo_timeout)'),
    auth: seconds.min(1).default(120).describe('Each AUTH exchange'),
    mail: seconds.min(1).default(300).describe('MAIL FROM reply (smtp_mail_timeout)'),
    rcpt: seconds.min(1).default(300).describe('Each RCPT TO reply (smtp_rcpt_timeout)'),
    dataInit: seconds.min(1).default(120).describe('DATA reply (smtp_data_init_timeout)'),
    dataXfer: seconds
      .min(1)
      .default(180)
      .describe('Sending the message: longest time without progress (smtp_data_xfer_timeout)'),
    dataDone: seconds.min(1).default(600).describe('Reply to the final dot (smtp_data_done_timeout)'),
    rset: seconds.min(1).default(20).describe('RSET reply (smtp_rset_timeout)'),
    attempt: seconds
      .min(1)
      .default(600)
      .describe('A whole delivery attempt of one message, however slowly the upstream trickles its replies'),
  })
  .strict();

const holdSchema = z
  .object({
    initialSeconds: seconds.min(0.01).default(60).describe('Identity, auth, config refusals: first hold'),
    maxSeconds: seconds.min(0.01).default(900),
    multiplier: z.number().min(1).default(2).describe('Growth of the hold after each refused probe'),
    quotaInitialSeconds: seconds.min(0.01).default(900).describe('Quota refusals (daily limits): first hold'),
    quotaMaxSeconds: seconds.min(0.01).default(3600),
    rateInitialSeconds: seconds.min(0.01).default(60).describe('Rate refusals (peak limits): first back-off'),
    rateMaxSeconds: seconds.min(0.01).default(900),
    resumeSeconds: seconds
      .default(60)
      .describe('After a rate back-off: time to ramp from one connection back up to maxConnections'),
  })
  .strict();

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
        controlSocket: z
          .string()
          .optional()
          .describe(
            'Unix socket of `email-relay queue` on a running relay; default <dir>/control.sock, or under $XDG_RUNTIME_DIR or /tmp where the spool volume cannot hold sockets',
          ),
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
        idleTimeoutSeconds: seconds
          .default(300)
          .describe(
            'To complete a command, counted from the last one however slowly its bytes trickle in (then 421 4.4.2)',
          ),
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
                replyClasses: replyClassesSchema
                  .optional()
                  .describe("How this smarthost's replies are read (default: the upstream's)"),
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
        deadlines: upstreamDeadlinesSchema
          .prefault({})
          .describe('Upstream command and attempt deadlines, seconds'),
        replyClasses: replyClassesSchema.prefault({}),
        hold: holdSchema
          .prefault({})
          .describe("Schedules of a route held by a relay-level refusal (its own, not the messages')"),
        preflight: z
          .boolean()
          .default(true)
          .describe('At start: connect, EHLO, STARTTLS and AUTH as configured, QUIT; report the result'),
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
  .strict()
  .superRefine((c, ctx) => {
    // Google's relay answers "421 4.7.0 Try again later, closing connection. (EHLO)" to a name that
    // is not fully qualified, forever: refuse to start rather than queue mail that cannot leave.
    const google = [c.upstream.url, ...c.upstream.routes.map((r) => r.url)].find(
      (u) => u !== undefined && isGoogleRelay(u),
    );
    if (google && !isFqdn(c.hostname)) {
      ctx.addIssue({
        code: 'custom',
        path: ['hostname'],
        message: `${JSON.stringify(c.hostname)} is not a fully qualified domain name, and ${google} refuses EHLO with such names (421 4.7.0): set hostname, e.g. mail.example.com`,
      });
    }
  });

/** A name with at least two labels and an alphabetic top-level one (not "localhost", not a pod name). */
export function isFqdn(name: string): boolean {
  const labels = name.replace(/\.$/, '').split('.');
  return (
    labels.length >= 2 && /^[a-z][a-z0-9-]*$/i.test(labels.at(-1) ?? '') && name !== 'localhost.localdomain'
  );
}

/** smtp-relay.gmail.com, smtp.gmail.com, aspmx.l.google.com and friends. */
export function isGoogleRelay(url: string): boolean {
  const host = /^[a-z+]+:\/\/([^/:]+)/i.exec(url)?.[1]?.toLowerCase() ?? '';
  return /(^|\.)(gmail|googlemail|google)\.com\.?$/.test(host);
}

export type RelayConfig = z.output<typeof configSchema>;
export type RelayConfigInput = z.input<typeof configSchema>;
