import { isConflict, isNotFound, type KubeClient } from '../../lib/kube/client.ts';
import type { Logger } from '../../lib/logger.ts';
import { resourcePath, resourceType } from './resources.ts';

/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it:
 * acquire when the lease is free or expired, renew every retryPeriod, give up leadership when a
 * renewal has not succeeded within renewDeadline, and on a clean shutdown release the lease so a
 * standby takes over at once instead of after leaseDuration. Expiry is judged by when *this*
 * process last saw the record change, not by the holder's timestamps, so clock skew does not matter.
 */

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds?: number;
  renewDeadlineSeconds?: number;
  retryPeriodSeconds?: number;
  logger: Logger;
  onStartedLeading(): void;
  onStoppedLeading(): void;
}

interface Lease {
  apiVersion: 'coordination.k8s.io/v1';
  kind: 'Lease';
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: {
    holderIdentity?: string | null;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

const microTime = (d = new Date()) => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

export class LeaderElector {
  private leading = false;
  private observed: { record: string; at: number } | undefined;
  private lastRenew = 0;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly path: string;
  private readonly duration: number;
  private readonly deadline: number;
  private readonly retry: number;

  constructor(
    private readonly client: KubeClient,
    private readonly opts: LeaderElectionOptions,
  ) {
    this.path = resourcePath(resourceType('Lease'), opts.namespace, opts.name);
    this.duration = opts.leaseDurationSeconds ?? 15;
    this.deadline = opts.renewDeadlineSeconds ?? 10;
    this.retry = opts.retryPeriodSeconds ?? 2;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    const tick = async () => {
      if (this.stopped) return;
      await this.tryAcquireOrRenew().catch((err: Error) =>
        this.opts.logger.warn({ err: err.message }, 'leader election: lease update failed'),
      );
      if (this.leading && Date.now() - this.lastRenew > this.deadline * 1000)
        this.lose('renew deadline passed');
      if (!this.stopped)
        this.timer = setTimeout(tick, this.retry * 1000 * (this.leading ? 1 : 1 + Math.random() * 0.2));
    };
    void tick();
  }

  private lose(why: string): void {
    if (!this.leading) return;
    this.leading = false;
    this.opts.logger.warn({ why }, 'leader election: lost the lease');
    this.opts.onStoppedLeading();
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const now = new Date();
    let current: Lease | undefined;
    try {
      current = await this.client.get<Lease>(this.path);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const fresh: Lease['spec'] = {
      holderIdentity: this.opts.identity,
      leaseDurationSeconds: this.duration,
      acquireTime: microTime(now),
      renewTime: microTime(now),
      leaseTransitions: 0,
    };
    if (!current) {
      try {
        await this.client.request('POST', this.path.slice(0, this.path.lastIndexOf('/')), {
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { name: this.opts.name, namespace: this.opts.namespace },
            spec: fresh,
          },
        });
      } catch (err) {
        if (isConflict(err)) return; // another candidate created it first
        throw err;
      }
      this.acquired();
      return;
    }
    const record = JSON.stringify(current.spec);
    if (!this.observed || this.observed.record !== record) this.observed = { record, at: Date.now() };
    const holder = current.spec.holderIdentity ?? '';
    const held = holder !== '' && holder !== this.opts.identity;
    const expired =
      Date.now() > this.observed.at + (current.spec.leaseDurationSeconds ?? this.duration) * 1000;
    if (held && !expired) {
      if (this.leading) this.lose(`lease held by ${holder}`);
      return;
    }
    const spec: Lease['spec'] =
      holder === this.opts.identity
        ? { ...current.spec, renewTime: microTime(now), leaseDurationSeconds: this.duration }
        : { ...fresh, leaseTransitions: (current.spec.leaseTransitions ?? 0) + 1 };
    try {
      // PUT with the resourceVersion we read: two candidates cannot both win.
      const updated = await this.client.request<Lease>('PUT', this.path, { body: { ...current, spec } });
      this.observed = { record: JSON.stringify(updated.spec), at: Date.now() };
      this.acquired();
    } catch (err) {
      if (isConflict(err)) return;
      throw err;
    }
  }

  private acquired(): void {
    this.lastRenew = Date.now();
    if (!this.leading) {
      this.leading = true;
      this.opts.logger.info(
        { lease: `${this.opts.namespace}/${this.opts.name}`, identity: this.opts.identity },
        'leader election: leading',
      );
      this.opts.onStartedLeading();
    }
  }

  /** Stops renewing; when leading, releases the lease so a standby takes over immediately. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (!this.leading) return;
    this.leading = false;
    try {
      const current = await this.client.get<Lease>(this.path);
      if (current.spec.holderIdentity === this.opts.identity) {
        await this.client.request('PUT', this.path, {
          body: {
            ...current,
            spec: { ...current.spec, holderIdentity: null, leaseDurationSeconds: 1, renewTime: microTime() },
          },
        });
      }
    } catch (err) {
      this.opts.logger.warn({ err: (err as Error).message }, 'leader election: could not release the lease');
    }
    this.opts.onStoppedLeading();
  }
}
