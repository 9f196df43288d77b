import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, describe, expect, it } from 'vitest';
import { accepting, eventually } from '../../helpers/poll.ts';
import { type SmtpSink, startSmtpSink } from '../../helpers/smtp-sink.ts';

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}

async function waitForPort(port: number, timeoutMs = 20_000): Promise<void> {
  await eventually(`the relay listening on ${port}`, () => accepting(port), { timeoutMs, everyMs: 100 });
}

function startRelayProcess(configFile: string): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'relay', '--config', configFile], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

/**
 * kill -9 of the relay in the middle of a burst of concurrent clients, then a restart: every
 * message that was answered 250 reaches the sink. Repeated at different moments.
 */
describe('kill -9 during a burst loses no acknowledged message', () => {
  let sink: SmtpSink;
  let dir: string;
  const children: ChildProcess[] = [];
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    await sink?.dispose();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('delivers every acknowledged message after a crash and restart', async () => {
    sink = await startSmtpSink();
    dir = await mkdtemp(join(tmpdir(), 'email-relay-crash-'));
    const port = await freePort();
    const configFile = join(dir, 'relay.yaml');
    await writeFile(
      configFile,
      JSON.stringify({
        hostname: 'mail.example.com',
        listen: `127.0.0.1:${port}`,
        spool: { dir: join(dir, 'spool') },
        upstream: { url: `smtp://127.0.0.1:${sink.port}` },
        queue: { retryInitialSeconds: 0.2, retryMaxSeconds: 1 },
        logLevel: 'warn',
      }),
    );

    const acked = new Set<string>();
    for (const [round, killAfterAcks] of [
      [1, 40],
      [2, 150],
      [3, 5],
    ] as const) {
      const child = startRelayProcess(configFile);
      const exited = new Promise((r) => child.once('exit', r));
      children.push(child);
      await waitForPort(port);
      let stop = false;
      let running = 20;
      const clients = Array.from({ length: running }, async (_, c) => {
        const t = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, pool: false });
        for (let i = 0; !stop; i++) {
          const token = `crash-r${round}-c${c}-m${i}`;
          try {
            await t.sendMail({
              from: 'a@example.com',
              to: 'b@example.com',
              subject: token,
              text: `${token}\n`,
            });
            acked.add(token);
          } catch {
            break; // the relay died under us: this message was never acknowledged
          }
        }
        running--;
      });
      const before = acked.size;
      const burstDeadline = Date.now() + 30_000;
      while (acked.size - before < killAfterAcks) {
        if (!running || Date.now() > burstDeadline) {
          throw new Error(
            `round ${round}: only ${acked.size - before} of ${killAfterAcks} messages acknowledged`,
          );
        }
        await new Promise((r) => setTimeout(r, 2));
      }
      child.kill('SIGKILL');
      stop = true;
      await Promise.all(clients);
      await exited;
    }

    // Restart once more and let it drain the queue.
    const last = startRelayProcess(configFile);
    const lastExited = new Promise((r) => last.once('exit', r));
    children.push(last);
    await waitForPort(port);
    const missing = async () => {
      const seen = new Set((await sink.messages()).map((m) => /crash-r\d-c\d+-m\d+/.exec(m.data)?.[0]));
      return [...acked].filter((t) => !seen.has(t));
    };
    const deadline = Date.now() + 90_000;
    while ((await missing()).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    expect(acked.size).toBeGreaterThan(190);
    expect(await missing()).toEqual([]);
    last.kill('SIGTERM');
    await lastExited;
  }, 180_000);
});
