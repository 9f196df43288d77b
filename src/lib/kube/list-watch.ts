import { request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent, request as httpsRequest } from 'node:https';
import type { Logger } from '../logger.ts';
import type { KubeConnection } from './connection.ts';

/**
 * List, then watch from the list's resourceVersion, for ever: client-go's reflector, reduced to
 * what a read-only cache needs. Pages of 500 on list; bookmarks keep the resourceVersion fresh;
 * a watch that ends is resumed where it stopped; 410 Gone (the version was compacted away)
 * relists and replaces the whole cache; other failures back off 1 s doubling to 30 s.
 */

export interface KubeObject {
  metadata?: { name?: string; namespace?: string; uid?: string; resourceVersion?: string };
}

export interface ListWatchHandlers<T> {
  /** Everything that exists, after a (re)list: forget what is not in it. */
  replace(items: T[]): void;
  upsert(obj: T): void;
  remove(obj: T): void;
}

export interface ListWatchOptions {
  logger: Logger;
  /** Called once, after the first list. */
  onSynced?: () => void;
  /** Server-side watch timeout; randomised by up to +50 % so replicas do not reconnect together. */
  watchTimeoutSeconds?: number;
  pageSize?: number;
}

export interface ListWatch {
  synced(): boolean;
  stop(): void;
}

export class KubeHttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const MAX_BACKOFF_MS = 30_000;

export function listWatch<T extends KubeObject>(
  conn: KubeConnection,
  path: string,
  handlers: ListWatchHandlers<T>,
  opts: ListWatchOptions,
): ListWatch {
  const client = new KubeClient(conn);
  const timeoutS = opts.watchTimeoutSeconds ?? 300;
  let synced = false;
  let stopped = false;
  let current: IncomingMessage | undefined;
  let wake: (() => void) | undefined;

  const list = async (): Promise<string> => {
    const items: T[] = [];
    let cont: string | undefined;
    let rv = '';
    do {
      const q = new URLSearchParams({ limit: String(opts.pageSize ?? 500) });
      if (cont) q.set('continue', cont);
      const page = (await client.getJson(`${path}?${q}`)) as {
        items?: T[];
        metadata?: { resourceVersion?: string; continue?: string };
      };
      items.push(...(page.items ?? []));
      rv = page.metadata?.resourceVersion ?? rv;
      cont = page.metadata?.continue || undefined;
    } while (cont && !stopped);
    handlers.replace(items);
    return rv;
  };

  /** Resolves with the last resourceVersion seen when the server ends the watch. */
  const watch = async (fromRv: string): Promise<string> => {
    let rv = fromRv;
    const seconds = Math.round(timeoutS * (1 + Math.random() / 2));
    const q = new URLSearchParams({
      watch: '1',
      resourceVersion: rv,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(seconds),
    });
    const res = await client.get(`${path}?${q}`, (seconds + 60) * 1000);
    current = res;
    res.setEncoding('utf8');
    let buf = '';
    try {
      for await (const chunk of res as AsyncIterable<string>) {
        buf += chunk;
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const ev = JSON.parse(line) as { type: string; object: T & { code?: number; message?: string } };
          if (ev.type === 'ERROR') {
            throw new KubeHttpError(ev.object.code ?? 500, ev.object.message ?? 'watch error');
          }
          rv = ev.object.metadata?.resourceVersion ?? rv;
          if (ev.type === 'ADDED' || ev.type === 'MODIFIED') handlers.upsert(ev.object);
          else if (ev.type === 'DELETED') handlers.remove(ev.object);
        }
      }
    } finally {
      current = undefined;
    }
    return rv;
  };

  const run = async () => {
    let rv: string | undefined;
    let failures = 0;
    while (!stopped) {
      try {
        if (rv === undefined) {
          rv = await list();
          if (!synced) {
            synced = true;
            opts.onSynced?.();
          }
        }
        const started = Date.now();
        rv = await watch(rv);
        // A watch the server ends at once, again and again, is a failure to back off from.
        failures = Date.now() - started < 1000 ? failures + 1 : 0;
        if (failures) await sleep(backoff(failures));
      } catch (err) {
        if (stopped) return;
        if (err instanceof KubeHttpError && err.status === 410) {
          opts.logger.info({ path }, 'kubernetes watch expired; relisting');
          rv = undefined;
          continue;
        }
        failures++;
        opts.logger.warn(
          { path, err: (err as Error).message, failures },
          'kubernetes list/watch failed; retrying',
        );
        await sleep(backoff(failures));
      }
    }
  };

  const sleep = (ms: number) =>
    new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      t.unref();
      wake = () => {
        clearTimeout(t);
        r();
      };
    });

  void run();
  return {
    synced: () => synced,
    stop() {
      stopped = true;
      current?.destroy();
      wake?.();
      client.close();
    },
  };
}

function backoff(failures: number): number {
  const ms = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (failures - 1));
  return ms / 2 + Math.random() * (ms / 2);
}

/** GETs against the API server with the connection's credentials. */
class KubeClient {
  private readonly agent: Agent | undefined;
  private readonly base: URL;

  constructor(private readonly conn: KubeConnection) {
    this.base = new URL(conn.server);
    this.agent =
      this.base.protocol === 'https:'
        ? new Agent({
            keepAlive: true,
            ...(conn.ca ? { ca: conn.ca } : {}),
            ...(conn.cert ? { cert: conn.cert } : {}),
            ...(conn.key ? { key: conn.key } : {}),
            ...(conn.tlsServerName ? { servername: conn.tlsServerName } : {}),
            rejectUnauthorized: !conn.insecureSkipTlsVerify,
          })
        : undefined;
  }

  /** A 2xx response; anything else is read and thrown as a KubeHttpError. */
  get(pathAndQuery: string, timeoutMs: number): Promise<IncomingMessage> {
    const url = new URL(this.base.pathname.replace(/\/$/, '') + pathAndQuery, this.base);
    const token = this.conn.token?.();
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'email-relay' };
    if (token) headers.authorization = `Bearer ${token}`;
    const send = this.agent ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(
        url,
        { method: 'GET', headers, ...(this.agent ? { agent: this.agent } : {}) },
        (res) => {
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) return resolve(res);
          readAll(res).then((body) => reject(new KubeHttpError(status, statusMessage(status, body))), reject);
        },
      );
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`no data from ${url.host} for ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end();
    });
  }

  async getJson(pathAndQuery: string): Promise<unknown> {
    return JSON.parse(await readAll(await this.get(pathAndQuery, 60_000)));
  }

  close(): void {
    this.agent?.destroy();
  }
}

async function readAll(res: IncomingMessage): Promise<string> {
  res.setEncoding('utf8');
  let body = '';
  for await (const chunk of res as AsyncIterable<string>) body += chunk;
  return body;
}

function statusMessage(status: number, body: string): string {
  try {
    const s = JSON.parse(body) as { message?: string };
    if (s.message) return `${status}: ${s.message}`;
  } catch {
    // not a Status object
  }
  return `${status}: ${body.slice(0, 200)}`;
}
