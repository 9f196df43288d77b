import { statfs } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo, Server as NetServer } from 'node:net';
import type { RelayConfig } from '../config/schema.ts';
import { splitHostPort } from '../lib/host-port.ts';
import type { Logger } from '../lib/logger.ts';
import { createProbeServer, listenHttp } from '../lib/probes.ts';
import { type Attribution, startKubeAttribution } from './access/attribution.ts';
import { type ControlRequest, controlSocketCandidates, listenControlSomewhere } from './control.ts';
import { installFastDotStuffing } from './delivery/dot-stuff.ts';
import { createDeliveryAgent } from './delivery/index.ts';
import type { DeliveryAgent } from './delivery/types.ts';
import { createRelayMetrics, type RelayMetrics } from './metrics.ts';
import { PeerDirectory } from './peers/directory.ts';
import { type DrainReport, deliverWith, drainQueue } from './peers/drain.ts';
import { HandoffServer } from './peers/handoff-server.ts';
import { leavingForGood } from './peers/leaving.ts';
import { RateShare } from './peers/rate-share.ts';
import { PeerTrust } from './peers/trust.ts';
import { InboundServer } from './smtp/server.ts';
import { openSpool, type RelaySpool } from './spool/index.ts';
import type { QueuedMessage, Spool } from './spool/types.ts';
import { SummarySource } from './summary.ts';

export interface Relay {
  config: RelayConfig;
  smtp: AddressInfo;
  http?: AddressInfo;
  spool: Spool;
  delivery: DeliveryAgent;
  metrics: RelayMetrics;
  /** The peer listener (hand-off), when peers.listen is set. */
  peers?: AddressInfo;
  /**
   * SIGTERM path: stop taking mail, finish transactions and attempts, then hand the queue to
   * peers if this relay leaves for good (peers.drainOnShutdown), else keep it on disk.
   */
  stop(reason?: string): Promise<void>;
  /** `queue drain`: go unready, stop taking mail, hand off or deliver everything, then stop. */
  drain(unreadySeconds?: number): Promise<DrainReport>;
  /** Resolves once the relay has stopped (after stop() or a drain). */
  readonly done: Promise<void>;
}

/** Opens the spool, starts delivery, then the SMTP, HTTP and control listeners. */
export async function startRelay(
  config: RelayConfig,
  logger: Logger,
  opts: { defaultMetrics?: boolean } = {},
): Promise<Relay> {
  const metrics = createRelayMetrics({ defaultMetrics: opts.defaultMetrics ?? true });
  const spool = await openSpool({
    dir: config.spool.dir,
    fsync: config.spool.fsync,
    minFreeBytes: config.spool.minFreeBytes,
    logger,
    onDamage: (e) => {
      metrics.spoolDamage.inc({ outcome: e.kind });
      if (e.kind === 'quarantined') metrics.spoolQuarantined.inc();
    },
  });
  metrics.spoolQuarantined.set(spool.quarantined().length); // also those of earlier runs
  for (const outcome of ['lost', 'quarantined', 'recovered']) metrics.spoolDamage.inc({ outcome }, 0);
  // A byte-identical replacement for nodemailer's per-byte dot-stuffing loop (the inbound DATA
  // scan is installed by the smtp-server adapter); throws on a nodemailer version not tested.
  await installFastDotStuffing();
  const newAgent = () => createDeliveryAgent({ config, spool, metrics, logger });
  let delivery = newAgent();
  watchSpoolFilesystem(metrics, spool.dir);
  let draining = false;
  let leaving = false;
  let handedOff = 0;
  const kube = config.access.kubernetes;
  const attribution: Attribution | undefined = kube.enabled
    ? startKubeAttribution({
        namespaceSelector: kube.namespaceSelector,
        ...(kube.kubeconfig ? { kubeconfig: kube.kubeconfig } : {}),
        logger,
      })
    : undefined;
  const peersConfig = config.peers;
  let peersAddress: AddressInfo | undefined;
  const directory = new PeerDirectory(peersConfig, () =>
    peersAddress ? { host: peersAddress.address, port: peersAddress.port } : undefined,
  );
  const trust = new PeerTrust(peersConfig, attribution);
  // Rate limits for the relay across its replicas: UDP reports on the peer port.
  const rates =
    peersConfig.listen && peersConfig.sharedRateLimits
      ? new RateShare({
          host: splitHostPort(peersConfig.listen).host,
          port: 0, // set once the TCP listener has its port
          directory,
          trust,
          intervalMs: peersConfig.reportIntervalMs,
          logger,
        })
      : undefined;
  const inbound = new InboundServer({
    ...(attribution ? { attribution } : {}),
    config,
    spool,
    metrics,
    logger,
    onQueued: (entry) => delivery.enqueue(entry),
    onEtrn: () => delivery.flush(),
    ...(rates ? { sharedRates: rates } : {}),
  });
  // One client connected: its commit's fdatasync on the loop blocks nobody and saves the pool's round trip.
  spool.syncOnLoopWhen(() => inbound.activeConnections() <= 1);
  const handoff = peersConfig.listen
    ? new HandoffServer({
        listen: peersConfig.listen,
        hostname: config.hostname,
        spool,
        trust,
        logger,
        onQueued: (entry) => delivery.enqueue(entry),
        refusing: () => draining,
        closeTimeoutMs: config.shutdownGraceSeconds * 1000,
      })
    : undefined;
  const summary = new SummarySource({
    hostname: config.hostname,
    spool,
    delivery: () => delivery,
    metrics,
    draining: () => leaving,
    accepting: () => !draining,
    handoff: () => ({ handedOff, received: handoff?.received ?? 0 }),
  });

  /** /readyz, and the same answer as a gauge so an alert sees a pod that stays unready. */
  const readiness = async () => {
    const problems: string[] = [];
    if (draining) problems.push('draining');
    if (attribution && !attribution.synced()) problems.push('kubernetes attribution not synced');
    if (!(await spool.writable())) problems.push('spool not writable');
    if ((await spool.headroom()) <= 0) problems.push('spool filesystem full');
    return { ready: problems.length === 0, detail: problems.join('; ') || 'accepting mail' };
  };
  Object.assign(metrics.ready, {
    collect: async () => metrics.ready.set((await readiness().catch(() => ({ ready: false }))).ready ? 1 : 0),
  });

  let smtp: AddressInfo;
  let http: Server | undefined;
  let httpAddress: AddressInfo | undefined;
  let control: NetServer | undefined;
  try {
    delivery.start();
    smtp = await inbound.listen();
    peersAddress = await handoff?.listen();
    if (rates && peersAddress) await rates.start(peersAddress.port);
    if (config.http) {
      http = createProbeServer(metrics.registry, readiness, { '/summary': () => summary.summary() });
      const { host, port } = splitHostPort(config.http);
      httpAddress = await listenHttp(http, host, port);
    }
    // A volume that cannot hold a socket (listen ENOSYS) must not keep the relay from relaying.
    control = (
      await listenControlSomewhere(
        controlSocketCandidates(spool.dir, config.spool.controlSocket),
        (req) =>
          req.cmd === 'drain'
            ? drain(req.unreadySeconds).then((result) => ({ ok: true as const, result }))
            : handleControl(delivery, spool, req),
        logger,
      )
    )?.server;
  } catch (err) {
    summary.stop();
    await rates?.stop().catch(() => undefined);
    await handoff?.close().catch(() => undefined);
    await delivery.stop(Date.now()).catch(() => undefined);
    await attribution?.stop().catch(() => undefined);
    await spool.close().catch(() => undefined);
    throw err;
  }
  logger.info(
    {
      smtp: `${smtp.address}:${smtp.port}`,
      http: httpAddress ? `${httpAddress.address}:${httpAddress.port}` : undefined,
      hostname: config.hostname,
      spool: spool.dir,
      queued: spool.stats().messages,
      allow: config.access.allow,
    },
    'relay started',
  );

  let stopping: Promise<DrainReport | undefined> | undefined;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => {
    resolveDone = r;
  });
  /** handOff: true (drain), false, or 'ask' (SIGTERM: peers.drainOnShutdown decides). */
  const shutdown = (reason: string, handOff: boolean | 'ask', unreadyMs = 0) =>
    (stopping ??= (async () => {
      draining = true;
      let report: DrainReport | undefined;
      let inboundClosed = false;
      try {
        // Unready first; keep serving until the Services have forgotten this pod.
        if (unreadyMs) await new Promise((r) => setTimeout(r, unreadyMs));
        // The kubelet kills the pod terminationGracePeriodSeconds after SIGTERM: transactions and
        // attempts get the grace period less a margin, in which every session left hears 421 and
        // the spool closes. A hand-off comes after that, within peers.drainTimeoutSeconds (which
        // the operator adds to the pod's grace period).
        const grace = config.shutdownGraceSeconds * 1000;
        const margin = Math.min(2000, grace * 0.2);
        const end = Date.now() + grace - margin / 2;
        const deadline = Date.now() + grace - margin;
        logger.info({ reason, graceSeconds: config.shutdownGraceSeconds }, 'draining: refusing new sessions');
        await inbound.drain(deadline);
        await delivery.stop(deadline);
        await inbound.close(Math.max(Date.now(), end));
        inboundClosed = true;
        leaving =
          handOff === 'ask'
            ? spool.stats().messages > 0 &&
              (await leavingForGood(peersConfig, {
                ...(kube.kubeconfig ? { kubeconfig: kube.kubeconfig } : {}),
                logger,
              }))
            : handOff;
        if (leaving && spool.stats().messages > 0) {
          report = await drainQueue(
            {
              spool,
              directory,
              hostname: config.hostname,
              logger,
              deliverUntil: deliverWith(newAgent, spool, (a) => {
                delivery = a as typeof delivery;
              }),
              onHandedOff: () => handedOff++,
            },
            Date.now() + peersConfig.drainTimeoutSeconds * 1000,
          );
        }
      } finally {
        summary.stop();
        await rates?.stop();
        await handoff?.close();
        if (!inboundClosed) await inbound.close(Date.now());
        await new Promise<void>((r) => (http ? http.close(() => r()) : r()));
        http?.closeAllConnections();
        await new Promise<void>((r) => (control ? control.close(() => r()) : r()));
        await attribution?.stop();
        const left = spool.stats().messages;
        await spool.close();
        logger.info(
          { queued: left },
          left ? 'relay stopped; queued mail stays in the spool' : 'relay stopped',
        );
        resolveDone();
      }
      return report;
    })());
  const stop = async (reason = 'stop') => {
    await shutdown(reason, 'ask');
  };
  const drain = async (unreadySeconds = 0) => {
    const report = await shutdown('queue drain', true, unreadySeconds * 1000);
    return report ?? { handedOff: 0, delivered: 0, left: spool.stats().messages, seconds: 0 };
  };

  return {
    config,
    smtp,
    ...(httpAddress ? { http: httpAddress } : {}),
    ...(peersAddress ? { peers: peersAddress } : {}),
    spool,
    get delivery() {
      return delivery;
    },
    metrics,
    stop,
    drain,
    done,
  };
}

/** Free and total bytes of the spool filesystem, read when Prometheus scrapes (for the disk alert). */
function watchSpoolFilesystem(metrics: RelayMetrics, dir: string): void {
  const read = () => statfs(dir).catch(() => undefined);
  Object.assign(metrics.spoolFreeBytes, {
    collect: async () => {
      const s = await read();
      if (s) metrics.spoolFreeBytes.set(s.bavail * s.bsize);
    },
  });
  Object.assign(metrics.spoolSizeBytes, {
    collect: async () => {
      const s = await read();
      if (s) metrics.spoolSizeBytes.set(s.blocks * s.bsize);
    },
  });
}

async function handleControl(delivery: DeliveryAgent, spool: RelaySpool, req: ControlRequest) {
  switch (req.cmd) {
    case 'list':
      return { ok: true as const, result: await queueSnapshot(spool) };
    case 'flush':
      delivery.flush();
      return { ok: true as const };
    case 'retry':
      return delivery.retry(req.id)
        ? { ok: true as const }
        : { ok: false as const, error: `${req.id}: no such message` };
    case 'delete':
      return (await delivery.delete(req.id))
        ? { ok: true as const }
        : { ok: false as const, error: `${req.id}: no such message` };
    default:
      return { ok: false as const, error: 'unknown command' };
  }
}

/**
 * `queue list` on a live relay: the index at one instant, each entry's envelope read through the
 * spool (which follows its own checkpoints and renames), and the quarantine. A message missing
 * here left the queue for real (delivered, bounced, deleted) while the list was read.
 */
async function queueSnapshot(spool: RelaySpool) {
  const entries = spool.entries();
  const messages: Array<QueuedMessage | undefined> = new Array(entries.length);
  const unreadable: Array<{ id: string; error: string }> = [];
  let next = 0;
  const worker = async () => {
    while (next < entries.length) {
      const i = next++;
      const id = entries[i]!.id;
      messages[i] = await spool.get(id).catch((err: Error) => {
        unreadable.push({ id, error: err.message });
        return undefined;
      });
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  return {
    at: Date.now(),
    messages: messages.filter((m): m is QueuedMessage => m !== undefined),
    unreadable,
    quarantined: spool.quarantined(),
  };
}
