import type { Readable } from 'node:stream';
import type { Logger } from '../../lib/logger.ts';
import type { QueuedMessage, Spool } from '../spool/types.ts';
import type { Peer, PeerDirectory } from './directory.ts';
import { handOff } from './handoff-client.ts';

export interface DrainReport {
  /** Messages a peer took. */
  handedOff: number;
  /** Messages that left the queue by local delivery (delivered, bounced or expired). */
  delivered: number;
  /** Messages still queued (the deadline passed). */
  left: number;
  seconds: number;
}

export interface DrainDeps {
  spool: Spool;
  directory: PeerDirectory;
  hostname: string;
  logger: Logger;
  /**
   * Deliver what is queued ourselves until `until` (ms epoch) or the queue is empty; used when
   * no peer takes the mail. Resolves when delivery has stopped again.
   */
  deliverUntil: (until: number) => Promise<void>;
  /** Progress counter for /summary. */
  onHandedOff?: () => void;
  now?: () => number;
  handOffTimeoutMs?: number;
}

/** How long local delivery runs before peers are looked for again. */
const DELIVER_ROUND_MS = 20_000;

/**
 * Empties the queue of a relay that is leaving (scaled down, or a drain Job on a stranded
 * volume): every message goes to a ready peer over SMTP, keeping id, envelope and history; when
 * no peer takes it (none ready, e.g. scaling to zero) it is delivered upstream instead. Delivery
 * of this relay must be stopped while hand-offs run, so no message is sent twice.
 * A message leaves this queue only after a peer's 250, which follows its fsync: a crash in
 * between sends it twice (the peer recognises its id if it still holds it), never zero times.
 */
export async function drainQueue(deps: DrainDeps, deadline: number): Promise<DrainReport> {
  const { spool, directory, logger } = deps;
  const now = deps.now ?? Date.now;
  const started = now();
  const before = spool.stats().messages;
  let handedOff = 0;
  logger.info({ queued: before }, 'draining: handing queued mail to peers');
  while (spool.stats().messages > 0 && now() < deadline) {
    const peers = directory.configured ? await directory.resolve() : [];
    let failedPeers = new Set<string>();
    if (peers.length) {
      let turn = 0;
      for (const entry of spool.entries()) {
        if (now() >= deadline) break;
        const msg = await spool.get(entry.id);
        if (!msg) continue;
        if (!msg.recipients.some((r) => r.status === 'pending')) {
          await spool.remove(msg.id);
          continue;
        }
        const live = peers.filter((p) => !failedPeers.has(key(p)));
        if (!live.length) break;
        const took = await tryPeers(deps, msg, live, turn++, failedPeers);
        if (!took) continue;
        await spool.remove(msg.id);
        handedOff++;
        deps.onHandedOff?.();
      }
    }
    if (spool.stats().messages === 0 || now() >= deadline) break;
    logger.info(
      { queued: spool.stats().messages, peers: peers.length, refused: failedPeers.size },
      peers.length ? 'peers did not take everything: delivering the rest' : 'no peer ready: delivering',
    );
    await deps.deliverUntil(Math.min(deadline, now() + DELIVER_ROUND_MS));
    failedPeers = new Set();
  }
  const left = spool.stats().messages;
  const report = {
    handedOff,
    delivered: Math.max(0, before - handedOff - left),
    left,
    seconds: Math.round((now() - started) / 100) / 10,
  };
  logger.info(report, left ? 'drain stopped at the deadline: the rest stays queued' : 'drained: queue empty');
  return report;
}

const key = (p: Peer) => `${p.host}:${p.port}`;

/** The peers in turn, starting at `turn` (spreads the queue); false when none took it. */
async function tryPeers(
  deps: DrainDeps,
  msg: QueuedMessage,
  peers: Peer[],
  turn: number,
  failed: Set<string>,
): Promise<boolean> {
  for (let i = 0; i < peers.length; i++) {
    const peer = peers[(turn + i) % peers.length]!;
    try {
      const reply = await handOff(msg, deps.spool.openBody(msg.id) as Readable, peer, {
        hostname: deps.hostname,
        timeoutMs: deps.handOffTimeoutMs ?? 60_000,
      });
      deps.logger.info({ queueId: msg.id, peer: key(peer), reply }, 'handed off to a peer');
      return true;
    } catch (err) {
      const e = err as Error & { responseCode?: number; response?: string };
      deps.logger.warn({ queueId: msg.id, peer: key(peer), reply: e.response ?? e.message }, 'peer refused');
      // A refusal of this message alone (450 id taken) is no reason to give up on the peer.
      if (!(e.responseCode && e.responseCode >= 450 && e.responseCode < 460 && e.responseCode !== 452))
        failed.add(key(peer));
    }
  }
  return false;
}

/** deliverUntil for drainQueue: a fresh delivery agent on the spool until `until` or empty. */
export function deliverWith(
  create: () => { start(): void; stop(deadline: number): Promise<void> },
  spool: Spool,
  onAgent?: (agent: unknown) => void,
): (until: number) => Promise<void> {
  return async (until) => {
    const agent = create();
    onAgent?.(agent);
    agent.start();
    while (Date.now() < until && spool.stats().messages > 0) await new Promise((r) => setTimeout(r, 250));
    await agent.stop(Date.now() + 5000);
  };
}
