import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NodeBinaries } from './build.ts';
import type { ControlPlane } from './control-plane.ts';
import type { Proc } from './processes.ts';

/** Everything `down`/`status` and the test API need about one `up --node`, persisted as <dir>/node.json. */
export interface NodeState {
  kind: 'node';
  dir: string;
  /** `ip netns` name; every component runs in /run/netns/<netns>. */
  netns: string;
  nodeName: string;
  nodeIp: string;
  /** Admin kubeconfig; its server (127.0.0.1) is reachable only inside the namespace. */
  kubeconfig: string;
  binaries: NodeBinaries;
  /** OCI archives imported into the node's containerd (k8s.io namespace). */
  images: { kind: string; name: string; archive: string; digest: string }[];
  pauseImage: string;
  controlPlane?: ControlPlane;
  /** Node components (containerd, kubelet, ...) in start order; the control plane's are in controlPlane. */
  processes: Proc[];
  /** Host-global sysctls as they were before kubelet ran: written back by `down`. */
  hostSysctls: Record<string, string>;
  /** /run/containerd did not exist before: `down` removes what containerd's shims left there. */
  removeRunContainerd: boolean;
  /** Likewise /var/lib/cni (libcni's result cache). */
  removeVarLibCni: boolean;
  startedAt: string;
}

export async function saveNodeState(state: NodeState): Promise<void> {
  const file = join(state.dir, 'node.json');
  await writeFile(`${file}.tmp`, `${JSON.stringify(state, null, 2)}\n`);
  await rename(`${file}.tmp`, file);
}

export async function loadNodeState(dir: string): Promise<NodeState> {
  return JSON.parse(await readFile(join(dir, 'node.json'), 'utf8')) as NodeState;
}
