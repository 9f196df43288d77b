import type { Logger } from '../../lib/logger.ts';
import type { OperatorMetrics } from './metrics.ts';
import { WorkQueue } from './workqueue.ts';

/** What a reconcile asks for besides success: come back later (e.g. to watch a rollout). */
export interface Result {
  requeueAfterMs?: number;
}

export type Reconcile = (key: string) => Promise<Result | undefined>;

/**
 * Workers draining a WorkQueue into a reconcile function: errors back off per key,
 * successes reset the backoff. The reconcile gets only a key and reads everything else
 * from caches, so it is level-triggered: why it was called never matters.
 */
export class Controller {
  readonly queue: WorkQueue;
  private workers: Promise<void>[] = [];

  constructor(
    readonly name: string,
    private readonly reconcile: Reconcile,
    private readonly opts: { logger: Logger; metrics?: OperatorMetrics; workers?: number },
  ) {
    this.queue = new WorkQueue({ onDepth: (d) => opts.metrics?.depth.set({ name }, d) });
  }

  enqueue(key: string): void {
    this.queue.add(key);
  }

  start(): void {
    const n = this.opts.workers ?? 2;
    for (let i = 0; i < n; i++) this.workers.push(this.work());
  }

  async stop(): Promise<void> {
    this.queue.shutDown();
    await Promise.all(this.workers);
  }

  private async work(): Promise<void> {
    const { logger, metrics } = this.opts;
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      // Reconciles served from caches resolve without I/O: yield, or a resync of thousands would
      // hold the event loop (probes, lease renewal) for seconds.
      await new Promise<void>((resolve) => setImmediate(resolve));
      const end = metrics?.duration.startTimer({ controller: this.name });
      try {
        const result = await this.reconcile(key);
        this.queue.forget(key);
        if (result?.requeueAfterMs) {
          this.queue.addAfter(key, result.requeueAfterMs);
          metrics?.reconciles.inc({ controller: this.name, result: 'requeue' });
        } else metrics?.reconciles.inc({ controller: this.name, result: 'success' });
      } catch (err) {
        const delay = this.queue.addRateLimited(key);
        metrics?.reconciles.inc({ controller: this.name, result: 'error' });
        metrics?.errors.inc({ controller: this.name });
        logger.error(
          { controller: this.name, key, err: (err as Error).message, retryInMs: delay },
          'reconcile failed',
        );
      } finally {
        end?.();
        this.queue.done(key);
      }
    }
  }
}
