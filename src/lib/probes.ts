import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

/** What /readyz says: ready or not, and a line telling why. */
export interface Readiness {
  ready: boolean;
  detail: string;
}

/**
 * /healthz (the process answers), /readyz (it should get traffic) and /metrics, for both roles.
 * Plain HTTP, so kubelet probes never open SMTP sessions that fill the mail log (a common
 * complaint about Postfix charts whose probes speak SMTP).
 */
export function createProbeServer(
  registry: Registry,
  readiness: () => Promise<Readiness> | Readiness,
  /** Extra read-only JSON documents by path, e.g. the relay's /summary. */
  documents: Record<string, () => Promise<unknown>> = {},
): Server {
  return createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (code: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, 'method not allowed\n');
    switch (path) {
      case '/healthz':
      case '/livez':
        return reply(200, 'ok\n');
      case '/readyz':
        Promise.resolve()
          .then(readiness)
          .then(
            (r) => reply(r.ready ? 200 : 503, `${r.ready ? 'ok' : 'not ready'}: ${r.detail}\n`),
            (err: Error) => reply(503, `not ready: ${err.message}\n`),
          );
        return;
      case '/metrics':
        registry.metrics().then(
          (text) => reply(200, text, registry.contentType),
          (err: Error) => reply(500, `metrics failed: ${err.message}\n`),
        );
        return;
      default: {
        const doc = Object.hasOwn(documents, path ?? '') ? documents[path!] : undefined;
        if (doc) {
          doc().then(
            (body) => reply(200, `${JSON.stringify(body)}\n`, 'application/json'),
            (err: Error) => reply(500, `${err.message}\n`),
          );
          return;
        }
        return reply(404, 'not found: try /healthz, /readyz or /metrics\n');
      }
    }
  });
}

export async function listenHttp(server: Server, host: string, port: number): Promise<AddressInfo> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server.address() as AddressInfo;
}
