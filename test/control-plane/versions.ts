// Pinned upstream versions of the test control plane. Bumping KUBERNETES means:
// `npm run control-plane -- gomod` (regenerates go/*/go.mod + go.sum from upstream),
// then set ETCD to the version in k8s.io/kubernetes' build/dependencies.yaml.

/** k8s.io/kubernetes release; its staging modules are published as v0.<minor>.<patch>. */
export const KUBERNETES = 'v1.37.2';

/** go.etcd.io/etcd/server/v3 release that KUBERNETES is tested with (build/dependencies.yaml). */
export const ETCD = 'v3.7.0';

/** v1.37.2 -> v0.37.2: the tag of every k8s.io staging module cut from that release. */
export function stagingVersion(kubernetes: string = KUBERNETES): string {
  const m = /^v1\.(\d+)\.(\d+)$/.exec(kubernetes);
  if (!m) throw new Error(`not a Kubernetes release version: ${kubernetes}`);
  return `v0.${m[1]}.${m[2]}`;
}

/** Cache key: binaries for one version pair live in their own directory. */
export function versionKey(): string {
  return `${KUBERNETES}-${ETCD}`;
}

/** One Go module (checked in under test/control-plane/go/<dir>) per upstream with its own dependency graph. */
export interface GoModule {
  /** Directory under test/control-plane/go holding go.mod and go.sum. */
  dir: string;
  /** Module path of the generated (never published) main module. */
  path: string;
  /** Upstream module the binaries come from. */
  upstream: string;
  version: string;
  binaries: { name: string; pkg: string }[];
}

export const KUBERNETES_MODULE: GoModule = {
  dir: 'kubernetes',
  path: 'email-relay.test/control-plane/kubernetes',
  upstream: 'k8s.io/kubernetes',
  version: KUBERNETES,
  binaries: [
    { name: 'kube-apiserver', pkg: 'k8s.io/kubernetes/cmd/kube-apiserver' },
    { name: 'kubectl', pkg: 'k8s.io/kubernetes/cmd/kubectl' },
    { name: 'kube-controller-manager', pkg: 'k8s.io/kubernetes/cmd/kube-controller-manager' },
  ],
};

export const ETCD_MODULE: GoModule = {
  dir: 'etcd',
  path: 'email-relay.test/control-plane/etcd',
  upstream: 'go.etcd.io/etcd/server/v3',
  version: ETCD,
  // The module root is etcd's `main` package (server/main.go).
  binaries: [{ name: 'etcd', pkg: 'go.etcd.io/etcd/server/v3' }],
};

/** Helm, for the chart tests (deploy/helm): lint, template, install into the test cluster. */
export const HELM_MODULE: GoModule = {
  dir: 'helm',
  path: 'email-relay.test/control-plane/helm',
  upstream: 'helm.sh/helm/v4',
  version: 'v4.3.2',
  binaries: [{ name: 'helm', pkg: 'helm.sh/helm/v4/cmd/helm' }],
};

export const GO_MODULES: readonly GoModule[] = [ETCD_MODULE, KUBERNETES_MODULE, HELM_MODULE];
