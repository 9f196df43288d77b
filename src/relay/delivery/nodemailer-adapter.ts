import { existsSync } from 'node:fs';
import type { Transform } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { NodemailerError } from 'nodemailer';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import { assertTestedVersion, type LibraryContract } from '../../lib/library-contract.ts';

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
  ],
  texts: [],
};

/** DataStream as we use it: a Transform class (its declarations are not reachable through the exports). */
export interface DataStreamClass {
  prototype: { _transform: Transform['_transform'] };
}

function isDataStreamClass(v: unknown): v is DataStreamClass {
  return typeof v === 'function' && typeof Reflect.get(v.prototype, '_transform') === 'function';
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
