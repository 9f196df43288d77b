import { z } from 'zod';
import { cidr, hostPort, seconds } from './primitives.ts';

/**
 * The relay's replicas as one relay: queued mail handed to a peer when a replica leaves, and
 * rate limits counted across replicas. Peers are trusted by network identity only (a pod in a
 * trusted namespace, attributed from its address, or a trusted network): the hand-off listener
 * accepts mail without policy checks and with its original arrival time, so nobody else may use it.
 */
export const peersSchema = z
  .object({
    listen: hostPort
      .optional()
      .describe('Peer listener, HOST:PORT: hand-off SMTP on TCP, rate-limit reports on UDP; unset: none'),
    address: z
      .string()
      .regex(/^[^:\s]+:\d{1,5}$/, 'expected NAME:PORT')
      .optional()
      .describe(
        "The peers' listener: a DNS name resolving to every ready peer (the headless Service) and the port",
      ),
    addresses: z
      .array(hostPort)
      .default([])
      .describe('Peer listeners listed by hand (outside Kubernetes); used with or instead of address'),
    trust: z
      .object({
        namespaces: z
          .array(z.string().min(1))
          .default([])
          .describe('Pods of these namespaces are peers (needs access.kubernetes.enabled)'),
        networks: z.array(cidr).default([]).describe('Client networks that are peers'),
      })
      .prefault({}),
    drainOnShutdown: z
      .enum(['always', 'never', 'whenMarked'])
      .default('never')
      .describe(
        'On SIGTERM, hand queued mail to peers (or deliver it) before exiting: always, never, or when ' +
          'the pod carries the drain annotation the operator sets on scale-down (needs the pod API)',
      ),
    drainTimeoutSeconds: seconds
      .default(600)
      .describe('On SIGTERM, how long to hand off or deliver before leaving the rest on the volume'),
    sharedRateLimits: z
      .boolean()
      .default(true)
      .describe('Count rate limits across peers (UDP reports on the peer port) instead of per replica'),
    reportIntervalMs: z
      .number()
      .int()
      .min(50)
      .max(60_000)
      .default(500)
      .describe(
        'How often each replica sends all its rate-limit counts to its peers; the counts it moved go out within 50 ms regardless',
      ),
  })
  .prefault({});

export type PeersConfig = z.output<typeof peersSchema>;

/** Set by the operator on the pods a scale-down removes: with drainOnShutdown whenMarked, they hand off. */
export const DRAIN_ANNOTATION = 'email.bionicaisolutions.com/drain';
