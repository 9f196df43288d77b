// Pinned upstream versions of the test control plane. Bumping KUBERNETES means:
// `npm run control-plane -- gomod` (regenerates go/*/go.mod + go.sum from upstream),
// then set ETCD to the version in k8s.io/kubernetes' build/dependencies.yaml.

/** k8s.io/kubernetes release; its staging modules are published as v0.<minor>.<patch>. */
export const KUBERNETES = 'v1.37.2';

/** go.etcd.io/etcd/server/v3 release that KUBERNETES is tested with (build/dependencies.yaml). */
export const ETCD = 'v3.7.0';

/** Node mode only: cluster DNS (a minimal main with the plugins a cluster.local resolver needs). */
export const COREDNS = 'v1.15.0';

/** Node mode only: NetworkPolicy enforcement (kube-router's firewall controller alone). */
export const KUBE_ROUTER = 'v2.1.0';

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
  /** Go sources checked in next to go.mod (a main package of our own); else a generated tools.go. */
  sources?: string[];
  /** Only `up --node` needs it: the plain control plane does not wait for its build. */
  nodeOnly?: boolean;
  /**
   * Upstream's go.mod is not tidy (`go mod tidy` would add modules it lacks at their latest versions
   * and drag grpc/otel forward): take its require list verbatim instead and record go.sum from it.
   */
  copyRequires?: boolean;
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
    // Node mode; built in the same `go build`, so they share the compile of everything above.
    { name: 'kube-scheduler', pkg: 'k8s.io/kubernetes/cmd/kube-scheduler' },
    { name: 'kubelet', pkg: 'k8s.io/kubernetes/cmd/kubelet' },
    { name: 'kube-proxy', pkg: 'k8s.io/kubernetes/cmd/kube-proxy' },
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

export const COREDNS_MODULE: GoModule = {
  dir: 'coredns',
  path: 'email-relay.test/control-plane/coredns',
  upstream: 'github.com/coredns/coredns',
  version: COREDNS,
  // go/coredns/main.go: coremain with 7 plugins and no `forward`, so no query can leave the node.
  binaries: [{ name: 'coredns', pkg: 'email-relay.test/control-plane/coredns' }],
  sources: ['main.go'],
  nodeOnly: true,
};

export const KUBE_ROUTER_MODULE: GoModule = {
  dir: 'kube-router',
  path: 'email-relay.test/control-plane/kube-router',
  upstream: 'github.com/cloudnativelabs/kube-router/v2',
  version: KUBE_ROUTER,
  binaries: [{ name: 'kube-router', pkg: 'github.com/cloudnativelabs/kube-router/v2/cmd/kube-router' }],
  nodeOnly: true,
  copyRequires: true,
};

export const GO_MODULES: readonly GoModule[] = [
  ETCD_MODULE,
  KUBERNETES_MODULE,
  COREDNS_MODULE,
  KUBE_ROUTER_MODULE,
  HELM_MODULE,
];
