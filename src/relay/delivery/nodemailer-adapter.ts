import { existsSync } from 'node:fs';
import type { Transform } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { NodemailerError } from 'nodemailer';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import {
  assertMethod,
  assertTestedVersion,
  type LibraryContract,
  member,
} from '../../lib/library-contract.ts';

/**
 * The only module that touches nodemailer's internals (dot-stuff.ts holds the body of the one
 * private method we replace). NODEMAILER_CONTRACT lists them; test/unit/contracts/nodemailer.test.ts
 * checks each against the installed version, and loading refuses an untested version.
 */
export const NODEMAILER_CONTRACT: LibraryContract = {
  name: 'nodemailer',
  tested: ['10.6.1'],
  members: [
    {
      on: 'nodemailer/lib/smtp-connection',
      name: './data-stream.js',
      kind: 'field',
      use: 'state',
      meaning:
        "the module of DataStream, the dot-stuffing transform send() pipes DATA through (not in the package's exports)",
    },
    {
      on: 'DataStream',
      name: '_transform',
      kind: 'method',
      use: 'replaced',
      meaning: '(chunk, encoding, done): CRLF-normalises and dot-stuffs one chunk, pushes the result',
    },
    {
      on: 'DataStream',
      name: '_flush',
      kind: 'method',
      use: 'replaced',
      meaning:
        '(done): pushes the final dot, "\\r\\n.\\r\\n" (".\\r\\n" after a LF, "\\n.\\r\\n" after a CR), and counts it in outByteCount',
    },
    {
      on: 'DataStream',
      name: '_relayHeld',
      kind: 'field',
      use: 'added',
      meaning:
        'ours: the last encoded chunk, held back to go out with the final dot (the library has no such field)',
    },
    {
      on: 'DataStream',
      name: 'lastByte',
      kind: 'field',
      use: 'state',
      meaning:
        "the previous chunk's last byte (false before the first): decides a leading dot and a CR at a boundary",
    },
    {
      on: 'DataStream',
      name: 'inByteCount',
      kind: 'field',
      use: 'state',
      meaning: 'bytes in; DataStream._flush and send() read it',
    },
    {
      on: 'DataStream',
      name: 'outByteCount',
      kind: 'field',
      use: 'state',
      meaning: 'bytes out; send() reports it as messageSize',
    },
    {
      on: 'SMTPConnection',
      name: '_envelope',
      kind: 'field',
      use: 'state',
      meaning:
        "the current transaction's envelope; .rejectedErrors holds the RCPT refusals, also when send() fails as a whole",
    },
    // Deadlines (deadlines.ts): wrapped on each connection instance, never on the prototype.
    {
      on: 'SMTPConnection',
      name: '_sendCommand',
      kind: 'method',
      use: 'replaced',
      meaning: '(str, logStr): writes one command line; every command whose reply is awaited goes through it',
    },
    {
      on: 'SMTPConnection',
      name: 'lastServerResponse',
      kind: 'field',
      use: 'state',
      meaning:
        'assigned each complete reply (multi-line joined) just before its response action runs, in order',
    },
    {
      on: 'SMTPConnection',
      name: '_createSendStream',
      kind: 'method',
      use: 'replaced',
      meaning:
        '(callback): after the 354, returns the DataStream (outByteCount grows as it is sent) whose end precedes the final reply',
    },
    {
      on: 'SMTPConnection',
      name: '_onError',
      kind: 'method',
      use: 'called',
      meaning:
        "(err, code, response, command): fails the session like its own timeouts: emits 'error', closes, calls the pending send's callback",
    },
  ],
  texts: [],
};

/** What a session watcher hears from one connection (deadlines.ts). */
export interface SessionHooks {
  /** A command line was written; its reply is now awaited. */
  command(line: string): void;
  /** A complete reply was taken off the wire (the next awaited one, in order). */
  reply(): void;
  /** The message body started: its bytes sent so far, and its end (the final reply is awaited next). */
  body(sent: () => number, onEnd: (fn: () => void) => void): void;
}

/**
 * Wraps one connection so `hooks` hear its commands, replies and body; returns how to fail the
 * session (as smtp-connection's own timeouts do: the pending callback gets the error).
 */
export function observeSession(
  conn: SMTPConnection,
  hooks: SessionHooks,
): (err: Error, command: string) => void {
  const on = 'SMTPConnection';
  for (const name of ['_sendCommand', '_createSendStream', '_onError'])
    assertMethod(NODEMAILER_CONTRACT, on, conn, name);
  member(NODEMAILER_CONTRACT, on, 'lastServerResponse');
  const sendCommand: unknown = Reflect.get(conn, '_sendCommand');
  const createSendStream: unknown = Reflect.get(conn, '_createSendStream');
  const onError: unknown = Reflect.get(conn, '_onError');
  if (
    typeof sendCommand !== 'function' ||
    typeof createSendStream !== 'function' ||
    typeof onError !== 'function'
  )
    throw new Error('nodemailer: SMTPConnection methods missing');
  Reflect.set(conn, '_sendCommand', function (this: SMTPConnection, str: unknown, logStr: unknown) {
    hooks.command(String(str));
    return Reflect.apply(sendCommand, this, [str, logStr]);
  });
  let response: unknown = Reflect.get(conn, 'lastServerResponse');
  Object.defineProperty(conn, 'lastServerResponse', {
    configurable: true,
    enumerable: true,
    get: () => response,
    set: (v: unknown) => {
      response = v;
      hooks.reply();
    },
  });
  Reflect.set(conn, '_createSendStream', function (this: SMTPConnection, cb: unknown) {
    const stream: unknown = Reflect.apply(createSendStream, this, [cb]);
    if (stream && typeof stream === 'object' && 'once' in stream && typeof stream.once === 'function') {
      const s = stream as NodeJS.ReadableStream;
      hooks.body(
        () => Number(Reflect.get(s, 'outByteCount')) || 0,
        (fn) => s.once('end', fn),
      );
    }
    return stream;
  });
  return (err, command) => Reflect.apply(onError, conn, [err, 'ETIMEDOUT', false, command]);
}

/** DataStream as we use it: a Transform class (its declarations are not reachable through the exports). */
export interface DataStreamClass {
  prototype: { _transform: Transform['_transform']; _flush: NonNullable<Transform['_flush']> };
}

function isDataStreamClass(v: unknown): v is DataStreamClass {
  return (
    typeof v === 'function' &&
    typeof Reflect.get(v.prototype, '_transform') === 'function' &&
    typeof Reflect.get(v.prototype, '_flush') === 'function'
  );
}

/** nodemailer's DataStream class: not in its package exports, so found next to smtp-connection. */
export async function loadDataStream(): Promise<DataStreamClass> {
  assertTestedVersion(NODEMAILER_CONTRACT);
  const url = new URL('./data-stream.js', import.meta.resolve('nodemailer/lib/smtp-connection'));
  if (!existsSync(fileURLToPath(url))) throw new Error(`nodemailer: ${url.href} is missing`);
  const mod: unknown = await import(url.href);
  const cls = mod && typeof mod === 'object' && 'default' in mod ? mod.default : undefined;
  if (!isDataStreamClass(cls))
    throw new Error('nodemailer: data-stream.js does not export the DataStream class any more');
  return cls;
}

/** The RCPT refusals nodemailer keeps on its private envelope for a failed transaction. */
export function envelopeRejections(conn: SMTPConnection): Array<NodemailerError & { recipient?: string }> {
  const env: unknown = Reflect.get(conn, '_envelope');
  const list: unknown = env && typeof env === 'object' ? Reflect.get(env, 'rejectedErrors') : undefined;
  return Array.isArray(list) ? list.filter((e) => e instanceof Error) : [];
}
