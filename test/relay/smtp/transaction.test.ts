import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { greetedSession, relaysPerTest } from '../../helpers/relay.ts';

const startRelay = relaysPerTest();

describe('one transaction', () => {
  it('a From: header refusal stores not a byte of the message and leaves nothing in the spool', async () => {
    const relay = await startRelay({
      policies: [{ name: 'senders', rules: { senders: { domains: ['example.com'] } } }],
    });
    // Count what reaches the spool's writers (the real spool, watched).
    let written = 0;
    const begin = relay.spool.begin.bind(relay.spool);
    relay.spool.begin = async () => {
      const w = await begin();
      const write = w.write.bind(w);
      w.write = (chunk: Buffer) => {
        written += chunk.length;
        return write(chunk);
      };
      return w;
    };
    const c = await greetedSession(relay.port);
    expect((await c.cmd('MAIL FROM:<app@example.com>'))[0]).toMatch(/^250 /);
    expect((await c.cmd('RCPT TO:<x@example.org>'))[0]).toMatch(/^250 /);
    expect((await c.cmd('DATA'))[0]).toMatch(/^354 /);
    // a body well over what a writer keeps in memory (it would spill to tmp/)
    c.write(`From: boss@gmail.com\r\nSubject: s\r\n\r\n${`${'x'.repeat(76)}\r\n`.repeat(8000)}`);
    expect(await c.cmd('.')).toEqual([
      '550 5.7.1 Error: message refused: From: boss@gmail.com is not allowed (policy senders)',
    ]);
    expect(written).toBe(0);
    expect(relay.spool.stats().messages).toBe(0);
    expect(await readdir(join(relay.dir, 'spool', 'tmp'))).toEqual([]);
    // the session goes on: the next message is accepted
    await c.cmd('MAIL FROM:<app@example.com>');
    await c.cmd('RCPT TO:<x@example.org>');
    await c.cmd('DATA');
    c.write('From: app@example.com\r\n\r\nb\r\n');
    expect((await c.cmd('.'))[0]).toMatch(/^250 /);
    expect(written).toBeGreaterThan(0);
    c.close();
  });
});
