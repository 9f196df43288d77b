/**
 * The queue's data model and API, shared by the SMTP front end (which writes), delivery (which
 * claims due messages and records outcomes) and the `email-relay queue` CLI.
 */

export type DsnNotify = 'NEVER' | 'SUCCESS' | 'FAILURE' | 'DELAY';

export interface RecipientInput {
  address: string;
  /** RFC 3461 NOTIFY; undefined means the default (FAILURE, DELAY). */
  notify?: DsnNotify[];
  /** RFC 3461 ORCPT, as given (e.g. "rfc822;user@example.com"). */
  orcpt?: string;
}

export type RecipientStatus = 'pending' | 'sent' | 'bounced';

export interface QueuedRecipient extends RecipientInput {
  status: RecipientStatus;
  /** Last upstream reply or local error text for this recipient. */
  lastReply?: string;
  /** Whether a delay DSN was already sent for this recipient. */
  delayNotified?: boolean;
}

export interface ClientInfo {
  address: string;
  hostname?: string;
  helo?: string;
  /** Filled by namespace attribution in Kubernetes (access/). */
  namespace?: string;
  pod?: string;
  /** SMTP AUTH user, when the client authenticated. */
  user?: string;
}

/** What the SMTP front end knows when it commits a message. */
export interface NewMessage {
  /** Envelope sender; '' is the null sender (bounces). */
  from: string;
  recipients: RecipientInput[];
  dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string };
  client: ClientInfo;
  /** Message-ID header value, for logs. */
  messageId?: string;
  bodyType?: '7BIT' | '8BITMIME';
  smtputf8?: boolean;
  /** A DSN we generated: never bounced itself. */
  isBounce?: boolean;
  /** Attempts already made (a message handed over by a peer); default 0. */
  attempts?: number;
}

export interface QueuedMessage extends Omit<NewMessage, 'recipients'> {
  id: string;
  recipients: QueuedRecipient[];
  /** Bytes of the stored message (headers we added included). */
  size: number;
  /** ms since epoch. */
  receivedAt: number;
  /** ms since epoch; when delivery should next be tried. */
  nextAttemptAt: number;
  attempts: number;
}

/** The light per-message record the spool keeps in memory (never bodies). */
export interface QueueEntry {
  id: string;
  size: number;
  receivedAt: number;
  nextAttemptAt: number;
}

export interface SpoolWriter {
  /** The message's queue id, fixed when reception begins (it also dates the message). */
  readonly id: string;
  /** Append message bytes. Resolves when the chunk may be followed by another (backpressure). */
  write(chunk: Buffer): Promise<void>;
  /** Bytes written so far. */
  readonly size: number;
  /**
   * Make the message durable and queued: resolves only after file and directory are fsynced
   * (fsyncs are shared across concurrent commits: group commit). Only then may 250 be sent.
   * "File" is the spool's journal for small messages, the message's own file for large ones.
   */
  commit(meta: NewMessage): Promise<QueuedMessage>;
  /** Throw the partial message away (client aborted, size exceeded...). */
  abort(): Promise<void>;
}

export interface SpoolStats {
  messages: number;
  bytes: number;
  /** ms since epoch of the oldest message, undefined when empty. */
  oldestReceivedAt?: number;
  /** Durability work done since open (counters), for metrics and tests. */
  io?: SpoolIoStats;
}

export interface SpoolIoStats {
  /** fdatasync of single files (large messages, state changes, checkpoints). */
  fileSyncs: number;
  /** fsync of the queue directory (each covers every rename/unlink before it). */
  dirSyncs: number;
  /** fdatasync of the journal (each covers every record appended before it). */
  journalSyncs: number;
  journalRecords: number;
  /** Bytes in journal segments now. */
  journalBytes: number;
  journalSegments: number;
  checkpoints: number;
  /** Messages whose own file was fsynced by a checkpoint (i.e. not removed before it). */
  checkpointedMessages: number;
}

export interface Spool {
  readonly dir: string;
  /**
   * Start receiving a message into the spool. `id`: keep a peer's queue id (it dates the message);
   * throws with code EEXIST when that id is queued or being received here already.
   * `declaredSize` (MAIL FROM SIZE=) is reserved from the free space up front; past it, each
   * write checks there is room left above the reserve and fails with SpoolFullError (code
   * ESPOOLFULL) before touching it.
   */
  begin(opts?: { id?: string; declaredSize?: number }): Promise<SpoolWriter>;
  /** Full envelope of one message, read from disk; undefined if not queued. */
  get(id: string): Promise<QueuedMessage | undefined>;
  /** The message bytes, streamed from disk (never held whole in memory). */
  openBody(id: string): NodeJS.ReadableStream;
  /**
   * The message bytes while the spool still holds them in memory (just committed, small), as
   * the pieces they were stored in; undefined otherwise (then openBody reads them from disk).
   * The caller must not modify the buffers.
   */
  bodyInMemory(id: string): readonly Buffer[] | undefined;
  /** Persist changed delivery state (recipient statuses, attempts, nextAttemptAt) durably. */
  update(msg: QueuedMessage): Promise<void>;
  /** Remove a message for good (delivered, bounced, expired, deleted by an admin). */
  remove(id: string): Promise<void>;
  /** Entries, oldest first. */
  entries(): QueueEntry[];
  stats(): SpoolStats;
  /**
   * Free bytes on the spool filesystem minus the configured reserve and minus what receptions in
   * progress may still write (their declared SIZE or what they wrote, the larger); <= 0 means
   * refuse mail.
   */
  headroom(): Promise<number>;
  /** Whether the spool directory is writable (for /readyz). */
  writable(): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * What the spool found wrong with its own files, for metrics. 'lost': a message that cannot be
 * recovered (its only copy was damaged); 'quarantined': kept in quarantine/, out of delivery;
 * 'recovered': read from another copy (the journal, or its original envelope).
 */
export type SpoolDamageEvent =
  | { kind: 'lost'; id?: string; reason: string }
  | { kind: 'quarantined'; id: string; reason: string }
  | { kind: 'recovered'; id: string; reason: string };

/** A message kept in quarantine/: its files, for `queue list` and a person to look at. */
export interface QuarantinedMessage {
  id: string;
  files: string[];
}
