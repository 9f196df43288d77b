import { constants, fdatasyncSync, promises as fsp, readdirSync, readFileSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { syncOrPoison, writeAll, writeAllSync } from './disk.ts';
import {
  type BadRegion,
  decodeJournal,
  decodePreamble,
  PUT_IMAGE_OFFSET,
  parseSegmentFileName,
  segmentFileName,
} from './format.ts';
import { GroupCommit } from './group-commit.ts';
import { isCode } from './lock.ts';
import { nowMs, spoolTrace } from './trace.ts';

/**
 * The write-ahead journal, where small messages are committed: the records of concurrent commits
 * go out in one vectored write and become durable with one fdatasync. A per-file fsync costs a
 * file-system journal commit each (~1k/s on this disk whatever the concurrency); one shared
 * fdatasync covers thousands of records.
 *
 * A committed message lives in its segment (read in place) until a checkpoint, which gives the
 * messages still queued by then a file of their own (fsynced) and deletes the segment. In a
 * relay most messages are delivered and removed before that: they never cost a file at all.
 */
export interface Segment {
  seq: number;
  path: string;
  fh?: FileHandle;
  size: number;
  /** No more appends: full, aged, failed, or found at open. */
  sealed: boolean;
  /** An append is in flight. */
  writing: boolean;
  /** The file is zero-filled (and that durable) up to here; 0: not preallocated. */
  zeroedTo?: number;
  /** IDs put in this segment. */
  puts: string[];
  /** Found damaged at open: moved to `damagedDir` instead of deleted. */
  damaged?: boolean;
  openedAt: number;
  sealedAt: number;
  waiters: Array<() => void>;
}

export interface JournalItem {
  bufs: Buffer[];
  /** ID of a PUT record. */
  put?: string;
  /** Nobody answers a client on it (a DEL): may wait a moment to share the next PUT's fdatasync. */
  lazy?: boolean;
  /** Set once durable: the segment, and for a PUT the offset of its message image. */
  seg?: Segment;
  off?: number;
}

/** What open needs from a segment left on disk (no message bytes: memory stays flat). */
export interface SegmentSummary {
  seq: number;
  path: string;
  size: number;
  /** Records in order; for a PUT, `off` is where its message image starts and `size` its body size. */
  records: Array<{ type: 'put'; id: string; off: number; size: number } | { type: 'del'; id: string }>;
  /** Where it holds no valid record (a torn tail, or damage). */
  bad: BadRegion[];
}

/** A segment with damage (not just a torn tail): kept aside for a person when it is done with. */
export function isDamaged(s: SegmentSummary): boolean {
  return s.bad.some((b) => b.kind === 'corrupt');
}

interface JournalOptions {
  fsync: boolean;
  /** Where damaged segments go once their valid records are checkpointed. */
  damagedDir: string;
  onKeptAside?: (from: string, to: string) => void;
  segmentBytes: number;
  /** Zero-fill the active segment up to this far ahead of the appends (0: plain appends). */
  preallocateBytes?: number;
  /** The spool seals the active segment this long after it opened; the next is prepared at half. */
  sealAfterMs?: number;
  onSyncError: (e: unknown) => void;
  /** Asked before each commit's fdatasync: true to make it on the event loop (SYNC_ON_LOOP). */
  syncOnLoop?: () => boolean;
}

/**
 * 1 MiB: appends then overwrite blocks that exist and hold data, so their fdatasync writes the
 * data and flushes the disk cache but commits no file-system metadata (size, block map): it does
 * not wait for ext4's journal, where every other writer on the file system (the log, other
 * processes) queues too. Postgres zero-fills its WAL segments for the same reason. The zeroing
 * (and one metadata commit) is paid by one commit per MiB, a few ms; an unused zero tail reads
 * as a torn tail of zeros, skipped. EMAIL_RELAY_JOURNAL_PREALLOCATE=0 turns it off (bench A/B).
 */
export const PREALLOCATE_BYTES = Number(process.env.EMAIL_RELAY_JOURNAL_PREALLOCATE ?? 1024 * 1024);
const ZEROS = Buffer.alloc(64 * 1024);

/**
 * How long a DEL waits for a PUT to share a flush with (one message's round trips at 1 session).
 * EMAIL_RELAY_JOURNAL_LAZY_MS=0 turns it off (bench A/B).
 */
const LAZY_MS = Number(process.env.EMAIL_RELAY_JOURNAL_LAZY_MS ?? 10);

/**
 * A group commit up to this size that lands inside the zero-filled part of the segment is
 * written on the event loop, not the thread pool: it allocates nothing, so it is a copy into the
 * page cache (microseconds for 2 KB, tens for 256 KiB), where the pool's round trip cost 0.17 ms
 * per commit (p50, 1 session), on the path of every 250. Larger groups (many messages at once)
 * and writes that may allocate stay off the loop; the fdatasync stays on the pool either way.
 * EMAIL_RELAY_JOURNAL_SYNC_WRITE=0 turns it off (bench A/B).
 */
export const SYNC_WRITE_BYTES = Number(process.env.EMAIL_RELAY_JOURNAL_SYNC_WRITE ?? 256 * 1024);

/**
 * A commit's fdatasync may be made on the event loop when the spool's owner says nothing else
 * waits for it (the relay: one client connected). The thread pool's round trip (a worker woken,
 * an eventfd back, another loop turn) cost 55-70 µs of the ~250 µs an fdatasync of one 2 KB
 * message takes here, on the path of the client's 250; with other clients connected the loop
 * stays free for them and the pool syncs. EMAIL_RELAY_JOURNAL_SYNC_ON_LOOP=0 turns it off.
 */
const SYNC_ON_LOOP = process.env.EMAIL_RELAY_JOURNAL_SYNC_ON_LOOP !== '0';

export function segmentPath(walDir: string, seq: number): string {
  return join(walDir, segmentFileName(seq));
}

/** Reads every segment in walDir (sync: at open, nothing else runs yet). Tolerates vanishing ones. */
export function readSegments(walDir: string): SegmentSummary[] {
  const out: SegmentSummary[] = [];
  for (const name of readdirSync(walDir)) {
    const seq = parseSegmentFileName(name);
    if (seq === undefined) continue;
    const path = join(walDir, name);
    let buf: Buffer;
    try {
      buf = readFileSync(path);
    } catch (e) {
      if (isCode(e, 'ENOENT')) continue; // checkpointed meanwhile (offline reader of a live spool)
      throw e;
    }
    const { records, bad } = decodeJournal(buf);
    const summary: SegmentSummary['records'] = [];
    for (const r of records) {
      if (r.type === 'del') summary.push({ type: 'del', id: r.id });
      else
        summary.push({
          type: 'put',
          id: r.id,
          off: r.offset + PUT_IMAGE_OFFSET,
          size: decodePreamble(r.image).bodyLen,
        });
    }
    out.push({ seq, path, size: buf.length, records: summary, bad });
  }
  return out.sort((a, b) => a.seq - b.seq);
}

/** The message image of the last valid PUT of `id` in a segment, if the segment is still there. */
export async function journalCopy(path: string, id: string): Promise<Buffer | undefined> {
  const buf = await fsp.readFile(path).catch(() => undefined);
  if (!buf) return undefined;
  let image: Buffer | undefined;
  for (const r of decodeJournal(buf).records) {
    if (r.id === id) image = r.type === 'put' ? r.image : undefined;
  }
  return image;
}

/** quarantine/'s files grouped by queue id, oldest first (sync: small, and rarely asked for). */
export function listQuarantine(dir: string): Array<{ id: string; files: string[] }> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    if (isCode(e, 'ENOENT')) return [];
    throw e;
  }
  const byId = new Map<string, string[]>();
  for (const name of names.sort()) {
    const id = name.slice(0, 16);
    if (!/^[0-9A-HJKMNP-TV-Z]{16}$/.test(id)) continue;
    byId.set(id, [...(byId.get(id) ?? []), name]);
  }
  return [...byId].map(([id, files]) => ({ id, files }));
}

export class Journal {
  /** Oldest first; the last one may be the active (unsealed) one. */
  readonly segments: Segment[] = [];
  private nextSeq: number;
  private readonly commits: GroupCommit<JournalItem>;
  /** The next segment, being prepared or ready (prepareNext). */
  private next: Promise<Segment | undefined> | undefined;
  bytes = 0;
  syncs = 0;
  records = 0;

  private constructor(
    private readonly walDir: string,
    private readonly dirFh: FileHandle,
    private readonly opts: JournalOptions,
    nextSeq: number,
  ) {
    this.nextSeq = nextSeq;
    this.commits = new GroupCommit((items) => this.flush(items), LAZY_MS);
  }

  static async open(
    walDir: string,
    found: readonly SegmentSummary[],
    opts: JournalOptions,
  ): Promise<Journal> {
    const dirFh = await fsp.open(walDir, 'r');
    const last = found.at(-1);
    const j = new Journal(walDir, dirFh, opts, last ? last.seq + 1 : 1);
    for (const s of found) {
      j.segments.push({
        seq: s.seq,
        path: s.path,
        size: s.size,
        sealed: true,
        writing: false,
        puts: s.records.flatMap((r) => (r.type === 'put' ? [r.id] : [])),
        ...(isDamaged(s) ? { damaged: true } : {}),
        openedAt: 0,
        sealedAt: 0,
        waiters: [],
      });
      j.bytes += s.size;
    }
    return j;
  }

  /** Resolves once the record is durable; item.seg (and item.off for a PUT) then say where. */
  async append(item: JournalItem): Promise<void> {
    await this.commits.submit(item, item.lazy);
  }

  get active(): Segment | undefined {
    const s = this.segments.at(-1);
    return s && !s.sealed ? s : undefined;
  }

  /** Close the active segment to appends; the next append opens a new one. */
  seal(): void {
    const s = this.active;
    if (s) this.sealSegment(s);
  }

  /** A failed sync: nothing more goes into this segment, and the spool is poisoned. */
  private syncFailed(seg: Segment, e: unknown): void {
    this.sealSegment(seg);
    this.opts.onSyncError(e);
  }

  private sealSegment(s: Segment): void {
    if (s.sealed) return;
    s.sealed = true;
    s.sealedAt = Date.now();
    spoolTrace?.({ ev: 'seal', t: nowMs(), seq: s.seq, bytes: s.size });
  }

  /** Resolves when no append is in flight on seg. */
  settled(seg: Segment): Promise<void> {
    if (!seg.writing) return Promise.resolve();
    return new Promise((resolve) => seg.waiters.push(resolve));
  }

  /** Deletes the oldest segment, durably (the caller gave its live messages their own files). */
  async drop(seg: Segment): Promise<void> {
    if (this.segments[0] !== seg || !seg.sealed || seg.writing)
      throw new Error('journal: can only drop the oldest sealed segment');
    const t0 = spoolTrace && nowMs();
    await seg.fh?.close();
    seg.fh = undefined;
    if (seg.damaged) await this.keepAside(seg);
    else await fsp.rm(seg.path, { force: true });
    const t1 = spoolTrace && nowMs();
    // Until this is durable, a crash would replay the segment's PUTs.
    if (this.opts.fsync) await this.dirFh.sync();
    if (spoolTrace && t0 && t1)
      spoolTrace({ ev: 'drop', t: t0, ms: nowMs() - t0, rmMs: t1 - t0, seq: seg.seq, bytes: seg.size });
    this.segments.shift();
    this.bytes -= seg.size;
  }

  /** A rename (no new space needed, also on a full disk), durable before the segment counts as gone. */
  private async keepAside(seg: Segment): Promise<void> {
    const to = join(this.opts.damagedDir, `${segmentFileName(seg.seq)}.${Date.now()}`);
    await fsp.mkdir(this.opts.damagedDir, { recursive: true });
    await fsp.rename(seg.path, to);
    if (this.opts.fsync) {
      const fh = await fsp.open(this.opts.damagedDir, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    this.opts.onKeptAside?.(seg.path, to);
  }

  async close(): Promise<void> {
    await this.commits.idle();
    const next = await this.next;
    this.next = undefined;
    await next?.fh?.close().catch(() => {});
    for (const s of this.segments) {
      await s.fh?.close().catch(() => {});
      s.fh = undefined;
    }
    await this.dirFh.close().catch(() => {});
  }

  /** A new segment, its name durable, not yet in `segments`. */
  private async createSegment(zeroFill: boolean): Promise<Segment> {
    const seq = this.nextSeq++;
    const path = segmentPath(this.walDir, seq);
    const t0 = spoolTrace && nowMs();
    const fh = await fsp.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o640);
    const seg: Segment = {
      seq,
      path,
      fh,
      size: 0,
      sealed: false,
      writing: false,
      zeroedTo: 0,
      puts: [],
      openedAt: Date.now(),
      sealedAt: 0,
      waiters: [],
    };
    if (zeroFill) {
      await this.preallocate(seg, 0);
      if (this.opts.fsync && seg.zeroedTo)
        await syncOrPoison(
          () => fh.datasync(),
          (e) => this.syncFailed(seg, e),
        );
    }
    // The segment's name must be durable before any record in it counts as committed.
    if (this.opts.fsync)
      await syncOrPoison(
        () => this.dirFh.sync(),
        (e) => this.syncFailed(seg, e),
      );
    if (spoolTrace && t0) spoolTrace({ ev: zeroFill ? 'prepare' : 'open', t: t0, ms: nowMs() - t0, seq });
    return seg;
  }

  /**
   * The segment after the active one is created, zero-filled and made durable ahead, off the
   * commit path: otherwise the first commit after each seal (every 10 s or 16 MiB) would wait
   * for a file creation, a directory fsync and the zero fill, a stall for every session at once.
   */
  private prepareNext(): void {
    if (this.next || !this.opts.fsync || !(this.opts.preallocateBytes ?? PREALLOCATE_BYTES)) return;
    this.next = this.createSegment(true).catch(() => undefined);
  }

  private async openSegment(): Promise<Segment> {
    const p = this.next;
    this.next = undefined;
    let prepared = await p;
    if (prepared?.sealed) {
      await prepared.fh?.close().catch(() => {});
      prepared = undefined;
    }
    const seg = prepared ?? (await this.createSegment(false));
    seg.openedAt = Date.now();
    this.segments.push(seg);
    return seg;
  }

  /**
   * Before appending `bytes` at seg.size: zero-fill past them (never over them) when the
   * zeroed part would run out, so the fdatasync of most appends commits no metadata. A failed
   * zero fill (a full disk) only ends the preallocation for this segment.
   */
  private async preallocate(seg: Segment, bytes: number): Promise<void> {
    const max = this.opts.preallocateBytes ?? PREALLOCATE_BYTES;
    if (!max || seg.zeroedTo === undefined || (seg.zeroedTo > 0 && seg.size + bytes <= seg.zeroedTo)) return;
    // 64 KiB first, doubling with use up to the maximum: a trickle of mail zero-fills little.
    const chunk = Math.min(max, Math.max(64 * 1024, seg.zeroedTo));
    const from = Math.max(seg.zeroedTo, seg.size + bytes);
    const to = Math.min(this.opts.segmentBytes, from + chunk);
    if (to <= from) return;
    try {
      const bufs: Buffer[] = [];
      for (let n = to - from; n > 0; n -= ZEROS.length)
        bufs.push(n >= ZEROS.length ? ZEROS : ZEROS.subarray(0, n));
      await writeAll(seg.fh!, bufs, from);
      seg.zeroedTo = to; // durable with this commit's fdatasync
    } catch {
      seg.zeroedTo = undefined;
    }
  }

  /** The fdatasync that makes a group commit durable: on the loop when allowed, else on the pool. */
  private async syncCommit(seg: Segment): Promise<void> {
    const fh = seg.fh!;
    if (SYNC_ON_LOOP && this.opts.syncOnLoop?.()) fdatasyncSync(fh.fd);
    else await fh.datasync();
  }

  private async flush(items: JournalItem[]): Promise<void> {
    const seg = this.active ?? (await this.openSegment());
    seg.writing = true;
    const t0 = spoolTrace && nowMs();
    let t1 = 0;
    try {
      const start = seg.size;
      const bufs = items.flatMap((i) => i.bufs);
      let bytes = 0;
      for (const b of bufs) bytes += b.length;
      if (this.opts.fsync) await this.preallocate(seg, bytes);
      try {
        const onLoop =
          bytes <= SYNC_WRITE_BYTES && seg.zeroedTo !== undefined && start + bytes <= seg.zeroedTo;
        const n = onLoop ? writeAllSync(seg.fh!.fd, bufs, start) : await writeAll(seg.fh!, bufs, start);
        seg.size += n;
        this.bytes += n;
      } catch (e) {
        // Position unknown after a failed write: never append behind it.
        this.sealSegment(seg);
        throw e;
      }
      if (spoolTrace) t1 = nowMs();
      if (this.opts.fsync) {
        await syncOrPoison(
          () => this.syncCommit(seg),
          (e) => this.syncFailed(seg, e),
        );
        this.syncs++;
      }
      this.records += items.length;
      let pos = start;
      for (const it of items) {
        it.seg = seg;
        if (it.put) {
          it.off = pos + PUT_IMAGE_OFFSET;
          seg.puts.push(it.put);
        }
        for (const b of it.bufs) pos += b.length;
      }
      if (seg.size >= this.opts.segmentBytes) this.sealSegment(seg);
      // Halfway to its seal (by size or age): get the next segment ready.
      else if (
        seg.size >= this.opts.segmentBytes / 2 ||
        Date.now() - seg.openedAt >= (this.opts.sealAfterMs ?? Number.POSITIVE_INFINITY) / 2
      )
        this.prepareNext();
      if (spoolTrace && t0) {
        const t2 = nowMs();
        spoolTrace({
          ev: 'commit',
          t: t0,
          ms: t2 - t0,
          writeMs: t1 - t0,
          syncMs: t2 - t1,
          n: items.length,
          seq: seg.seq,
          at: start,
        });
      }
    } finally {
      seg.writing = false;
      const w = seg.waiters;
      seg.waiters = [];
      for (const f of w) f();
    }
  }
}
