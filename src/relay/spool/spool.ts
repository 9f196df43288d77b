/**
 * The live spool. How a message becomes durable (format: format.ts):
 *
 * - Small message (<= inlineMaxBytes, buffered in memory while received): one PUT record in the
 *   journal (journal.ts); the group-committed fdatasync of the journal is the commit point. The
 *   message is then read in place from its segment. Removing it appends a DELETE record.
 * - Large message (or journal off/over its cap): streamed to tmp/, fdatasync, rename into queue/,
 *   then a group-committed fsync of queue/ (one covers every rename and unlink before it).
 * - Delivery state: write tmp/ + fdatasync + rename into queue/ + the same group fsync of queue/.
 * - Checkpoint (background, a few seconds later): messages of the oldest journal segment still
 *   queued get a file of their own (written, fdatasync, renamed), queue/ is fsynced, the segment
 *   is deleted and wal/ fsynced. Those delivered meanwhile never cost a file.
 *
 * Nothing in queue/ or wal/ is ever partially written and reachable: a crash leaves at most
 * files in tmp/ (deleted at open) and a torn journal tail (ignored: its commit never resolved).
 * Opening rebuilds the index from the journal's records and the file names in queue/.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp, mkdirSync, readdirSync, renameSync, rmSync, statfsSync, unlinkSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { type Logger, silentLogger } from '../../lib/logger.ts';
import { mapLimit, syncOrPoison, unlinkQuiet, writeAll, writeNewFile } from './disk.ts';
import {
  encodeDelRecord,
  encodeEnvelope,
  encodeMessageImage,
  encodePreamble,
  encodePutRecord,
  FORMAT_FILE,
  FORMAT_FILE_CONTENT,
  imageLength,
  messageFileName,
  PREAMBLE_SIZE,
  SpoolFormatError,
  stateFileName,
} from './format.ts';
import { GroupCommit } from './group-commit.ts';
import { IdGenerator, idTime, isQueueId } from './ids.ts';
import {
  Journal,
  type JournalItem,
  journalCopy,
  listQuarantine,
  readSegments,
  type Segment,
  segmentPath,
} from './journal.ts';
import {
  buildIndex,
  checkFormat,
  DAMAGED_DIR,
  type Dirs,
  failedStream,
  type IndexEntry,
  messagePath,
  openBodyStream,
  QUARANTINE_DIR,
  readEnvelope,
  spoolDirs,
  statePath,
  TMP_DIR,
} from './layout.ts';
import { acquireLock, isCode, type LockHandle } from './lock.ts';
import { RecentMessages } from './recent.ts';
import { nowMs, spoolTrace } from './trace.ts';
import type {
  NewMessage,
  QuarantinedMessage,
  QueuedMessage,
  QueueEntry,
  Spool,
  SpoolDamageEvent,
  SpoolIoStats,
  SpoolStats,
  SpoolWriter,
} from './types.ts';

export interface JournalOptions {
  /** Messages up to this size commit through the journal (buffered in memory until commit). */
  inlineMaxBytes?: number;
  /** Start a new segment past this size. */
  segmentBytes?: number;
  /** Start a new segment when the active one is this old. */
  sealAfterMs?: number;
  /** Checkpoint a sealed segment this long after it was sealed (most messages are gone by then). */
  checkpointAfterMs?: number;
  /** Checkpoint right away above this many journal bytes. */
  softMaxBytes?: number;
  /** Above this many journal bytes, commit through per-file fsync instead (checkpoints lag). */
  maxBytes?: number;
}

export interface OpenSpoolOptions {
  dir: string;
  /** fsync before a commit resolves; off only for throwaway tests. Default true. */
  fsync?: boolean;
  /** headroom() = free bytes minus this. Default 100 MiB, as in the config. */
  minFreeBytes?: number;
  logger?: Logger;
  /** Journal tuning, or false to commit every message with its own fsync. */
  journal?: false | JournalOptions;
  /** Recorded in the lock file, shown to whoever finds the spool locked. Default 'relay'. */
  purpose?: string;
  /** A lock of another host is stale after this long without heartbeat. */
  lockStaleMs?: number;
  /** Damage found in the spool's own files (also logged, with the message ids): for metrics. */
  onDamage?: (e: SpoolDamageEvent) => void;
}

/** What openSpool returns: the Spool contract plus a few extras. */
export interface RelaySpool extends Spool {
  /** The index entry of one message, without disk I/O. */
  entry(id: string): QueueEntry | undefined;
  /** Durably set nextAttemptAt (a rename when a state file exists); false if not queued. */
  reschedule(id: string, nextAttemptAt: number): Promise<boolean>;
  /** Make every journal-resident message durable in its own file and empty the journal. */
  checkpoint(): Promise<void>;
  /** Messages kept in quarantine/ (not delivered), oldest first. */
  quarantined(): QuarantinedMessage[];
  /**
   * Whether the journal's commits may fdatasync on the event loop (journal.ts SYNC_ON_LOOP):
   * asked per commit; blocking the loop for one is cheaper than the pool's round trip only when
   * nothing else waits for the loop. Default: never.
   */
  syncOnLoopWhen(test: () => boolean): void;
}

const DEFAULTS = {
  // 256 KiB: a 100 KB message commits with the group (p99 50-66 -> 11-31 ms in bench/README.md).
  inlineMaxBytes: 256 * 1024,
  segmentBytes: 16 * 1024 * 1024,
  sealAfterMs: 10_000,
  checkpointAfterMs: 10_000,
  softMaxBytes: 64 * 1024 * 1024,
  maxBytes: 256 * 1024 * 1024,
} satisfies Required<JournalOptions>;

/** Bytes a writer buffers before it spills to tmp/ (at least inlineMaxBytes). */
const SPILL_BYTES = 256 * 1024;
const HEADROOM_CACHE_MS = 1000;
/** Checkpoint fsyncs in flight; leaves the libuv pool to commits. */
const CHECKPOINT_CONCURRENCY = 2;

/** A write would eat into the free-space reserve (minFreeBytes): the reception must be refused with 452 4.3.1. */
export class SpoolFullError extends Error {
  override name = 'SpoolFullError';
  readonly code = 'ESPOOLFULL';
  constructor() {
    super('spool file system short of space: refusing to write into the reserve');
  }
}

/** Whether an error means the spool is out of space (ours, or the file system's own). */
export function isSpoolFull(e: unknown): boolean {
  return isCode(e, 'ESPOOLFULL') || isCode(e, 'ENOSPC') || isCode(e, 'EDQUOT');
}

class NotQueuedError extends Error {
  override name = 'NotQueuedError';
  readonly code = 'ENOTQUEUED';
  constructor(id: string) {
    super(`message ${id} is not queued`);
  }
}

export async function openSpool(opts: OpenSpoolOptions): Promise<RelaySpool> {
  const logger = opts.logger ?? silentLogger;
  const fsync = opts.fsync ?? true;
  const dir = opts.dir;
  const made = await fsp.mkdir(dir, { recursive: true });
  // A directory just created exists after a power cut only once its parent is fsynced (found by
  // the power-loss test: without this, a first start's mail vanished with its spool directory).
  if (made && fsync) {
    for (let d = resolve(dir); ; d = dirname(d)) {
      await syncDir(dirname(d));
      if (d === resolve(made)) break;
    }
  }
  if ((await checkFormat(dir)) === 'missing') await createFormatFile(dir, fsync);

  const lock = await acquireLock(dir, {
    purpose: opts.purpose ?? 'relay',
    staleMs: opts.lockStaleMs,
    logger,
  }).catch((e: unknown) => {
    // Nothing could be committed (nor a delivery recorded): say so rather than a bare EROFS.
    if (isCode(e, 'EROFS'))
      throw new Error(`spool ${dir} is on a read-only file system: no mail can be queued there`, {
        cause: e,
      });
    throw e;
  });
  try {
    return await SpoolImpl.open(dir, lock, logger, fsync, opts);
  } catch (e) {
    await lock.release();
    throw e;
  }
}

async function createFormatFile(dir: string, fsync: boolean): Promise<void> {
  const tmp = join(dir, `${FORMAT_FILE}.${randomBytes(4).toString('hex')}`);
  await writeNewFile(tmp, [Buffer.from(FORMAT_FILE_CONTENT)], fsync);
  await fsp.rename(tmp, join(dir, FORMAT_FILE));
  if (fsync) await syncDir(dir);
}

async function syncDir(path: string): Promise<void> {
  const fh = await fsp.open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

class SpoolImpl implements RelaySpool {
  private readonly dirs: Dirs;
  private readonly tmpDir: string;
  private readonly index = new Map<string, IndexEntry>();
  /** Messages handed over by a peer with ids older than the index's first: candidates for oldest. */
  private readonly olderThanFirst = new Set<string>();
  private readonly recent = new RecentMessages();
  private totalBytes = 0;
  private readonly ids = new IdGenerator();
  private readonly dirCommit: GroupCommit<void>;
  private journal!: Journal;
  private readonly journalOpts: Required<JournalOptions> | undefined;
  private readonly inflight = new Set<Promise<unknown>>();
  /** Asked by the journal per commit (syncOnLoopWhen). */
  private syncOnLoop: () => boolean = () => false;
  private readonly perId = new Map<string, Promise<unknown>>();
  readonly writers = new Set<Writer>();
  private closed = false;
  private failed: Error | undefined;
  private checkpointing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Last statfs of the spool's file system, and how many bytes had been committed when it was asked for. */
  private sample: { at: number; free: number; committedBase: number; gen: number } | undefined;
  private sampling: Promise<void> | undefined;
  /** Bytes committed since open: those after the sample are not in its free count yet. */
  private committedTotal = 0;
  private readonly tmpPrefix = randomBytes(3).toString('hex');
  private tmpCounter = 0;
  private readonly io = { fileSyncs: 0, dirSyncs: 0, checkpoints: 0, checkpointedMessages: 0 };
  private readonly minFreeBytes: number;
  private readonly onSyncError = (e: unknown) => this.fail(e);
  private readonly onDamage: (e: SpoolDamageEvent) => void;

  private constructor(
    readonly dir: string,
    private readonly lock: LockHandle,
    private readonly logger: Logger,
    readonly fsync: boolean,
    private readonly queueDirFh: FileHandle,
    opts: OpenSpoolOptions,
  ) {
    this.dirs = spoolDirs(dir);
    this.tmpDir = join(dir, TMP_DIR);
    this.minFreeBytes = opts.minFreeBytes ?? 100 * 1024 * 1024;
    this.onDamage = opts.onDamage ?? (() => {});
    // Without fsync there is no durability to amortise: skip the journal.
    this.journalOpts = opts.journal === false || !fsync ? undefined : { ...DEFAULTS, ...opts.journal };
    this.dirCommit = new GroupCommit(async () => {
      await syncOrPoison(() => this.queueDirFh.sync(), this.onSyncError);
      this.io.dirSyncs++;
    });
  }

  static async open(
    dir: string,
    lock: LockHandle,
    logger: Logger,
    fsync: boolean,
    opts: OpenSpoolOptions,
  ): Promise<SpoolImpl> {
    const started = performance.now();
    const { queueDir, walDir } = spoolDirs(dir);
    const tmpDir = join(dir, TMP_DIR);
    for (const d of [tmpDir, queueDir, walDir]) mkdirSync(d, { recursive: true });
    if (fsync) await syncDir(dir);

    // Receptions that never committed. Sync calls: nothing else runs yet, and they are
    // several times faster than promises for many small operations.
    const leftovers = readdirSync(tmpDir);
    for (const name of leftovers) rmSync(join(tmpDir, name), { force: true, recursive: true });

    const segments = readSegments(walDir);
    const damage: SpoolDamageEvent[] = [];
    const onDamage = (e: SpoolDamageEvent) => {
      damage.push(e);
      opts.onDamage?.(e);
    };
    for (const s of segments) {
      for (const b of s.bad) {
        const where = { segment: s.path, offset: b.start, bytes: b.end - b.start, ids: b.ids };
        if (b.zero)
          logger.debug(where, 'spool: journal segment ends in zero fill (preallocated, unused), ignored');
        else if (b.kind === 'torn')
          logger.warn(
            where,
            'spool: journal tail cut (an append a crash interrupted: never acknowledged), ignored',
          );
        else
          logger.error(
            where,
            `spool: damaged journal record(s) skipped, the records after them recovered; the segment is kept in ${DAMAGED_DIR}/`,
          );
      }
    }
    const scan = buildIndex(queueDir, segments);
    for (const name of scan.garbage) unlinkSync(join(queueDir, name));
    if (scan.unknown.length)
      logger.warn({ dir, files: scan.unknown.slice(0, 20) }, 'spool: unknown files in queue/');
    for (const l of scan.lost) {
      if (l.kind === 'torn') continue; // an append that never returned: nothing was acknowledged
      logger.error(
        { queueId: l.id, segment: l.segment },
        'spool: message lost to journal damage, cannot be recovered',
      );
      onDamage({ kind: 'lost', id: l.id, reason: 'damaged journal record' });
    }
    for (const s of segments) {
      for (const b of s.bad) {
        if (b.kind === 'corrupt' && b.ids.length === 0) {
          logger.error(
            { segment: s.path, offset: b.start },
            'spool: a damaged journal record names no legible queue id: a message may be lost',
          );
          onDamage({ kind: 'lost', reason: 'damaged journal record without a legible id' });
        }
      }
    }
    const quarantineDir = join(dir, QUARANTINE_DIR);
    const lostIds = new Set(scan.lost.map((l) => l.id));
    for (const name of scan.orphans) {
      // Never deleted: the delivery state of a message whose body went missing is evidence.
      const id = name.slice(0, 16);
      try {
        mkdirSync(quarantineDir, { recursive: true });
        renameSync(join(queueDir, name), join(quarantineDir, name));
      } catch (err) {
        logger.error({ err, file: name }, 'spool: cannot move a state file to quarantine/; left in queue/');
        continue;
      }
      logger.error(
        { queueId: id, file: name },
        lostIds.has(id)
          ? 'spool: message quarantined: its journal record was damaged, only its delivery state is left'
          : 'spool: message quarantined: its message file is missing, only its delivery state is left',
      );
      onDamage({ kind: 'quarantined', id, reason: 'message body missing' });
    }
    if (fsync && scan.orphans.length) {
      await syncDir(queueDir);
      await syncDir(quarantineDir).catch(() => {});
    }

    const queueDirFh = await fsp.open(queueDir, 'r');
    const spool = new SpoolImpl(dir, lock, logger, fsync, queueDirFh, opts);
    try {
      spool.journal = await Journal.open(walDir, segments, {
        fsync,
        damagedDir: join(dir, DAMAGED_DIR),
        onKeptAside: (from, to) =>
          logger.warn({ from, to }, 'spool: damaged journal segment kept aside for inspection'),
        segmentBytes: spool.journalOpts?.segmentBytes ?? DEFAULTS.segmentBytes,
        sealAfterMs: spool.journalOpts?.sealAfterMs ?? DEFAULTS.sealAfterMs,
        onSyncError: spool.onSyncError,
        syncOnLoop: () => spool.syncOnLoop(),
      });
    } catch (e) {
      await queueDirFh.close();
      throw e;
    }
    for (const e of scan.entries) {
      spool.index.set(e.id, e);
      spool.totalBytes += e.size;
    }
    const newest = scan.entries.at(-1);
    if (newest) spool.ids.floor(newest.id);
    spool.takeSample();
    spool.timer = setInterval(() => spool.tick(), 1000);
    spool.timer.unref();

    logger.info(
      {
        dir,
        messages: spool.index.size,
        bytes: spool.totalBytes,
        removedLeftovers: leftovers.length,
        removedGarbage: scan.garbage.length,
        journalSegments: segments.length,
        ...(damage.length ? { damage: damage.length } : {}),
        ms: Math.round(performance.now() - started),
      },
      'spool opened',
    );
    return spool;
  }

  // --- Spool -------------------------------------------------------------------------------------

  async begin(opts: { id?: string; declaredSize?: number } = {}): Promise<SpoolWriter> {
    this.assertUsable();
    const tmp = join(this.tmpDir, `r${this.tmpPrefix}-${(this.tmpCounter++).toString(36)}`);
    // The id is known from the first byte on, so the Received: header can carry it (as Postfix's does).
    let id = opts.id ?? this.ids.next();
    if (opts.id !== undefined) {
      // A peer's message keeps its id (and so its arrival time): see relay/peers/handoff-format.ts.
      if (!isQueueId(id)) throw new TypeError(`begin: ${id} is not a queue id`);
      if (this.index.has(id) || [...this.writers].some((w) => w.id === id))
        throw Object.assign(new Error(`queue id ${id} is in use`), { code: 'EEXIST' });
    }
    while (this.index.has(id)) id = this.ids.next();
    const w = new Writer(this, id, tmp, Math.max(SPILL_BYTES, this.journalOpts?.inlineMaxBytes ?? 0));
    w.declared = Math.max(0, Math.floor(opts.declaredSize ?? 0));
    this.writers.add(w);
    return w;
  }

  async get(id: string): Promise<QueuedMessage | undefined> {
    if (this.index.has(id)) {
      const hit = this.recent.message(id);
      if (hit) return hit;
    }
    for (let attempt = 0; ; attempt++) {
      const e = this.index.get(id);
      if (!e) return undefined;
      try {
        const msg = await readEnvelope(this.dirs, e);
        // A state file alone is no message: its body must still be there.
        if (e.gen > 0 && e.off < 0) await fsp.stat(messagePath(this.dirs.queueDir, e));
        return msg;
      } catch (err) {
        // The files moved under us (checkpoint, update, remove): look again. Still unreadable:
        // recover from another copy or quarantine, never an error on every attempt.
        const moved = isCode(err, 'ENOENT') && attempt < 3;
        if (moved) continue;
        if (!isCode(err, 'ENOENT') && !(err instanceof SpoolFormatError)) throw err;
        return this.serial(id, () => this.recover(e, err));
      }
    }
  }

  syncOnLoopWhen(test: () => boolean): void {
    this.syncOnLoop = test;
  }

  quarantined(): QuarantinedMessage[] {
    return listQuarantine(join(this.dir, QUARANTINE_DIR));
  }

  /** get() found a message's files unreadable (and not just moved): runs in serial(id). */
  private async recover(e: IndexEntry, cause: unknown): Promise<QueuedMessage | undefined> {
    if (this.index.get(e.id) !== e) return undefined;
    try {
      const msg = await readEnvelope(this.dirs, e); // changed meanwhile after all?
      if (e.gen > 0 && e.off < 0) await fsp.stat(messagePath(this.dirs.queueDir, e));
      return msg;
    } catch (err) {
      cause = err;
    }
    const why = cause instanceof Error ? cause.message : String(cause);
    const q = join(this.dir, QUARANTINE_DIR);
    if (e.gen > 0) {
      // The state file is the bad part if the message's own envelope still reads: an older but
      // whole copy (recipients already delivered may get the message twice, none loses it).
      const original = await readEnvelope(this.dirs, { ...e, gen: 0 }).catch(() => undefined);
      if (original) {
        await this.quarantineFile(statePath(this.dirs.queueDir, e), q);
        e.gen = 0;
        await this.writeState(e, { ...original, nextAttemptAt: e.nextAttemptAt });
        this.logger.warn(
          { queueId: e.id, err: why },
          "spool: delivery state unreadable, recovered from the message's original envelope (kept the bad file in quarantine/)",
        );
        this.onDamage({ kind: 'recovered', id: e.id, reason: 'state file unreadable' });
        return readEnvelope(this.dirs, e);
      }
    }
    if (e.off < 0 && e.seg >= 0) {
      // Its journal record is still on disk (checkpointed, segment not yet dropped): rewrite the file from it.
      const image = await journalCopy(segmentPath(this.dirs.walDir, e.seg), e.id);
      if (image) {
        const name = messageFileName(e.id, e.size);
        await this.quarantineFile(join(this.dirs.queueDir, name), q);
        const tmp = join(this.tmpDir, name);
        await writeNewFile(tmp, [image], this.fsync, this.onSyncError);
        await fsp.rename(tmp, join(this.dirs.queueDir, name));
        await this.syncQueueDir();
        this.logger.warn(
          { queueId: e.id, err: why },
          'spool: message file unreadable, recovered from the journal',
        );
        this.onDamage({ kind: 'recovered', id: e.id, reason: 'message file unreadable' });
        return readEnvelope(this.dirs, e);
      }
    }
    // Nothing to deliver from: keep what is left, out of the delivery path.
    this.index.delete(e.id);
    this.recent.drop(e.id);
    this.totalBytes -= e.size;
    if (e.off < 0) await this.quarantineFile(messagePath(this.dirs.queueDir, e), q);
    if (e.gen > 0) await this.quarantineFile(statePath(this.dirs.queueDir, e), q);
    if (e.seg >= 0) {
      const seg = this.journal.segments.find((x) => x.seq === e.seg);
      if (seg) seg.damaged = true; // kept aside instead of deleted, with this message's record
      await this.journal.append({ bufs: encodeDelRecord(e.id) }).catch(() => {});
    } else await this.syncQueueDir();
    this.logger.error(
      { queueId: e.id, err: why },
      'spool: message quarantined: its files cannot be read (kept in quarantine/, not delivered)',
    );
    this.onDamage({ kind: 'quarantined', id: e.id, reason: why });
    return undefined;
  }

  /** A rename into quarantine/ (no new space needed); never overwrites an earlier one. */
  private async quarantineFile(from: string, q: string): Promise<void> {
    await fsp.mkdir(q, { recursive: true });
    const base = from.slice(from.lastIndexOf('/') + 1);
    try {
      await fsp.rename(from, join(q, `${base}.${Date.now().toString(36)}`));
    } catch (err) {
      if (!isCode(err, 'ENOENT')) throw err;
      return;
    }
    if (this.fsync) await syncDir(q);
  }

  bodyInMemory(id: string): readonly Buffer[] | undefined {
    return this.index.has(id) ? this.recent.body(id) : undefined;
  }

  openBody(id: string): NodeJS.ReadableStream {
    const e = this.index.get(id);
    if (!e) return failedStream(new NotQueuedError(id));
    const body = this.recent.body(id);
    return body ? Readable.from(body, { objectMode: false }) : openBodyStream(this.dirs, e);
  }

  update(msg: QueuedMessage): Promise<void> {
    return this.serial(msg.id, async () => {
      this.assertUsable();
      const e = this.index.get(msg.id);
      if (!e) throw new NotQueuedError(msg.id);
      await this.writeState(e, msg);
    });
  }

  reschedule(id: string, nextAttemptAt: number): Promise<boolean> {
    return this.serial(id, async () => {
      this.assertUsable();
      const e = this.index.get(id);
      if (!e) return false;
      nextAttemptAt = Math.max(0, Math.floor(nextAttemptAt));
      if (e.gen === 0) {
        const msg = await readEnvelope(this.dirs, e);
        await this.writeState(e, { ...msg, nextAttemptAt });
        return true;
      }
      const from = statePath(this.dirs.queueDir, e);
      await fsp.rename(from, join(this.dirs.queueDir, stateFileName(id, e.gen, nextAttemptAt)));
      e.nextAttemptAt = nextAttemptAt;
      await this.syncQueueDir();
      return true;
    });
  }

  remove(id: string): Promise<void> {
    return this.serial(id, async () => {
      this.assertUsable();
      const e = this.index.get(id);
      if (!e) return;
      // Out of the index first: nobody may start delivering it again.
      this.index.delete(id);
      this.recent.drop(id);
      this.totalBytes -= e.size;
      if (e.off < 0) await unlinkQuiet(messagePath(this.dirs.queueDir, e));
      if (e.gen > 0) await unlinkQuiet(statePath(this.dirs.queueDir, e));
      if (e.seg >= 0) {
        // A PUT of it is still in the journal: without this, a replay would bring it back.
        await this.journal.append({ bufs: encodeDelRecord(id), lazy: true });
      } else {
        await this.syncQueueDir();
      }
    });
  }

  entries(): QueueEntry[] {
    const out: QueueEntry[] = [];
    for (const e of this.index.values()) out.push(publicEntry(e));
    return out;
  }

  entry(id: string): QueueEntry | undefined {
    const e = this.index.get(id);
    return e && publicEntry(e);
  }

  stats(): SpoolStats {
    const first = this.index.values().next();
    let oldest = first.done ? undefined : first.value.receivedAt;
    for (const id of this.olderThanFirst) {
      const e = this.index.get(id);
      if (!e) this.olderThanFirst.delete(id);
      else if (oldest === undefined || e.receivedAt < oldest) oldest = e.receivedAt;
    }
    const io: SpoolIoStats = {
      fileSyncs: this.io.fileSyncs,
      dirSyncs: this.io.dirSyncs,
      journalSyncs: this.journal.syncs,
      journalRecords: this.journal.records,
      journalBytes: this.journal.bytes,
      journalSegments: this.journal.segments.length,
      checkpoints: this.io.checkpoints,
      checkpointedMessages: this.io.checkpointedMessages,
    };
    return {
      messages: this.index.size,
      bytes: this.totalBytes,
      oldestReceivedAt: oldest,
      io,
    };
  }

  async headroom(): Promise<number> {
    await this.refreshSample();
    return this.room();
  }

  /**
   * Free bytes above the reserve, from the last sample (at most a second old), less what was
   * committed since and what receptions in progress may still write. Synchronous: every write
   * past a writer's reservation asks, and concurrent writers must not all see the same room.
   */
  room(): number {
    const s = this.sample;
    if (!s) return Number.POSITIVE_INFINITY;
    let inFlight = 0;
    for (const w of this.writers) {
      // What it spilled to tmp/ before the sample is in the sample's free count already.
      const counted = w.sampleGen === s.gen ? w.diskAtSample : 0;
      if (w.state !== 'done') inFlight += Math.max(w.declared, w.size) - counted;
    }
    if (Date.now() - s.at >= HEADROOM_CACHE_MS) void this.refreshSample().catch(() => {});
    return s.free - this.minFreeBytes - (this.committedTotal - s.committedBase) - inFlight;
  }

  private refreshSample(): Promise<void> {
    if (this.sample && Date.now() - this.sample.at < HEADROOM_CACHE_MS) return Promise.resolve();
    this.sampling ??= (async () => {
      const committedBase = this.committedTotal;
      const gen = (this.sample?.gen ?? 0) + 1;
      const spilled = [...this.writers].map((w) => [w, w.spilledBytes] as const);
      try {
        const st = await fsp.statfs(this.dir);
        for (const [w, n] of spilled) {
          w.sampleGen = gen;
          w.diskAtSample = n;
        }
        this.sample = { at: Date.now(), free: st.bavail * st.bsize, committedBase, gen };
      } finally {
        this.sampling = undefined;
      }
    })();
    return this.sampling;
  }

  /** First sample at open (sync: nothing else runs yet). */
  takeSample(): void {
    const st = statfsSync(this.dir);
    this.sample = { at: Date.now(), free: st.bavail * st.bsize, committedBase: this.committedTotal, gen: 1 };
  }

  async writable(): Promise<boolean> {
    if (this.closed || this.failed) return false;
    const probe = join(this.tmpDir, `probe-${this.tmpPrefix}-${(this.tmpCounter++).toString(36)}`);
    try {
      await writeNewFile(probe, [], false);
      await fsp.unlink(probe);
      return true;
    } catch {
      return false;
    }
  }

  async checkpoint(): Promise<void> {
    this.journal.seal();
    await this.runCheckpoints(true);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const w of this.writers) if (w.state === 'open') void w.abort();
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    await this.checkpointing?.catch(() => {});
    await this.dirCommit.idle();
    await this.journal.close();
    await this.queueDirFh.close().catch(() => {});
    await this.lock.release();
    this.logger.info({ dir: this.dir, messages: this.index.size }, 'spool closed');
  }

  // --- commit paths ------------------------------------------------------------------------------

  /** Called by Writer.commit once its buffered bytes are settled. */
  async commitWriter(w: Writer, meta: NewMessage): Promise<QueuedMessage> {
    this.assertUsable();
    checkMeta(meta);
    const id = w.id;
    const receivedAt = idTime(id);
    const msg: QueuedMessage = {
      ...meta,
      id,
      recipients: meta.recipients.map((r) => ({ ...r, status: 'pending' as const })),
      size: w.size,
      receivedAt,
      nextAttemptAt: receivedAt,
      attempts: meta.attempts ?? 0,
    };
    const env = encodeEnvelope(msg);
    const entry: IndexEntry = {
      id,
      size: w.size,
      receivedAt,
      nextAttemptAt: receivedAt,
      gen: 0,
      seg: -1,
      off: -1,
    };
    const j = this.journalOpts;
    if (j && !w.spilled && w.size <= j.inlineMaxBytes && this.journal.bytes < j.maxBytes) {
      // The journal record is the commit point and where the message lives until a checkpoint.
      const body = w.takeChunks();
      const item: JournalItem = {
        bufs: encodePutRecord(id, encodeMessageImage(body, w.size, env)),
        put: id,
      };
      await this.journal.append(item);
      entry.seg = item.seg!.seq;
      entry.off = item.off!;
      this.recent.put(msg, body);
    } else {
      await this.commitFile(w, id, env);
    }
    const first = this.index.keys().next();
    if (!first.done && id < first.value) this.olderThanFirst.add(id);
    this.index.set(id, entry);
    this.totalBytes += entry.size;
    // Less what the current sample saw of it on disk already (spilled before the sample).
    const seen = w.sampleGen === this.sample?.gen ? w.diskAtSample : 0;
    this.committedTotal += entry.size + env.length - seen;
    return msg;
  }

  /** Large message (or journal off/full): fsync the file, rename, group-commit the directory. */
  private async commitFile(w: Writer, id: string, env: Buffer): Promise<void> {
    const fh = await w.openFile();
    const preamble = encodePreamble(w.size, env.length);
    const dest = messagePath(this.dirs.queueDir, { id, size: w.size });
    let renamed = false;
    try {
      try {
        if (w.filePos === PREAMBLE_SIZE) {
          await writeAll(fh, [preamble, ...w.takeChunks(), env], 0);
        } else {
          await writeAll(fh, [...w.takeChunks(), env], w.filePos);
          await writeAll(fh, [preamble], 0);
        }
        if (this.fsync) {
          await syncOrPoison(() => fh.datasync(), this.onSyncError);
          this.io.fileSyncs++;
        }
      } finally {
        await w.closeFile();
      }
      await fsp.rename(w.tmpPath, dest);
      renamed = true;
      await this.syncQueueDir();
    } catch (e) {
      await unlinkQuiet(renamed ? dest : w.tmpPath).catch(() => {});
      throw e;
    }
  }

  private async writeState(e: IndexEntry, msg: QueuedMessage): Promise<void> {
    const gen = e.gen + 1;
    const nextAttemptAt = Math.max(0, Math.floor(msg.nextAttemptAt));
    const name = stateFileName(e.id, gen, nextAttemptAt);
    const tmp = join(this.tmpDir, name);
    this.recent.drop(e.id);
    const body = encodeEnvelope({ ...msg, id: e.id, size: e.size, receivedAt: e.receivedAt, nextAttemptAt });
    await writeNewFile(tmp, [body], this.fsync, this.onSyncError);
    if (this.fsync) this.io.fileSyncs++;
    await fsp.rename(tmp, join(this.dirs.queueDir, name));
    const old = e.gen > 0 ? statePath(this.dirs.queueDir, e) : undefined;
    e.gen = gen;
    e.nextAttemptAt = nextAttemptAt;
    await this.syncQueueDir();
    // Only once the new one is durable; a crash in between leaves both and the higher gen wins.
    if (old) await unlinkQuiet(old);
  }

  private async syncQueueDir(): Promise<void> {
    if (this.fsync) await this.dirCommit.submit();
  }

  // --- checkpoints -------------------------------------------------------------------------------

  private tick(): void {
    this.recent.expire();
    const j = this.journalOpts ?? DEFAULTS;
    const active = this.journal.active;
    if (active && active.size > 0 && Date.now() - active.openedAt >= j.sealAfterMs) this.journal.seal();
    if (!this.checkpointing && !this.failed && this.checkpointDue(false)) {
      this.runCheckpoints(false).catch((e) => this.logger.error({ err: e }, 'spool: checkpoint failed'));
    }
  }

  private checkpointDue(force: boolean): boolean {
    const oldest = this.journal.segments[0];
    if (!oldest?.sealed) return false;
    const j = this.journalOpts ?? DEFAULTS;
    return (
      force || this.journal.bytes > j.softMaxBytes || Date.now() - oldest.sealedAt >= j.checkpointAfterMs
    );
  }

  private runCheckpoints(force: boolean): Promise<void> {
    if (this.checkpointing) {
      // One pass at a time; a forced request runs again once the current pass ends.
      return force ? this.checkpointing.then(() => this.runCheckpoints(true)) : this.checkpointing;
    }
    const run = (async () => {
      try {
        while (!this.failed && !this.closed && this.checkpointDue(force)) {
          await this.checkpointSegment(this.journal.segments[0]!);
        }
      } finally {
        this.checkpointing = undefined;
      }
    })();
    this.checkpointing = run;
    return run;
  }

  /**
   * Gives the segment's messages that are still queued a file of their own (fsynced, renamed
   * into queue/), fsyncs queue/ (which also makes earlier unlinks durable), then deletes the
   * segment. Messages removed before this never cost a file.
   */
  private async checkpointSegment(seg: Segment): Promise<void> {
    const t0 = spoolTrace && nowMs();
    await this.journal.settled(seg);
    const live: IndexEntry[] = [];
    for (const id of seg.puts) {
      const e = this.index.get(id);
      if (e && e.seg === seg.seq) live.push(e);
    }
    const homeless = live.filter((e) => e.off >= 0);
    if (homeless.length > 0) {
      // Bounded by the segment size; read once rather than one pread per message.
      const buf = await fsp.readFile(seg.path);
      await mapLimit(homeless, CHECKPOINT_CONCURRENCY, (e) =>
        this.serial(e.id, async () => {
          if (this.index.get(e.id) !== e || e.off < 0) return; // removed meanwhile
          const image = buf.subarray(e.off, e.off + imageLength(buf, e.off));
          const name = messageFileName(e.id, e.size);
          const tmp = join(this.tmpDir, name);
          await writeNewFile(tmp, [image], this.fsync, this.onSyncError);
          if (this.fsync) this.io.fileSyncs++;
          await fsp.rename(tmp, join(this.dirs.queueDir, name));
          // Readers switch to the file now; the PUT stays on disk (e.seg) until the drop below.
          e.off = -1;
        }),
      );
    }
    await this.syncQueueDir();
    await this.journal.drop(seg);
    for (const e of live) if (e.seg === seg.seq) e.seg = -1;
    this.io.checkpoints++;
    this.io.checkpointedMessages += homeless.length;
    if (spoolTrace && t0)
      spoolTrace({
        ev: 'checkpoint',
        t: t0,
        ms: nowMs() - t0,
        seq: seg.seq,
        written: homeless.length,
        live: live.length,
      });
    this.logger.debug(
      { seq: seg.seq, written: homeless.length, gone: seg.puts.length - live.length },
      'spool checkpoint',
    );
  }

  // --- helpers -----------------------------------------------------------------------------------

  private assertUsable(): void {
    if (this.failed)
      throw new Error(`spool ${this.dir} failed: ${this.failed.message}`, { cause: this.failed });
    if (this.closed) throw new Error(`spool ${this.dir} is closed`);
  }

  /**
   * After a failed fsync the kernel may have dropped the dirty pages: nothing written since can
   * be trusted, so refuse further work (and report not writable) until a restart rereads disk.
   */
  fail(e: unknown): void {
    if (this.failed) return;
    this.failed = e instanceof Error ? e : new Error(String(e));
    this.logger.error({ err: this.failed, dir: this.dir }, 'spool: fsync failed, refusing further writes');
  }

  /** Runs ops on one message in order; tracked so close() can wait for them. */
  private serial<T>(id: string, op: () => Promise<T>): Promise<T> {
    const prev = this.perId.get(id) ?? Promise.resolve();
    const run = prev.then(op, op);
    const tail = run.catch(() => {});
    this.perId.set(id, tail);
    void tail.then(() => {
      if (this.perId.get(id) === tail) this.perId.delete(id);
    });
    return this.track(run);
  }

  track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    const done = () => this.inflight.delete(p);
    p.then(done, done);
    return p;
  }
}

function publicEntry(e: IndexEntry): QueueEntry {
  return { id: e.id, size: e.size, receivedAt: e.receivedAt, nextAttemptAt: e.nextAttemptAt };
}

function checkMeta(meta: NewMessage): void {
  if (typeof meta?.from !== 'string') throw new TypeError('commit: from must be a string');
  if (!Array.isArray(meta.recipients) || meta.recipients.length === 0) {
    throw new TypeError('commit: at least one recipient is required');
  }
  for (const r of meta.recipients) {
    if (typeof r?.address !== 'string') throw new TypeError('commit: recipient address must be a string');
  }
  if (typeof meta.client?.address !== 'string') {
    throw new TypeError('commit: client.address must be a string');
  }
}

/** Receives one message: buffers small ones in memory, spills larger ones to a file in tmp/. */
class Writer implements SpoolWriter {
  state: 'open' | 'committing' | 'done' = 'open';
  /** Bytes reserved up front (MAIL FROM SIZE=). */
  declared = 0;
  /** Bytes it had spilled to tmp/ when sample `sampleGen` of the free space was asked for. */
  diskAtSample = 0;
  sampleGen = 0;
  private bytes = 0;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private fh: FileHandle | undefined;
  filePos = PREAMBLE_SIZE;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly spool: SpoolImpl,
    readonly id: string,
    readonly tmpPath: string,
    private readonly spillBytes: number,
  ) {}

  get size(): number {
    return this.bytes;
  }

  /** Message bytes written to its tmp/ file so far. */
  get spilledBytes(): number {
    return this.filePos - PREAMBLE_SIZE;
  }

  get spilled(): boolean {
    return this.fh !== undefined;
  }

  /** The chunk is kept (not copied) until written: do not modify it afterwards. */
  async write(chunk: Buffer): Promise<void> {
    if (this.state !== 'open') throw new Error('spool writer is no longer open');
    if (chunk.length === 0) return;
    // Growing past its reservation: only while that leaves the reserve untouched.
    const growth = Math.min(chunk.length, this.bytes + chunk.length - this.declared);
    if (growth > 0 && this.spool.room() < growth) throw new SpoolFullError();
    this.bytes += chunk.length;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    if (this.buffered >= this.spillBytes) {
      this.chain = this.chain.then(() => this.spill());
      await this.chain;
    }
  }

  commit(meta: NewMessage): Promise<QueuedMessage> {
    if (this.state !== 'open') return Promise.reject(new Error('spool writer is no longer open'));
    this.state = 'committing';
    return this.spool.track(
      (async () => {
        try {
          await this.chain;
          return await this.spool.commitWriter(this, meta);
        } finally {
          this.state = 'done';
          this.chunks = [];
          await this.discard();
        }
      })(),
    );
  }

  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'done';
    this.chunks = [];
    await this.spool.track(this.chain.catch(() => {}).then(() => this.discard()));
  }

  takeChunks(): Buffer[] {
    const c = this.chunks;
    this.chunks = [];
    this.buffered = 0;
    return c;
  }

  async openFile(): Promise<FileHandle> {
    this.fh ??= await fsp.open(this.tmpPath, 'wx', 0o640);
    return this.fh;
  }

  async closeFile(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }

  private async spill(): Promise<void> {
    const fh = await this.openFile();
    this.filePos += await writeAll(fh, this.takeChunks(), this.filePos);
  }

  /** Drops the temporary file if still there (after a commit it was renamed away). */
  private async discard(): Promise<void> {
    this.spool.writers.delete(this);
    if (this.fh) {
      await this.closeFile().catch(() => {});
      await unlinkQuiet(this.tmpPath).catch(() => {});
    }
  }
}
