import { createReadStream, promises as fsp, openSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { readExactly } from './disk.ts';
import {
  decodeEnvelope,
  decodePreamble,
  FORMAT_FILE,
  FORMAT_FILE_CONTENT,
  messageFileName,
  PREAMBLE_SIZE,
  parseQueueFileName,
  SpoolFormatError,
  stateFileName,
} from './format.ts';
import { idTime } from './ids.ts';
import { type SegmentSummary, segmentPath } from './journal.ts';
import { isCode } from './lock.ts';
import type { QueuedMessage } from './types.ts';

export const TMP_DIR = 'tmp';
export const QUEUE_DIR = 'queue';
export const WAL_DIR = 'wal';
/** Journal segments found damaged, kept for a person once their valid records are safe elsewhere. */
export const DAMAGED_DIR = 'damaged';
/** Files of messages that cannot be delivered as they are (unreadable, or without their body): kept, out of the delivery path. */
export const QUARANTINE_DIR = 'quarantine';

export interface Dirs {
  queueDir: string;
  walDir: string;
}

export function spoolDirs(dir: string): Dirs {
  return { queueDir: join(dir, QUEUE_DIR), walDir: join(dir, WAL_DIR) };
}

/** What the index keeps per message: the QueueEntry plus where its bytes are. */
export interface IndexEntry {
  id: string;
  size: number;
  receivedAt: number;
  nextAttemptAt: number;
  /** Generation of the state file; 0: none, the message's own envelope is current. */
  gen: number;
  /** Journal segment still holding a PUT of this message (a replay would bring it back); -1: none. */
  seg: number;
  /** Offset of the message image in segment `seg` while it has no file of its own; -1: it has one. */
  off: number;
}

export interface ScanResult {
  /** Sorted by ID, i.e. oldest first. */
  entries: IndexEntry[];
  /** Names in queue/ that mean nothing any more: superseded or orphaned state files, deleted messages. */
  garbage: string[];
  /** Names in queue/ that the spool did not write. */
  unknown: string[];
  /**
   * State files whose message is neither in queue/ nor in the journal (its file was deleted, or
   * its journal record damaged): not deleted, they go to quarantine/.
   */
  orphans: string[];
  /** Messages whose journal record was in a damaged or torn region and that exist nowhere else. */
  lost: Array<{ id: string; segment: string; kind: 'torn' | 'corrupt' }>;
}

/**
 * Builds the index from the journal's records and queue/'s file names: no per-message I/O.
 * A DELETE in the journal wins over a message file left behind (its unlink may not have been
 * durable); a message both in the journal and in its own file is read from the file.
 */
export function buildIndex(queueDir: string, segments: readonly SegmentSummary[]): ScanResult {
  const journal = new Map<string, { seg: number; off: number; size: number }>();
  const deleted = new Set<string>();
  for (const s of segments) {
    for (const r of s.records) {
      if (r.type === 'put') journal.set(r.id, { seg: s.seq, off: r.off, size: r.size });
      else {
        journal.delete(r.id);
        deleted.add(r.id);
      }
    }
  }

  const files = new Map<string, { size: number; name: string }>();
  const states = new Map<string, { gen: number; nextAttemptAt: number; name: string }>();
  const garbage: string[] = [];
  const unknown: string[] = [];
  for (const name of readdirSync(queueDir)) {
    const p = parseQueueFileName(name);
    if (!p) {
      unknown.push(name);
    } else if (p.kind === 'message') {
      if (deleted.has(p.id) && !journal.has(p.id)) garbage.push(name);
      else files.set(p.id, { size: p.size, name });
    } else {
      const prev = states.get(p.id);
      if (!prev || p.gen > prev.gen) {
        if (prev) garbage.push(prev.name);
        states.set(p.id, { gen: p.gen, nextAttemptAt: p.nextAttemptAt, name });
      } else {
        garbage.push(name);
      }
    }
  }

  const entries: IndexEntry[] = [];
  const add = (id: string, size: number, seg: number, off: number) => {
    const receivedAt = idTime(id);
    const st = states.get(id);
    entries.push({
      id,
      size,
      receivedAt,
      nextAttemptAt: st?.nextAttemptAt ?? receivedAt,
      gen: st?.gen ?? 0,
      seg,
      off,
    });
  };
  for (const [id, f] of files) {
    const j = journal.get(id);
    add(id, f.size, j ? j.seg : -1, -1);
  }
  for (const [id, j] of journal) if (!files.has(id)) add(id, j.size, j.seg, j.off);
  const orphans: string[] = [];
  for (const [id, st] of states) if (!files.has(id) && !journal.has(id)) orphans.push(st.name);
  entries.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const lost: ScanResult['lost'] = [];
  const seen = new Set<string>();
  for (const s of segments) {
    for (const b of s.bad) {
      for (const id of b.ids) {
        if (seen.has(id) || files.has(id) || journal.has(id) || deleted.has(id)) continue;
        seen.add(id);
        lost.push({ id, segment: s.path, kind: b.kind });
      }
    }
  }
  return { entries, garbage, unknown, orphans, lost };
}

export function messagePath(queueDir: string, e: { id: string; size: number }): string {
  return join(queueDir, messageFileName(e.id, e.size));
}

export function statePath(queueDir: string, e: { id: string; gen: number; nextAttemptAt: number }): string {
  return join(queueDir, stateFileName(e.id, e.gen, e.nextAttemptAt));
}

/** Where the message image is: its own file, or in place in a journal segment. */
function imageAt(d: Dirs, e: IndexEntry): { path: string; base: number } {
  return e.off >= 0
    ? { path: segmentPath(d.walDir, e.seg), base: e.off }
    : { path: messagePath(d.queueDir, e), base: 0 };
}

/**
 * The current envelope: the state file if any, else the message's own envelope. The entry (the
 * file names) is authoritative for id, size, receivedAt and nextAttemptAt. Throws ENOENT when the
 * files moved under us (a checkpoint, update or remove): the caller retries with a fresh entry.
 */
export async function readEnvelope(d: Dirs, e: IndexEntry): Promise<QueuedMessage> {
  let msg: QueuedMessage;
  if (e.gen > 0) {
    msg = decodeEnvelope(await fsp.readFile(statePath(d.queueDir, e)));
  } else {
    const { path, base } = imageAt(d, e);
    const fh = await fsp.open(path, 'r');
    try {
      const { bodyLen, envLen } = decodePreamble(await readExactly(fh, base, PREAMBLE_SIZE));
      if (bodyLen !== e.size)
        throw new SpoolFormatError(`message ${e.id}: size ${bodyLen}, expected ${e.size}`);
      msg = decodeEnvelope(await readExactly(fh, base + PREAMBLE_SIZE + bodyLen, envLen));
    } finally {
      await fh.close();
    }
  }
  return { ...msg, id: e.id, size: e.size, receivedAt: e.receivedAt, nextAttemptAt: e.nextAttemptAt };
}

/**
 * A stream of the message bytes. The file is opened synchronously: a checkpoint may delete the
 * segment right after, and an open descriptor keeps reading it.
 */
export function openBodyStream(d: Dirs, e: IndexEntry): NodeJS.ReadableStream {
  if (e.size === 0) return Readable.from([]);
  const { path, base } = imageAt(d, e);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    return failedStream(err);
  }
  // Big reads: one thread-pool round trip per MiB rather than per 64 KiB (5 MB messages).
  const highWaterMark = Math.min(1024 * 1024, Math.max(64 * 1024, e.size));
  return createReadStream(path, {
    fd,
    start: base + PREAMBLE_SIZE,
    end: base + PREAMBLE_SIZE + e.size - 1,
    highWaterMark,
  });
}

export function failedStream(err: unknown): NodeJS.ReadableStream {
  const r = new Readable({ read() {} });
  process.nextTick(() => r.destroy(err instanceof Error ? err : new Error(String(err))));
  return r;
}

/** The message's header section (up to the first empty line), at most maxBytes of it. */
export async function readHeaders(d: Dirs, e: IndexEntry, maxBytes = 256 * 1024): Promise<string> {
  const { path, base } = imageAt(d, e);
  const fh = await fsp.open(path, 'r');
  try {
    const len = Math.min(e.size, maxBytes);
    const buf = len > 0 ? await readExactly(fh, base + PREAMBLE_SIZE, len) : Buffer.alloc(0);
    const text = buf.toString('utf8');
    const m = /\r?\n\r?\n/.exec(text);
    return m ? text.slice(0, m.index + m[0].length) : text;
  } finally {
    await fh.close();
  }
}

/** Throws if the directory holds a spool of another format version. */
export async function checkFormat(dir: string): Promise<'ok' | 'missing'> {
  try {
    const text = await fsp.readFile(join(dir, FORMAT_FILE), 'utf8');
    if (text !== FORMAT_FILE_CONTENT) {
      throw new SpoolFormatError(`${dir} holds an unsupported spool format: ${JSON.stringify(text.trim())}`);
    }
    return 'ok';
  } catch (e) {
    if (isCode(e, 'ENOENT')) return 'missing';
    throw e;
  }
}
