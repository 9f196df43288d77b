import { randomBytes } from 'node:crypto';
import type { QueuedMessage, Spool } from '../spool/types.ts';
import { buildDsn, type DsnAction, type DsnRecipient } from './dsn.ts';
import type { QueuePolicy } from './schedule.ts';
import { giveUpAt, type Notice } from './settle.ts';

/**
 * Turns owed notifications into DSN messages queued in the spool (`isBounce: true`, null sender),
 * so they are durable and delivered, retried and expired like any other mail (Postfix's bounce
 * daemon writes into the queue the same way).
 */

/** Without RET, a failure DSN carries the whole original up to this size, else its headers (Postfix bounce_size_limit). */
export const FULL_RETURN_LIMIT = 50_000;

export interface BounceContext {
  spool: Spool;
  hostname: string;
  policy: QueuePolicy;
  /** The upstream, for Remote-MTA. */
  remoteMta?: string;
  now: number;
}

function returnsFullMessage(kind: DsnAction, msg: QueuedMessage): boolean {
  // Delay and success notices return headers only: the sender still has, or got, the message.
  if (kind !== 'failed') return false;
  if (msg.dsn?.ret) return msg.dsn.ret === 'FULL';
  return msg.size <= FULL_RETURN_LIMIT;
}

export function dsnRecipients(
  kind: DsnAction,
  msg: QueuedMessage,
  notices: readonly Notice[],
  ctx: Pick<BounceContext, 'policy' | 'remoteMta' | 'now'>,
): DsnRecipient[] {
  return notices.map(({ rcpt, result }) => ({
    address: rcpt.address,
    ...(rcpt.orcpt ? { orcpt: rcpt.orcpt } : {}),
    action: kind,
    status: result.status,
    ...(result.remote && ctx.remoteMta ? { remoteMta: ctx.remoteMta } : {}),
    diagnostic: result.reply,
    remote: result.remote,
    ...(result.command ? { command: result.command } : {}),
    lastAttemptAt: ctx.now,
    ...(kind === 'delayed' ? { willRetryUntil: giveUpAt(msg, ctx.policy) } : {}),
  }));
}

/** Builds the DSN and commits it to the spool; resolves with the queued notification. */
export async function queueNotice(
  kind: DsnAction,
  msg: QueuedMessage,
  notices: readonly Notice[],
  ctx: BounceContext,
): Promise<QueuedMessage> {
  const full = returnsFullMessage(kind, msg);
  const eightBit = msg.bodyType === '8BITMIME' || Boolean(msg.smtputf8);
  const token = randomBytes(6).toString('hex');
  const messageId = `<${msg.id}.${token}@${ctx.hostname}>`;
  const stream = buildDsn({
    reportingMta: ctx.hostname,
    sender: msg.from,
    queueId: msg.id,
    arrivalDate: msg.receivedAt,
    ...(msg.dsn?.envid ? { envid: msg.dsn.envid } : {}),
    recipients: dsnRecipients(kind, msg, notices, ctx),
    original: ctx.spool.openBody(msg.id),
    headersOnly: !full,
    eightBit,
    date: ctx.now,
    messageId,
    boundary: `${msg.id}.${token}/${ctx.hostname}`,
  });
  const writer = await ctx.spool.begin();
  try {
    for await (const chunk of stream) await writer.write(chunk as Buffer);
    return await writer.commit({
      from: '',
      recipients: [{ address: msg.from }],
      client: { address: '127.0.0.1', hostname: ctx.hostname },
      messageId,
      bodyType: eightBit ? '8BITMIME' : '7BIT',
      ...(msg.smtputf8 ? { smtputf8: true } : {}),
      isBounce: true,
    });
  } catch (err) {
    stream.destroy();
    await writer.abort().catch(() => {});
    throw err;
  }
}
