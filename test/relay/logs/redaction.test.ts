import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../../helpers/ports.ts';

// The relay process with `logAddresses`: the JSON lines of a real transaction (queued, delivered
// to the outbox, refused by policy) keep their field names and carry no address in the clear.

const CLI = ['--import', 'tsx', 'src/cli.ts'];

async function runRelay(logAddresses: string) {
  const dir = await mkdtemp(join(tmpdir(), 'email-relay-logs-'));
  const port = await freePort();
  const config = join(dir, 'relay.yaml');
  await writeFile(
    config,
    [
      'hostname: mail.example.com',
      `listen: 127.0.0.1:${port}`,
      `spool: {dir: ${join(dir, 'spool')}}`,
      `upstream: {outboxDir: ${join(dir, 'outbox')}}`,
      `logAddresses: ${logAddresses}`,
      'policies: [{name: no-competitors, rules: {recipients: {deny: ["@competitor.example"]}}}]',
    ].join('\n'),
  );
  const child = spawn(process.execPath, [...CLI, 'relay', '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, EMAIL_RELAY_LOG_HASH_KEY: 'test-key' },
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const lines = () =>
    out
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const waitLine = async (msg: string) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const l = lines().find((x) => x['msg'] === msg);
      if (l) return l;
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`no "${msg}" line in:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await waitLine('relay started');
  const t = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false });
  await t.sendMail({ from: 'John.Doe@example.com', to: 'alice@example.org', subject: 'hi', text: 'x' });
  await expect(
    t.sendMail({ from: 'John.Doe@example.com', to: 'bob@competitor.example', subject: 'no', text: 'x' }),
  ).rejects.toThrow();
  t.close();
  const queued = await waitLine('queued');
  const sent = await waitLine('sent');
  const refused = await waitLine('refused by policy');
  return { child, dir, out, queued, sent, refused };
}

describe('log redaction (logAddresses)', () => {
  let child: ChildProcess | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    child?.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('plain: addresses as they are (the baseline the other modes are compared with)', async () => {
    const r = await runRelay('plain');
    ({ child, dir } = r);
    expect(r.queued['from']).toBe('John.Doe@example.com');
    expect(r.sent['to']).toEqual(['alice@example.org']);
    expect(r.out).toContain('bob@competitor.example');
  });

  it('mask: same fields, masked values, nothing in the clear anywhere in the log', async () => {
    const r = await runRelay('mask');
    ({ child, dir } = r);
    expect(r.queued['from']).toBe('J***@example.com');
    expect(r.queued['to']).toEqual(['a***@example.org']);
    expect(r.sent['to']).toEqual(['a***@example.org']);
    expect(Object.keys(r.sent)).toEqual(
      expect.arrayContaining(['queueId', 'from', 'to', 'reply', 'outcome']),
    );
    expect(r.out).not.toMatch(/John\.Doe|alice@|bob@/);
  });

  it('hash: a stable keyed token per address, the domain kept', async () => {
    const r = await runRelay('hash');
    ({ child, dir } = r);
    expect(r.queued['from']).toMatch(/^h-[0-9a-f]{12}@example\.com$/);
    expect(r.sent['from']).toBe(r.queued['from']);
    expect(r.out).not.toMatch(/John\.Doe|alice@|bob@/);
  });
});
