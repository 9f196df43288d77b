import type { Transform, TransformCallback } from 'node:stream';
import { replaceMethod } from '../../lib/library-contract.ts';
import { JOIN_BYTES } from './body.ts';
import { type DataStreamClass, loadDataStream, NODEMAILER_CONTRACT } from './nodemailer-adapter.ts';

/**
 * The DATA encoding every upstream transaction streams through: bare CR and bare LF become CRLF,
 * a dot at the start of a line is doubled. nodemailer's smtp-connection does this in
 * `DataStream._transform` with a JavaScript loop over every byte: the top function when relaying
 * 5 MB messages (bench/README.md). This is the same transform, byte for byte (test/unit/delivery/
 * dot-stuff.test.ts compares the two on fuzzed input), finding CR and LF with Buffer.indexOf.
 * The DataStream fields it keeps are listed, with their meaning, in nodemailer-adapter.ts's contract.
 */

const LF = 0x0a;
const CR = 0x0d;
const DOT = 0x2e;
const INSERT_LF = Buffer.from('\n');
const INSERT_LF_DOT = Buffer.from('\n.');
const INSERT_CR = Buffer.from('\r');
const INSERT_DOT = Buffer.from('.');

/** The state nodemailer's DataStream keeps between chunks. */
export interface DotStuffState {
  /** the previous chunk's last byte; false before the first */
  lastByte: number | false;
  inByteCount: number;
  outByteCount: number;
}

/** One chunk, encoded; `state` is advanced. Returns the chunk itself when nothing changes. */
export function dotStuffChunk(state: DotStuffState, chunk: Buffer): Buffer {
  const n = chunk.length;
  state.inByteCount += n;
  const out: Buffer[] = [];
  let last = 0;
  let len = 0;
  const cut = (at: number, insert: Buffer) => {
    if (at > last) {
      out.push(chunk.subarray(last, at));
      len += at - last;
    }
    out.push(insert);
    len += insert.length;
    last = at;
  };
  const before = state.lastByte;
  // the first byte, against the previous chunk's last
  if (before === CR && chunk[0] !== LF) cut(0, chunk[0] === DOT ? INSERT_LF_DOT : INSERT_LF);
  else if (chunk[0] === DOT && (before === LF || before === false)) cut(0, INSERT_DOT);

  let cr = chunk.indexOf(CR);
  let lf = chunk.indexOf(LF);
  while (cr !== -1 || lf !== -1) {
    if (cr !== -1 && (lf === -1 || cr < lf)) {
      // A bare CR becomes CRLF, and a dot after it is stuffed: a receiver that ends lines at a
      // lone CR would otherwise read "\r.\r" as the end of data (SMTP smuggling).
      const next = cr + 1;
      if (next < n && chunk[next] !== LF) cut(next, chunk[next] === DOT ? INSERT_LF_DOT : INSERT_LF);
      cr = chunk.indexOf(CR, next);
    } else {
      const prev = lf ? chunk[lf - 1] : before;
      if (prev !== CR) cut(lf, INSERT_CR);
      if (lf + 1 < n && chunk[lf + 1] === DOT) cut(lf + 1, INSERT_DOT);
      lf = chunk.indexOf(LF, lf + 1);
    }
  }
  state.lastByte = chunk[n - 1]!;
  if (!out.length) {
    state.outByteCount += n;
    return chunk;
  }
  if (last < n) {
    out.push(chunk.subarray(last));
    len += n - last;
  }
  state.outByteCount += len;
  return Buffer.concat(out, len);
}

type DataStreamLike = Transform & DotStuffState & { _relayHeld?: Buffer | undefined };

/**
 * Each encoded chunk is pushed when the next one comes; the last goes out with the final dot, in
 * one buffer when small: one write(2) and one segment for a message's end, not two (nodemailer
 * pushes the dot on its own, and a one-chunk body cost two writes and two wake-ups upstream).
 */
function fastTransform(
  this: DataStreamLike,
  chunk: Buffer | string,
  _enc: BufferEncoding,
  done: TransformCallback,
) {
  if (!chunk?.length) return done();
  const held = this._relayHeld;
  this._relayHeld = dotStuffChunk(this, typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  if (held) this.push(held);
  done();
}

/** nodemailer's _flush (the final dot after CRLF, added if the body lacks it), after the held chunk. */
function fastFlush(this: DataStreamLike, done: TransformCallback) {
  const term = Buffer.from(this.lastByte === LF ? '.\r\n' : this.lastByte === CR ? '\n.\r\n' : '\r\n.\r\n');
  this.outByteCount += term.length;
  const held = this._relayHeld;
  this._relayHeld = undefined;
  // A held chunk up to JOIN_BYTES goes out with the final dot in one buffer; a larger one alone.
  if (held && held.length <= JOIN_BYTES) this.push(Buffer.concat([held, term], held.length + term.length));
  else {
    if (held) this.push(held);
    this.push(term);
  }
  done();
}

/** nodemailer's DataStream class (see nodemailer-adapter.ts). */
export function loadNodemailerDataStream(): Promise<DataStreamClass> {
  return loadDataStream();
}

/** Swaps nodemailer's per-byte loop for dotStuffChunk; throws on a nodemailer version not tested. */
export async function installFastDotStuffing(): Promise<true> {
  const cls = await loadDataStream();
  replaceMethod(NODEMAILER_CONTRACT, 'DataStream', cls.prototype, '_transform', fastTransform);
  replaceMethod(NODEMAILER_CONTRACT, 'DataStream', cls.prototype, '_flush', fastFlush);
  return true;
}

/** Whether this thread's nodemailer has dotStuffChunk in place (each thread loads its own). */
export async function fastDotStuffingInstalled(): Promise<boolean> {
  const cls = await loadDataStream();
  return cls.prototype._transform === fastTransform && cls.prototype._flush === fastFlush;
}
