import { unlink } from 'node:fs/promises';
import { createConnection, createServer, type Server } from 'node:net';
import { join } from 'node:path';

/**
 * The running relay's admin channel, like Postfix's public/qmgr fifo: `email-relay queue
 * flush|retry|delete` on the spool of a running relay asks the relay itself (it owns the spool
 * and may be delivering that very message). One JSON request per connection, one JSON reply.
 * The socket lives in the spool directory, so only whoever can touch the spool can use it.
 */

export type ControlRequest =
  | { cmd: 'flush' }
  | { cmd: 'retry'; id: string }
  | { cmd: 'delete'; id: string }
  /** Go unready, wait, stop taking mail, hand the queue to peers (or deliver it), then stop. */
  | { cmd: 'drain'; unreadySeconds?: number };
export type ControlReply = { ok: true; result?: unknown } | { ok: false; error: string };
export type ControlHandler = (req: ControlRequest) => Promise<ControlReply>;

export const controlSocketPath = (spoolDir: string) => join(spoolDir, 'control.sock');

export async function listenControl(path: string, handle: ControlHandler): Promise<Server> {
  await unlink(path).catch(() => undefined); // a socket file left by a killed relay
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => undefined);
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > 64 * 1024) return sock.destroy();
      const nl = buf.indexOf('\n');
      if (nl === -1) return;
      let req: ControlRequest;
      try {
        req = JSON.parse(buf.slice(0, nl)) as ControlRequest;
      } catch {
        sock.end(`${JSON.stringify({ ok: false, error: 'bad request' })}\n`);
        return;
      }
      handle(req).then(
        (reply) => sock.end(`${JSON.stringify(reply)}\n`),
        (err: Error) => sock.end(`${JSON.stringify({ ok: false, error: err.message })}\n`),
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return server;
}

/** Sends one request; undefined when no relay listens (stopped relay: act on files instead). */
export function sendControl(
  path: string,
  req: ControlRequest,
  timeoutMs = 30_000,
): Promise<ControlReply | undefined> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    let connected = false;
    sock.setEncoding('utf8');
    sock.setTimeout(timeoutMs, () => {
      sock.destroy();
      reject(new Error(`relay did not answer on ${path} within ${timeoutMs} ms`));
    });
    sock.on('connect', () => {
      connected = true;
      sock.write(`${JSON.stringify(req)}\n`);
    });
    sock.on('data', (d: string) => {
      buf += d;
    });
    sock.on('end', () => {
      try {
        resolve(JSON.parse(buf) as ControlReply);
      } catch {
        reject(new Error(`unreadable reply from relay: ${buf.slice(0, 200)}`));
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (!connected && (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')) resolve(undefined);
      else reject(err);
    });
  });
}
