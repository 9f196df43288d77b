import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest, type RequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import type { KubeConnection } from './connection.ts';

/**
 * A small REST client for the Kubernetes API. Plain JSON in and out: the operator works with
 * unstructured objects, applies with server-side apply and runs its own watches, so the generated
 * typed clients would only be in the way. Credentials come from @kubernetes/client-node's
 * KubeConfig (the operator: it knows exec plugins too) or from a KubeConnection (the relay,
 * which must not load that client: ~80 MB RSS).
 */

/** What the client needs of client-node's KubeConfig (a type only: nothing is loaded here). */
export type KubeConfigLike = Pick<KubeConfig, 'getCurrentCluster' | 'applyToHTTPSOptions'>;

function isKubeConfig(access: KubeConfigLike | KubeConnection): access is KubeConfigLike {
  return 'applyToHTTPSOptions' in access;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly body?: unknown,
  ) {
    super(message);
  }
}

export const isNotFound = (err: unknown) => err instanceof ApiError && err.status === 404;
export const isConflict = (err: unknown) => err instanceof ApiError && err.status === 409;
export const isGone = (err: unknown) => err instanceof ApiError && err.status === 410;
export const isInvalid = (err: unknown) =>
  err instanceof ApiError && (err.status === 422 || err.status === 400);

export interface RequestInit {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
}

/** Counts every request by verb, for the "a steady state writes nothing" promise and metrics. */
export type RequestObserver = (method: string, path: string, status: number) => void;

export class KubeClient {
  private readonly server: URL;
  private agent: HttpsAgent | HttpAgent | undefined;
  observer: RequestObserver | undefined;

  constructor(private readonly access: KubeConfigLike | KubeConnection) {
    const server = isKubeConfig(access) ? access.getCurrentCluster()?.server : access.server;
    if (!server) throw new Error('kubeconfig has no current cluster');
    this.server = new URL(server);
  }

  /** Fresh credentials on every request: tokens rotate. */
  private async credentials(): Promise<RequestOptions> {
    const a = this.access;
    if (isKubeConfig(a)) {
      const opts: RequestOptions = {};
      await a.applyToHTTPSOptions(opts);
      return opts;
    }
    const token = a.token?.();
    return {
      ...(a.ca ? { ca: a.ca } : {}),
      ...(a.cert ? { cert: a.cert } : {}),
      ...(a.key ? { key: a.key } : {}),
      ...(a.tlsServerName ? { servername: a.tlsServerName } : {}),
      rejectUnauthorized: !a.insecureSkipTlsVerify,
      headers: token ? { authorization: `Bearer ${token}` } : {},
    };
  }

  private async options(): Promise<RequestOptions> {
    const opts = await this.credentials();
    if (!this.agent) {
      // One keep-alive agent instead of the per-request agent applyToHTTPSOptions creates.
      this.agent =
        this.server.protocol === 'https:'
          ? new HttpsAgent({
              keepAlive: true,
              ca: opts.ca,
              cert: opts.cert,
              key: opts.key,
              pfx: opts.pfx,
              passphrase: opts.passphrase,
              rejectUnauthorized: opts.rejectUnauthorized,
              servername: opts.servername,
            })
          : new HttpAgent({ keepAlive: true });
    }
    return { headers: opts.headers ?? {}, auth: opts.auth };
  }

  url(path: string, query?: RequestInit['query']): URL {
    const u = new URL(path, this.server);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) u.searchParams.set(k, String(v));
    return u;
  }

  /** Starts a request and returns the response stream (for watches) once headers arrived. */
  async open(method: string, path: string, init: RequestInit = {}) {
    const base = await this.options();
    const url = this.url(path, init.query);
    const body = init.body === undefined ? undefined : JSON.stringify(init.body);
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
      const req = send(
        url,
        {
          method,
          agent: this.agent,
          ...(base.auth ? { auth: base.auth } : {}),
          headers: {
            ...(base.headers as Record<string, string>),
            accept: 'application/json',
            ...(body !== undefined
              ? {
                  'content-type': init.contentType ?? 'application/json',
                  'content-length': Buffer.byteLength(body),
                }
              : {}),
          },
          ...(init.signal ? { signal: init.signal } : {}),
        },
        resolve,
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  async request<T = unknown>(method: string, path: string, init: RequestInit = {}): Promise<T> {
    const res = await this.open(method, path, init);
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const status = res.statusCode ?? 0;
    this.observer?.(method, path, status);
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = text;
    }
    if (status >= 400) {
      const s = parsed as { reason?: string; message?: string } | undefined;
      throw new ApiError(
        status,
        s?.reason ?? 'Unknown',
        `${method} ${path}: ${status} ${s?.message ?? text}`,
        parsed,
      );
    }
    return parsed as T;
  }

  get<T>(path: string, query?: RequestInit['query']) {
    return this.request<T>('GET', path, query ? { query } : {});
  }

  close(): void {
    this.agent?.destroy();
  }
}
