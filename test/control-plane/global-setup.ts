import type { TestProject } from 'vitest/node';
import {
  type ControlPlane,
  killControlPlaneSync,
  startControlPlane,
  stopControlPlane,
} from './control-plane.ts';

// Global setup of the vitest `kube` project: one fresh control plane per test run.
// Contract for tests: `inject('kubeconfig')` (also $KUBECONFIG) is the admin kubeconfig path and
// `inject('kubectl')` a kubectl matching the apiserver, `inject('controllerManager')` whether
// kube-controller-manager runs. A missing tool fails the run: `npm test` installs and builds
// everything these tests need, so there is nothing to skip.

declare module 'vitest' {
  export interface ProvidedContext {
    kubeconfig: string;
    kubectl: string;
    /** kube-controller-manager runs (GC, Deployment -> ReplicaSet, namespace deletion, ...). */
    controllerManager: boolean;
  }
}

const log = (line: string) => process.stderr.write(`[control-plane] ${line}\n`);

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cp: ControlPlane = await startControlPlane({ log });
  // If vitest dies without running teardown, do not leave etcd/apiserver behind.
  const onExit = () => killControlPlaneSync(cp);
  process.once('exit', onExit);

  process.env['KUBECONFIG'] = cp.kubeconfig;
  project.provide('kubeconfig', cp.kubeconfig);
  project.provide('kubectl', cp.binaries.kubectl);
  project.provide(
    'controllerManager',
    cp.processes.some((p) => p.name === 'kube-controller-manager'),
  );
  return async () => {
    process.off('exit', onExit);
    await stopControlPlane(cp);
  };
}
