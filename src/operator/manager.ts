import { hostname } from 'node:os';
import { KubeClient, type KubeConfigLike } from '../lib/kube/client.ts';
import type { KubeConnection } from '../lib/kube/connection.ts';
import { Informer } from '../lib/kube/informer.ts';
import type { Logger } from '../lib/logger.ts';
import type { EmailPolicy } from './api/emailpolicy.ts';
import type { EmailRelay } from './api/emailrelay.ts';
import type { KubeObject } from './api/meta.ts';
import { makePolicyReconciler } from './emailpolicy/reconciler.ts';
import { ATTRIBUTION_KEY, makeAttributionReconciler } from './emailrelay/attribution.ts';
import { ATTRIBUTION_BINDING, CLAIM_SELECTOR, MANAGED_SELECTOR } from './emailrelay/names.ts';
import { CHILD_KINDS, makeRelayReconciler, ownerKey } from './emailrelay/reconciler.ts';
import { Controller } from './runtime/controller.ts';
import { KubeEventRecorder } from './runtime/events.ts';
import { LeaderElector } from './runtime/leader.ts';
import { createOperatorMetrics, type OperatorMetrics } from './runtime/metrics.ts';
import { objectKey, resourceType } from './runtime/resources.ts';

/**
 * Wires informers, controllers and leader election together (controller-runtime's Manager).
 * Every replica keeps warm caches; only the leader runs the controllers, so failover costs a
 * lease expiry (or nothing, after a clean shutdown releases the lease), not a cold start.
 */

export interface ManagerOptions {
  /** client-node's KubeConfig (exec plugins) or a plain connection (kubeconfig file, in-cluster). */
  kubeConfig: KubeConfigLike | KubeConnection;
  logger: Logger;
  /**
   * Namespaces to watch; empty: all. Set, the operator works with Roles in those namespaces only
   * and touches no RBAC object: the install binds the relays' attribution role (deploy/namespaced).
   */
  namespaces?: string[];
  defaultImage: string;
  leaderElection?:
    | { namespace: string; name?: string; identity?: string; leaseDurationSeconds?: number }
    | false;
  metrics?: OperatorMetrics;
  /** Re-reconcile everything this often even without events (level-triggered safety net). */
  resyncMs?: number;
  clusterDomain?: string;
  workers?: number;
  /** The operator's own namespace (admitted to the relays' /summary port); default: the lease's. */
  operatorNamespace?: string;
  /** See RelayReconcilerDeps.summaryIntervalMs. */
  summaryIntervalMs?: number;
}

export class Manager {
  readonly client: KubeClient;
  readonly metrics: OperatorMetrics;
  readonly relays: Informer<EmailRelay>;
  readonly policies: Informer<EmailPolicy>;
  readonly namespaces: Informer;
  readonly children = new Map<string, Informer>();
  /** The one attribution ClusterRoleBinding, watched by name; none in namespaced mode. */
  readonly binding: Informer | undefined;
  /** Relay and drain-Job pods, queue volumes and drain Jobs (queues.ts). */
  readonly pods: Informer;
  readonly claims: Informer;
  readonly jobs: Informer;
  readonly relayController: Controller;
  readonly attributionController: Controller | undefined;
  readonly policyController: Controller;
  readonly recorder: KubeEventRecorder;
  private elector: LeaderElector | undefined;
  private leading = false;
  private resyncTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: ManagerOptions) {
    const { logger } = opts;
    this.client = new KubeClient(opts.kubeConfig);
    this.metrics = opts.metrics ?? createOperatorMetrics();
    this.client.observer = (method, path) => {
      if (method !== 'GET')
        this.metrics.writes.inc({ verb: method, resource: path.split('/').slice(-2).join('/') });
    };
    const scoped = { namespaces: opts.namespaces ?? [], logger };
    this.relays = new Informer<EmailRelay>(this.client, resourceType('EmailRelay'), scoped);
    this.policies = new Informer<EmailPolicy>(this.client, resourceType('EmailPolicy'), scoped);
    this.namespaces = new Informer(this.client, resourceType('Namespace'), { logger });
    for (const kind of CHILD_KINDS) {
      this.children.set(
        kind,
        new Informer(this.client, resourceType(kind), { ...scoped, labelSelector: MANAGED_SELECTOR }),
      );
    }
    const clusterWide = !opts.namespaces?.length;
    this.binding = clusterWide
      ? new Informer(this.client, resourceType('ClusterRoleBinding'), {
          logger,
          fieldSelector: `metadata.name=${ATTRIBUTION_BINDING}`,
        })
      : undefined;
    this.pods = new Informer(this.client, resourceType('Pod'), {
      ...scoped,
      labelSelector: MANAGED_SELECTOR,
    });
    this.jobs = new Informer(this.client, resourceType('Job'), {
      ...scoped,
      labelSelector: MANAGED_SELECTOR,
    });
    // volumeClaimTemplates' labels: the selector labels (the StatefulSet controller sets no others).
    this.claims = new Informer(this.client, resourceType('PersistentVolumeClaim'), {
      ...scoped,
      labelSelector: CLAIM_SELECTOR,
    });
    this.recorder = new KubeEventRecorder(this.client, 'email-relay-operator', logger);
    const operatorNamespace =
      opts.operatorNamespace ?? (opts.leaderElection ? opts.leaderElection.namespace : undefined);

    this.relayController = new Controller(
      'emailrelay',
      makeRelayReconciler({
        client: this.client,
        metrics: this.metrics,
        caches: {
          relays: this.relays,
          policies: this.policies,
          namespaces: this.namespaces,
          children: this.children,
          pods: this.pods,
          claims: this.claims,
          jobs: this.jobs,
        },
        recorder: this.recorder,
        defaultImage: opts.defaultImage,
        logger,
        ...(opts.clusterDomain ? { clusterDomain: opts.clusterDomain } : {}),
        ...(operatorNamespace ? { operatorNamespace } : {}),
        ...(opts.summaryIntervalMs ? { summaryIntervalMs: opts.summaryIntervalMs } : {}),
      }),
      { logger, metrics: this.metrics, workers: opts.workers ?? 4 },
    );
    this.policyController = new Controller(
      'emailpolicy',
      makePolicyReconciler({
        client: this.client,
        policies: this.policies,
        relays: this.relays,
        recorder: this.recorder,
        logger,
      }),
      { logger, metrics: this.metrics, workers: 1 },
    );
    this.attributionController = this.binding
      ? new Controller(
          'attribution',
          makeAttributionReconciler({
            client: this.client,
            relays: this.relays,
            binding: this.binding,
            logger,
          }),
          { logger, metrics: this.metrics, workers: 1 },
        )
      : undefined;
    this.wire();
  }

  private wire(): void {
    const key = (o: KubeObject) => objectKey(o.metadata.namespace, o.metadata.name);
    const relayKeysIn = (ns: string) => this.relays.list(ns).map(key);
    const policyKeysIn = (ns: string) => this.policies.list(ns).map(key);
    const each = <T extends KubeObject>(fn: (o: T) => void) => ({
      onAdd: fn,
      onUpdate: (_: T, o: T) => fn(o),
      onDelete: fn,
    });
    this.relays.addHandlers(
      each<EmailRelay>((r) => {
        this.relayController.enqueue(key(r));
        this.attributionController?.enqueue(ATTRIBUTION_KEY);
        for (const k of policyKeysIn(r.metadata.namespace ?? '')) this.policyController.enqueue(k);
      }),
    );
    this.policies.addHandlers(
      each<EmailPolicy>((p) => {
        this.policyController.enqueue(key(p));
        for (const k of relayKeysIn(p.metadata.namespace ?? '')) this.relayController.enqueue(k);
      }),
    );
    // Labels decide admission: a namespace change may change any relay's admitted list.
    this.namespaces.addHandlers({
      onAdd: () => this.enqueueAllRelays(),
      onDelete: () => this.enqueueAllRelays(),
      onUpdate: (a, b) => {
        if (
          canonical(a.metadata.labels) !== canonical(b.metadata.labels) ||
          a.metadata.deletionTimestamp !== b.metadata.deletionTimestamp
        ) {
          this.enqueueAllRelays();
        }
      },
    });
    // A child edited or deleted by hand: reconcile its owner, which puts it back.
    for (const inf of this.children.values()) {
      inf.addHandlers(
        each((o) => {
          const k = ownerKey(o);
          if (k) this.relayController.enqueue(k);
        }),
      );
    }

    // The binding edited by hand (or re-applied by the install) gets its subjects back.
    this.binding?.addHandlers(each(() => this.attributionController?.enqueue(ATTRIBUTION_KEY)));

    // Pods, queue volumes and drain Jobs tell their relay (by instance label) something changed.
    for (const inf of [this.pods, this.claims, this.jobs]) {
      inf.addHandlers(
        each((o) => {
          const name = o.metadata.labels?.['app.kubernetes.io/instance'];
          if (name && o.metadata.namespace)
            this.relayController.enqueue(objectKey(o.metadata.namespace, name));
        }),
      );
    }
  }

  private enqueueAllRelays(): void {
    for (const r of this.relays.list())
      this.relayController.enqueue(objectKey(r.metadata.namespace, r.metadata.name));
  }

  private informers(): Informer[] {
    return [
      this.relays as Informer,
      this.policies as Informer,
      this.namespaces,
      ...(this.binding ? [this.binding] : []),
      this.pods,
      this.claims,
      this.jobs,
      ...this.children.values(),
    ];
  }

  get synced(): boolean {
    return this.informers().every((i) => i.hasSynced);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Starts caches, then (once elected, if electing) the controllers. */
  async start(): Promise<void> {
    for (const inf of this.informers()) inf.start();
    await Promise.all(this.informers().map((i) => i.waitForSync()));
    this.opts.logger.info(
      { namespaces: this.opts.namespaces?.length ? this.opts.namespaces : 'all' },
      'caches synced',
    );
    const le = this.opts.leaderElection;
    if (!le) {
      this.startLeading();
      return;
    }
    this.elector = new LeaderElector(this.client, {
      namespace: le.namespace,
      name: le.name ?? 'email-relay-operator',
      identity: le.identity ?? `${hostname()}_${process.pid}`,
      ...(le.leaseDurationSeconds ? { leaseDurationSeconds: le.leaseDurationSeconds } : {}),
      logger: this.opts.logger,
      onStartedLeading: () => this.startLeading(),
      onStoppedLeading: () => this.stopLeading(),
    });
    this.elector.start();
  }

  private startLeading(): void {
    if (this.leading) return;
    this.leading = true;
    this.metrics.leader.set({ name: 'email-relay-operator' }, 1);
    this.relayController.start();
    this.policyController.start();
    this.attributionController?.start();
    this.attributionController?.enqueue(ATTRIBUTION_KEY);
    this.enqueueAllRelays();
    for (const p of this.policies.list())
      this.policyController.enqueue(objectKey(p.metadata.namespace, p.metadata.name));
    const resync = this.opts.resyncMs ?? 10 * 60_000;
    this.resyncTimer = setInterval(() => this.enqueueAllRelays(), resync);
    this.resyncTimer.unref();
  }

  private stopLeading(): void {
    if (!this.leading) return;
    this.leading = false;
    this.metrics.leader.set({ name: 'email-relay-operator' }, 0);
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    // Lost the lease while running: another replica now acts. Exit rather than race it
    // (controller-runtime does the same); the process supervisor restarts us as a standby.
    if (!this.stopping) {
      this.opts.logger.error('lost leadership; exiting');
      process.exitCode = 1;
      void this.stop().then(() => process.exit(1));
    }
  }

  private stopping = false;

  /** Clean shutdown: stop taking work, finish reconciles in flight, release the lease, stop watches. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    await Promise.all([
      this.relayController.stop(),
      this.policyController.stop(),
      ...(this.attributionController ? [this.attributionController.stop()] : []),
    ]);
    await this.recorder.flush();
    await this.elector?.stop();
    await Promise.all(this.informers().map((i) => i.stop()));
    this.client.close();
  }
}

const canonical = (l: Record<string, string> | undefined) => JSON.stringify(Object.entries(l ?? {}).sort());
