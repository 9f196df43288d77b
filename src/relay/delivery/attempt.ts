import type { Readable } from 'node:stream';
import type { QueuedMessage, QueuedRecipient, Spool } from '../spool/types.ts';
import { type Batch, batchRecipients } from './batch.ts';
import { InMemoryBody, JOIN_BYTES } from './body.ts';
import { interruption } from './deadlines.ts';
import {
  localDeferral,
  type RecipientResult,
  type ReplyClass,
  replyCode,
  type SmtpErrorLike,
  type Verdict,
  verdictOfError,
} from './reply.ts';
import { asHeld, type CompiledRule, classify, replyText } from './reply-classes.ts';
import type { Refusal } from './route-state.ts';
import {
  type Session,
  type TransactionEnvelope,
  type TransactionResult,
  type UpstreamPool,
  UpstreamSuspended,
} from './transport.ts';

/**
 * One delivery attempt of one message to the upstream: a session from the pool, then one
 * transaction per batch of at most maxRecipientsPerTransaction recipients, each streaming the body
 * from the spool. Only talks to the upstream; deciding what the verdicts mean is settle.ts's job.
 */

export interface TransactionReport {
  recipients: RecipientResult[];
  /** From session checkout (for the first transaction) to the final reply. */
  seconds: number;
  replies: ReplyClass[];
}

export interface AttemptResult {
  results: Map<string, RecipientResult>;
  /** Recipients whose DSN parameters the upstream took (it reports success itself). */
  dsnPassed: Set<string>;
  /** Not dialed because the circuit breaker is open, until then. */
  suspendedUntil?: number;
  /** The first relay-level refusal met (its recipients were deferred, not bounced). */
  refusal?: Omit<Refusal, 'at'>;
  /** The upstream took at least one recipient. */
  accepted: boolean;
  /** Cut short by the attempt deadline (a slow upstream). */
  deadline: boolean;
}

export interface AttemptContext {
  pool: UpstreamPool;
  spool: Spool;
  maxRecipients: number;
  now: () => number;
  onTransaction: (t: TransactionReport) => void;
  /** The route's reply table (reply-classes.ts). */
  rules: readonly CompiledRule[];
}

function verdictsFor(recipients: readonly QueuedRecipient[], v: Verdict): RecipientResult[] {
  return recipients.map((r) => ({ ...v, address: r.address }));
}

/** A failure that happened before the upstream saw the message: a stale pooled session, say. */
function isNetworkOnly(r: TransactionResult): boolean {
  return [...r.verdicts.values()].every((v) => v.class === 'network' && v.outcome === 'deferred');
}

export async function attemptUpstream(
  msg: QueuedMessage,
  ctx: AttemptContext,
  signal: AbortSignal,
): Promise<AttemptResult> {
  const out: AttemptResult = { results: new Map(), dsnPassed: new Set(), accepted: false, deadline: false };
  const pending = msg.recipients.filter((r) => r.status === 'pending');
  const started = ctx.now();
  const record = (raw: RecipientResult[], t0: number, replies: ReplyClass[]) => {
    const results = raw.map((r) => {
      if (r.outcome === 'sent') out.accepted = true;
      const c = classify(r, ctx.rules);
      if (c.level !== 'relay' || !c.reason) return r;
      out.refusal ??= {
        text: replyText(r.reply),
        status: r.status,
        reason: c.reason,
        ...(replyCode(r.reply) !== undefined ? { code: replyCode(r.reply) } : {}),
        ...(r.command ? { command: r.command } : {}),
      };
      return asHeld(r);
    });
    for (const r of results) out.results.set(r.address, r);
    ctx.onTransaction({ recipients: results, seconds: (ctx.now() - t0) / 1000, replies });
  };
  const interrupted = () => {
    const why = interruption(signal);
    if (why.deadline) out.deadline = true;
    return localDeferral(why.text, why.status);
  };

  let lease: { session: Session; reused: boolean };
  try {
    lease = await ctx.pool.acquire(signal);
  } catch (err) {
    if (err instanceof UpstreamSuspended) {
      out.suspendedUntil = err.until;
      record(verdictsFor(pending, localDeferral(err.message)), started, []);
    } else {
      const v = signal.aborted ? interrupted() : verdictOfError(err as SmtpErrorLike);
      record(verdictsFor(pending, v), started, signal.aborted ? [] : [v.class]);
    }
    return out;
  }

  const batches = batchRecipients(pending, { max: ctx.maxRecipients, passDsn: lease.session.supportsDsn });
  let onLease = 0; // transactions on the current session
  try {
    for (let i = 0; i < batches.length; i++) {
      const batch = batches[i]!;
      const t0 = i === 0 ? started : ctx.now();
      if (signal.aborted) {
        record(verdictsFor(batch.recipients, interrupted()), t0, []);
        continue;
      }
      if (out.refusal) {
        // The upstream refused this relay: the rest of the message waits with the route.
        record(verdictsFor(batch.recipients, localDeferral(`route held: ${out.refusal.text}`)), t0, []);
        continue;
      }
      if (!lease.session.usable) {
        // The previous transaction lost the session; the rest of the message needs another.
        ctx.pool.release(lease.session);
        try {
          lease = await ctx.pool.acquire(signal);
          onLease = 0;
        } catch (err) {
          const v = acquireFailure(err);
          for (const rest of batches.slice(i)) record(verdictsFor(rest.recipients, v), t0, [v.class]);
          return out;
        }
      }
      let result = await sendBatch(msg, batch, lease.session, ctx, signal);
      if (lease.reused && onLease === 0 && result.untouched && isNetworkOnly(result) && !signal.aborted) {
        // A pooled session the server had dropped while idle: nothing was sent, so try once more
        // on a fresh one rather than deferring the message for minutes.
        ctx.pool.release(lease.session);
        try {
          lease = { session: (await ctx.pool.acquire(signal)).session, reused: false };
          result = await sendBatch(msg, batch, lease.session, ctx, signal);
        } catch (err) {
          const v = acquireFailure(err);
          for (const rest of batches.slice(i)) record(verdictsFor(rest.recipients, v), t0, [v.class]);
          return out;
        }
      }
      if (signal.aborted && interruption(signal).deadline) out.deadline = true;
      onLease++;
      const results = batch.recipients.map((r) => ({
        ...(result.verdicts.get(r.address) ?? localDeferral('no reply for recipient', '4.4.0')),
        address: r.address,
      }));
      if (lease.session.supportsDsn) for (const r of batch.recipients) out.dsnPassed.add(r.address);
      record(results, t0, result.replies);
    }
  } finally {
    ctx.pool.release(lease.session);
  }
  return out;
}

async function sendBatch(
  msg: QueuedMessage,
  batch: Batch<QueuedRecipient>,
  session: Session,
  ctx: AttemptContext,
  signal: AbortSignal,
): Promise<TransactionResult> {
  const dsn: TransactionEnvelope['dsn'] = session.supportsDsn
    ? {
        ...(msg.dsn?.ret ? { ret: msg.dsn.ret } : {}),
        ...(msg.dsn?.envid ? { envid: msg.dsn.envid } : {}),
        ...(batch.dsn?.notify ? { notify: batch.dsn.notify } : {}),
        ...(batch.dsn?.orcpt ? { orcpt: batch.dsn.orcpt } : {}),
      }
    : undefined;
  const env: TransactionEnvelope = {
    from: msg.from,
    to: batch.recipients.map((r) => r.address),
    size: msg.size,
    eightBit: msg.bodyType === '8BITMIME',
    ...(dsn && Object.keys(dsn).length ? { dsn } : {}),
  };
  let body: Readable;
  try {
    // Just received, the message is still in memory: no stream to read it through.
    const held = ctx.spool.bodyInMemory(msg.id);
    if (held) body = new InMemoryBody(joinSmall(held, JOIN_BYTES));
    else {
      body = ctx.spool.openBody(msg.id) as Readable;
      if (msg.size <= READ_AHEAD_BYTES) body = await readAhead(body);
    }
  } catch (err) {
    const v = verdictOfError({
      message: `cannot read queued message: ${(err as Error).message}`,
      code: 'ESTREAM',
    });
    return { verdicts: new Map(env.to.map((a) => [a, v])), replies: [], untouched: true };
  }
  return ctx.pool.send(session, env, body, signal);
}

/**
 * A body up to this size that is no longer in the spool's memory (after a restart, or evicted)
 * is read from disk before the transaction, so that a spool that cannot be read fails the attempt
 * before the upstream saw a byte (no broken session).
 */
const READ_AHEAD_BYTES = 256 * 1024;

async function readAhead(body: Readable): Promise<Readable> {
  const parts: Buffer[] = [];
  try {
    for await (const chunk of body) parts.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  } finally {
    body.destroy();
  }
  return new InMemoryBody(joinSmall(parts, JOIN_BYTES));
}

/** Joins runs of neighbouring buffers while the run stays within `max` bytes; larger ones stay whole. */
export function joinSmall(parts: readonly Buffer[], max: number): Buffer[] {
  const out: Buffer[] = [];
  let run: Buffer[] = [];
  let runBytes = 0;
  const close = () => {
    if (run.length) out.push(run.length === 1 ? run[0]! : Buffer.concat(run, runBytes));
    run = [];
    runBytes = 0;
  };
  for (const p of parts) {
    if (!p.length) continue;
    if (runBytes + p.length > max) close();
    if (p.length > max) out.push(p);
    else {
      run.push(p);
      runBytes += p.length;
    }
  }
  close();
  return out;
}

/** Why no session could be had: the breaker held the attempt back, or the dial failed. */
function acquireFailure(err: unknown): Verdict {
  return err instanceof UpstreamSuspended ? localDeferral(err.message) : verdictOfError(err as SmtpErrorLike);
}
