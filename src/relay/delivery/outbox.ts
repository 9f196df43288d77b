import { mkdir, open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { QueuedMessage } from '../spool/types.ts';

/**
 * Outbox mode (no `upstream.url`): "deliver" by writing `<outboxDir>/<id>.eml`, so a newcomer sees
 * the whole path work without a smarthost. The envelope, which the message itself does not carry,
 * goes into `X-Envelope-From` / one `X-Envelope-To` per recipient at the top. The file is written
 * under a temporary name, fsynced and renamed, and the directory fsynced, before the caller
 * removes the message from the spool: a crash leaves the message queued, never lost.
 */

/** Envelope header lines; addresses come from the SMTP session and never hold CR or LF. */
export function envelopeHeaders(from: string, to: readonly string[]): string {
  const line = (name: string, v: string) => `${name}: <${v.replace(/[\r\n]/g, '')}>\r\n`;
  return line('X-Envelope-From', from) + to.map((a) => line('X-Envelope-To', a)).join('');
}

export async function writeOutbox(
  dir: string,
  msg: Pick<QueuedMessage, 'id' | 'from'>,
  to: readonly string[],
  body: NodeJS.ReadableStream,
  fsync: boolean,
): Promise<string> {
  await mkdir(dir, { recursive: true });
  const final = join(dir, `${msg.id}.eml`);
  const tmp = `${final}.tmp`;
  const fh = await open(tmp, 'w', 0o640);
  try {
    await fh.write(envelopeHeaders(msg.from, to));
    for await (const chunk of body) {
      await fh.write(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
    }
    if (fsync) await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await rename(tmp, final);
  if (fsync) {
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }
  return final;
}
