import { readFileSync } from 'node:fs';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { SMTPServer } from 'smtp-server';
import { afterEach, describe, expect, it } from 'vitest';
import { assertTestedVersion, installedVersion } from '../../../src/lib/library-contract.ts';
import {
  NODEMAILER_CONTRACT as C,
  envelopeRejections,
  loadDataStream,
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
});
