import { join } from 'node:path';
import { cacheRoot } from './paths.ts';
import { SERVICE_CLUSTER_IP_RANGE } from './pki.ts';

// Addresses and config files of the single test node. Everything lives in one private network
// namespace: the node's "NIC" is a veth pair with both ends inside it and no route out, so nothing the
// node or its pods do can reach beyond loopback and namespaces this harness made.

export const NODE_NAME = 'email-relay-node';
/** The node's InternalIP, on node0 inside the namespace. */
export const NODE_IP = '10.200.0.2';
export const POD_CIDR = '10.244.0.0/24';
export const CLUSTER_DOMAIN = 'cluster.local';
/** kube-dns Service IP (kubelet's clusterDNS); CoreDNS itself runs as a process on the node. */
export const CLUSTER_DNS_IP = '10.0.0.10';
/** CNI network name: libcni names its result cache files after it (cleaned on teardown). */
export const CNI_NETWORK = 'email-relay-node';
/** StorageClass served by provisioner.ts (the cluster's default). */
export const STORAGE_CLASS = 'email-relay-hostpath';
export const PROVISIONER_NAME = 'email-relay.test/hostpath';
export { SERVICE_CLUSTER_IP_RANGE };

/**
 * Host-global sysctls kubelet's setupKernelTunables rewrites (protectKernelDefaults: false):
 * recorded before `up --node`, written back by `down`.
 */
export const HOST_SYSCTLS = [
  'vm.overcommit_memory',
  'vm.panic_on_oom',
  'kernel.panic',
  'kernel.panic_on_oops',
  'kernel.keys.root_maxkeys',
  'kernel.keys.root_maxbytes',
];

/** Where each component keeps its files under the node's state dir. */
export function nodePaths(dir: string) {
  return {
    containerdConfig: join(dir, 'containerd', 'config.toml'),
    /**
     * containerd's content store and snapshots outlive a node, like the binaries: unpacking the relay
     * image costs a minute on a busy 2-core machine, finding it already there nothing. Only images
     * stay in it (down deletes every container), and one node runs at a time.
     */
    containerdRoot: join(cacheRoot(), 'node', 'containerd-root'),
    containerdState: join(dir, 'containerd', 'state'),
    containerdSock: join(dir, 'containerd', 'containerd.sock'),
    runcRoot: join(dir, 'containerd', 'runc'),
    cniConfDir: join(dir, 'cni', 'net.d'),
    cniIpamDir: join(dir, 'cni', 'ipam'),
    kubeletConfig: join(dir, 'kubelet', 'config.yaml'),
    kubeletRoot: join(dir, 'kubelet', 'root'),
    kubeletCerts: join(dir, 'kubelet', 'certs'),
    staticPods: join(dir, 'kubelet', 'manifests'),
    podLogs: join(dir, 'kubelet', 'pod-logs'),
    proxyConfig: join(dir, 'kube-proxy.yaml'),
    corefile: join(dir, 'Corefile'),
    volumes: join(dir, 'volumes'),
    images: join(dir, 'images'),
  };
}
export type NodePaths = ReturnType<typeof nodePaths>;

export function containerdConfig(p: NodePaths, pauseImage: string): string {
  return `version = 2
root = "${p.containerdRoot}"
state = "${p.containerdState}"
[grpc]
  address = "${p.containerdSock}"
[ttrpc]
  address = "${p.containerdSock}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${pauseImage}"
  enable_unprivileged_ports = true
  netns_mounts_under_state_dir = true
  # root lacks CAP_SYS_RESOURCE on these machines: a negative oom_score_adj is EPERM and runc fails.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "${p.runcRoot}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${p.cniConfDir}"
`;
}

/** bridge + host-local, no masquerade: the relay sees real pod IPs (its attribution depends on it). */
export function cniConflist(p: NodePaths): string {
  return `${JSON.stringify(
    {
      cniVersion: '0.4.0',
      name: CNI_NETWORK,
      plugins: [
        {
          type: 'bridge',
          bridge: 'cni0',
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            dataDir: p.cniIpamDir,
            ranges: [[{ subnet: POD_CIDR }]],
            routes: [{ dst: '0.0.0.0/0' }],
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    },
    null,
    2,
  )}\n`;
}

export function kubeletConfig(p: NodePaths): string {
  return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These hosts are cgroup v1 (hybrid) without systemd as PID 1.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://${p.containerdSock}
# The apiserver dials the kubelet without a client cert; only the private namespace can reach it.
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
clusterDomain: ${CLUSTER_DOMAIN}
clusterDNS: [${CLUSTER_DNS_IP}]
# Pods get only the cluster's search path, never the host's resolvers.
resolvConf: ""
staticPodPath: ${p.staticPods}
podLogsDir: ${p.podLogs}
protectKernelDefaults: false
makeIPTablesUtilChains: false
serializeImagePulls: false
# A shared CI machine: do not evict test pods over disk or memory the tests do not use.
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
`;
}

export function kubeProxyConfig(kubeconfig: string): string {
  return `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: ${kubeconfig}}
mode: iptables
hostnameOverride: ${NODE_NAME}
clusterCIDR: ${POD_CIDR}
bindAddress: ${NODE_IP}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [${NODE_IP}/32]
# Leave the host-global conntrack table size alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`;
}

/** No `forward` plugin: names outside cluster.local get SERVFAIL instead of a query leaving the node. */
export function corefile(kubeconfig: string): string {
  return `.:53 {
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes ${CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {
        kubeconfig ${kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
    loadbalance
}
`;
}

/** Objects every node cluster starts with: cluster DNS pointing at the node, the default StorageClass. */
export function bootstrapManifests(): unknown[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'kube-dns', namespace: 'kube-system', labels: { 'k8s-app': 'kube-dns' } },
      // Selector-less: CoreDNS runs on the node itself, its endpoint is the node IP.
      spec: {
        clusterIP: CLUSTER_DNS_IP,
        ports: [
          { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 },
          { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 53 },
        ],
      },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name: 'kube-dns-node',
        namespace: 'kube-system',
        labels: {
          'kubernetes.io/service-name': 'kube-dns',
          'endpointslice.kubernetes.io/managed-by': 'email-relay.test',
        },
      },
      addressType: 'IPv4',
      endpoints: [{ addresses: [NODE_IP], conditions: { ready: true }, nodeName: NODE_NAME }],
      ports: [
        { name: 'dns', port: 53, protocol: 'UDP' },
        { name: 'dns-tcp', port: 53, protocol: 'TCP' },
      ],
    },
    {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: {
        name: STORAGE_CLASS,
        annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' },
      },
      provisioner: PROVISIONER_NAME,
      reclaimPolicy: 'Delete',
      volumeBindingMode: 'Immediate',
    },
  ];
}
