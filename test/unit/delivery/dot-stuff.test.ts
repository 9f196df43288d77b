import type { Transform } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  type DotStuffState,
  dotStuffChunk,
  installFastDotStuffing,
  loadNodemailerDataStream,
} from '../../../src/relay/delivery/dot-stuff.ts';

/** A seeded generator, so a failure can be replayed. */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const ALPHABET = Buffer.from('\r\n.\r\n.ab');

type Flush = NonNullable<Transform['_flush']>;

/** The chunks through a DataStream's transform, then its flush (the final dot); every push. */
function pushesOf(transform: Transform['_transform'], flush: Flush, chunks: Buffer[]): Buffer[] {
  const state: DotStuffState & { push(b: Buffer): void } = {
    lastByte: false,
    inByteCount: 0,
    outByteCount: 0,
    push: (b: Buffer) => out.push(Buffer.from(b)),
  };
  const out: Buffer[] = [];
  for (const c of chunks) transform.call(state as unknown as Transform, c, 'latin1', () => undefined);
  flush.call(state as unknown as Transform, () => undefined);
  expect(state.outByteCount).toBe(out.reduce((n, b) => n + b.length, 0));
  return out;
}

const encodeWith = (transform: Transform['_transform'], flush: Flush, chunks: Buffer[]) =>
  Buffer.concat(pushesOf(transform, flush, chunks));

describe('dot-stuffing', () => {
  it('stuffs leading dots and turns bare CR and bare LF into CRLF', () => {
    const st: DotStuffState = { lastByte: false, inByteCount: 0, outByteCount: 0 };
    const enc = (s: string) => dotStuffChunk(st, Buffer.from(s)).toString('latin1');
    expect(enc('.top\r\nx\n.y\r.z\rw')).toBe('..top\r\nx\r\n..y\r\n..z\r\nw');
    // across chunks: a CR at the end of one and a dot at the start of the next
    expect(enc('a\r')).toBe('a\r');
    expect(enc('.b')).toBe('\n..b');
    expect(st.inByteCount).toBe(19);
  });

  it('returns the very chunk when there is nothing to change', () => {
    const st: DotStuffState = { lastByte: 0x0a, inByteCount: 0, outByteCount: 0 };
    const chunk = Buffer.from('Subject: hi\r\n\r\nplain text\r\n');
    expect(dotStuffChunk(st, chunk)).toBe(chunk);
  });

  it('matches nodemailer byte for byte on 5000 fuzzed inputs in random chunks', async () => {
    const cls = await loadNodemailerDataStream();
    expect(cls, 'nodemailer data-stream.js found').toBeDefined();
    const original = cls!.prototype._transform;
    const originalFlush = cls!.prototype._flush;
    const installed = await installFastDotStuffing();
    expect(installed).toBe(true);
    const fast = cls!.prototype._transform;
    const fastFlush = cls!.prototype._flush;
    expect(fast).not.toBe(original);
    expect(fastFlush).not.toBe(originalFlush);
    const rand = rng(42);
    for (let round = 0; round < 5000; round++) {
      const n = Math.floor(rand() * 64);
      const bytes = Buffer.alloc(n);
      for (let i = 0; i < n; i++) bytes[i] = ALPHABET[Math.floor(rand() * ALPHABET.length)]!;
      const chunks: Buffer[] = [];
      for (let at = 0; at < n; ) {
        const len = 1 + Math.floor(rand() * 8);
        chunks.push(bytes.subarray(at, at + len));
        at += len;
      }
      const want = encodeWith(original, originalFlush, chunks).toString('latin1');
      const got = encodeWith(fast, fastFlush, chunks).toString('latin1');
      if (got !== want)
        expect({ round, input: bytes.toString('latin1'), got }).toEqual({
          round,
          input: bytes.toString('latin1'),
          got: want,
        });
    }
  });

  it('sends a one-chunk body and the final dot as one buffer (one write upstream), a large one apart', async () => {
    const cls = (await loadNodemailerDataStream())!;
    await installFastDotStuffing();
    const { _transform: t, _flush: f } = cls.prototype;
    const small = pushesOf(t, f, [Buffer.from('Subject: x\r\n\r\nbody\r\n')]);
    expect(small.map((b) => b.toString('latin1'))).toEqual(['Subject: x\r\n\r\nbody\r\n.\r\n']);
    expect(pushesOf(t, f, [Buffer.from('no line end')]).map(String)).toEqual(['no line end\r\n.\r\n']);
    const big = pushesOf(t, f, [Buffer.alloc(300 * 1024, 0x61)]);
    expect(big.map((b) => b.length)).toEqual([300 * 1024, 5]);
  });
});
