import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../../helpers/poll.ts';
import { freePort } from '../../helpers/ports.ts';
import { relaysPerTest } from '../../helpers/relay.ts';
import { SmtpDialog } from '../../helpers/smtp-dialog.ts';
import { type SmtpSink, startSmtpSink } from '../../helpers/smtp-sink.ts';
import { fillUp, mountTmpfs } from '../../helpers/tmpfs.ts';

/**
 * The spool on a real, small file system (tmpfs). The reserve (spool.minFreeBytes) must hold
 * against many concurrent large messages, clients must hear 452 4.3.1 (never a bare write
 * error), and a relay killed on a 100 % full disk must start again, deliver, and refuse new mail.
 */

const relayWith = relaysPerTest();
const MiB = 1024 * 1024;

describe('full disk', () => {
  let fs: ReturnType<typeof mountTmpfs>;
  beforeAll(() => {
    fs = mountTmpfs(96 * MiB);
  });
  afterAll(() => fs?.unmount());

  it('40 concurrent 3 MiB messages never touch the reserve: each gets 250 or 452 4.3.1', async () => {
    const reserve = 24 * MiB;
    const relay = await relayWith({
      spool: { dir: join(fs.dir, 'spool'), minFreeBytes: reserve },
      upstream: { url: 'smtp://127.0.0.1:1' }, // nothing leaves: the mail stays on the disk
      smtp: { maxMessageSize: 10 * MiB },
    });
    let lowest = fs.free();
    const poll = setInterval(() => {
      lowest = Math.min(lowest, fs.free());
    }, 2);
    const line = `${'x'.repeat(998)}\r\n`;
    const body = `Subject: big\r\n\r\n${line.repeat(Math.floor((3 * MiB) / line.length))}`;
    const outcomes = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const c = await SmtpDialog.open(relay.port);
        await c.reply();
        await c.cmd('EHLO c.example.com');
        // Half declare their size, half do not: the reserve must hold either way.
        const mail = await c.cmd(`MAIL FROM:<a${i}@example.com>${i % 2 ? ` SIZE=${body.length}` : ''}`);
        if (!mail[0]!.startsWith('250')) return mail[0]!;
        await c.cmd('RCPT TO:<b@example.com>');
        await c.cmd('DATA');
        c.write(body);
        const r = (await c.cmd('.'))[0]!;
        c.close();
        return r;
      }),
    );
    clearInterval(poll);
    lowest = Math.min(lowest, fs.free());
    const queued = outcomes.filter((r) => r.startsWith('250 2.0.0 Ok: queued as'));
    const refused = outcomes.filter((r) => r === '452 4.3.1 Insufficient system storage');
    console.log(
      `40 x 3 MiB on 96 MiB with a 24 MiB reserve: ${queued.length} queued, ${refused.length} refused 452 4.3.1; lowest free ${(lowest / MiB).toFixed(1)} MiB`,
    );
    expect(queued.length + refused.length, outcomes.join('\n')).toBe(40);
    expect(queued.length).toBeGreaterThan(5);
    expect(refused.length).toBeGreaterThan(0);
    expect(lowest).toBeGreaterThanOrEqual(reserve);
    const ids = new Set(relay.spool.entries().map((e) => e.id));
    for (const r of queued) expect(ids.has(r.split(' ').at(-1)!)).toBe(true);
  }, 120_000);
});

describe('a relay killed on a 100 % full disk', () => {
  let fs: ReturnType<typeof mountTmpfs>;
  let sink: SmtpSink;
  let child: ChildProcess | undefined;
  beforeAll(async () => {
    fs = mountTmpfs(16 * MiB);
    sink = await startSmtpSink();
    await sink.stop(); // the upstream is down: mail stays queued
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    await sink?.dispose();
    fs?.unmount();
  });

  it('starts again, delivers what it holds, refuses new mail with 452 4.3.1, also after a clean stop', async () => {
    const smtpPort = await freePort();
    const httpPort = await freePort();
    const config = join(fs.dir, '..', `${fs.dir.split('/').at(-1)}.yaml`);
    writeFileSync(
      config,
      [
        'hostname: mail.example.com',
        `listen: 127.0.0.1:${smtpPort}`,
        `http: 127.0.0.1:${httpPort}`,
        `spool: {dir: ${join(fs.dir, 'spool')}, minFreeBytes: 1048576}`,
        `upstream: {url: "${sink.url}"}`,
        'queue: {retryInitialSeconds: 1, retryMaxSeconds: 1}',
        'logLevel: info',
      ].join('\n'),
    );
    let log = '';
    const start = () => {
      log = '';
      const p = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'relay', '--config', config], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      p.stdout!.on('data', (d) => (log += d));
      p.stderr!.on('data', (d) => (log += d));
      child = p;
      return p;
    };
    const up = async () => {
      const t0 = Date.now();
      for (;;) {
        if (child!.exitCode !== null) throw new Error(`relay exited ${child!.exitCode}:\n${log}`);
        const ok = await fetch(`http://127.0.0.1:${httpPort}/healthz`).then(
          (r) => r.ok,
          () => false,
        );
        if (ok) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const ms = Date.now() - t0;
      // Log lines go out in batches of up to 20 ms (lib/logger.ts): the start line may trail /healthz.
      await eventually('the "relay started" line', () => (/relay started/.test(log) ? true : undefined), {
        timeoutMs: 2000,
      });
      return ms;
    };

    start();
    await up();
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort, secure: false });
    const big = 'y'.repeat(400 * 1024); // its own file, not the journal
    for (let i = 0; i < 6; i++) {
      await t.sendMail({
        from: 'a@example.com',
        to: `r${i}@example.com`,
        subject: `full-${i}`,
        text: i % 2 ? big : 'small',
      });
    }
    t.close();

    fillUp(fs.dir);
    expect(fs.free()).toBe(0);
    child!.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));

    start();
    const startMs = await up();
    expect(log).toMatch(/relay started/);
    const ready = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.text()).toMatch(/spool filesystem full/);
    const c = await SmtpDialog.open(smtpPort);
    await c.reply();
    await c.cmd('EHLO c.example.com');
    expect(await c.cmd('MAIL FROM:<new@example.com>')).toEqual(['452 4.3.1 Insufficient system storage']);
    c.close();

    // Deliveries first: everything it acknowledged goes out once the upstream is back.
    const t1 = Date.now();
    await sink.restart();
    const got = await sink.waitForMessages(6, 60_000);
    const drainMs = Date.now() - t1;
    expect(new Set(got.map((m) => /Subject: (full-\d)/.exec(m.data)?.[1])).size).toBe(6);
    console.log(
      `restart on a 100 % full disk after kill -9: serving in ${startMs} ms, 6 of 6 delivered ${drainMs} ms after the upstream came back`,
    );

    // A clean stop on a full disk, then a start again.
    fillUp(fs.dir);
    child!.kill('SIGTERM');
    const code = await new Promise((r) => child!.once('exit', r));
    expect(code).toBe(0);
    start();
    await up();
    expect(log).toMatch(/relay started/);
    child!.kill('SIGTERM');
    await new Promise((r) => child!.once('exit', r));
  }, 180_000);
});
