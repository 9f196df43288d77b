import { lookup } from 'node:dns/promises';
import { networkInterfaces } from 'node:os';
import type { PeersConfig } from '../../config/peers.ts';
import { splitHostPort } from '../../lib/host-port.ts';

export interface Peer {
  host: string;
  port: number;
}

/**
 * The other ready replicas, from peers.address: a headless Service name resolves to the
 * addresses of the ready pods only, so a draining (unready) relay never finds itself, nor a
 * peer that is leaving too. Own addresses are dropped anyway (readiness lags by a probe period).
 * peers.addresses lists them by hand instead (outside Kubernetes, and in tests).
 */
export class PeerDirectory {
  constructor(
    private readonly config: PeersConfig,
    /** This relay's own peer listener (known once listening), never its own peer. */
    private readonly self: () => Peer | undefined = () => undefined,
  ) {}

  get configured(): boolean {
    return this.config.address !== undefined || this.config.addresses.length > 0;
  }

  async resolve(): Promise<Peer[]> {
    const out: Peer[] = [];
    for (const hp of this.config.addresses) out.push(splitHostPort(hp));
    if (this.config.address) {
      const { host, port } = splitHostPort(this.config.address);
      const found = await lookup(host, { all: true }).catch(() => []);
      const own = ownAddresses();
      for (const a of found) if (!own.has(a.address)) out.push({ host: a.address, port });
    }
    const self = this.self();
    return out.filter((p) => !(self && p.host === self.host && p.port === self.port));
  }
}

function ownAddresses(): Set<string> {
  const own = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) if (!i.internal) own.add(i.address);
  }
  return own;
}
