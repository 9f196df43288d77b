import { writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { RelayConfig } from '../config/schema.ts';
import { splitHostPort } from '../lib/host-port.ts';
import type { Logger } from '../lib/logger.ts';
import { createProbeServer, listenHttp } from '../lib/probes.ts';
import { createDeliveryAgent } from './delivery/index.ts';
import type { DeliveryAgent } from './delivery/types.ts';
import { createRelayMetrics } from './metrics.ts';
import { PeerDirectory } from './peers/directory.ts';
import { type DrainReport, deliverWith, drainQueue } from './peers/drain.ts';
import { openSpool } from './spool/index.ts';
import { SummarySource } from './summary.ts';

/**
 * `email-relay relay --drain-only`: what the operator's Job runs on a stranded queue volume (an
 * ordinal at or above replicas that still holds mail). No SMTP listener: it hands everything to
 * the ready replicas through the headless Service (or delivers it when none is ready) and exits
 * 0 once the queue is empty. /summary shows its progress; the report goes to the termination
 * log, where the operator reads it for the QueueDrained Event.
 */
export async function runDrainOnly(
  config: RelayConfig,
  logger: Logger,
  opts: { terminationLog?: string; deadline?: number } = {},
): Promise<DrainReport> {
  const metrics = createRelayMetrics({ defaultMetrics: false });
  const spool = await openSpool({
    dir: config.spool.dir,
    fsync: config.spool.fsync,
    minFreeBytes: config.spool.minFreeBytes,
    logger,
  });
  let delivery: DeliveryAgent | undefined;
  let handedOff = 0;
  const summary = new SummarySource({
    hostname: config.hostname,
    spool,
    delivery: () => delivery,
    metrics,
    draining: () => true,
    accepting: () => false,
    handoff: () => ({ handedOff, received: 0 }),
  });
  let http: Server | undefined;
  try {
    if (config.http) {
      http = createProbeServer(metrics.registry, () => ({ ready: false, detail: 'drain-only' }), {
        '/summary': () => summary.summary(),
      });
      const { host, port } = splitHostPort(config.http);
      await listenHttp(http, host, port);
    }
    const report = await drainQueue(
      {
        spool,
        directory: new PeerDirectory(config.peers),
        hostname: config.hostname,
        logger,
        deliverUntil: deliverWith(
          () => createDeliveryAgent({ config, spool, metrics, logger }),
          spool,
          (a) => {
            delivery = a as DeliveryAgent;
          },
        ),
        onHandedOff: () => handedOff++,
      },
      opts.deadline ?? Number.POSITIVE_INFINITY,
    );
    const log = opts.terminationLog ?? '/dev/termination-log';
    await writeFile(log, JSON.stringify(report)).catch(() => undefined);
    return report;
  } finally {
    summary.stop();
    if (http) {
      await new Promise<void>((r) => http!.close(() => r()));
      http.closeAllConnections();
    }
    await spool.close();
  }
}
