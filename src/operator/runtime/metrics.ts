import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/** The operator's metrics, named like controller-runtime's so existing dashboards fit. */
export function createOperatorMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  return {
    registry,
    reconciles: new Counter({
      name: 'controller_runtime_reconcile_total',
      help: 'Reconciles by controller and result (success, error, requeue)',
      labelNames: ['controller', 'result'],
      registers: [registry],
    }),
    errors: new Counter({
      name: 'controller_runtime_reconcile_errors_total',
      help: 'Reconciles that failed, by controller',
      labelNames: ['controller'],
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'controller_runtime_reconcile_time_seconds',
      help: 'Time per reconcile',
      labelNames: ['controller'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    depth: new Gauge({
      name: 'workqueue_depth',
      help: 'Keys waiting in the work queue',
      labelNames: ['name'],
      registers: [registry],
    }),
    writes: new Counter({
      name: 'email_relay_operator_api_writes_total',
      help: 'Write requests to the Kubernetes API, by verb and resource',
      labelNames: ['verb', 'resource'],
      registers: [registry],
    }),
    stranded: new Gauge({
      name: 'email_relay_stranded_queues',
      help: 'Queue volumes of a relay that no pod serves and that still hold mail (status.strandedQueues)',
      labelNames: ['namespace', 'relay'],
      registers: [registry],
    }),
    leader: new Gauge({
      name: 'leader_election_master_status',
      help: '1 while this replica leads',
      labelNames: ['name'],
      registers: [registry],
    }),
  };
}
export type OperatorMetrics = ReturnType<typeof createOperatorMetrics>;
