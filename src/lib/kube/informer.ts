import type { Logger } from '../logger.ts';
import { ApiError, isGone, type KubeClient } from './client.ts';
import type { KubeObject } from './object.ts';
import { objectKey, type ResourceType, resourcePath } from './resources.ts';

/**
 * List-then-watch into an in-memory cache, one reflector per namespace (or one for all),
 * like client-go's SharedInformer. Not @kubernetes/client-node's ListWatch: its 2.0.x watches
 * drop healthy connections and it has no watchdog. Here every watch carries a server-side
 * timeout and a client-side deadline a little later, so a silently dead connection is noticed;
 * 410 Gone relists; errors back off and relist.
 */

export interface InformerHandlers<T extends KubeObject> {
  onAdd?(obj: T): void;
  onUpdate?(oldObj: T, newObj: T): void;
  onDelete?(obj: T): void;
}

export interface InformerOptions<T extends KubeObject = KubeObject> {
  /** Namespaces to watch; undefined or [] watches all (or a cluster-scoped kind). */
  namespaces?: string[];
  labelSelector?: string;
  /** e.g. `metadata.name=x`: lets RBAC scope a list/watch by resourceNames to that one object. */
  fieldSelector?: string;
  logger: Logger;
  /** Server-side watch timeout bounds (seconds); a random value in between, as client-go does. */
  watchTimeoutSeconds?: [number, number];
  /**
   * What the cache keeps of each object (client-go's SetTransform), e.g. the three fields of a
   * Pod the relay reads. By default everything but metadata.managedFields, which no reader uses
   * and which is a third of a typical object.
   */
  transform?: (obj: T) => T;
}

function withoutManagedFields<T extends KubeObject>(obj: T): T {
  if (!obj.metadata || !('managedFields' in obj.metadata)) return obj;
  const { managedFields: _, ...metadata } = obj.metadata as T['metadata'] & { managedFields?: unknown };
  return { ...obj, metadata };
}

interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

export class Informer<T extends KubeObject = KubeObject> {
  private readonly store = new Map<string, T>();
  private readonly handlers: InformerHandlers<T>[] = [];
  private readonly controller = new AbortController();
  private readonly synced = new Set<string>();
  private readonly scopes: (string | undefined)[];
  private readonly transform: (obj: T) => T;
  private running: Promise<void>[] = [];
  private syncWaiters: (() => void)[] = [];
  /** Watch (re)starts, for metrics and tests. */
  restarts = 0;

  constructor(
    private readonly client: KubeClient,
    readonly type: ResourceType,
    private readonly opts: InformerOptions<T>,
  ) {
    this.scopes = type.namespaced && opts.namespaces?.length ? [...opts.namespaces] : [undefined];
    this.transform = opts.transform ?? withoutManagedFields;
  }

  addHandlers(h: InformerHandlers<T>): void {
    this.handlers.push(h);
  }

  start(): void {
    this.running = this.scopes.map((ns) => this.reflect(ns));
  }

  async stop(): Promise<void> {
    this.controller.abort();
    await Promise.allSettled(this.running);
  }

  get hasSynced(): boolean {
    return this.synced.size === this.scopes.length;
  }

  waitForSync(): Promise<void> {
    if (this.hasSynced) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  get(namespace: string | undefined, name: string): T | undefined {
    return this.store.get(objectKey(this.type.namespaced ? namespace : undefined, name));
  }

  list(namespace?: string): T[] {
    const all = [...this.store.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata.namespace === namespace);
  }

  private inScope(obj: T, ns: string | undefined): boolean {
    return ns === undefined || obj.metadata.namespace === ns;
  }

  private key(obj: T): string {
    return objectKey(this.type.namespaced ? obj.metadata.namespace : undefined, obj.metadata.name);
  }

  private upsert(obj: T): void {
    const key = this.key(obj);
    const old = this.store.get(key);
    this.store.set(key, obj);
    for (const h of this.handlers) {
      if (old) {
        if (old.metadata.resourceVersion !== obj.metadata.resourceVersion) h.onUpdate?.(old, obj);
      } else h.onAdd?.(obj);
    }
  }

  private remove(obj: T): void {
    const key = this.key(obj);
    const old = this.store.get(key);
    this.store.delete(key);
    for (const h of this.handlers) h.onDelete?.(old ?? obj);
  }

  /** Replaces the cache of one scope with a fresh list, emitting the differences. */
  private replace(items: T[], ns: string | undefined): void {
    const seen = new Set<string>();
    for (const item of items) {
      seen.add(this.key(item));
      this.upsert(item);
    }
    for (const [key, obj] of this.store) if (this.inScope(obj, ns) && !seen.has(key)) this.remove(obj);
  }

  private async listScope(ns: string | undefined): Promise<{ items: T[]; resourceVersion: string }> {
    const items: T[] = [];
    let cont: string | undefined;
    let rv = '';
    do {
      const page = await this.client.get<{
        items: T[];
        metadata: { resourceVersion: string; continue?: string };
      }>(resourcePath(this.type, ns), {
        labelSelector: this.opts.labelSelector,
        fieldSelector: this.opts.fieldSelector,
        limit: 500,
        continue: cont,
      });
      // List responses leave out apiVersion/kind of the items.
      for (const item of page.items)
        items.push(this.transform({ ...item, apiVersion: this.type.apiVersion, kind: this.type.kind }));
      rv = page.metadata.resourceVersion;
      cont = page.metadata.continue || undefined;
    } while (cont);
    return { items, resourceVersion: rv };
  }

  private async reflect(ns: string | undefined): Promise<void> {
    const signal = this.controller.signal;
    const log = this.opts.logger.child({ informer: this.type.kind, namespace: ns ?? '*' });
    let failures = 0;
    while (!signal.aborted) {
      try {
        const { items, resourceVersion } = await this.listScope(ns);
        this.replace(items, ns);
        this.markSynced(ns);
        let rv = resourceVersion;
        // Watch until the watch must be re-listed (410) or fails.
        while (!signal.aborted) {
          rv = await this.watchOnce(ns, rv, signal);
          failures = 0;
        }
      } catch (err) {
        if (signal.aborted) return;
        if (isGone(err)) {
          log.debug('watch expired (410 Gone); relisting');
          continue;
        }
        failures++;
        const delay = Math.min(30_000, 500 * 2 ** Math.min(failures, 6));
        log.warn({ err: (err as Error).message, retryInMs: delay }, 'list/watch failed');
        await sleep(delay, signal);
      }
    }
  }

  private markSynced(ns: string | undefined): void {
    this.synced.add(ns ?? '*');
    if (this.hasSynced) for (const w of this.syncWaiters.splice(0)) w();
  }

  /** One watch request from rv; returns the last resourceVersion seen. */
  private async watchOnce(ns: string | undefined, rv: string, outer: AbortSignal): Promise<string> {
    this.restarts++;
    const [lo, hi] = this.opts.watchTimeoutSeconds ?? [300, 600];
    const timeoutSeconds = Math.floor(lo + Math.random() * (hi - lo));
    const ctl = new AbortController();
    const abort = () => ctl.abort();
    outer.addEventListener('abort', abort);
    // Watchdog: the server ends the watch after timeoutSeconds; if it has not, the connection is dead.
    const watchdog = setTimeout(abort, (timeoutSeconds + 30) * 1000);
    try {
      const res = await this.client.open('GET', resourcePath(this.type, ns), {
        query: {
          watch: 1,
          resourceVersion: rv,
          allowWatchBookmarks: true,
          timeoutSeconds,
          labelSelector: this.opts.labelSelector,
          fieldSelector: this.opts.fieldSelector,
        },
        signal: ctl.signal,
      });
      if ((res.statusCode ?? 0) >= 400) {
        const chunks: Buffer[] = [];
        for await (const c of res) chunks.push(c as Buffer);
        throw new ApiError(res.statusCode ?? 0, 'WatchFailed', Buffer.concat(chunks).toString('utf8'));
      }
      let buffered = '';
      for await (const chunk of res) {
        buffered += (chunk as Buffer).toString('utf8');
        let nl = buffered.indexOf('\n');
        while (nl >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          nl = buffered.indexOf('\n');
          if (!line) continue;
          const event = JSON.parse(line) as WatchEvent<T>;
          rv = this.handleEvent(event, rv);
        }
      }
      return rv;
    } catch (err) {
      if (ctl.signal.aborted && !outer.aborted) return rv; // watchdog fired: just watch again
      throw err;
    } finally {
      clearTimeout(watchdog);
      outer.removeEventListener('abort', abort);
    }
  }

  private handleEvent(event: WatchEvent<T>, rv: string): string {
    if (event.type === 'ERROR') {
      const status = event.object as unknown as { code?: number; message?: string };
      throw new ApiError(status.code ?? 500, 'WatchError', status.message ?? 'watch error');
    }
    const obj = event.object;
    const next = obj.metadata?.resourceVersion ?? rv;
    if (event.type === 'BOOKMARK') return next;
    const full = this.transform({ ...obj, apiVersion: this.type.apiVersion, kind: this.type.kind } as T);
    if (event.type === 'DELETED') this.remove(full);
    else this.upsert(full);
    return next;
  }
}
