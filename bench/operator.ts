/**
 * Operator benchmarks (issue 6), not implemented yet: the operator is not ready.
 *
 * TODO(operator bench): against the test control plane (test/control-plane: real etcd +
 * kube-apiserver, no kubelet),
 *   1. apply one EmailRelay and time until its children exist (Deployment, Service <name>,
 *      Service <name>-headless, NetworkPolicies, ConfigMap) and status.observedGeneration
 *      matches; report p50/p99 over ~20 runs;
 *   2. apply 500 EmailRelays at once and time until all 500 are reconciled; report the
 *      operator's peak RSS and CPU seconds (bench/proc.ts) and the API requests it made.
 * Wire it in bench/run.ts where `operatorBench()` is called; its result goes to the JSON as `operator`.
 */

export interface OperatorResult {
  skipped: string;
}

export async function operatorBench(): Promise<OperatorResult> {
  return {
    skipped: 'operator benchmarks not implemented yet (the operator is not ready): see bench/operator.ts',
  };
}
