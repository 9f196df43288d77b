import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { cmd } from '../../../src/plugin/kubectl.ts';
import { parseMetrics } from '../../../src/plugin/observe.ts';
import { probeScript, queueIdOf } from '../../../src/plugin/probe.ts';
import { outboxMessages, relaysPerTest } from '../../helpers/relay.ts';

// The script `kubectl email-relay test-send` runs in its probe pod, run here with node against a
// real relay (the pod runs it the same way, with the image's nodemailer).

const run = promisify(execFile);
const nodemailerPath = createRequire(import.meta.url).resolve('nodemailer');

describe('test-send probe script', () => {
  const relay = relaysPerTest();

  it('sends one message through the relay and prints its 250 with the queue id', async () => {
    const r = await relay();
    const script = probeScript(
      { endpoint: `127.0.0.1:${r.port}`, from: 'app@example.com', to: 'b@example.org' },
      nodemailerPath,
    );
    const { stdout } = await run(process.execPath, ['-e', script], { timeout: 30_000 });
    const id = queueIdOf(stdout.trim());
    expect(stdout).toMatch(/^250 2\.0\.0 Ok: queued as \S+/);
    const out = await outboxMessages(r, 1);
    expect([...out.keys()]).toContain(id);
    expect([...out.values()][0]).toMatch(/Subject: email-relay test-send/);
  });

  it('prints the refusal and exits 1 when the relay refuses', async () => {
    const r = await relay({ access: { allow: ['192.0.2.0/24'] } });
    const script = probeScript(
      { endpoint: `127.0.0.1:${r.port}`, from: 'app@example.com', to: 'b@example.org' },
      nodemailerPath,
    );
    const e = (await run(process.execPath, ['-e', script], { timeout: 30_000 }).catch((err) => err)) as {
      code: number;
      stdout: string;
    };
    expect(e.code).toBe(1);
    expect(e.stdout).toMatch(/554 5\.7\.1 <b@example\.org>: Relay access denied/);
  });

  it('the commands the plugin execs in a pod read /metrics and /summary on loopback', async () => {
    const r = await relay({ http: '127.0.0.1:0' });
    const args = cmd.metrics('ns', 'pod', r.http!.port);
    const script = args[args.indexOf('-e') + 1]!;
    const { stdout } = await run(process.execPath, ['-e', script], { timeout: 30_000 });
    expect(parseMetrics(stdout).find((m) => m.name === 'email_queue_size')?.value).toBe(0);
    const sargs = cmd.summary('ns', 'pod', r.http!.port);
    const summary = await run(process.execPath, ['-e', sargs[sargs.indexOf('-e') + 1]!], { timeout: 30_000 });
    expect(JSON.parse(summary.stdout).queue.messages).toBe(0);
  });

  it('the plugin executable prints its usage', async () => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'src/plugin/cli.ts', '--help']);
    expect(stdout).toMatch(/^usage: kubectl email-relay/);
  });
});
