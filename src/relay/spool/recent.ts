import type { QueuedMessage } from './types.ts';

/**
 * Messages just committed through the journal, still in memory: most are delivered within a
 * second, and reading back what was in memory a moment before costs two opens, three preads and
 * three closes per message, each a thread-pool round trip (18 % of the relay's busy time at
 * 2 KB × 20 sessions, bench/README.md). Bounded in bytes and age, oldest out first; an entry
 * goes as soon as the message's envelope changes or it is removed, so a hit is always what the
 * disk holds.
 */
export class RecentMessages {
  private readonly items = new Map<
    string,
    { msg: QueuedMessage; body: Buffer[]; size: number; at: number }
  >();
  private bytes = 0;

  constructor(
    private readonly maxBytes = 8 * 1024 * 1024,
    private readonly maxAgeMs = 10_000,
  ) {}

  get size(): number {
    return this.items.size;
  }

  /** Keeps references to `body` (not copies): the caller must not modify the buffers. */
  put(msg: QueuedMessage, body: Buffer[], now = Date.now()): void {
    if (msg.size > this.maxBytes / 4) return;
    this.drop(msg.id);
    this.items.set(msg.id, { msg: cloneMessage(msg), body, size: msg.size, at: now });
    this.bytes += msg.size;
    for (const [id, it] of this.items) {
      if (this.bytes <= this.maxBytes) break;
      this.drop(id, it.size);
    }
  }

  /** A copy: the delivery agent may change what it gets. */
  message(id: string): QueuedMessage | undefined {
    const it = this.items.get(id);
    return it && cloneMessage(it.msg);
  }

  body(id: string): Buffer[] | undefined {
    return this.items.get(id)?.body;
  }

  drop(id: string, size = this.items.get(id)?.size): void {
    if (size === undefined || !this.items.delete(id)) return;
    this.bytes -= size;
  }

  expire(now = Date.now()): void {
    for (const [id, it] of this.items) {
      if (now - it.at < this.maxAgeMs) break;
      this.drop(id, it.size);
    }
  }
}

/** Deep enough for what QueuedMessage holds (structuredClone was 2 % of the busy time at 2 KB). */
function cloneMessage(m: QueuedMessage): QueuedMessage {
  return {
    ...m,
    recipients: m.recipients.map((r) => (r.notify ? { ...r, notify: [...r.notify] } : { ...r })),
    client: { ...m.client },
    ...(m.dsn ? { dsn: { ...m.dsn } } : {}),
  };
}
