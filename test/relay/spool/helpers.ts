import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RelaySpool } from '../../../src/relay/spool/index.ts';
import type { NewMessage, QueuedMessage } from '../../../src/relay/spool/types.ts';

/** A fresh directory on the real disk (fsync must mean something). */
export function tempSpoolDir(tag = 'spool'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `email-relay-${tag}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Deterministic message bytes for a token: headers, then numbered lines, exactly `size` bytes. */
export function bodyFor(token: string, size: number): Buffer {
  const head = `Message-ID: <${token}@test>\r\nSubject: spool test ${token}\r\n\r\n`;
  let s = head;
  for (let i = 0; s.length < size; i++)
    s += `${token} line ${i} ..........................................\r\n`;
  return Buffer.from(s.slice(0, size), 'latin1');
}

export function meta(token: string, extra: Partial<NewMessage> = {}): NewMessage {
  return {
    from: `sender-${token}@example.com`,
    recipients: [
      { address: `${token}@example.org` },
      { address: `second-${token}@example.org`, notify: ['NEVER'] },
    ],
    client: { address: '10.1.2.3', helo: 'client.test', namespace: 'apps' },
    messageId: `<${token}@test>`,
    ...extra,
  };
}

/** Streams `body` into a writer in chunks, as the SMTP side would, and commits it. */
export async function commitBody(
  spool: RelaySpool,
  body: Buffer,
  m: NewMessage,
  chunk = 16 * 1024,
): Promise<QueuedMessage> {
  const w = await spool.begin();
  for (let off = 0; off < body.length; off += chunk) await w.write(body.subarray(off, off + chunk));
  return w.commit(m);
}

export async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(typeof c === 'string' ? Buffer.from(c) : c);
  return Buffer.concat(parts);
}
