import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import {
  SMTPServer,
  type SMTPServerAddress,
  type SMTPServerAuthentication,
  type SMTPServerAuthenticationResponse,
  type SMTPServerDataStream,
  type SMTPServerOptions,
  type SMTPServerSession,
} from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import {
  assertMethod,
  assertTestedVersion,
  type LibraryContract,
  replaceMethod,
} from '../../lib/library-contract.ts';
import { feedDataStream } from './data-scan.ts';
import { type Reply, smtpServerTexts } from './replies.ts';

/**
 * The only module that touches smtp-server's internals (data-scan.ts holds the body of the one
 * private method we replace). smtp-server keeps what it does well: the command parser, PIPELINING,
 * STARTTLS, AUTH, parameter checks. What it has no hooks for, we add here:
 *  - every reply passes one function before it is written (Postfix's texts, the EHLO list);
 *  - ETRN, a command it does not know;
 *  - the greeting without its fixed 100 ms early-talker delay;
 *  - our own state per connection, handed to every callback instead of the library's session;
 *  - the DATA scan with Buffer.indexOf (data-scan.ts).
 * Typed with smtp-server's bundled declarations, no casts. SMTP_SERVER_CONTRACT lists every
 * private member and text relied on; test/unit/contracts/smtp-server.test.ts checks each
 * against the installed version, and `createFrontServer` refuses an untested version.
 */
export const SMTP_SERVER_CONTRACT: LibraryContract = {
  name: 'smtp-server',
  tested: ['3.21.6'],
  members: [
    {
      on: 'SMTPServer',
      name: 'connect',
      kind: 'method',
      use: 'replaced',
      meaning:
        'called once per accepted socket (after PROXY/implicit TLS) to build its SMTPConnection; replaced per instance',
    },
    {
      on: 'SMTPServer',
      name: 'connections',
      kind: 'field',
      use: 'state',
      meaning: 'Set of live connections: maxClients counts it, close() ends each; we add ours to it',
    },
    {
      on: 'SMTPServer',
      name: '_onError',
      kind: 'method',
      use: 'called',
      meaning: "re-emits a connection's error as the server's 'error'",
    },
    {
      on: 'SMTPServer',
      name: '_handleProxy',
      kind: 'method',
      use: 'replaced',
      meaning:
        '(socket, cb(err, socketOptions)) per accepted socket, before connect(socket, socketOptions); socketOptions.id becomes the session id; replaced per instance when useProxy is off',
    },
    {
      on: 'SMTPServer',
      name: '_onClientConnect',
      kind: 'method',
      use: 'called',
      meaning: "re-emits a connection's 'connect' as the server's",
    },
    {
      on: 'SMTPConnection',
      name: 'constructor',
      kind: 'method',
      use: 'called',
      meaning:
        '(server, socket, socketOptions) builds the session object; nothing is read or sent before init()',
    },
    {
      on: 'SMTPConnection',
      name: 'init',
      kind: 'method',
      use: 'replaced',
      meaning: 'wires the socket (via _setListeners) and schedules connectionReady; overridden in a subclass',
    },
    {
      on: 'SMTPConnection',
      name: '_setListeners',
      kind: 'method',
      use: 'called',
      meaning:
        'attaches close/error/timeout and the command parser, then calls back (after the handshake for implicit TLS)',
    },
    {
      on: 'SMTPConnection',
      name: 'connectionReady',
      kind: 'method',
      use: 'called',
      meaning: 'runs onConnect, then sends the 220 greeting and starts reading commands',
    },
    {
      on: 'SMTPConnection',
      name: 'send',
      kind: 'method',
      use: 'replaced',
      meaning:
        '(code, text | lines, context) is the single write site of every reply; context false = no enhanced code; 421 closes',
    },
    {
      on: 'SMTPConnection',
      name: 'handler_ETRN',
      kind: 'method',
      use: 'added',
      meaning:
        'a command VERB is dispatched to this.handler_VERB(line, callback) when it is a function (_getHandler)',
    },
    {
      on: 'SMTPConnection',
      name: 'handler_QUIT',
      kind: 'method',
      use: 'replaced',
      meaning:
        '(command, callback) sends 221 and calls close(): socket.end(), then waits up to 5 s for the client to close its side; extended in a subclass',
    },
    {
      on: 'SMTPConnection',
      name: '_onCommand',
      kind: 'method',
      use: 'replaced',
      meaning:
        '(line, callback) is called once per complete command line read (not for DATA content); overridden to see each',
    },
    {
      on: 'SMTPConnection',
      name: '_handlerPending',
      kind: 'field',
      use: 'state',
      meaning: 'true while an application handler (onMailFrom, onRcptTo, onAuth...) has not called back',
    },
    {
      on: 'SMTPConnection',
      name: '_closing',
      kind: 'field',
      use: 'state',
      meaning: 'true once close() started',
    },
    {
      on: 'SMTPConnection',
      name: '_closed',
      kind: 'field',
      use: 'state',
      meaning: 'true once the socket closed',
    },
    {
      on: 'SMTPConnection',
      name: '_socket',
      kind: 'field',
      use: 'state',
      meaning: 'the current socket (the TLS one after STARTTLS): destroyed to cut a client off',
    },
    {
      on: 'SMTPConnection',
      name: '_dataStream',
      kind: 'field',
      use: 'state',
      meaning: 'truthy exactly while a message is being received (from DATA to the end of onData)',
    },
    {
      on: 'SMTPStream',
      name: '_feedDataStream',
      kind: 'method',
      use: 'replaced',
      meaning: '(chunk, done) scans one chunk in data mode: unescapes dots, finds CRLF.CRLF',
    },
    {
      on: 'SMTPStream',
      name: '_dataStream',
      kind: 'field',
      use: 'state',
      meaning: 'the message stream of the current DATA (written to, honouring back-pressure)',
    },
    {
      on: 'SMTPStream',
      name: '_lastBytes',
      kind: 'field',
      use: 'state',
      meaning:
        'Buffer of up to 4 bytes held back from the previous chunk (a terminator may straddle), or false',
    },
    {
      on: 'SMTPStream',
      name: '_atDataStart',
      kind: 'field',
      use: 'state',
      meaning: 'true until the first byte of content is consumed: only then may "." + CRLF end the data',
    },
    {
      on: 'SMTPStream',
      name: '_countDataBytes',
      kind: 'method',
      use: 'called',
      meaning:
        '(n) counts emitted content bytes (dataBytes, byteLength, sizeExceeded) and clears _atDataStart',
    },
    {
      on: 'SMTPStream',
      name: '_endDataMode',
      kind: 'method',
      use: 'called',
      meaning: '(last chunk | false, remainder, done) ends the data and parses the remainder as commands',
    },
  ],
  texts: smtpServerTexts,
};

/** One client connection, as the relay sees it. */
export interface FrontConnection<S> {
  readonly session: SMTPServerSession;
  readonly remoteAddress: string;
  /** Our state for this connection (FrontHandlers.newState). */
  readonly state: S;
  /** Writes a reply of ours as it is (421 also closes the connection). */
  reply(code: number, text: string): void;
  /** A message is being received now. */
  receiving(): boolean;
  /** The client owes us nothing now: DATA is being received, or a handler has not answered yet. */
  waitingForUs(): boolean;
  closing(): boolean;
  /** The accepted socket is gone. */
  gone(): boolean;
  /** Cuts the client off (no reply, no half-close wait). */
  destroy(): void;
}

type Cb = (err?: Error | null) => void;

export interface FrontHandlers<S> {
  newState(conn: FrontConnection<S>): S;
  /** Every reply smtp-server is about to send; returns what to send instead (undefined or `keep`: as is). */
  reply(
    code: number,
    data: string | string[] | null | undefined,
    context: string | false | undefined,
  ): Reply | undefined;
  /** Once the socket is wired: call `ready` to run onConnect and send the greeting. */
  greet(conn: FrontConnection<S>, ready: () => void): void;
  etrn(conn: FrontConnection<S>, argument: string): void;
  /** A complete command line arrived (before it is handled). */
  command(conn: FrontConnection<S>): void;
  opened(conn: FrontConnection<S>): void;
  closed(conn: FrontConnection<S>): void;
  onConnect(conn: FrontConnection<S>, cb: Cb): void;
  onAuth(
    auth: SMTPServerAuthentication,
    conn: FrontConnection<S>,
    cb: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void,
  ): void;
  onMailFrom(address: SMTPServerAddress, conn: FrontConnection<S>, cb: Cb): void;
  onRcptTo(address: SMTPServerAddress, conn: FrontConnection<S>, cb: Cb): void;
  onData(
    stream: SMTPServerDataStream,
    conn: FrontConnection<S>,
    cb: (err?: Error | null, message?: string) => void,
  ): void;
  onClose(conn: FrontConnection<S>): void;
}

export type FrontOptions = Omit<
  SMTPServerOptions,
  'onConnect' | 'onAuth' | 'onMailFrom' | 'onRcptTo' | 'onData' | 'onClose'
>;

/** smtp-server with our connection class: the callbacks get our connection, not the library's session. */
export function createFrontServer<S>(options: FrontOptions, handlers: FrontHandlers<S>): SMTPServer {
  assertTestedVersion(SMTP_SERVER_CONTRACT);
  assertMethod(SMTP_SERVER_CONTRACT, 'SMTPConnection', SMTPConnection.prototype, '_setListeners');
  assertMethod(SMTP_SERVER_CONTRACT, 'SMTPConnection', SMTPConnection.prototype, 'connectionReady');
  assertMethod(SMTP_SERVER_CONTRACT, 'SMTPServer', SMTPServer.prototype, '_onError');
  assertMethod(SMTP_SERVER_CONTRACT, 'SMTPServer', SMTPServer.prototype, '_onClientConnect');
  installFastDataScan();
  // The library hands its callbacks the session object; this finds our connection for it.
  const bySession = new WeakMap<SMTPServerSession, RelayConnection<S>>();
  const of = (session: SMTPServerSession): RelayConnection<S> => {
    const conn = bySession.get(session);
    if (!conn) throw new Error('smtp-server session without a connection of ours');
    return conn;
  };
  const server: SMTPServer = new SMTPServer({
    ...options,
    onConnect: (session, cb) => handlers.onConnect(of(session), cb),
    onAuth: (auth, session, cb) => handlers.onAuth(auth, of(session), cb),
    onMailFrom: (address, session, cb) => handlers.onMailFrom(address, of(session), cb),
    onRcptTo: (address, session, cb) => handlers.onRcptTo(address, of(session), cb),
    onData: (stream, session, cb) => handlers.onData(stream, of(session), cb),
    onClose: (session) => {
      const conn = bySession.get(session);
      if (conn) handlers.onClose(conn);
    },
  });
  if (!options.useProxy) {
    // No PROXY header to read: the library's step costs a crypto.randomBytes session id (20 µs
    // per connection here) and a setImmediate hop before connect(). A counter does for the id.
    assertMethod(SMTP_SERVER_CONTRACT, 'SMTPServer', SMTPServer.prototype, '_handleProxy');
    server._handleProxy = (_socket, cb) => cb(null, { id: nextSessionId() });
  }
  server.connect = (socket: Socket, socketOptions?: SMTPConnectionOptions | null) => {
    socket.setNoDelay(true);
    const conn = new RelayConnection(server, socket, socketOptions, handlers);
    bySession.set(conn.session, conn);
    server.connections.add(conn);
    conn.on('error', (err: Error) => server._onError(err));
    conn.on('connect', (data) => server._onClientConnect(data));
    handlers.opened(conn);
    socket.once('close', () => handlers.closed(conn));
    conn.init();
  };
  return server;
}

/** Session ids as smtp-server makes them (16 base-32 digits), unique per process: a random start, then +1. */
let lastSessionId = BigInt(`0x${randomBytes(8).toString('hex')}`);
function nextSessionId(): string {
  lastSessionId = (lastSessionId + 1n) & 0xffff_ffff_ffff_ffff_ffffn;
  return lastSessionId.toString(32).padStart(16, '0');
}

class RelayConnection<S> extends SMTPConnection implements FrontConnection<S> {
  readonly state: S;

  constructor(
    server: SMTPServer,
    socket: Socket,
    socketOptions: SMTPConnectionOptions | null | undefined,
    private readonly handlers: FrontHandlers<S>,
  ) {
    super(server, socket, socketOptions);
    this.accepted = socket;
    this.state = handlers.newState(this);
  }

  private readonly accepted: Socket;

  override init(): void {
    this._setListeners(() => this.handlers.greet(this, () => this.connectionReady()));
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    const r = this.handlers.reply(code, data, context);
    if (r && !r.keep) super.send(r.code, r.text, false);
    else super.send(code, data, context);
  }

  reply(code: number, text: string): void {
    super.send(code, text, false);
  }

  override _onCommand(command: Buffer, callback?: () => void): void {
    this.handlers.command(this);
    super._onCommand(command, callback);
  }

  receiving(): boolean {
    return !!this._dataStream;
  }

  waitingForUs(): boolean {
    return !!this._dataStream || this._handlerPending;
  }

  closing(): boolean {
    return this._closing || this._closed;
  }

  gone(): boolean {
    return this.accepted.destroyed;
  }

  destroy(): void {
    this._socket.destroy();
  }

  /**
   * QUIT: the 221, then the socket is closed as soon as the reply is flushed, as Postfix's smtpd
   * does, instead of smtp-server's half-close that waits for the client's FIN. Nothing the client
   * sends after QUIT is answered either way. What it saves, once per message for clients that
   * connect per message: a client closing with RST (smtp-source sets SO_LINGER 0) made every
   * session end in a read error, an ECONNRESET Error built and its stack trace formatted by the
   * stream's destroy; and the half-close timer. Only on the accepted socket (not after STARTTLS).
   */
  override handler_QUIT(command: Buffer, callback: () => void): void {
    super.handler_QUIT(command, callback);
    const socket = this._socket;
    if (socket === this.accepted && !socket.destroyed) socket.destroySoon();
  }

  handler_ETRN(command: Buffer, callback: () => void): void {
    this.handlers.etrn(this, command.toString().trim().split(/\s+/)[1] ?? '');
    callback();
  }
}

/** Swaps smtp-server's per-byte DATA scan for data-scan.ts's, once; throws on an untested version. */
export function installFastDataScan(): void {
  replaceMethod(SMTP_SERVER_CONTRACT, 'SMTPStream', SMTPStream.prototype, '_feedDataStream', feedDataStream);
}
