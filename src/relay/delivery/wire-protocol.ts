import type { ReplyClass, SmtpErrorLike, Verdict } from './reply.ts';
import type { TransactionEnvelope, WireOptions } from './wire.ts';

/** Messages between the relay's main thread (wire-thread.ts, RemoteWire) and the delivery thread. */

export type ToThread =
  | { op: 'dial'; call: number; opts: WireOptions }
  | {
      op: 'send';
      call: number;
      wire: number;
      env: TransactionEnvelope;
      /** The body so far (all of it unless `more`). */
      chunks: Buffer[];
      more: boolean;
    }
  /** The next body chunk, after a `pull`; `end` when there is no more, `error` when reading failed. */
  | { op: 'chunk'; call: number; chunk?: Buffer; end?: boolean; error?: string }
  | { op: 'quit'; call: number; wire: number }
  | { op: 'abort'; call: number };

export interface DialedInfo {
  wire: number;
  supportsDsn: boolean;
  authenticated: boolean;
  secure: boolean;
}

export interface SentInfo {
  verdicts: Array<[string, Verdict]>;
  replies: ReplyClass[];
  untouched: boolean;
  usable: boolean;
}

export type FromThread =
  | { op: 'dialed'; call: number; info?: DialedInfo; error?: SmtpErrorLike }
  | { op: 'sent'; call: number; result: SentInfo }
  | { op: 'quitted'; call: number }
  | { op: 'pull'; call: number }
  /** The server closed a session (an idle one, typically). */
  | { op: 'gone'; wire: number }
  | { op: 'log'; level: 'debug' | 'warn'; obj: object; msg: string };

/** An error's SMTP fields, which survive postMessage (an Error's own properties do not all). */
export function errorFields(err: unknown): SmtpErrorLike {
  const e = (err ?? {}) as SmtpErrorLike;
  const out: SmtpErrorLike = { message: e.message ?? String(err) };
  for (const k of ['code', 'originalCode', 'response', 'command'] as const)
    if (typeof e[k] === 'string') out[k] = e[k];
  if (typeof e.responseCode === 'number') out.responseCode = e.responseCode;
  return out;
}
