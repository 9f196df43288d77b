import type { DsnNotify, RecipientInput } from '../spool/types.ts';

/**
 * Splitting one message's pending recipients into upstream transactions. Pure.
 *
 * - At most `max` recipients per transaction (Google's relay takes 100).
 * - nodemailer's smtp-connection sends one NOTIFY/ORCPT for a whole transaction, so when the
 *   upstream takes DSN parameters, recipients are grouped by them. When it does not, they are not
 *   sent and grouping would only cost transactions.
 */

export interface RecipientDsn {
  notify?: DsnNotify[];
  orcpt?: string;
}

export interface Batch<R extends RecipientInput = RecipientInput> {
  recipients: R[];
  /** DSN parameters for every RCPT of this transaction; undefined when none are passed upstream. */
  dsn?: RecipientDsn;
}

/**
 * ORCPT worth passing upstream: not the one that merely repeats the recipient's address (many
 * clients send `ORCPT=rfc822;<rcpt>`), which would otherwise force one transaction per recipient.
 */
export function effectiveOrcpt(r: RecipientInput): string | undefined {
  if (!r.orcpt) return undefined;
  const m = /^rfc822;\s*(.*)$/i.exec(r.orcpt);
  if (m && (m[1] ?? '').toLowerCase() === r.address.toLowerCase()) return undefined;
  return r.orcpt;
}

function dsnOf(r: RecipientInput): RecipientDsn | undefined {
  const orcpt = effectiveOrcpt(r);
  const notify = r.notify?.length ? [...r.notify] : undefined;
  if (!notify && !orcpt) return undefined;
  return { ...(notify ? { notify } : {}), ...(orcpt ? { orcpt } : {}) };
}

export function batchRecipients<R extends RecipientInput>(
  recipients: readonly R[],
  opts: { max: number; passDsn: boolean },
): Batch<R>[] {
  const max = Math.max(1, Math.floor(opts.max));
  // Groups keep the order in which their first recipient appears (stable, predictable logs).
  const groups = new Map<string, { dsn?: RecipientDsn; recipients: R[] }>();
  for (const r of recipients) {
    const dsn = opts.passDsn ? dsnOf(r) : undefined;
    const key = dsn ? JSON.stringify([dsn.notify?.join(',') ?? '', dsn.orcpt ?? '']) : '';
    let g = groups.get(key);
    if (!g) {
      g = { ...(dsn ? { dsn } : {}), recipients: [] };
      groups.set(key, g);
    }
    g.recipients.push(r);
  }
  const batches: Batch<R>[] = [];
  for (const g of groups.values()) {
    for (let i = 0; i < g.recipients.length; i += max) {
      batches.push({ recipients: g.recipients.slice(i, i + max), ...(g.dsn ? { dsn: g.dsn } : {}) });
    }
  }
  return batches;
}
