import { randomInt } from 'node:crypto';

/**
 * Queue IDs: 16 characters of Crockford base32 (digits and uppercase letters without I L O U):
 * 9 for the milliseconds since the epoch (good until year 3084), 7 for a 35-bit sequence.
 * They sort by time as plain strings, are safe on any filesystem (case-insensitive ones too),
 * and are the file names of the queue.
 *
 * The sequence starts at a random value per process and just counts up, so two replicas that
 * share nothing only collide if their counters meet in the same millisecond; a fresh random
 * value per millisecond (ULID style) would make that far likelier under load.
 */
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const TIME_CHARS = 9;
const SEQ_CHARS = 7;
const SEQ_SPACE = 2 ** (5 * SEQ_CHARS);
export const ID_LENGTH = TIME_CHARS + SEQ_CHARS;
const ID_RE = /^[0-9A-HJKMNP-TV-Z]{16}$/;

function encode(n: number, width: number): string {
  let s = '';
  for (let i = 0; i < width; i++) {
    s = ALPHABET[n % 32] + s;
    n = Math.floor(n / 32);
  }
  return s;
}

function decode(s: string): number {
  let n = 0;
  for (const c of s) n = n * 32 + ALPHABET.indexOf(c);
  return n;
}

export function isQueueId(s: string): boolean {
  return ID_RE.test(s);
}

/** The millisecond an ID was made: the message's receivedAt. */
export function idTime(id: string): number {
  return decode(id.slice(0, TIME_CHARS));
}

export class IdGenerator {
  private lastMs = 0;
  private seq: number;

  constructor(
    private readonly now: () => number = Date.now,
    seed: number = randomInt(SEQ_SPACE),
  ) {
    this.seq = seed % SEQ_SPACE;
  }

  /** Strictly increasing within the process, even if the clock steps back. */
  next(): string {
    let ms = Math.max(this.now(), this.lastMs);
    this.seq = (this.seq + 1) % SEQ_SPACE;
    // Sequence wrapped inside one millisecond: borrow the next one to stay ordered.
    if (ms === this.lastMs && this.seq === 0) ms++;
    this.lastMs = ms;
    return encode(ms, TIME_CHARS) + encode(this.seq, SEQ_CHARS);
  }

  /** Never issue an ID at or below this one (the newest already queued, after a clock step back). */
  floor(id: string): void {
    const t = idTime(id);
    if (t >= this.lastMs) this.lastMs = t + 1;
  }
}
