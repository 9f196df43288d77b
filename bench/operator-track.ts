import type { KubeClient } from '../src/lib/kube/client.ts';
import { Informer } from '../src/lib/kube/informer.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { type EmailRelay, emailRelaySpecSchema } from '../src/operator/api/emailrelay.ts';
import type { KubeObject } from '../src/operator/api/meta.ts';
import { MANAGED_SELECTOR } from '../src/operator/emailrelay/names.ts';
import { CHILD_KINDS } from '../src/operator/emailrelay/reconciler.ts';
import { renderRelay } from '../src/operator/emailrelay/render.ts';
import { resourceType } from '../src/operator/runtime/resources.ts';
import { BENCH_IMAGE } from './operator-cluster.ts';

/**
 * The benchmark's own view of the cluster (admin watches, the same list+watch informer the
 * operator uses): when each expected child first appeared and when each EmailRelay's status first
 * reported its generation as observed. "Done" for a relay = both, at the moment the later one was seen.
 */

const idOf = (o: KubeObject) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;

/** What the operator is meant to create for this spec: its own renderer's output, by kind/ns/name. */
export function expectedChildren(namespace: string, name: string, spec: unknown): string[] {
  const rendered = renderRelay({
    relay: { name, namespace, uid: 'x' },
    spec: emailRelaySpecSchema.parse(spec),
    defaultImage: BENCH_IMAGE,
    policies: [],
  });
  return rendered.objects.map(idOf);
}

export interface RelayTiming {
  /** performance.now() when the benchmark started applying it */
  appliedAt: number;
  childrenAt?: number;
  statusAt?: number;
  doneAt?: number;
}

export class ReconcileTracker {
  private readonly informers: Informer[] = [];
  private readonly firstSeen = new Map<string, number>();
  /** child id -> relay keys waiting for it */
  private readonly waitingFor = new Map<string, string[]>();
  private readonly expected = new Map<string, { children: string[]; timing: RelayTiming }>();
  private readonly waiters = new Map<string, () => void>();

  constructor(private readonly admin: KubeClient) {}

  async start(): Promise<void> {
    const opts = { logger: silentLogger, watchTimeoutSeconds: [600, 900] as [number, number] };
    const relays = new Informer<EmailRelay>(this.admin, resourceType('EmailRelay'), opts);
    relays.addHandlers({ onAdd: (r) => this.onRelay(r), onUpdate: (_, r) => this.onRelay(r) });
    this.informers.push(relays as Informer);
    for (const kind of CHILD_KINDS) {
      const inf = new Informer(this.admin, resourceType(kind), { ...opts, labelSelector: MANAGED_SELECTOR });
      inf.addHandlers({ onAdd: (o) => this.onChild(o) });
      this.informers.push(inf);
    }
    for (const inf of this.informers) inf.start();
    await Promise.all(this.informers.map((i) => i.waitForSync()));
  }

  async stop(): Promise<void> {
    await Promise.all(this.informers.map((i) => i.stop()));
  }

  /** Call before applying the relay. */
  expect(key: string, children: string[]): RelayTiming {
    const timing: RelayTiming = { appliedAt: performance.now() };
    this.expected.set(key, { children, timing });
    for (const c of children) {
      const list = this.waitingFor.get(c);
      if (list) list.push(key);
      else this.waitingFor.set(c, [key]);
    }
    return timing;
  }

  timing(key: string): RelayTiming | undefined {
    return this.expected.get(key)?.timing;
  }

  /** Resolves when the relay is done; rejects after timeoutMs. */
  waitDone(key: string, timeoutMs: number): Promise<RelayTiming> {
    const e = this.expected.get(key);
    if (!e) return Promise.reject(new Error(`not tracking ${key}`));
    if (e.timing.doneAt !== undefined) return Promise.resolve(e.timing);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(key);
        const missing = e.children.filter((c) => !this.firstSeen.has(c));
        reject(
          new Error(
            `${key} not reconciled after ${timeoutMs} ms: ${missing.length ? `missing ${missing.join(', ')}` : 'children exist'}; ` +
              `status ${e.timing.statusAt === undefined ? 'not observed' : 'observed'}`,
          ),
        );
      }, timeoutMs);
      timer.unref();
      this.waiters.set(key, () => {
        clearTimeout(timer);
        resolve(e.timing);
      });
    });
  }

  /** How many of `keys` are done. */
  doneCount(keys: string[]): number {
    return keys.filter((k) => this.expected.get(k)?.timing.doneAt !== undefined).length;
  }

  private onChild(o: KubeObject): void {
    const id = idOf(o);
    if (this.firstSeen.has(id)) return;
    const now = performance.now();
    this.firstSeen.set(id, now);
    for (const key of this.waitingFor.get(id) ?? []) this.check(key, now);
  }

  private onRelay(r: EmailRelay): void {
    const key = `${r.metadata.namespace}/${r.metadata.name}`;
    const e = this.expected.get(key);
    if (!e || e.timing.statusAt !== undefined) return;
    const g = r.metadata.generation;
    if (g !== undefined && r.status?.observedGeneration === g) {
      e.timing.statusAt = performance.now();
      this.check(key, e.timing.statusAt);
    }
  }

  private check(key: string, now: number): void {
    const e = this.expected.get(key);
    if (!e || e.timing.doneAt !== undefined) return;
    if (e.timing.childrenAt === undefined && e.children.every((c) => this.firstSeen.has(c)))
      e.timing.childrenAt = now;
    if (e.timing.childrenAt !== undefined && e.timing.statusAt !== undefined) {
      e.timing.doneAt = now;
      this.waiters.get(key)?.();
      this.waiters.delete(key);
    }
  }
}
