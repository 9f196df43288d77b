import { BlockList, isIP } from 'node:net';

/** Strips the IPv4-mapped prefix a dual-stack listener reports ("::ffff:10.1.2.3"). */
export function normalizeAddress(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}

const MEMO_MAX = 4096;

/** The client networks allowed to relay (Postfix's mynetworks). Empty list: nobody. */
export class Networks {
  private readonly list = new BlockList();

  constructor(readonly cidrs: readonly string[]) {
    for (const cidr of cidrs) {
      const [addr, bits] = cidr.split('/') as [string, string | undefined];
      const family = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
      if (bits === undefined) this.list.addAddress(addr, family);
      else this.list.addSubnet(addr, Number(bits), family);
    }
  }

  /**
   * Answers by address, remembered: BlockList.check builds a SocketAddress per call (about 15 µs
   * in Node 20) and a session asks two or three times. The list never changes (a new config makes
   * a new Networks); the memory is dropped whole when it reaches MEMO_MAX addresses.
   */
  private readonly memo = new Map<string, boolean>();

  contains(address: string): boolean {
    const known = this.memo.get(address);
    if (known !== undefined) return known;
    const a = normalizeAddress(address);
    const family = isIP(a);
    const inside = !!family && this.list.check(a, family === 6 ? 'ipv6' : 'ipv4');
    if (this.memo.size >= MEMO_MAX) this.memo.clear();
    this.memo.set(address, inside);
    return inside;
  }
}
