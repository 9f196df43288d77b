import type { PeersConfig } from '../../config/peers.ts';
import type { Attribution } from '../access/attribution.ts';
import { Networks, normalizeAddress } from '../access/networks.ts';

/**
 * Who is a peer: an address in peers.trust.networks, or (with client attribution) a pod of a
 * namespace in peers.trust.namespaces, i.e. the relay's own namespace, where only its operator
 * and administrators create pods. The NetworkPolicy narrows the peer port to the relay's pods
 * as well; this check holds also where the CNI ignores NetworkPolicy.
 */
export class PeerTrust {
  private readonly networks: Networks;

  constructor(
    private readonly config: PeersConfig,
    private readonly attribution?: Attribution,
  ) {
    this.networks = new Networks(config.trust.networks);
  }

  /** Who the peer is ("network 10.1.2.3", "pod ns/name"), undefined when it is none. */
  async identify(address: string): Promise<string | undefined> {
    const a = normalizeAddress(address);
    if (this.networks.contains(a)) return `network ${a}`;
    if (!this.attribution || !this.config.trust.namespaces.length) return undefined;
    const pod = await this.attribution.lookup(a).catch(() => undefined);
    return pod && this.config.trust.namespaces.includes(pod.namespace)
      ? `pod ${pod.namespace}/${pod.pod}`
      : undefined;
  }
}
