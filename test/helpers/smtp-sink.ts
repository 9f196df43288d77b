import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually } from './poll.ts';
import { freePort } from './ports.ts';

/**
 * Postfix's smtp-sink(1) as a real upstream for delivery tests: it dumps every transaction to a
 * file (-d), and can refuse commands with 4xx (-r) or 5xx (-f), or hang up (-q, or 421 with -Q).
 * It ships only in the Debian `postfix` package, which `npm test` installs; a missing binary fails
 * the tests that need it (never a skip).
 */

const CANDIDATES = [process.env['SMTP_SINK'], '/usr/sbin/smtp-sink', '/usr/lib/postfix/sbin/smtp-sink'];

export function findSmtpSink(): string | undefined {
  for (const c of CANDIDATES) if (c && existsSync(c)) return c;
  const which = spawnSync('sh', ['-c', 'command -v smtp-sink'], { encoding: 'utf8' });
  return which.status === 0 && which.stdout.trim() ? which.stdout.trim() : undefined;
}

export interface SinkMessage {
  file: string;
  helo?: string;
  /** MAIL FROM arguments as received, e.g. "<a@b> SIZE=123 RET=HDRS". */
  mailArgs: string;
  /** The envelope sender without brackets; '' for the null sender. */
  from: string;
  rcptArgs: string[];
  to: string[];
  /** The message as received (smtp-sink's own trace headers removed), with LF line ends. */
  data: string;
}

export interface SmtpSink {
  host: string;
  port: number;
  /** smtp://127.0.0.1:<port> */
  url: string;
  dir: string;
  messages(): Promise<SinkMessage[]>;
  /** Polls until at least `n` transactions were dumped. */
  waitForMessages(n: number, timeoutMs?: number): Promise<SinkMessage[]>;
  /** SMTP sessions that ended so far (smtp-sink -c). */
  sessions(): number;
  /** Stops the sink; the port stays reserved for restart(). */
  stop(): Promise<void>;
  /** Starts again on the same port and dump directory, with other options. */
  restart(args?: string[]): Promise<void>;
  dispose(): Promise<void>;
}

function listening(port: number): boolean {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      const table = spawnSync('cat', [f], { encoding: 'utf8' }).stdout ?? '';
      // local address column ends with :PORT, state 0A is LISTEN
      if (table.split('\n').some((l) => l.includes(hex) && / 0A /.test(l))) return true;
    } catch {}
  }
  return false;
}

export function parseSinkDump(file: string, raw: string): SinkMessage {
  const lines = raw.split('\n');
  const rcptArgs: string[] = [];
  let helo: string | undefined;
  let mailArgs = '';
  let i = 0;
  for (; i < lines.length; i++) {
    const m = /^X-(Client-Addr|Client-Proto|Helo-Args|Mail-Args|Rcpt-Args): ?(.*)$/.exec(lines[i]!);
    if (!m) break;
    if (m[1] === 'Helo-Args') helo = m[2];
    if (m[1] === 'Mail-Args') mailArgs = m[2] ?? '';
    if (m[1] === 'Rcpt-Args') rcptArgs.push(m[2] ?? '');
  }
  // smtp-sink's own Received: header, with its continuation lines
  if (/^Received: .*/.test(lines[i] ?? '') && /smtp-sink/.test(lines.slice(i, i + 3).join(' '))) {
    i++;
    while (/^[ \t]/.test(lines[i] ?? '')) i++;
  }
  // smtp-sink ends every dump with an empty line of its own
  const data = lines.slice(i).join('\n').replace(/\n$/, '');
  const addr = (args: string) => /^<([^>]*)>/.exec(args)?.[1] ?? '';
  return {
    file,
    ...(helo !== undefined ? { helo } : {}),
    mailArgs,
    from: addr(mailArgs),
    rcptArgs,
    to: rcptArgs.map(addr),
    data,
  };
}

export async function startSmtpSink(args: string[] = []): Promise<SmtpSink> {
  const bin = findSmtpSink();
  if (!bin) throw new Error('smtp-sink not found (Debian: apt-get install -y postfix)');
  const dir = await mkdtemp(join(tmpdir(), 'smtp-sink-'));
  // smtp-sink refuses to run as root without -u; the dumps are then written as that user.
  await chmod(dir, 0o777);
  let port = 0;
  let child: ChildProcess | undefined;
  let counters = '';

  const launch = async (extra: string[]) => {
    counters = '';
    const user = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
    const proc = spawn(
      bin,
      [...user, '-c', '-d', `${dir}/%Y%m%d%H%M%S.`, ...extra, `127.0.0.1:${port}`, '100'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    proc.stdout?.on('data', (d: Buffer) => {
      counters += d.toString();
      if (counters.length > 4096) counters = counters.slice(-1024);
    });
    proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', resolve));
    const deadline = Date.now() + 5000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`smtp-sink exited: ${stderr.trim()}`);
      if (listening(port)) break;
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`smtp-sink did not listen on ${port}: ${stderr.trim()}`);
      }
      await Promise.race([exited, new Promise((r) => setTimeout(r, 20))]);
    }
    child = proc;
  };

  for (let tries = 0; ; tries++) {
    port = await freePort();
    try {
      await launch(args);
      break;
    } catch (err) {
      if (tries >= 3) throw err; // the free port was taken in between: pick another
    }
  }

  const messages = async () => {
    const files = (await readdir(dir)).sort();
    const out: SinkMessage[] = [];
    for (const f of files) {
      const raw = await readFile(join(dir, f), 'utf8');
      // smtp-sink keeps the file open while the transaction runs; a complete dump ends with its empty line
      if (!raw.endsWith('\n\n')) continue;
      out.push(parseSinkDump(join(dir, f), raw));
    }
    return out;
  };

  const stop = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await exited;
  };

  return {
    host: '127.0.0.1',
    get port() {
      return port;
    },
    get url() {
      return `smtp://127.0.0.1:${port}`;
    },
    dir,
    messages,
    async waitForMessages(n, timeoutMs = 15_000) {
      return eventually(
        `${n} messages at smtp-sink`,
        async () => {
          const m = await messages();
          return m.length >= n ? m : undefined;
        },
        { timeoutMs, everyMs: 25 },
      );
    },
    sessions() {
      const all = [...counters.matchAll(/sess=(\d+)/g)];
      return Number(all.at(-1)?.[1] ?? 0);
    },
    stop,
    async restart(extra = []) {
      await stop();
      await launch(extra);
    },
    async dispose() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
