import { describe, expect, it } from 'vitest';
import { feedDataStream, loadSmtpStream } from '../../../src/relay/smtp/data-scan.ts';

// Our DATA scan against smtp-server's own, on the same fuzzed input cut into the same random
// chunks: the bytes of the message, where the data ends, and the commands pipelined after it.

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

type Feed = (chunk: Buffer, done: (err?: Error | null) => void) => void;

interface StreamLike {
  _feedDataStream: Feed;
  oncommand: (cmd: Buffer, cb?: () => void) => void;
  startDataMode(max?: number): NodeJS.ReadableStream;
  continue(): void;
  write(chunk: Buffer, cb: () => void): boolean;
  dataBytes: number;
}

async function parse(feed: Feed, chunks: Buffer[]) {
  const cls = (await loadSmtpStream()) as unknown as new () => StreamLike;
  const s = new cls();
  s._feedDataStream = feed;
  const commands: string[] = [];
  s.oncommand = (cmd, cb) => {
    commands.push(cmd.toString('latin1'));
    cb?.();
  };
  const data = s.startDataMode();
  const parts: Buffer[] = [];
  let ended = false;
  data.on('data', (c: Buffer) => parts.push(c));
  data.on('end', () => {
    ended = true;
    s.continue();
  });
  for (const c of chunks) await new Promise<void>((r) => s.write(c, r));
  await new Promise((r) => setImmediate(r));
  return { data: Buffer.concat(parts).toString('latin1'), ended, commands, dataBytes: s.dataBytes };
}

describe('DATA scan', () => {
  it('finds the end, unescapes dots and hands back what follows', async () => {
    const input = Buffer.from('Subject: x\r\n\r\n..leading\r\nmid.dle\r\n.\r\nQUIT\r\n');
    const got = await parse(feedDataStream as Feed, [input.subarray(0, 7), input.subarray(7)]);
    expect(got).toMatchObject({
      data: 'Subject: x\r\n\r\n.leading\r\nmid.dle\r\n',
      ended: true,
      commands: ['QUIT'],
    });
  });

  it("matches smtp-server's own parser on 3000 fuzzed inputs in random chunks", async () => {
    const cls = await loadSmtpStream();
    const original = cls!.prototype._feedDataStream as Feed;
    expect(original).not.toBe(feedDataStream);
    const rand = rng(7);
    const alphabet = ['\r', '\n', '.', 'a', '\r\n', '\r\n.', '\r\n.\r\n', '..'];
    for (let round = 0; round < 3000; round++) {
      let text = '';
      const pieces = Math.floor(rand() * 30);
      for (let i = 0; i < pieces; i++) text += alphabet[Math.floor(rand() * alphabet.length)];
      if (rand() < 0.7) text += '\r\n.\r\nRSET\r\n';
      const bytes = Buffer.from(text, 'latin1');
      const chunks: Buffer[] = [];
      for (let at = 0; at < bytes.length; ) {
        const n = 1 + Math.floor(rand() * 9);
        chunks.push(bytes.subarray(at, at + n));
        at += n;
      }
      const want = await parse(original, chunks);
      const got = await parse(feedDataStream as Feed, chunks);
      if (JSON.stringify(got) !== JSON.stringify(want))
        expect({ round, text, ...got }).toEqual({ round, text, ...want });
    }
  });
});
