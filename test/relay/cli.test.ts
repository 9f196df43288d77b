import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/poll.ts';
import { freePort } from '../helpers/ports.ts';

const execFileP = promisify(execFile);
const CLI = ['--import', 'tsx', 'src/cli.ts'];

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [...CLI, ...args], { timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const waitFor = <T>(fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> =>
  eventually('the relay process', fn, { timeoutMs, everyMs: 100 });

describe('email-relay relay: configuration errors exit 2 naming the field', () => {
  it('a bad flag value', async () => {
    const r = await cli(['relay', '--listen', 'nonsense']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/listen: expected HOST:PORT/);
  });
  it('an unknown flag', async () => {
    const r = await cli(['relay', '--colour', 'blue']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/colour/);
  });
  it('a bad value in the config file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'email-relay-cli-'));
    const file = join(dir, 'relay.yaml');
    await writeFile(file, 'queue:\n  retryJitter: 7\n');
    const r = await cli(['relay', '--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/queue\.retryJitter/);
    await rm(dir, { recursive: true });
  });
  it('an unknown command', async () => {
    expect((await cli(['frobnicate'])).code).toBe(2);
  });
  it("a hostname that is not a FQDN with Google's relay upstream (it would answer 421 to EHLO for ever)", async () => {
    const r = await cli([
      'relay',
      '--upstream',
      'smtp+starttls://smtp-relay.gmail.com:587',
      '--hostname',
      'relay-0',
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /hostname: "relay-0" is not a fully qualified domain name, and smtp\+starttls:\/\/smtp-relay\.gmail\.com:587 refuses/,
    );
  });
});

describe('a running relay process: probes, metrics, queue CLI, SIGTERM', () => {
  let dir: string;
  let child: ChildProcess;
  let smtpPort: number;
  let httpPort: number;
  let config: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'email-relay-cli-'));
    smtpPort = await freePort();
    httpPort = await freePort();
    config = join(dir, 'relay.yaml');
    // An upstream that refuses connections: mail stays queued for the queue commands to see.
    await writeFile(
      config,
      [
        'hostname: mail.example.com',
        `listen: 127.0.0.1:${smtpPort}`,
        `http: 127.0.0.1:${httpPort}`,
        `spool: {dir: ${join(dir, 'spool')}}`,
        'upstream: {url: "smtp://127.0.0.1:1"}',
        'logLevel: warn',
      ].join('\n'),
    );
    child = spawn(process.execPath, [...CLI, 'relay', '--config', config], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    await waitFor(async () => ((await fetch(`http://127.0.0.1:${httpPort}/healthz`)).ok ? true : undefined));
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('serves /healthz, /readyz and /metrics with the seed metric names', async () => {
    expect((await fetch(`http://127.0.0.1:${httpPort}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status).toBe(200);
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort, secure: false });
    for (let i = 0; i < 3; i++) {
      await t.sendMail({ from: 'a@example.com', to: `r${i}@example.com`, subject: `cli-${i}`, text: 'x' });
    }
    t.close();
    const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    for (const name of [
      'emails_sent_total',
      'email_send_duration_seconds',
      'email_queue_size',
      'email_queue_oldest_message_age_seconds',
      'smtp_connections_total',
      'smtp_rejections_total',
      'email_upstream_replies_total',
      'process_resident_memory_bytes',
    ]) {
      expect(text).toContain(name);
    }
    expect(text).toMatch(/^smtp_messages_received_total 3$/m);
    // The spool filesystem gauges (the disk-full alert and the dashboard read them).
    const free = Number(/^email_spool_filesystem_free_bytes (\S+)$/m.exec(text)?.[1]);
    const size = Number(/^email_spool_filesystem_size_bytes (\S+)$/m.exec(text)?.[1]);
    expect(free).toBeGreaterThan(0);
    expect(size).toBeGreaterThanOrEqual(free);
    expect(text).toMatch(/^email_relay_ready 1$/m);
    await waitFor(async () =>
      /^email_queue_size 3$/m.test(await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text())
        ? true
        : undefined,
    );
  });

  it('lists, shows, retries and deletes queued mail of the running relay', async () => {
    const list = await cli(['queue', 'list', '--config', config]);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/-- \d+ Kbytes in 3 Requests\./);
    const json = JSON.parse((await cli(['queue', 'list', '--config', config, '--json'])).stdout) as {
      id: string;
    }[];
    expect(json).toHaveLength(3);
    const id = json[0]!.id;
    const show = await cli(['queue', 'show', id, '--config', config]);
    expect(show.stdout).toContain(`queue id:     ${id}`);
    expect(show.stdout).toMatch(/Subject: cli-\d/);
    expect((await cli(['queue', 'retry', id, '--config', config])).code).toBe(0);
    expect((await cli(['queue', 'flush', '--config', config])).code).toBe(0);
    const del = await cli(['queue', 'delete', id, '--config', config]);
    expect(del.stdout).toMatch(/deleted \(running relay/);
    expect((await cli(['queue', 'show', id, '--config', config])).code).toBe(1);
    expect((await cli(['queue', 'delete', 'NOSUCHID', '--config', config])).code).toBe(1);
  });

  it('on SIGTERM drains and exits 0, keeping the queue; the queue CLI then works on the files', async () => {
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    const json = JSON.parse((await cli(['queue', 'list', '--config', config, '--json'])).stdout) as {
      id: string;
    }[];
    expect(json).toHaveLength(2);
    const del = await cli(['queue', 'delete', json[0]!.id, '--config', config]);
    expect(del.code).toBe(0);
    expect(del.stdout).toMatch(/deleted$/m);
    expect((await cli(['queue', 'flush', '--config', config])).stdout).toMatch(/1 deferred message now due/);
  });
});
