import { z } from 'zod';
import type { NewMessage, QueuedMessage } from '../spool/types.ts';

/**
 * What a relay hands to a peer along with a queued message's bytes, so nothing about the
 * message changes hands but its location: the queue id (it dates the message, so lifetimes and
 * delay warnings still count from the first arrival, and a repeated hand-off is recognised),
 * envelope and DSN parameters, the client it came from, the attempts made and each pending
 * recipient's last reply. Only pending recipients travel; the others are settled.
 *
 * On the wire it is one line before the message, `X-Email-Relay-Handoff: <base64 JSON>`, sent
 * only to a peer's hand-off listener, which strips it; nothing else ever reads it, and a relay's
 * own SMTP port never treats it as anything but a header of the message.
 */
export const HANDOFF_HEADER = 'X-Email-Relay-Handoff';

const recipient = z.object({
  address: z.string().min(1),
  notify: z.array(z.enum(['NEVER', 'SUCCESS', 'FAILURE', 'DELAY'])).optional(),
  orcpt: z.string().optional(),
  lastReply: z.string().optional(),
  delayNotified: z.boolean().optional(),
});

export const handoffMetaSchema = z.object({
  v: z.literal(1),
  id: z.string().regex(/^[0-9A-HJKMNP-TV-Z]{16}$/),
  from: z.string(),
  recipients: z.array(recipient).min(1),
  dsn: z.object({ ret: z.enum(['FULL', 'HDRS']).optional(), envid: z.string().optional() }).optional(),
  client: z.object({
    address: z.string(),
    hostname: z.string().optional(),
    helo: z.string().optional(),
    namespace: z.string().optional(),
    pod: z.string().optional(),
    user: z.string().optional(),
  }),
  messageId: z.string().optional(),
  bodyType: z.enum(['7BIT', '8BITMIME']).optional(),
  smtputf8: z.boolean().optional(),
  isBounce: z.boolean().optional(),
  attempts: z.number().int().nonnegative(),
  /** Bytes of the message that follow the line: the receiver checks it got them all. */
  size: z.number().int().nonnegative(),
  /** The relay that hands it over (for logs). */
  by: z.string(),
});
export type HandoffMeta = z.output<typeof handoffMetaSchema>;

export function handoffMeta(msg: QueuedMessage, by: string): HandoffMeta {
  return {
    v: 1,
    id: msg.id,
    from: msg.from,
    recipients: msg.recipients
      .filter((r) => r.status === 'pending')
      .map((r) => ({
        address: r.address,
        ...(r.notify ? { notify: r.notify } : {}),
        ...(r.orcpt ? { orcpt: r.orcpt } : {}),
        ...(r.lastReply ? { lastReply: r.lastReply } : {}),
        ...(r.delayNotified ? { delayNotified: r.delayNotified } : {}),
      })),
    ...(msg.dsn ? { dsn: msg.dsn } : {}),
    client: msg.client,
    ...(msg.messageId ? { messageId: msg.messageId } : {}),
    ...(msg.bodyType ? { bodyType: msg.bodyType } : {}),
    ...(msg.smtputf8 ? { smtputf8: msg.smtputf8 } : {}),
    ...(msg.isBounce ? { isBounce: msg.isBounce } : {}),
    attempts: msg.attempts,
    size: msg.size,
    by,
  };
}

export function encodeHandoffLine(meta: HandoffMeta): Buffer {
  return Buffer.from(`${HANDOFF_HEADER}: ${Buffer.from(JSON.stringify(meta)).toString('base64')}\r\n`);
}

/** Parses the line (without its CRLF); throws with a reason a peer can log. */
export function decodeHandoffLine(line: string): HandoffMeta {
  const prefix = `${HANDOFF_HEADER}: `;
  if (!line.startsWith(prefix)) throw new Error(`expected a ${HANDOFF_HEADER} line first`);
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(line.slice(prefix.length), 'base64').toString('utf8'));
  } catch {
    throw new Error(`unreadable ${HANDOFF_HEADER} line`);
  }
  const parsed = handoffMetaSchema.safeParse(json);
  if (!parsed.success) throw new Error(`invalid ${HANDOFF_HEADER}: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

/** The spool's NewMessage for a handed-off message (its attempts restored separately). */
export function newMessageOf(meta: HandoffMeta): NewMessage {
  return {
    from: meta.from,
    recipients: meta.recipients,
    ...(meta.dsn ? { dsn: meta.dsn } : {}),
    client: meta.client,
    ...(meta.messageId ? { messageId: meta.messageId } : {}),
    ...(meta.bodyType ? { bodyType: meta.bodyType } : {}),
    ...(meta.smtputf8 ? { smtputf8: meta.smtputf8 } : {}),
    ...(meta.isBounce ? { isBounce: meta.isBounce } : {}),
  };
}
