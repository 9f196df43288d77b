import type { Policy } from '../../config/policy.ts';
import type { HeaderEdits, Refusal } from '../access/policy.ts';
import type { ClientInfo } from '../spool/types.ts';
import type { CommandGuard } from './session-guard.ts';

/**
 * What the relay keeps per SMTP connection, next to smtp-server's own session (the adapter hands
 * it to every callback). `client` is looked up once (again after AUTH changes who it is);
 * `transaction` is created when MAIL FROM is accepted and replaced by the next one.
 */
export interface SessionState {
  /** onConnect ran and counted this connection (per-address count, active gauge). */
  counted: boolean;
  /** The command deadline (session-guard.ts). */
  guard?: CommandGuard;
  /** Gives back the connection's slot (session-guard.ts), once it holds one. */
  release?: () => void;
  client?: ClientInfo;
  transaction?: Transaction;
}

/** One mail transaction: who sends, under which policies, with which header edits. */
export class Transaction {
  /** The From: header's refusal, once the header block was seen. */
  refusal: Refusal | undefined;
  /** Recipients accepted so far (RCPT TO answered 250). */
  recipients = 0;

  constructor(
    readonly client: ClientInfo,
    readonly policies: Policy[],
    /** The envelope sender ('' for a bounce). */
    readonly sender: string,
    readonly edits: HeaderEdits | undefined,
  ) {}
}
