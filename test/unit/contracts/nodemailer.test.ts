import { readFileSync } from 'node:fs';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { SMTPServer } from 'smtp-server';
import { afterEach, describe, expect, it } from 'vitest';
import { assertTestedVersion, installedVersion } from '../../../src/lib/library-contract.ts';
import {
  NODEMAILER_CONTRACT as C,
  envelopeRejections,
  loadDataStream,
  observeSession,
} from '../../../src/relay/delivery/nodemailer-adapter.ts';

// Every private member of nodemailer the relay relies on (the adapter's contract), checked
// against the installed library: present, and meaning what the contract says.

const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
  dependencies: Record<string, string>;
};
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanups.splice(0)) f();
});

describe('nodemailer contract', () => {
  it('is pinned to exactly a version the contract was tested with', () => {
    expect(pkg.dependencies.nodemailer).toMatch(/^\d+\.\d+\.\d+$/);
    expect(C.tested).toContain(pkg.dependencies.nodemailer);
    expect(C.tested).toContain(installedVersion('nodemailer'));
    expect(() => assertTestedVersion(C)).not.toThrow();
    expect(() => assertTestedVersion({ ...C, tested: ['0.0.1'] })).toThrow(/version .* is installed/);
  });

  it('DataStream (data-stream.js): _transform with lastByte, inByteCount, outByteCount', async () => {
    for (const n of ['./data-stream.js', '_transform', 'lastByte', 'inByteCount', 'outByteCount'])
      expect(C.members.some((m) => m.name === n)).toBe(true);
    const cls = await loadDataStream();
    // the library's class, before our _transform is installed over it, on a live instance
    const DataStream: unknown = cls;
    if (typeof DataStream !== 'function') throw new Error('not a class');
    const s: unknown = Reflect.construct(DataStream, []);
    if (!(s instanceof Object)) throw new Error('no instance');
    expect(Reflect.get(s, 'lastByte')).toBe(false);
    expect(Reflect.get(s, 'inByteCount')).toBe(0);
    expect(Reflect.get(s, 'outByteCount')).toBe(0);
    const out: Buffer[] = [];
    const push = (b: Buffer) => out.push(b);
    Reflect.set(s, 'push', push);
    cls.prototype._transform.call(s as never, Buffer.from('a\n.'), 'latin1', () => undefined);
    expect(Buffer.concat(out).toString('latin1')).toBe('a\r\n..');
    expect(Reflect.get(s, 'lastByte')).toBe(0x2e);
    expect(Reflect.get(s, 'inByteCount')).toBe(3);
    expect(Reflect.get(s, 'outByteCount')).toBe(5);
  });

  it('DataStream._flush pushes the final dot by lastByte and counts it; _relayHeld is ours alone', async () => {
    for (const n of ['_flush', '_relayHeld']) expect(C.members.some((m) => m.name === n)).toBe(true);
    const cls = await loadDataStream();
    const DataStream: unknown = cls;
    if (typeof DataStream !== 'function') throw new Error('not a class');
    for (const [last, dot] of [
      [0x0a, '.\r\n'],
      [0x0d, '\n.\r\n'],
      [0x61, '\r\n.\r\n'],
      [false, '\r\n.\r\n'],
    ] as const) {
      const s: unknown = Reflect.construct(DataStream, []);
      if (!(s instanceof Object)) throw new Error('no instance');
      expect('_relayHeld' in s).toBe(false);
      const out: Buffer[] = [];
      Reflect.set(s, 'push', (b: Buffer) => out.push(b));
      Reflect.set(s, 'lastByte', last);
      Reflect.set(s, 'outByteCount', 10);
      cls.prototype._flush.call(s as never, () => undefined);
      expect(Buffer.concat(out).toString('latin1')).toBe(dot);
      expect(Reflect.get(s, 'outByteCount')).toBe(10 + dot.length);
    }
  });

  it('SMTPConnection._envelope.rejectedErrors: RCPT refusals of a transaction that then failed', async () => {
    expect(C.members.some((m) => m.on === 'SMTPConnection' && m.name === '_envelope')).toBe(true);
    const server = new SMTPServer({
      logger: false,
      disabledCommands: ['AUTH', 'STARTTLS'],
      disableReverseLookup: true,
      onRcptTo(address, _s, cb) {
        cb(
          address.address.startsWith('no@')
            ? Object.assign(new Error('no such user'), { responseCode: 550 })
            : null,
        );
      },
      onData(stream, _s, cb) {
        stream.resume();
        stream.on('end', () => cb(Object.assign(new Error('content refused'), { responseCode: 554 })));
      },
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => server.close());
    const addr = server.server.address();
    if (!addr || typeof addr === 'string') throw new Error('no port');
    const conn = new SMTPConnection({ host: '127.0.0.1', port: addr.port, ignoreTLS: true });
    cleanups.push(() => conn.close());
    await new Promise<void>((resolve, reject) => {
      conn.once('error', reject);
      conn.connect(() => resolve());
    });
    const err = await new Promise<Error | null>((resolve) =>
      conn.send(
        { from: 'a@example.com', to: ['yes@example.com', 'no@example.com'] },
        'Subject: x\r\n\r\nb\r\n',
        (e) => resolve(e),
      ),
    );
    expect(err?.message).toMatch(/content refused/);
    expect(Reflect.get(err ?? {}, 'rejectedErrors')).toBeUndefined(); // only on the envelope
    const rejected = envelopeRejections(conn);
    expect(rejected.map((e) => [e.recipient, e.responseCode])).toEqual([['no@example.com', 550]]);
  });

  it('_sendCommand, lastServerResponse, _createSendStream, _onError: what the deadlines watch and call', async () => {
    for (const n of ['_sendCommand', 'lastServerResponse', '_createSendStream', '_onError'])
      expect(C.members.some((m) => m.on === 'SMTPConnection' && m.name === n)).toBe(true);
    let release: (() => void) | undefined;
    const server = new SMTPServer({
      logger: false,
      disabledCommands: ['AUTH', 'STARTTLS'],
      disableReverseLookup: true,
      onData(stream, _s, cb) {
        stream.resume();
        // The final reply never comes until released: the session is failed meanwhile.
        stream.on('end', () => {
          release = () => cb(null);
        });
      },
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => server.close());
    const addr = server.server.address();
    if (!addr || typeof addr === 'string') throw new Error('no port');
    const conn = new SMTPConnection({
      host: '127.0.0.1',
      port: addr.port,
      ignoreTLS: true,
      name: 'relay.example.com',
    });
    conn.on('error', () => {});
    cleanups.push(() => conn.close());
    const seen: string[] = [];
    let sent = () => 0;
    let ended = false;
    const fail = observeSession(conn, {
      command: (line) => seen.push(`> ${line.split(' ')[0]}`),
      reply: () => seen.push(`< ${String(conn.lastServerResponse).slice(0, 3)}`),
      body: (bytes, onEnd) => {
        seen.push('body');
        sent = bytes;
        onEnd(() => {
          ended = true;
        });
      },
    });
    await new Promise<void>((resolve, reject) => {
      conn.once('error', reject);
      conn.connect(() => resolve());
    });
    const result = new Promise<Error | null>((resolve) =>
      conn.send({ from: 'a@example.com', to: ['b@example.com'] }, 'Subject: x\r\n\r\nbody\r\n', (e) =>
        resolve(e),
      ),
    );
    for (let i = 0; i < 200 && !release; i++) await new Promise((r) => setTimeout(r, 10));
    expect(ended).toBe(true);
    expect(sent()).toBeGreaterThan(10);
    // Greeting, EHLO and its reply; MAIL, RCPT, DATA (pipelined) and their replies, in order; the body.
    expect(seen).toEqual([
      '< 220',
      '> EHLO',
      '< 250',
      '> MAIL',
      '> RCPT',
      '> DATA',
      '< 250',
      '< 250',
      '< 354',
      'body',
    ]);
    fail(new Error('no reply within 1 s'), 'end of DATA');
    const err = await result;
    expect(err?.message).toMatch(/no reply within 1 s/);
    expect(Reflect.get(err ?? {}, 'code')).toBe('ETIMEDOUT');
    release?.();
  });
});
