import type { TestProject } from 'vitest/node';
import { killNodeSync, loadNodeState, type NodeState, startNode, stopNode } from '../control-plane/node.ts';

// Global setup of the vitest `node` project: one real single-node cluster for the whole run
// (test/control-plane/node.ts), torn down afterwards. With EMAIL_RELAY_NODE_DIR=<state dir of an
// `npm run control-plane -- up --node`> the tests reuse that cluster and leave it running.

const log = (line: string) => process.stderr.write(`[node] ${line}\n`);

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const reuse = process.env['EMAIL_RELAY_NODE_DIR'];
  if (reuse) {
    const node = await loadNodeState(reuse);
    project.provide('nodeDir', node.dir);
    return async () => {};
  }
  const node: NodeState = await startNode({ log });
  // If vitest dies without running teardown, do not leave the node's processes behind.
  const onExit = () => killNodeSync(node);
  process.once('exit', onExit);
  project.provide('nodeDir', node.dir);
  return async () => {
    process.off('exit', onExit);
    await stopNode(await loadNodeState(node.dir), log);
  };
}
