import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { type AddressInfo, createServer, type Server } from 'node:net';

/**
 * A distinct free TCP port on 127.0.0.1 per name: all are held open together so the OS cannot hand
 * out one twice; a small race remains until the components bind them (startControlPlane retries).
 */
export async function freePorts<K extends string>(names: readonly K[]): Promise<Record<K, number>> {
  const servers = await Promise.all(
    names.map(
      () =>
        new Promise<Server>((resolve, reject) => {
          const srv = createServer();
          srv.on('error', reject);
          srv.listen(0, '127.0.0.1', () => resolve(srv));
        }),
    ),
  );
  const ports = Object.fromEntries(servers.map((srv, i) => [names[i], (srv.address() as AddressInfo).port]));
  await Promise.all(servers.map((srv) => new Promise((resolve) => srv.close(resolve))));
  return ports as Record<K, number>;
}

export interface Proc {
  name: string;
  pid: number;
  bin: string;
  log: string;
}

/**
 * Starts `bin` in its own process group, stdout+stderr appended to `log`, not tied to this process:
 * `up` returns while the control plane keeps running.
 */
export function startDetached(name: string, bin: string, args: string[], log: string): Proc {
  const fd = openSync(log, 'a');
  try {
    const child = spawn(bin, args, { detached: true, stdio: ['ignore', fd, fd] });
    if (child.pid === undefined) throw new Error(`failed to start ${bin}`);
    child.on('error', () => {}); // surfaced by the readiness check and the log instead
    child.unref();
    return { name, pid: child.pid, bin, log };
  } finally {
    closeSync(fd);
  }
}

/** True if `pid` is alive and still runs `bin` (pids are recycled; never signal someone else's process). */
export function isRunning(proc: Pick<Proc, 'pid' | 'bin'>): boolean {
  if (!existsSync('/proc/self')) {
    // No procfs (macOS): liveness only.
    try {
      process.kill(proc.pid, 0);
      return true;
    } catch {
      return false;
    }
  }
  try {
    const argv0 = readFileSync(`/proc/${proc.pid}/cmdline`, 'utf8').split('\0')[0];
    const stat = readFileSync(`/proc/${proc.pid}/stat`, 'utf8');
    // State field follows the parenthesised comm; Z = exited, waiting to be reaped.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return argv0 === proc.bin && state !== 'Z';
  } catch {
    return false;
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
export async function stopProcess(proc: Proc, graceMs = 10_000): Promise<void> {
  if (!isRunning(proc)) return;
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(proc.pid, sig);
    } catch {
      // already gone
    }
  };
  signal('SIGTERM');
  if (await waitFor(() => !isRunning(proc), graceMs, 100)) return;
  signal('SIGKILL');
  await waitFor(() => !isRunning(proc), 5_000, 100);
}

/** Polls `check` until it returns true or `timeoutMs` passes; returns whether it succeeded. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  intervalMs = 250,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Waits until a started process is `ready`, failing at once if it exits and naming the last lines
 * of its log either way (what a person needs to see why a component did not come up).
 */
export async function awaitReady(
  name: string,
  proc: Proc,
  ready: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  let died = false;
  const ok = await waitFor(async () => {
    died = !isRunning(proc);
    return died || (await ready().catch(() => false));
  }, timeoutMs);
  if (!ok || died) {
    const why = died ? 'exited' : `not ready after ${timeoutMs / 1000}s`;
    throw new Error(`${name} ${why}; last lines of ${proc.log}:\n${await logTail(proc.log)}`);
  }
}

/** Last lines of a log file, for error messages. */
export async function logTail(path: string, lines = 30): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}
