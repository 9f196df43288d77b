import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { afterEach, describe, expect, it } from 'vitest';
import {
  assertTestedVersion,
  installedVersion,
  type LibraryContract,
  LibraryContractError,
} from '../../../src/lib/library-contract.ts';
import { SMTP_SERVER_CONTRACT as C } from '../../../src/relay/smtp/smtp-server-adapter.ts';

// Every private member and text of smtp-server the relay relies on (the adapter's contract),
// checked against the installed library: present, and meaning what the contract says.

const require = createRequire(import.meta.url);
const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
  dependencies: Record<string, string>;
};

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanups.splice(0)) f();
});

/** A connected socket pair on loopback: [server side, client side]. */
async function socketPair(): Promise<[Socket, Socket]> {
  const srv: Server = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const addr = srv.address();
  if (!addr || typeof addr === 'string') throw new Error('no port');
  const accepted = new Promise<Socket>((r) => srv.once('connection', r));
  const client = connect(addr.port, '127.0.0.1');
  const server = await accepted;
  srv.close();
  cleanups.push(() => {
    client.destroy();
    server.destroy();
  });
  return [server, client];
}

function listed(on: string, name: string) {
  const m = C.members.find((x) => x.on === on && x.name === name);
  expect(m, `${on}.${name} is in the contract`).toBeDefined();
  return m!;
}

describe('smtp-server contract', () => {
  it('is pinned to exactly a version the contract was tested with', () => {
    expect(pkg.dependencies['smtp-server']).toMatch(/^\d+\.\d+\.\d+$/);
    expect(C.tested).toContain(pkg.dependencies['smtp-server']);
    expect(C.tested).toContain(installedVersion('smtp-server'));
    expect(() => assertTestedVersion(C)).not.toThrow();
  });

  it('refuses a version it was not tested with, naming it', () => {
    const other: LibraryContract = { ...C, tested: ['0.0.1'] };
    expect(() => assertTestedVersion(other)).toThrow(LibraryContractError);
    expect(() => assertTestedVersion(other)).toThrow(
      `version ${installedVersion('smtp-server')} is installed`,
    );
  });

  it('has every method it lists (and none of those we add)', () => {
    const protos: Record<string, object> = {
      SMTPServer: SMTPServer.prototype,
      SMTPConnection: SMTPConnection.prototype,
      SMTPStream: SMTPStream.prototype,
    };
    for (const m of C.members.filter((x) => x.kind === 'method')) {
      const proto = protos[m.on];
      expect(proto, m.on).toBeDefined();
      const fn: unknown = m.name === 'constructor' ? proto!.constructor : Reflect.get(proto!, m.name);
      if (m.use === 'added') expect(fn, `${m.on}.${m.name} is ours alone`).toBeUndefined();
      else expect(typeof fn, `${m.on}.${m.name}`).toBe('function');
    }
  });

  it('SMTPServer: connections is the Set of live connections; connect builds one per socket', async () => {
    listed('SMTPServer', 'connections');
    const server = new SMTPServer({ logger: false, disabledCommands: ['AUTH', 'STARTTLS'] });
    expect(server.connections).toBeInstanceOf(Set);
    const [sock] = await socketPair();
    server.connect(sock, { id: 'x', remoteAddress: '127.0.0.1' });
    expect(server.connections.size).toBe(1);
    expect([...server.connections][0]).toBeInstanceOf(SMTPConnection);
    for (const c of server.connections) c.close();
  });

  it('SMTPServer: _handleProxy calls back with the socket options (id) that connect() and the session get', async () => {
    listed('SMTPServer', '_handleProxy');
    const server = new SMTPServer({ logger: false, disabledCommands: ['AUTH', 'STARTTLS'] });
    // the library's own: an id, no PROXY header expected without useProxy
    const [sock] = await socketPair();
    const own = await new Promise<{ id?: string } | undefined>((resolve) =>
      server._handleProxy(sock, (err, o) => resolve(err ? undefined : o)),
    );
    expect(own?.id).toMatch(/^[0-9a-v]{16}$/);
    // a replacement on the instance is what the listener calls, and its id names the session
    server._handleProxy = (_s, cb) => cb(null, { id: 'ours0000000000001' });
    const built = new Promise<{ id: string }>((resolve) => {
      const connect = server.connect.bind(server);
      server.connect = (s, o) => {
        connect(s, o);
        resolve([...server.connections][0] as unknown as { id: string });
      };
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const addr = server.server.address();
    if (!addr || typeof addr === 'string') throw new Error('no port');
    const client = connect(addr.port, '127.0.0.1');
    cleanups.push(() => client.destroy());
    expect((await built).id).toBe('ours0000000000001');
    for (const c of server.connections) c.close();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it('SMTPConnection: send writes one reply line (context false: no enhanced code), 421 closes', async () => {
    listed('SMTPConnection', 'send');
    const server = new SMTPServer({ logger: false, disabledCommands: ['AUTH', 'STARTTLS'] });
    const [sock, client] = await socketPair();
    const conn = new SMTPConnection(server, sock, { id: 'x', remoteAddress: '127.0.0.1' });
    const got: string[] = [];
    client.on('data', (d: Buffer) => got.push(d.toString('latin1')));
    const closed = new Promise<void>((r) => client.once('end', () => r()));
    conn.send(250, '2.0.0 Ok', false);
    conn.send(250, ['a', 'b'], false);
    conn.send(421, '4.3.2 bye', false);
    await closed;
    expect(got.join('')).toBe('250 2.0.0 Ok\r\n250-a\r\n250 b\r\n421 4.3.2 bye\r\n');
  });

  it('SMTPConnection: handler_QUIT sends 221 and closes (ends the socket, _closing set)', async () => {
    listed('SMTPConnection', 'handler_QUIT');
    const server = new SMTPServer({ logger: false, disabledCommands: ['AUTH', 'STARTTLS'] });
    const [sock, client] = await socketPair();
    const conn = new SMTPConnection(server, sock, { id: 'x', remoteAddress: '127.0.0.1' });
    let got = '';
    client.on('data', (d: Buffer) => (got += d.toString('latin1')));
    const ended = new Promise<void>((r) => client.once('end', () => r()));
    let called = false;
    conn.handler_QUIT(Buffer.from('QUIT'), () => (called = true));
    expect(called).toBe(true);
    expect(conn._closing).toBe(true);
    await ended;
    expect(got).toMatch(/^221 .*Bye\r\n$/);
  });

  it('SMTPConnection: init wires the socket through _setListeners; connectionReady greets; _dataStream marks DATA', async () => {
    for (const n of ['init', '_setListeners', 'connectionReady', '_dataStream', 'handler_ETRN'])
      listed('SMTPConnection', n);
    let onData: (() => void) | undefined;
    const server = new SMTPServer({
      logger: false,
      disabledCommands: ['AUTH', 'STARTTLS'],
      disableReverseLookup: true,
      onData(stream, _s, cb) {
        stream.resume();
        onData = () => cb();
      },
    });
    const [sock, client] = await socketPair();
    const conn = new SMTPConnection(server, sock, { id: 'x', remoteAddress: '127.0.0.1' });
    expect(conn._dataStream).toBe(false);
    const lines: string[] = [];
    let wake: (() => void) | undefined;
    client.on('data', (d: Buffer) => {
      lines.push(...d.toString('latin1').split('\r\n').filter(Boolean));
      wake?.();
    });
    const until = async (re: RegExp) => {
      while (!lines.some((l) => re.test(l))) await new Promise<void>((r) => (wake = r));
    };
    let wired = false;
    conn._setListeners(() => {
      wired = true;
      conn.connectionReady();
    });
    expect(wired).toBe(true); // plain TCP: the callback runs at once
    await until(/^220 /);
    // a handler_VERB method is how a command is dispatched (ETRN is added this way)
    Reflect.set(conn, 'handler_ETRN', (_cmd: Buffer, cb: () => void) => {
      conn.send(250, 'etrn seen', false);
      cb();
    });
    client.write(
      'EHLO c.example.com\r\nETRN x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n',
    );
    await until(/^354 /);
    expect(lines).toContain('250 etrn seen');
    expect(conn._dataStream).toBeTruthy();
    client.write('x\r\n.\r\n');
    while (!onData) await new Promise((r) => setTimeout(r, 5));
    onData();
    await until(/^250 .*(OK|Ok)/i);
    expect(conn._dataStream).toBeFalsy();
    conn.close();
  });

  it('SMTPStream: the state _feedDataStream works with means what the contract says', async () => {
    for (const n of [
      '_feedDataStream',
      '_dataStream',
      '_lastBytes',
      '_atDataStart',
      '_countDataBytes',
      '_endDataMode',
    ])
      listed('SMTPStream', n);
    const s = new SMTPStream();
    const commands: string[] = [];
    s.oncommand = (cmd, cb) => {
      commands.push(cmd.toString());
      cb?.();
    };
    const data = s.startDataMode();
    expect(s._dataStream).toBe(data);
    expect(s._atDataStart).toBe(true);
    expect(s._lastBytes).toBe(false);
    const parts: Buffer[] = [];
    data.on('data', (c: Buffer) => parts.push(c));
    s._countDataBytes(3);
    expect(s.dataBytes).toBe(3);
    expect(data.byteLength).toBe(3);
    expect(s._atDataStart).toBe(false);
    // the library's own scan holds back the last 4 bytes in _lastBytes
    await new Promise<void>((r) => s._feedDataStream(Buffer.from('hello world'), () => r()));
    expect(s._lastBytes).toEqual(Buffer.from('orld'));
    const ended = new Promise<void>((r) => data.once('end', () => r()));
    // ends the data; what follows is parsed as commands once the application calls continue()
    const resumed = new Promise<void>((r) =>
      s._endDataMode(Buffer.from('x\r\n'), Buffer.from('QUIT\r\n'), () => r()),
    );
    await ended;
    expect(s._dataStream).toBe(null);
    s.continue();
    await resumed;
    expect(Buffer.concat(parts).toString()).toBe('hello wx\r\n');
    expect(commands).toEqual(['QUIT']);
  });

  it('has every reply text and context the relay recognises', () => {
    const source = readFileSync(require.resolve('smtp-server/lib/smtp-connection.js'), 'utf8');
    expect(C.texts.length).toBeGreaterThan(15);
    // built from parts in the source ('send ' + (lmtp ? 'LHLO' : 'HELO/EHLO') + ' first'): seen on the wire below
    const built = new Set(['Error: send HELO/EHLO first']);
    for (const t of C.texts) if (!built.has(t.text)) expect(source, t.text).toContain(t.text);
  });

  it('answers a command before EHLO with the text the relay recognises', async () => {
    const server = new SMTPServer({
      logger: false,
      disabledCommands: ['AUTH', 'STARTTLS'],
      disableReverseLookup: true,
    });
    const [sock, client] = await socketPair();
    const conn = new SMTPConnection(server, sock, { id: 'x', remoteAddress: '127.0.0.1' });
    let text = '';
    client.on('data', (d: Buffer) => (text += d.toString('latin1')));
    conn._setListeners(() => conn.connectionReady());
    while (!text.includes('220 ')) await new Promise((r) => setTimeout(r, 5));
    client.write('MAIL FROM:<a@b.example>\r\n');
    while (!text.includes('503 ')) await new Promise((r) => setTimeout(r, 5));
    expect(text).toMatch(/\r\n503 (5\.5\.1 )?Error: send HELO\/EHLO first\r\n/);
    conn.close();
  });
});
