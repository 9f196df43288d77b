import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findSmtpSink, parseSinkDump, type SinkMessage } from '../helpers/smtp-sink.ts';
import { type NodeCluster, waitUntil } from './cluster.ts';

// Postfix's smtp-sink as the relays' upstream, listening on the node IP inside the node's namespace:
// pods reach it through the bridge, nothing leaves the namespace. Dumps land in a host directory.

export interface NodeSink {
  host: string;
  port: number;
  messages(): Promise<SinkMessage[]>;
  /** Waits until `pred` holds for the dumped messages; returns them. */
  waitFor(what: string, pred: (m: SinkMessage[]) => boolean, timeoutMs?: number): Promise<SinkMessage[]>;
  /** Stops listening (relays then defer and queue); start() again on the same port and dumps. */
  stop(): Promise<void>;
  start(): Promise<void>;
  dispose(): Promise<void>;
}

/** True once `pid` (in the node's namespace) listens on `port`: its /proc view is the namespace's. */
function listening(pid: number, port: number): boolean {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  try {
    return readFileSync(`/proc/${pid}/net/tcp`, 'utf8')
      .split('\n')
      .some((l) => l.includes(hex) && / 0A /.test(l));
  } catch {
    return false;
  }
}

export async function startNodeSink(cluster: NodeCluster, port = 2525): Promise<NodeSink> {
  const bin = findSmtpSink();
  if (!bin) throw new Error('smtp-sink not found (Debian: apt-get install postfix; scripts/test.sh does)');
  const dir = await mkdtemp(join(tmpdir(), 'node-sink-'));
  // smtp-sink refuses to run as root without -u; the dumps are then written as that user.
  await chmod(dir, 0o777);
  let child: ChildProcess | undefined;

  const launch = async () => {
    // -c: session counters; backlog 1000: many relay connections at once under load.
    const proc = cluster.spawnOnNode(bin, [
      '-u',
      'nobody',
      '-c',
      '-d',
      `${dir}/%Y%m%d%H%M%S.`,
      `${cluster.nodeIp}:${port}`,
      '1000',
    ]);
    let stderr = '';
    proc.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    proc.stdout?.resume();
    child = proc;
    await waitUntil(
      `smtp-sink on ${cluster.nodeIp}:${port}`,
      async () => {
        if (proc.exitCode !== null) throw new Error(`smtp-sink exited: ${stderr.trim()}`);
        return proc.pid !== undefined && listening(proc.pid, port);
      },
      10_000,
      50,
    );
  };
  const stop = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await exited;
  };
  const messages = async () => {
    const out: SinkMessage[] = [];
    for (const f of (await readdir(dir)).sort()) {
      const raw = await readFile(join(dir, f), 'utf8');
      // A complete dump ends with smtp-sink's empty line; a running transaction's does not yet.
      if (raw.endsWith('\n\n')) out.push(parseSinkDump(join(dir, f), raw));
    }
    return out;
  };
  await launch();
  return {
    host: cluster.nodeIp,
    port,
    messages,
    waitFor: (what, pred, timeoutMs = 60_000) =>
      waitUntil(
        `sink: ${what}`,
        async () => {
          const m = await messages();
          return pred(m) ? m : undefined;
        },
        timeoutMs,
        250,
      ),
    stop,
    start: launch,
    async dispose() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
