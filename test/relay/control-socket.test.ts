import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountPowercut } from '../helpers/powercut.ts';
import { relaysPerTest } from '../helpers/relay.ts';
import { type SmtpSink, startSmtpSink } from '../helpers/smtp-sink.ts';

/**
 * `email-relay queue` against a live relay: the listing comes from the relay (complete while it
 * reschedules), `retry` works while an open breaker holds delivery back, and a spool whose path
 * cannot hold a unix socket still gets a control socket (elsewhere, said in the log).
 */

const execFileP = promisify(execFile);
const relayWith = relaysPerTest();

async function queue(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(
      process.execPath,
      ['--import', 'tsx', 'src/cli.ts', 'queue', ...args],
      { timeout: 60_000, maxBuffer: 64 * 1024 * 1024 },
    );
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function send(port: number, n: number): Promise<void> {
  const t = nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    pool: true,
    maxConnections: 8,
  });
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      t.sendMail({ from: 'a@example.com', to: `r${i}@example.com`, subject: `m${i}`, text: `body ${i}` }),
    ),
  );
  t.close();
}

describe('queue CLI on a live relay', () => {
  let sink: SmtpSink;
  beforeAll(async () => {
    sink = await startSmtpSink();
    await sink.stop(); // down: mail is deferred and rescheduled again and again
  });
  afterAll(async () => sink?.dispose());

  it('queue list is complete while the relay reschedules every message each second', async () => {
    const relay = await relayWith({
      upstream: { url: sink.url },
      queue: { retryInitialSeconds: 1, retryMaxSeconds: 1 },
    });
    await send(relay.port, 1000);
    const ids = new Set(relay.spool.entries().map((e) => e.id));
    expect(ids.size).toBe(1000);
    const io0 = relay.spool.stats().io!.fileSyncs;
    await new Promise((r) => setTimeout(r, 2000));
    // The relay rewrites delivery state (new file names) all the time while the CLI lists.
    expect(relay.spool.stats().io!.fileSyncs - io0).toBeGreaterThan(300);
    for (let round = 0; round < 5; round++) {
      const r = await queue(['list', '--spool', relay.spool.dir, '--json']);
      expect(r.code, r.stderr).toBe(0);
      const listed = (JSON.parse(r.stdout) as Array<{ id: string }>).map((m) => m.id);
      expect(listed.length).toBe(1000);
      expect(new Set(listed)).toEqual(ids);
    }
  }, 120_000);

  it('queue retry ID delivers it now although an open breaker suspended the upstream', async () => {
    const relay = await relayWith({
      upstream: { url: sink.url },
      queue: { retryInitialSeconds: 600, retryMaxSeconds: 600 },
    });
    await send(relay.port, 4); // four failed dials: the breaker opens for 600 s
    const deadline = Date.now() + 20_000;
    while (relay.spool.entries().some((e) => e.nextAttemptAt <= Date.now()) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    await sink.restart();
    const id = relay.spool.entries()[0]!.id;
    const r = await queue(['retry', id, '--spool', relay.spool.dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/scheduled now \(running relay/);
    const got = await sink.waitForMessages(1, 20_000);
    expect(got.length).toBeGreaterThanOrEqual(1);
    // The sink has the message before the relay has read its 250 and removed it from the spool.
    const gone = Date.now() + 5000;
    while (relay.spool.entries().some((e) => e.id === id) && Date.now() < gone)
      await new Promise((r) => setTimeout(r, 20));
    expect(relay.spool.entries().some((e) => e.id === id)).toBe(false);
    await sink.stop();
  }, 120_000);

  it('a spool where no socket can be created: the control socket moves elsewhere, the relay starts, the CLI finds it', async () => {
    const base = await relayWith({});
    const spoolDir = join(base.dir, 'other-spool');
    // What listen() meets on a volume without sockets, made real here: the path cannot be bound.
    mkdirSync(join(spoolDir, 'control.sock'), { recursive: true });
    writeFileSync(join(spoolDir, 'control.sock', 'in-the-way'), '');
    const relay = await relayWith({ spool: { dir: spoolDir }, upstream: { url: 'smtp://127.0.0.1:1' } });
    await send(relay.port, 3);
    const r = await queue(['list', '--spool', relay.spool.dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/-- \d+ Kbytes in 3 Requests\./);
    const id = relay.spool.entries()[0]!.id;
    expect((await queue(['delete', id, '--spool', relay.spool.dir])).stdout).toMatch(
      /deleted \(running relay/,
    );
    expect(relay.spool.entries()).toHaveLength(2);
  }, 120_000);

  it('a spool on a FUSE volume without sockets (listen ENOSYS): the relay starts and the CLI reaches it', async () => {
    const fuse = await mountPowercut(); // no mknod: binding a unix socket there fails with ENOSYS
    try {
      const relay = await relayWith({
        spool: { dir: join(fuse.mount, 'spool') },
        upstream: { url: 'smtp://127.0.0.1:1' },
      });
      await send(relay.port, 2);
      const r = await queue(['list', '--spool', relay.spool.dir]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/-- \d+ Kbytes in 2 Requests\./);
      await relay.stop();
    } finally {
      fuse.dispose();
    }
  }, 120_000);
});
