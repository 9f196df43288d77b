import { PassThrough, type Readable } from 'node:stream';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { QueuedMessage } from '../spool/types.ts';
import type { Peer } from './directory.ts';
import { encodeHandoffLine, handoffMeta } from './handoff-format.ts';

/**
 * Hands one queued message to a peer's hand-off listener: the metadata line, then the stored
 * bytes. Resolves with the peer's reply once it has the message on its disk (its 250 follows
 * its fsync); rejects with the peer's reply or the network error otherwise.
 */
export async function handOff(
  msg: QueuedMessage,
  body: Readable,
  peer: Peer,
  opts: { hostname: string; timeoutMs?: number },
): Promise<string> {
  const meta = handoffMeta(msg, opts.hostname);
  const timeout = opts.timeoutMs ?? 60_000;
  const conn = new SMTPConnection({
    host: peer.host,
    port: peer.port,
    name: opts.hostname,
    ignoreTLS: true,
    connectionTimeout: timeout,
    greetingTimeout: timeout,
    socketTimeout: timeout,
    logger: false,
  });
  conn.on('error', () => undefined);
  const data = new PassThrough();
  data.write(encodeHandoffLine(meta));
  body.on('error', (err) => data.destroy(err));
  body.pipe(data);
  try {
    await new Promise<void>((resolve, reject) => {
      conn.once('error', reject);
      conn.connect(() => {
        conn.off('error', reject);
        resolve();
      });
    });
    const info = await new Promise<{ response: string }>((resolve, reject) =>
      conn.send({ from: msg.from, to: meta.recipients.map((r) => r.address) }, data, (err, info) =>
        err ? reject(err) : resolve(info as { response: string }),
      ),
    );
    return info.response;
  } finally {
    data.destroy();
    (body as Readable).destroy?.();
    conn.quit();
    conn.close();
  }
}
