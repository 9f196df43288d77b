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
 * A torn or corrupt record ends the segment (appends are sequential, so it is the tail).
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

/**
 * Decodes a segment's records up to the first torn or corrupt one. `validBytes` < buf.length
 * means the tail was cut (a crash mid-append) or damaged.
 */
export function decodeJournal(buf: Buffer): { records: JournalRecord[]; validBytes: number } {
  const records: JournalRecord[] = [];
  let off = 0;
  while (off + RECORD_HEADER_SIZE <= buf.length) {
    if (!buf.subarray(off, off + 4).equals(RECORD_MAGIC)) break;
    const type = buf[off + 4];
    const len = buf.readUInt32LE(off + 8);
    const end = off + RECORD_HEADER_SIZE + len;
    if (end > buf.length || len < ID_LEN) break;
    const payload = buf.subarray(off + RECORD_HEADER_SIZE, end);
    const digest = createHash('sha256')
      .update(buf.subarray(off + 4, off + 12))
      .update(payload)
      .digest();
    if (!digest.subarray(0, 8).equals(buf.subarray(off + 12, off + 20))) break;
    const id = payload.subarray(0, ID_LEN).toString('ascii');
    if (type === TYPE_PUT) records.push({ type: 'put', id, offset: off, image: payload.subarray(ID_LEN) });
    else if (type === TYPE_DEL) records.push({ type: 'del', id, offset: off });
    else break;
    off = end;
  }
  return { records, validBytes: off };
}
