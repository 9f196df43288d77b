/**
 * On-disk format of the spool, version 1. Pure encode/decode functions, no I/O.
 *
 * ```
 * <dir>/format               "email-relay spool 1\n" (refuse to open another version)
 * <dir>/lock                 JSON {pid, host, since, purpose} of the owning process
 * <dir>/tmp/                 receptions and rewrites in progress; emptied when the spool opens
 * <dir>/queue/<ID>-m<SIZE>   one queued message (immutable once there)
 * <dir>/queue/<ID>-s<GEN>-<NEXT>   its delivery state, once it has changed (highest GEN wins)
 * <dir>/wal/<SEQ>.wal        journal segments: where small messages are committed, and live
 *                            until a checkpoint gives the ones still queued a file of their own
 * ```
 *
 * File names carry everything the in-memory index needs (ID -> receivedAt, SIZE, NEXT =
 * nextAttemptAt in ms), so opening a spool is one readdir plus reading the (bounded) journal,
 * never one read per message.
 *
 * Message file: a 32-byte ASCII preamble `ERSQ01 <bodyLen:12 hex> <envLen:8 hex>` padded with
 * spaces and ended by LF, then the raw message (bodyLen bytes, exactly as received), then the
 * envelope as JSON (envLen bytes). The envelope goes last because it is only final at commit,
 * while the body streams to disk before; the body therefore sits at a fixed offset (32).
 *
 * State file: the whole QueuedMessage as JSON (`v` = format version). It supersedes the
 * envelope of the message file; its name's NEXT is authoritative for nextAttemptAt, so
 * rescheduling is a rename.
 *
 * Journal segment: a sequence of records, each
 * `"ERJ1" | type u8 ('P' put, 'D' delete) | 3 zero bytes | payload length u32 LE |
 *  first 8 bytes of sha256(type..length, payload) | payload`.
 * PUT payload: 16-byte ID + the complete message file image (byte-identical to the message
 * file, so a journal-resident message is read in place). DELETE payload: 16-byte ID.
 * Every record carries its own checksum: a damaged one costs that record only (the reader
 * resynchronises on the next valid one); an incomplete last record is a torn append.
 */
import { createHash } from 'node:crypto';
import type { QueuedMessage, QueuedRecipient } from './types.ts';

export const FORMAT_VERSION = 1;
export const FORMAT_FILE = 'format';
export const FORMAT_FILE_CONTENT = `email-relay spool ${FORMAT_VERSION}\n`;

export const PREAMBLE_SIZE = 32;
const PREAMBLE_MAGIC = `ERSQ${String(FORMAT_VERSION).padStart(2, '0')}`;
const MAX_BODY = 2 ** 48 - 1;
const MAX_ENV = 2 ** 32 - 1;

export class SpoolFormatError extends Error {
  override name = 'SpoolFormatError';
}

export function encodePreamble(bodyLen: number, envLen: number): Buffer {
  if (!Number.isSafeInteger(bodyLen) || bodyLen < 0 || bodyLen > MAX_BODY)
    throw new RangeError('body too large');
  if (!Number.isSafeInteger(envLen) || envLen < 0 || envLen > MAX_ENV)
    throw new RangeError('envelope too large');
  const text = `${PREAMBLE_MAGIC} ${bodyLen.toString(16).padStart(12, '0')} ${envLen.toString(16).padStart(8, '0')}`;
  return Buffer.from(text.padEnd(PREAMBLE_SIZE - 1, ' ') + '\n', 'ascii');
}

export function decodePreamble(buf: Buffer): { bodyLen: number; envLen: number } {
  const text = buf.subarray(0, PREAMBLE_SIZE).toString('latin1');
  const m = /^ERSQ(\d\d) ([0-9a-f]{12}) ([0-9a-f]{8}) *\n$/.exec(text);
  if (!m) throw new SpoolFormatError('not a spool message file (bad preamble)');
  if (Number(m[1]) !== FORMAT_VERSION)
    throw new SpoolFormatError(`unsupported message format version ${m[1]}`);
  return { bodyLen: Number.parseInt(m[2]!, 16), envLen: Number.parseInt(m[3]!, 16) };
}

/** The buffers of a whole message file, in order (not concatenated: the body may be many chunks). */
export function encodeMessageImage(body: readonly Buffer[], bodyLen: number, envelope: Buffer): Buffer[] {
  return [encodePreamble(bodyLen, envelope.length), ...body, envelope];
}

/** Length of the message image starting at `off` in buf (from its preamble). */
export function imageLength(buf: Buffer, off = 0): number {
  const { bodyLen, envLen } = decodePreamble(buf.subarray(off, off + PREAMBLE_SIZE));
  return PREAMBLE_SIZE + bodyLen + envLen;
}

/** Validates a complete message file image (as found in the journal) and returns its parts. */
export function decodeMessageImage(image: Buffer): { body: Buffer; envelope: QueuedMessage } {
  const { bodyLen, envLen } = decodePreamble(image);
  if (PREAMBLE_SIZE + bodyLen + envLen !== image.length)
    throw new SpoolFormatError('message image length mismatch');
  const body = image.subarray(PREAMBLE_SIZE, PREAMBLE_SIZE + bodyLen);
  return { body, envelope: decodeEnvelope(image.subarray(PREAMBLE_SIZE + bodyLen)) };
}

// --- envelope / state JSON --------------------------------------------------------------------

export function encodeEnvelope(msg: QueuedMessage): Buffer {
  return Buffer.from(JSON.stringify({ v: FORMAT_VERSION, ...msg }), 'utf8');
}

const STATUSES = new Set(['pending', 'sent', 'bounced']);

/** Parses and checks what the rest of the relay relies on; unknown fields pass through. */
export function decodeEnvelope(buf: Buffer | string): QueuedMessage {
  let raw: unknown;
  try {
    raw = JSON.parse(typeof buf === 'string' ? buf : buf.toString('utf8'));
  } catch {
    throw new SpoolFormatError('envelope is not valid JSON');
  }
  if (!isObject(raw)) throw new SpoolFormatError('envelope is not an object');
  const { v, ...rest } = raw;
  if (v !== FORMAT_VERSION) throw new SpoolFormatError(`unsupported envelope version ${String(v)}`);
  const m = rest as Partial<QueuedMessage>;
  const ok =
    typeof m.id === 'string' &&
    typeof m.from === 'string' &&
    Array.isArray(m.recipients) &&
    m.recipients.every(isRecipient) &&
    isObject(m.client) &&
    typeof m.client.address === 'string' &&
    isCount(m.size) &&
    isCount(m.receivedAt) &&
    isCount(m.nextAttemptAt) &&
    isCount(m.attempts);
  if (!ok) throw new SpoolFormatError('envelope lacks required fields');
  return m as QueuedMessage;
}

function isRecipient(r: unknown): r is QueuedRecipient {
  return (
    isObject(r) && typeof r.address === 'string' && typeof r.status === 'string' && STATUSES.has(r.status)
  );
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

// --- file names -------------------------------------------------------------------------------

export type QueueFileName =
  | { kind: 'message'; id: string; size: number }
  | { kind: 'state'; id: string; gen: number; nextAttemptAt: number };

export function messageFileName(id: string, size: number): string {
  return `${id}-m${size}`;
}

export function stateFileName(id: string, gen: number, nextAttemptAt: number): string {
  return `${id}-s${gen}-${Math.max(0, Math.floor(nextAttemptAt))}`;
}

const NAME_RE = /^([0-9A-HJKMNP-TV-Z]{16})-(?:m(\d{1,15})|s(\d{1,9})-(\d{1,15}))$/;

export function parseQueueFileName(name: string): QueueFileName | undefined {
  const m = NAME_RE.exec(name);
  if (!m) return undefined;
  const id = m[1]!;
  if (m[2] !== undefined) return { kind: 'message', id, size: Number(m[2]) };
  return { kind: 'state', id, gen: Number(m[3]), nextAttemptAt: Number(m[4]) };
}

export function segmentFileName(seq: number): string {
  return `${seq.toString(16).padStart(12, '0')}.wal`;
}

export function parseSegmentFileName(name: string): number | undefined {
  const m = /^([0-9a-f]{12})\.wal$/.exec(name);
  return m ? Number.parseInt(m[1]!, 16) : undefined;
}

// --- journal records --------------------------------------------------------------------------

export const RECORD_HEADER_SIZE = 20;
const RECORD_MAGIC = Buffer.from('ERJ1', 'ascii');
const TYPE_PUT = 0x50;
const TYPE_DEL = 0x44;
const ID_LEN = 16;

/** `offset`: where the record starts in the segment. */
export type JournalRecord =
  | { type: 'put'; id: string; offset: number; image: Buffer }
  | { type: 'del'; id: string; offset: number };

/** Offset of a PUT's message image from the start of its record. */
export const PUT_IMAGE_OFFSET = RECORD_HEADER_SIZE + 16;

function recordHeader(type: number, payload: readonly Buffer[]): Buffer {
  let len = 0;
  for (const p of payload) len += p.length;
  const h = Buffer.alloc(RECORD_HEADER_SIZE);
  RECORD_MAGIC.copy(h, 0);
  h[4] = type;
  h.writeUInt32LE(len, 8);
  const hash = createHash('sha256').update(h.subarray(4, 12));
  for (const p of payload) hash.update(p);
  hash.digest().copy(h, 12, 0, 8);
  return h;
}

function idBuffer(id: string): Buffer {
  const b = Buffer.from(id, 'ascii');
  if (b.length !== ID_LEN) throw new RangeError(`bad queue id ${id}`);
  return b;
}

/** A PUT record as buffers (header, id, image parts) for a vectored write. */
export function encodePutRecord(id: string, image: readonly Buffer[]): Buffer[] {
  const payload = [idBuffer(id), ...image];
  return [recordHeader(TYPE_PUT, payload), ...payload];
}

export function encodeDelRecord(id: string): Buffer[] {
  const payload = [idBuffer(id)];
  return [recordHeader(TYPE_DEL, payload), ...payload];
}

/** Where a segment holds no valid record, and which messages' records may have been there. */
export interface BadRegion {
  start: number;
  end: number;
  /**
   * 'torn': the segment ends in an incomplete record or zero fill, what a crash leaves of an
   * append whose fdatasync never returned (never acknowledged). 'corrupt': a complete record
   * that fails its checksum, or bytes between valid records: damage to what was committed.
   */
  kind: 'torn' | 'corrupt';
  /** Queue ids read from record headers in the region (when legible): the messages it cost. */
  ids: string[];
  /** Only zeros: the unused, preallocated end of a segment (journal.ts), or a sparse tail. */
  zero?: true;
}

export interface DecodedJournal {
  records: JournalRecord[];
  /** End of the last valid record. */
  validBytes: number;
  bad: BadRegion[];
}

const ID_RE = /^[0-9A-HJKMNP-TV-Z]{16}$/;

/** The record at `off` if it is whole and its checksum holds. */
function recordAt(buf: Buffer, off: number): { record: JournalRecord; end: number } | undefined {
  if (off + RECORD_HEADER_SIZE > buf.length) return undefined;
  if (buf[off] !== 0x45 || !buf.subarray(off, off + 4).equals(RECORD_MAGIC)) return undefined;
  const type = buf[off + 4];
  if (type !== TYPE_PUT && type !== TYPE_DEL) return undefined;
  const len = buf.readUInt32LE(off + 8);
  const end = off + RECORD_HEADER_SIZE + len;
  if (end > buf.length || len < ID_LEN) return undefined;
  const payload = buf.subarray(off + RECORD_HEADER_SIZE, end);
  const digest = createHash('sha256')
    .update(buf.subarray(off + 4, off + 12))
    .update(payload)
    .digest();
  if (!digest.subarray(0, 8).equals(buf.subarray(off + 12, off + 20))) return undefined;
  const id = payload.subarray(0, ID_LEN).toString('ascii');
  const record: JournalRecord =
    type === TYPE_PUT
      ? { type: 'put', id, offset: off, image: payload.subarray(ID_LEN) }
      : { type: 'del', id, offset: off };
  return { record, end };
}

/** The next offset after `from` where a valid record starts, or -1. */
function resync(buf: Buffer, from: number): number {
  // The damaged record's own length field is the likeliest way past it (a flipped payload byte).
  if (buf.subarray(from, from + 4).equals(RECORD_MAGIC) && from + RECORD_HEADER_SIZE <= buf.length) {
    const next = from + RECORD_HEADER_SIZE + buf.readUInt32LE(from + 8);
    if (next < buf.length && recordAt(buf, next)) return next;
  }
  // Otherwise (a damaged header) the next magic that starts a record whose checksum holds.
  for (let at = buf.indexOf(RECORD_MAGIC, from + 1); at !== -1; at = buf.indexOf(RECORD_MAGIC, at + 1)) {
    if (recordAt(buf, at)) return at;
  }
  return -1;
}

/** Ids named by the (legible) record headers in buf[start, end). */
function idsIn(buf: Buffer, start: number, end: number): string[] {
  const ids = new Set<string>();
  for (
    let at = buf.indexOf(RECORD_MAGIC, start);
    at !== -1 && at < end;
    at = buf.indexOf(RECORD_MAGIC, at + 1)
  ) {
    const id = buf.subarray(at + RECORD_HEADER_SIZE, at + RECORD_HEADER_SIZE + ID_LEN).toString('latin1');
    if (ID_RE.test(id)) ids.add(id);
    if (ids.size >= 1000) break;
  }
  return [...ids];
}

/** Whether a bad region at the end is what an interrupted append leaves (see BadRegion.kind). */
function isTorn(buf: Buffer, start: number): boolean {
  if (start + RECORD_HEADER_SIZE > buf.length) return true;
  if (buf.subarray(start, start + 4).equals(RECORD_MAGIC)) {
    const end = start + RECORD_HEADER_SIZE + buf.readUInt32LE(start + 8);
    if (end > buf.length) return true;
    // In a preallocated segment an append cut by a crash is followed by the zero fill and has
    // sectors of it left inside: a sector the write never reached.
    return end < buf.length && isZero(buf, end, buf.length) && hasZeroSector(buf, start, end);
  }
  return isZero(buf, start, buf.length);
}

const SECTOR = 512;
const ZERO_BLOCK = Buffer.alloc(64 * 1024);

function isZero(buf: Buffer, start: number, end: number): boolean {
  for (let at = start; at < end; at += ZERO_BLOCK.length) {
    const n = Math.min(ZERO_BLOCK.length, end - at);
    if (!buf.subarray(at, at + n).equals(ZERO_BLOCK.subarray(0, n))) return false;
  }
  return true;
}

function hasZeroSector(buf: Buffer, start: number, end: number): boolean {
  for (let at = Math.ceil(start / SECTOR) * SECTOR; at + SECTOR <= end; at += SECTOR)
    if (isZero(buf, at, at + SECTOR)) return true;
  return false;
}

/**
 * Decodes every valid record of a segment. A bad record costs only itself: the reader
 * resynchronises on the next record whose checksum holds (every record carries its own).
 */
export function decodeJournal(buf: Buffer): DecodedJournal {
  const records: JournalRecord[] = [];
  const bad: BadRegion[] = [];
  let off = 0;
  let validBytes = 0;
  while (off < buf.length) {
    const r = recordAt(buf, off);
    if (r) {
      records.push(r.record);
      off = validBytes = r.end;
      continue;
    }
    const next = resync(buf, off);
    const end = next === -1 ? buf.length : next;
    const kind = next === -1 && isTorn(buf, off) ? 'torn' : 'corrupt';
    const zero = next === -1 && isZero(buf, off, end);
    bad.push({ start: off, end, kind, ids: idsIn(buf, off, end), ...(zero ? { zero: true as const } : {}) });
    if (next === -1) break;
    off = next;
  }
  return { records, validBytes, bad };
}
