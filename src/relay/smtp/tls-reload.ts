import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import type { Logger } from '../../lib/logger.ts';

/**
 * Follows a certificate and key on disk (a cert-manager Secret mounted in the pod: the kubelet
 * swaps both files atomically through a symlink) and hands over each new, valid pair. Polling the
 * content, not fs events: events on Secret volumes are unreliable and a poll a few seconds late
 * is harmless. A pair that does not load (a key from another certificate, a half-written file)
 * is logged and skipped: the relay keeps serving the last good one.
 */
export function watchTlsFiles(
  files: { certFile: string; keyFile: string },
  intervalMs: number,
  onChange: (pair: { key: Buffer; cert: Buffer }) => void,
  logger: Logger,
  initial?: { key: Buffer; cert: Buffer },
): () => void {
  const digest = (p: { key: Buffer; cert: Buffer }) =>
    createHash('sha256').update(p.key).update(p.cert).digest('hex');
  let last = initial ? digest(initial) : '';
  let rejected = '';
  let running = false;
  const check = async () => {
    if (running) return;
    running = true;
    try {
      const [key, cert] = await Promise.all([readFile(files.keyFile), readFile(files.certFile)]);
      const d = digest({ key, cert });
      if (d === last || d === rejected) return;
      try {
        createSecureContext({ key, cert });
      } catch (err) {
        rejected = d;
        logger.warn(
          { err: (err as Error).message, certFile: files.certFile },
          'new TLS certificate does not load; keeping the old one',
        );
        return;
      }
      last = d;
      onChange({ key, cert });
      logger.info({ certFile: files.certFile }, 'TLS certificate reloaded');
    } catch (err) {
      logger.warn(
        { err: (err as Error).message, certFile: files.certFile },
        'cannot read TLS certificate; keeping the old one',
      );
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void check(), intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
