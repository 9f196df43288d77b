import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/load.ts';
import { hashPassword } from '../../../src/relay/smtp/auth.ts';
import { selfSignedCert } from '../../helpers/certs.ts';
import { startTestRelay, type TestRelay } from '../../helpers/relay.ts';
import { SmtpDialog } from '../../helpers/smtp-dialog.ts';

describe('SMTP AUTH for clients that are not pods', () => {
  let dir: string;
  let relay: TestRelay;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'email-relay-auth-'));
    const { certFile, keyFile } = await selfSignedCert(dir, 'tls', 'mail.bionicaisolutions.com');
    const usersFile = join(dir, 'users');
    await writeFile(
      usersFile,
      `# user:secret\nvm-billing:${await hashPassword('s3cret!')}\nlegacy:plainpass\n`,
    );
    // Nobody may relay by network: only authenticated clients.
    relay = await startTestRelay({
      access: { allow: [] },
      smtp: { tls: { certFile, keyFile }, auth: { usersFile } },
    });
  });
  afterAll(async () => {
    await relay?.dispose();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const transport = (user: string, pass: string) =>
    nodemailer.createTransport({
      host: '127.0.0.1',
      port: relay.port,
      secure: false,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user, pass },
    });

  it('offers AUTH only inside TLS and refuses it before STARTTLS', async () => {
    const c = await SmtpDialog.open(relay.port);
    await c.reply();
    const ehlo = await c.cmd('EHLO vm.example.com');
    expect(ehlo).toContain('250-STARTTLS');
    expect(ehlo.some((l) => l.includes('AUTH'))).toBe(false);
    expect(await c.cmd('AUTH PLAIN AGxlZ2FjeQBwbGFpbnBhc3M=')).toEqual([
      '530 5.7.0 Must issue a STARTTLS command first',
    ]);
    c.close();
  });

  it('relays for an authenticated client (scrypt hash and plain secret)', async () => {
    for (const [user, pass] of [
      ['vm-billing', 's3cret!'],
      ['legacy', 'plainpass'],
    ] as const) {
      const t = transport(user, pass);
      const info = await t.sendMail({
        from: 'billing@example.com',
        to: 'x@example.org',
        subject: 'auth',
        text: 'x',
      });
      expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as /);
      t.close();
    }
  });

  it('refuses bad credentials with 535 5.7.8, and an unauthenticated client may not relay', async () => {
    const t = transport('vm-billing', 'wrong');
    const err = (await t
      .sendMail({ from: 'a@example.com', to: 'x@example.org', text: 'x' })
      .catch((e: unknown) => e)) as {
      responseCode?: number;
      response?: string;
    };
    expect(err.responseCode).toBe(535);
    expect(err.response).toBe('535 5.7.8 Error: authentication failed: authentication failure');
    t.close();
    const anon = nodemailer.createTransport({
      host: '127.0.0.1',
      port: relay.port,
      secure: false,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
    });
    const denied = (await anon
      .sendMail({ from: 'a@example.com', to: 'x@example.org', text: 'x' })
      .catch((e: unknown) => e)) as {
      response?: string;
    };
    expect(denied.response).toBe('554 5.7.1 <x@example.org>: Relay access denied');
    anon.close();
  });

  it('auth without tls is a configuration error naming the field', () => {
    expect(() => parseConfig({ smtp: { auth: { usersFile: '/x' } } })).toThrow(/smtp\.auth: auth needs tls/);
  });
});
