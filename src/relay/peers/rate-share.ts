import { randomUUID } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import type { Logger } from '../../lib/logger.ts';
import type { RateCounter, RemoteCounts } from '../access/rate-limit.ts';
import type { Peer, PeerDirectory } from './directory.ts';
import type { PeerTrust } from './trust.ts';

/**
 * Rate limits for the relay, not per pod: every replica sends its own counts (per key and
 * window) to each peer over UDP on the peer port, the keys it counted since its last report
 * within PROMPT_MS of the count, and every key every `intervalMs`; a replica admits a message
 * while its own count plus the peers' latest reports is under the limit. A report older than
 * three intervals counts as zero (a peer that left, or a key that went quiet).
 *
 * Error bound: a replica does not see what the others admitted since their last report, so a
 * window can exceed the limit by what the other N-1 replicas admit in PROMPT_MS (the shortest
 * interval the config allows) plus the network delay: a few messages at most, and no more as the relay gets
 * faster per client than the clients' own rate allows. It never under-admits however the Service
 * spreads connections. A lost or partitioned peer's admissions are not seen at all: its share is
 * then over the limit by at most what it admits on its own (the per-replica behaviour, as
 * without sharing). The prompt reports cost at most 1000 / PROMPT_MS datagrams a second per
 * peer while limited mail flows, holding only the keys that moved.
 */
const PROMPT_MS = 50;

export class RateShare implements RemoteCounts {
  private readonly id = randomUUID();
  private readonly counters: RateCounter[] = [];
  /** `${windowMs} ${key}` -> peer id -> {n, at}. */
  private readonly remote = new Map<string, Map<string, { n: number; at: number }>>();
  private readonly trusted = new Map<string, { ok: boolean; at: number }>();
  private socket: Socket | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Keys counted here since the last report, per counter, and the timer that will report them. */
  private touchedKeys = new Map<RateCounter, Set<string>>();
  private prompt: NodeJS.Timeout | undefined;
  /** The peers found last, and when. */
  private peers: { list: Peer[]; at: number } | undefined;
  private readonly now: () => number;

  constructor(
    private readonly deps: {
      host: string;
      port: number;
      directory: PeerDirectory;
      trust: PeerTrust;
      intervalMs: number;
      logger: Logger;
      now?: () => number;
    },
  ) {
    this.now = deps.now ?? Date.now;
  }

  track(counter: RateCounter): void {
    this.counters.push(counter);
  }

  touched(counter: RateCounter, key: string): void {
    if (!this.socket) return;
    const keys = this.touchedKeys.get(counter) ?? new Set<string>();
    this.touchedKeys.set(counter, keys);
    keys.add(key);
    if (this.prompt) return;
    this.prompt = setTimeout(() => void this.report(true), PROMPT_MS);
    this.prompt.unref();
  }

  count(windowMs: number, key: string): number {
    const peers = this.remote.get(`${windowMs} ${key}`);
    if (!peers) return 0;
    const fresh = this.now() - 3 * this.deps.intervalMs;
    let n = 0;
    for (const [peer, e] of peers) {
      if (e.at >= fresh) n += e.n;
      else peers.delete(peer);
    }
    return n;
  }

  /** Binds the UDP socket: the peer port's number (`port`, else the configured one). */
  async start(port = this.deps.port): Promise<void> {
    const family = this.deps.host.includes(':') ? 'udp6' : 'udp4';
    const socket = createSocket({ type: family, reuseAddr: false });
    socket.on('message', (buf, rinfo) => void this.receive(buf, rinfo.address));
    socket.on('error', (err) => this.deps.logger.warn({ err }, 'rate-limit reports: socket error'));
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, this.deps.host, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    this.socket = socket;
    this.timer = setInterval(() => void this.report(), this.deps.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    clearTimeout(this.prompt);
    await new Promise<void>((r) => (this.socket ? this.socket.close(() => r()) : r()));
    this.socket = undefined;
  }

  /** Our own counts to every peer, in datagrams of at most ~32 KB: every key, or those `touched` since the last report. */
  private async report(touched = false): Promise<void> {
    const socket = this.socket;
    const keys = this.touchedKeys;
    this.touchedKeys = new Map();
    clearTimeout(this.prompt);
    this.prompt = undefined;
    if (!socket) return;
    const counts: [number, string, number][] = [];
    if (touched)
      for (const [c, ks] of keys) for (const key of ks) counts.push([c.windowMs, key, c.localCount(key)]);
    else
      for (const c of this.counters)
        for (const [key, n] of c.localCounts()) counts.push([c.windowMs, key, n]);
    if (!counts.length) return;
    const peers = await this.resolvePeers();
    const datagrams: Buffer[] = [];
    let chunk: [number, string, number][] = [];
    let size = 0;
    const flush = () => {
      if (chunk.length) datagrams.push(Buffer.from(JSON.stringify({ v: 1, from: this.id, counts: chunk })));
      chunk = [];
      size = 0;
    };
    for (const c of counts) {
      chunk.push(c);
      size += c[1].length + 24;
      if (size > 32_000) flush();
    }
    flush();
    for (const p of peers) for (const d of datagrams) socket.send(d, p.port, p.host, () => undefined);
  }

  /**
   * The peers, looked up at most once per interval: a name lookup (the headless Service's,
   * through the cluster DNS) for each prompt report, up to 20 a second per replica, would be a load.
   */
  private async resolvePeers(): Promise<Peer[]> {
    if (this.peers && this.now() - this.peers.at < this.deps.intervalMs) return this.peers.list;
    const list = await this.deps.directory.resolve().catch(() => []);
    this.peers = { list, at: this.now() };
    return list;
  }

  private async receive(buf: Buffer, address: string): Promise<void> {
    if (!(await this.isPeer(address))) return;
    let msg: { v?: number; from?: unknown; counts?: unknown };
    try {
      msg = JSON.parse(buf.toString('utf8'));
    } catch {
      return;
    }
    if (msg.v !== 1 || typeof msg.from !== 'string' || msg.from === this.id || !Array.isArray(msg.counts))
      return;
    const at = this.now();
    for (const c of msg.counts as unknown[]) {
      if (!Array.isArray(c) || c.length !== 3) continue;
      const [w, key, n] = c as [unknown, unknown, unknown];
      if (typeof w !== 'number' || typeof key !== 'string' || typeof n !== 'number' || n < 0) continue;
      const k = `${w} ${key}`;
      const peers = this.remote.get(k) ?? new Map<string, { n: number; at: number }>();
      this.remote.set(k, peers);
      peers.set(msg.from, { n, at });
    }
    if (this.remote.size > 50_000)
      for (const k of [...this.remote.keys()].slice(0, 10_000)) this.remote.delete(k);
  }

  /** Peers only (the same trust as hand-offs), looked up once a minute per address. */
  private async isPeer(address: string): Promise<boolean> {
    const hit = this.trusted.get(address);
    if (hit && this.now() - hit.at < 60_000) return hit.ok;
    const ok = (await this.deps.trust.identify(address)) !== undefined;
    this.trusted.set(address, { ok, at: this.now() });
    return ok;
  }
}
