import { createHash } from 'node:crypto';
import { mkdir, unlink } from 'node:fs/promises';
import { createConnection, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Logger } from '../lib/logger.ts';

/**
 * The running relay's admin channel, like Postfix's public/qmgr fifo: `email-relay queue
 * flush|retry|delete` on the spool of a running relay asks the relay itself (it owns the spool
 * and may be delivering that very message). One JSON request per connection, one JSON reply.
 * The socket lives in the spool directory, so only whoever can touch the spool can use it;
 * where the spool's volume cannot hold a socket (some network and FUSE file systems answer
 * listen() with ENOSYS), under $XDG_RUNTIME_DIR or /tmp instead, in a directory only the
 * relay's user may enter. `spool.controlSocket` sets the path outright.
 */

export type ControlRequest =
  | { cmd: 'flush' }
  | { cmd: 'retry'; id: string }
  | { cmd: 'delete'; id: string }
  /** The queue as the relay sees it at one instant (index, envelopes, quarantine). */
  | { cmd: 'list' }
  /** Go unready, wait, stop taking mail, hand the queue to peers (or deliver it), then stop. */
  | { cmd: 'drain'; unreadySeconds?: number };
export type ControlReply = { ok: true; result?: unknown } | { ok: false; error: string };
export type ControlHandler = (req: ControlRequest) => Promise<ControlReply>;

export const controlSocketPath = (spoolDir: string) => join(spoolDir, 'control.sock');

/** Where the relay of this spool listens (first that works) and the CLI looks (each in turn). */
export function controlSocketCandidates(spoolDir: string, configured?: string): string[] {
  if (configured) return [configured];
  // One fallback per spool: several relays on one machine must not share a socket.
  const key = createHash('sha256').update(resolve(spoolDir)).digest('hex').slice(0, 16);
  const runtime = process.env['XDG_RUNTIME_DIR'];
  return [
    controlSocketPath(spoolDir),
    ...(runtime ? [join(runtime, 'email-relay', `${key}.sock`)] : []),
    join(tmpdir(), `email-relay-${process.getuid?.() ?? 0}`, `${key}.sock`),
  ];
}

/**
 * Listens on the first candidate that can hold a socket. A relay without a control socket still
 * relays (the queue CLI then acts on the files and says so): undefined, with an error logged.
 */
export async function listenControlSomewhere(
  candidates: readonly string[],
  handle: ControlHandler,
  logger: Logger,
): Promise<{ server: Server; path: string } | undefined> {
  for (const [i, path] of candidates.entries()) {
    try {
      if (i > 0) await mkdir(dirname(path), { recursive: true, mode: 0o700 });
      const server = await listenControl(path, handle);
      if (i > 0)
        logger.warn(
          { path, tried: candidates.slice(0, i) },
          'control socket: the spool volume cannot hold a unix socket, listening here instead',
        );
      return { server, path };
    } catch (err) {
      logger.warn({ path, err: (err as Error).message }, 'control socket: cannot listen here');
    }
  }
  logger.error(
    { tried: candidates },
    'no control socket: email-relay queue cannot reach this relay (set spool.controlSocket to a directory that holds sockets)',
  );
  return undefined;
}

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
