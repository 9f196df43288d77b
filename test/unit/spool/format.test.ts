import { describe, expect, it } from 'vitest';
import {
  decodeEnvelope,
  decodeJournal,
  decodeMessageImage,
  decodePreamble,
  encodeDelRecord,
  encodeEnvelope,
  encodeMessageImage,
  encodePreamble,
  encodePutRecord,
  messageFileName,
  PREAMBLE_SIZE,
  parseQueueFileName,
  parseSegmentFileName,
  SpoolFormatError,
  segmentFileName,
  stateFileName,
} from '../../../src/relay/spool/format.ts';
import type { QueuedMessage } from '../../../src/relay/spool/types.ts';

const ID = '1KQ4Z8M2B0000001';

const msg: QueuedMessage = {
  id: ID,
  from: 'app@example.com',
  recipients: [
    {
      address: 'a@example.org',
      status: 'pending',
      notify: ['FAILURE', 'DELAY'],
      orcpt: 'rfc822;a@example.org',
    },
    { address: 'ü@example.org', status: 'sent', lastReply: '250 2.0.0 OK' },
  ],
  dsn: { ret: 'HDRS', envid: 'x1' },
  client: { address: '10.0.0.7', helo: 'pod', namespace: 'apps' },
  messageId: '<m@x>',
  bodyType: '8BITMIME',
  smtputf8: true,
  size: 11,
  receivedAt: 1_700_000_000_000,
  nextAttemptAt: 1_700_000_000_000,
  attempts: 0,
};

const concat = (bufs: Buffer[]) => Buffer.concat(bufs);

describe('preamble', () => {
  it('is 32 ASCII bytes and round-trips', () => {
    const p = encodePreamble(123456789, 4242);
    expect(p.length).toBe(PREAMBLE_SIZE);
    expect(p.toString('ascii')).toMatch(/^ERSQ01 [0-9a-f]{12} [0-9a-f]{8} +\n$/);
    expect(decodePreamble(p)).toEqual({ bodyLen: 123456789, envLen: 4242 });
  });

  it('rejects other files and versions', () => {
    expect(() => decodePreamble(Buffer.alloc(32))).toThrow(SpoolFormatError);
    const v2 = Buffer.from(encodePreamble(1, 1).toString('ascii').replace('ERSQ01', 'ERSQ02'));
    expect(() => decodePreamble(v2)).toThrow(/version/);
  });
});

describe('envelope', () => {
  it('round-trips every field, including unicode and unknown ones', () => {
    const extra = { ...msg, futureField: [1, 2] } as QueuedMessage;
    expect(decodeEnvelope(encodeEnvelope(extra))).toEqual(extra);
  });

  it('carries the format version and refuses others', () => {
    const json = JSON.parse(encodeEnvelope(msg).toString());
    expect(json.v).toBe(1);
    expect(() => decodeEnvelope(JSON.stringify({ ...json, v: 2 }))).toThrow(/version/);
  });

  it('refuses damaged envelopes', () => {
    expect(() => decodeEnvelope('{"v":1')).toThrow(SpoolFormatError);
    expect(() => decodeEnvelope(JSON.stringify({ v: 1, id: ID }))).toThrow(/required/);
    const bad = { ...msg, recipients: [{ address: 'a@b', status: 'weird' }] };
    expect(() => decodeEnvelope(encodeEnvelope(bad as QueuedMessage))).toThrow(/required/);
  });
});

describe('message image', () => {
  it('is preamble, body, envelope; body at a fixed offset', () => {
    const body = [Buffer.from('Subject: x\r\n'), Buffer.from('\r\nhi\r\n')];
    const env = encodeEnvelope({ ...msg, size: 18 });
    const image = concat(encodeMessageImage(body, 18, env));
    expect(image.subarray(PREAMBLE_SIZE, PREAMBLE_SIZE + 18).toString()).toBe('Subject: x\r\n\r\nhi\r\n');
    const decoded = decodeMessageImage(image);
    expect(decoded.body.toString()).toBe('Subject: x\r\n\r\nhi\r\n');
    expect(decoded.envelope.id).toBe(ID);
  });

  it('detects a truncated image', () => {
    const image = concat(encodeMessageImage([Buffer.from('abc')], 3, encodeEnvelope(msg)));
    expect(() => decodeMessageImage(image.subarray(0, image.length - 1))).toThrow(/length/);
  });

  it('handles an empty body', () => {
    const image = concat(encodeMessageImage([], 0, encodeEnvelope({ ...msg, size: 0 })));
    expect(decodeMessageImage(image).body.length).toBe(0);
  });
});

describe('file names', () => {
  it('round-trip message and state names', () => {
    expect(parseQueueFileName(messageFileName(ID, 2048))).toEqual({ kind: 'message', id: ID, size: 2048 });
    expect(parseQueueFileName(stateFileName(ID, 3, 1_700_000_123_456))).toEqual({
      kind: 'state',
      id: ID,
      gen: 3,
      nextAttemptAt: 1_700_000_123_456,
    });
  });

  it('ignores foreign names', () => {
    for (const n of [
      'x',
      `${ID}`,
      `${ID}-m`,
      `${ID}-mx1`,
      `${ID.toLowerCase()}-m1`,
      `${ID}-s1`,
      `1KQ4Z8M2B000000I-m1`,
    ]) {
      expect(parseQueueFileName(n)).toBeUndefined();
    }
  });

  it('segment names sort by sequence', () => {
    const names = [10, 2, 300].map(segmentFileName).sort();
    expect(names.map(parseSegmentFileName)).toEqual([2, 10, 300]);
    expect(parseSegmentFileName('junk.wal')).toBeUndefined();
  });
});

describe('journal records', () => {
  const image = encodeMessageImage([Buffer.from('Subject: j\r\n\r\nbody\r\n')], 20, encodeEnvelope(msg));
  const stream = concat([...encodePutRecord(ID, image), ...encodeDelRecord(ID)]);

  it('round-trip puts and deletes', () => {
    const { records, validBytes } = decodeJournal(stream);
    expect(validBytes).toBe(stream.length);
    expect(records.map((r) => [r.type, r.id])).toEqual([
      ['put', ID],
      ['del', ID],
    ]);
    const put = records[0];
    expect(put?.type === 'put' && put.image.equals(concat(image))).toBe(true);
  });

  it('a torn tail is an incomplete last record', () => {
    for (const cut of [1, 10, 25, stream.length - 40]) {
      const { records, validBytes, bad } = decodeJournal(stream.subarray(0, stream.length - cut));
      expect(records.length).toBeLessThan(2);
      expect(validBytes).toBeLessThan(stream.length);
      expect(bad).toHaveLength(1);
      expect(bad[0]!.kind).toBe('torn');
    }
  });

  it('a corrupted record costs that record only: the reader resynchronises on the next', () => {
    const damaged = Buffer.from(stream);
    damaged[60] = (damaged[60] ?? 0) ^ 0xff;
    const { records, bad } = decodeJournal(damaged);
    expect(records.map((r) => [r.type, r.id])).toEqual([['del', ID]]);
    expect(bad).toEqual([{ start: 0, end: records[0]!.offset, kind: 'corrupt', ids: [ID] }]);
    // A damaged header (magic gone) too: found by scanning for the next valid record.
    const header = Buffer.from(stream);
    header[1] = 0;
    expect(decodeJournal(header).records.map((r) => r.type)).toEqual(['del']);
    expect(decodeJournal(header).bad[0]).toMatchObject({ kind: 'corrupt', ids: [] });
  });

  it('a complete last record that fails its checksum is damage, not a torn append', () => {
    const damaged = Buffer.from(stream);
    damaged[damaged.length - 1] = damaged[damaged.length - 1]! ^ 0x01;
    const { records, bad } = decodeJournal(damaged);
    expect(records.map((r) => r.type)).toEqual(['put']);
    expect(bad[0]).toMatchObject({ kind: 'corrupt' });
  });

  it('zero fill (preallocated or sparse tail) is a torn tail', () => {
    const { records, bad } = decodeJournal(Buffer.concat([stream, Buffer.alloc(4096)]));
    expect(records.length).toBe(2);
    expect(bad.map((b) => b.kind)).toEqual(['torn']);
  });

  it('the zero fill says it is only zeros (the unused end of a preallocated segment)', () => {
    const { bad } = decodeJournal(Buffer.concat([stream, Buffer.alloc(4096)]));
    expect(bad).toEqual([
      { start: stream.length, end: stream.length + 4096, kind: 'torn', ids: [], zero: true },
    ]);
  });

  // A preallocated segment: records, then zeros. A crash during the last append leaves sectors
  // of it unwritten (zeros) inside the record; a bit flip in a complete one leaves none.
  const big = encodeMessageImage([Buffer.alloc(3000, 'x')], 3000, encodeEnvelope(msg));
  const bigRecord = concat(encodePutRecord('1KQ4Z8M2B0000002', big));
  const segment = () => Buffer.concat([stream, bigRecord, Buffer.alloc(64 * 1024)]);
  const start = stream.length;

  it('an append cut inside the zero fill of a preallocated segment is torn, not damage', () => {
    const buf = segment();
    const sector = Math.ceil((start + 600) / 512) * 512;
    buf.fill(0, sector, sector + 1024); // two sectors the write never reached
    const { records, bad } = decodeJournal(buf);
    expect(records.map((r) => r.type)).toEqual(['put', 'del']);
    expect(bad[0]).toMatchObject({ start, kind: 'torn', ids: ['1KQ4Z8M2B0000002'] });
    expect(bad[0]!.zero).toBeUndefined();
  });

  it('a flipped byte in the last record before the zero fill is still damage', () => {
    const buf = segment();
    buf[start + 1500] = buf[start + 1500]! ^ 0x01;
    expect(decodeJournal(buf).bad[0]).toMatchObject({ start, kind: 'corrupt' });
  });
});
