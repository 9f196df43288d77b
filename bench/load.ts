import { existsSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { percentile, run } from './util.ts';

/**
 * Load generators. smtp-source (Postfix's) for throughput: the same client for both systems,
 * one connection per message as its default. And a small SMTP client of our own for latency:
 * it pipelines MAIL/RCPT/DATA, reuses its connections, and times each message from the moment
 * the final "." is handed to the kernel to the arrival of the 250 reply. Run it in its own
 * process (`node --import tsx bench/load.ts ...`) so nothing else shares its event loop.
 */

export const SMTP_SOURCE = ['/usr/sbin/smtp-source', '/usr/lib/postfix/sbin/smtp-source'].find(existsSync);

export interface SourceOptions {
  port: number;
  sessions: number;
  messages: number;
  /** payload bytes (smtp-source -l; headers come on top) */
  size: number;
  /** -d: send every message of a session over one connection */
  reuse?: boolean;
  timeoutMs: number;
}

/** Runs smtp-source to completion; resolves with the wall time it took. */
export async function smtpSource(o: SourceOptions): Promise<{ seconds: number }> {
  if (!SMTP_SOURCE) throw new Error('smtp-source not found (Debian: apt-get install postfix)');
  const args = [
    '-s',
    `${o.sessions}`,
    '-m',
    `${o.messages}`,
    '-l',
    `${o.size}`,
    '-M',
    'client.bench.example.com',
  ];
  args.push('-f', 'sender@client.bench.example.com', '-t', 'rcpt@example.org', ...(o.reuse ? ['-d'] : []));
  const t0 = performance.now();
  const r = await run(SMTP_SOURCE, [...args, `127.0.0.1:${o.port}`], o.timeoutMs);
  const seconds = (performance.now() - t0) / 1000;
  if (r.code !== 0)
    throw new Error(`smtp-source exited ${r.code} after ${seconds.toFixed(1)} s: ${r.stderr.trim()}`);
  return { seconds };
}

export interface LoadOptions {
  port: number;
  sessions: number;
  messages: number;
  /** payload bytes, as smtp-source -l */
  size: number;
  /** offered messages per second over all sessions; 0 = as fast as the server answers */
  rate: number;
  timeoutMs: number;
  /** write every request here, one JSON line each: {t: epoch ms of the final dot, ms: latency, s: session} */
  trace?: string;
}

export interface LoadResult {
  sent: number;
  failed: number;
  errors: string[];
  seconds: number;
  /** final dot -> 250, milliseconds */
  latency: { p50: number; p90: number; p99: number; max: number; mean: number };
}

interface Reply {
  code: number;
  text: string;
  at: number;
}

/** One SMTP client connection: replies are timestamped when they arrive. */
class Client {
  private buf = '';
  private lines: string[] = [];
  private replies: Reply[] = [];
  private waiter: (() => void) | undefined;
  private error: Error | undefined;
  pipelining = false;

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.onData(d.toString('latin1')));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('connection closed')));
  }

  static open(port: number): Promise<Client> {
    return new Promise((resolve, reject) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new Client(s));
      });
      s.once('error', reject);
    });
  }

  private fail(err: Error): void {
    this.error ??= err;
    this.waiter?.();
  }

  private onData(text: string): void {
    const at = performance.now();
    this.buf += text;
    let nl = this.buf.indexOf('\n');
    while (nl >= 0) {
      const line = this.buf.slice(0, nl).replace(/\r$/, '');
      this.buf = this.buf.slice(nl + 1);
      this.lines.push(line);
      if (!/^\d{3}-/.test(line)) {
        this.replies.push({ code: Number(line.slice(0, 3)), text: this.lines.join('\n'), at });
        this.lines = [];
      }
      nl = this.buf.indexOf('\n');
    }
    this.waiter?.();
  }

  async reply(): Promise<Reply> {
    for (;;) {
      const r = this.replies.shift();
      if (r) return r;
      if (this.error) throw this.error;
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = undefined;
    }
  }

  async expect(code: number): Promise<Reply> {
    const r = await this.reply();
    if (r.code !== code) throw new Error(`expected ${code}, got: ${r.text}`);
    return r;
  }

  /** Resolves once the data is handed to the kernel. */
  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) =>
      this.socket.write(data, (err) => (err ? reject(err) : resolve())),
    );
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Message payload as smtp-source builds it: `size` bytes of 78-character lines. */
export function payload(size: number): Buffer {
  const line = `${'x'.repeat(76)}\r\n`;
  const full = line.repeat(Math.floor(size / line.length));
  const rest = size - full.length;
  return Buffer.from(full + (rest >= 2 ? `${'y'.repeat(rest - 2)}\r\n` : ''), 'latin1');
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const body = payload(o.size);
  const latencies: number[] = [];
  const requests: string[] = [];
  const errors: string[] = [];
  let next = 0;
  let failed = 0;
  const t0 = performance.now();
  const deadline = t0 + o.timeoutMs;
  const clients = new Set<Client>();

  const session = async (s: number) => {
    let client: Client | undefined;
    while (next < o.messages && performance.now() < deadline) {
      const i = next++;
      if (o.rate > 0) {
        const due = t0 + (i * 1000) / o.rate;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      try {
        if (!client) {
          client = await Client.open(o.port);
          clients.add(client);
          await client.expect(220);
          await client.write('EHLO client.bench.example.com\r\n');
          client.pipelining = /^250[- ]PIPELINING$/im.test((await client.expect(250)).text);
        }
        const headers =
          `From: <sender@client.bench.example.com>\r\nTo: <rcpt@example.org>\r\n` +
          `Subject: bench ${s}.${i}\r\nMessage-ID: <${i}.${s}.${t0}@client.bench.example.com>\r\n\r\n`;
        const cmds = [
          'MAIL FROM:<sender@client.bench.example.com>\r\n',
          'RCPT TO:<rcpt@example.org>\r\n',
          'DATA\r\n',
        ];
        if (client.pipelining) {
          await client.write(cmds.join(''));
          await client.expect(250);
          await client.expect(250);
        } else {
          await client.write(cmds[0]!);
          await client.expect(250);
          await client.write(cmds[1]!);
          await client.expect(250);
          await client.write(cmds[2]!);
        }
        await client.expect(354);
        await client.write(headers);
        await client.write(body);
        const dot = performance.now();
        await client.write('.\r\n');
        const r = await client.expect(250);
        latencies.push(r.at - dot);
        if (o.trace)
          requests.push(
            `{"t":${(performance.timeOrigin + dot).toFixed(3)},"ms":${(r.at - dot).toFixed(3)},"s":${s}}\n`,
          );
      } catch (err) {
        failed++;
        if (errors.length < 10) errors.push((err as Error).message);
        client?.close();
        if (client) clients.delete(client);
        client = undefined;
      }
    }
    if (client) {
      await client.write('QUIT\r\n').catch(() => undefined);
      client.close();
    }
  };

  await Promise.all(Array.from({ length: o.sessions }, (_, s) => session(s)));
  for (const c of clients) c.close();
  const seconds = (performance.now() - t0) / 1000;
  if (o.trace) writeFileSync(o.trace, requests.join(''));
  latencies.sort((a, b) => a - b);
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return {
    sent: latencies.length,
    failed,
    errors,
    seconds: r2(seconds),
    latency: {
      p50: r2(percentile(latencies, 0.5)),
      p90: r2(percentile(latencies, 0.9)),
      p99: r2(percentile(latencies, 0.99)),
      max: r2(latencies.at(-1) ?? Number.NaN),
      mean: r2(latencies.reduce((a, b) => a + b, 0) / (latencies.length || 1)),
    },
  };
}

/** Runs the latency client in a child process and returns its result. */
export async function runLoadProcess(o: LoadOptions): Promise<LoadResult> {
  const args = ['--import', 'tsx', new URL(import.meta.url).pathname];
  for (const [k, v] of Object.entries(o)) if (v !== undefined) args.push(`--${k}`, String(v));
  const r = await run(process.execPath, args, o.timeoutMs + 30_000);
  if (r.code !== 0) throw new Error(`load client exited ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as LoadResult;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      sessions: { type: 'string', default: '1' },
      messages: { type: 'string', default: '100' },
      size: { type: 'string', default: '2048' },
      rate: { type: 'string', default: '0' },
      timeoutMs: { type: 'string', default: '120000' },
      trace: { type: 'string' },
    },
  });
  if (!values.port) throw new Error('usage: load.ts --port N [--sessions N --messages N --size B --rate R]');
  const result = await runLoad({
    port: Number(values.port),
    sessions: Number(values.sessions),
    messages: Number(values.messages),
    size: Number(values.size),
    rate: Number(values.rate),
    timeoutMs: Number(values.timeoutMs),
    ...(values.trace ? { trace: values.trace } : {}),
  });
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
