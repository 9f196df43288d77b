import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

/**
 * /healthz: the process answers. /readyz: caches are synced (a standby is ready too: it is
 * warm and can take over). /metrics: Prometheus text.
 */
export function createOperatorHttpServer(
  registry: Registry,
  health: { ready(): boolean; leader(): boolean },
): Server {
  return createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (code: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    switch (path) {
      case '/healthz':
      case '/livez':
        return reply(200, 'ok\n');
      case '/readyz':
        return health.ready()
          ? reply(200, `ok (${health.leader() ? 'leader' : 'standby'})\n`)
          : reply(503, 'caches not synced\n');
      case '/metrics':
        registry.metrics().then(
          (text) => reply(200, text, registry.contentType),
          (err: Error) => reply(500, `metrics failed: ${err.message}\n`),
        );
        return;
      default:
        return reply(404, 'not found: try /healthz, /readyz or /metrics\n');
    }
  });
}
