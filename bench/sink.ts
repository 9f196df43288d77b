import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { freePort, listening, onCleanup, terminate, waitUntil } from './util.ts';

/**
 * Postfix's smtp-sink as the upstream both systems relay to. It stores nothing (no -d): it
 * counts, and `-c` prints its counters ("sess=N quit=N mesg=N\r") whenever a message completes,
 * which gives the moment the last message arrived without polling a directory.
 */

export const SMTP_SINK = ['/usr/sbin/smtp-sink', '/usr/lib/postfix/sbin/smtp-sink'].find(existsSync);

export class Sink {
  private child: ChildProcess | undefined;
  private tail = '';
  /** Messages received since start (DATA completed). */
  messages = 0;
  private waiters: Array<{ n: number; resolve: (t: number) => void }> = [];
  private stopCleanup: (() => Promise<void>) | undefined;

  private constructor(readonly port: number) {}

  /** Starts a sink on `port` (or a free one). */
  static async start(port?: number): Promise<Sink> {
    for (let tries = 0; ; tries++) {
      const sink = new Sink(port ?? (await freePort()));
      try {
        await sink.launch();
        return sink;
      } catch (err) {
        if (port !== undefined || tries >= 3) throw err;
      }
    }
  }

  get url(): string {
    return `smtp://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  private async launch(): Promise<void> {
    if (!SMTP_SINK) throw new Error('smtp-sink not found (Debian: apt-get install postfix)');
    // smtp-sink refuses to run as root without -u; backlog 256 so no dial is ever refused
    const user = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
    const child = spawn(SMTP_SINK, [...user, '-c', `127.0.0.1:${this.port}`, '256'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => this.onCounters(d.toString()));
    this.child = child;
    this.stopCleanup = onCleanup(() => terminate(child, 2000));
    try {
      await waitUntil(
        `smtp-sink on ${this.port}`,
        async () => {
          if (child.exitCode !== null) throw new Error(`smtp-sink exited: ${stderr.trim()}`);
          return listening(this.port);
        },
        5000,
      );
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  private onCounters(text: string): void {
    this.tail += text;
    const all = [...this.tail.matchAll(/mesg=(\d+)/g)];
    const last = all.at(-1);
    if (last) this.messages = Number(last[1]);
    this.tail = this.tail.slice(this.tail.lastIndexOf('\r') + 1);
    if (!this.waiters.length) return;
    const now = performance.now();
    const done = this.waiters.filter((w) => this.messages >= w.n);
    this.waiters = this.waiters.filter((w) => this.messages < w.n);
    for (const w of done) w.resolve(now);
  }

  /** Resolves with performance.now() of the moment the sink had `n` messages; rejects after timeoutMs. */
  waitFor(n: number, timeoutMs: number): Promise<number> {
    if (this.messages >= n) return Promise.resolve(performance.now());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`sink: ${this.messages} of ${n} messages after ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = {
        n,
        resolve: (t: number) => {
          clearTimeout(timer);
          resolve(t);
        },
      };
      this.waiters.push(waiter);
    });
  }

  async stop(): Promise<void> {
    this.child = undefined;
    await this.stopCleanup?.();
  }
}
