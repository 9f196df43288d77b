import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selfSignedCert } from '../../helpers/certs.ts';
import { startTestRelay, type TestRelay } from '../../helpers/relay.ts';
import { SmtpDialog } from '../../helpers/smtp-dialog.ts';

const run = promisify(execFile);

/** The CN of the certificate the relay presents after STARTTLS. */
async function servedCN(port: number): Promise<string> {
  const c = await SmtpDialog.open(port);
  await c.reply();
  await c.cmd('EHLO client.example.com');
  expect(await c.cmd('STARTTLS')).toEqual(['220 2.0.0 Ready to start TLS']);
  c.socket.removeAllListeners('data');
  const secure = tlsConnect({ socket: c.socket, rejectUnauthorized: false });
  await new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', resolve);
    secure.once('error', reject);
  });
  const cn = String(secure.getPeerCertificate().subject.CN);
  secure.destroy();
  return cn;
}

describe('STARTTLS with a configured certificate', () => {
  let dir: string;
  let certFile: string;
  let keyFile: string;
  const relays: TestRelay[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'email-relay-tls-'));
    ({ certFile, keyFile } = await selfSignedCert(dir, 'tls', 'mail.bionicaisolutions.com'));
  });
  afterAll(async () => {
    await Promise.all(relays.map((r) => r.dispose()));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('advertises STARTTLS where the seed shows it and relays over TLS (swaks)', async () => {
    const relay = await startTestRelay({ smtp: { tls: { certFile, keyFile } } });
    relays.push(relay);
    const c = await SmtpDialog.open(relay.port);
    await c.reply();
    expect(await c.cmd('EHLO client.example.com')).toEqual([
      '250-mail.bionicaisolutions.com',
      '250-PIPELINING',
      '250-SIZE 10240000',
      '250-VRFY',
      '250-ETRN',
      '250-STARTTLS',
      '250-ENHANCEDSTATUSCODES',
      '250-8BITMIME',
      '250-SMTPUTF8',
      '250 DSN',
    ]);
    expect(await c.cmd('STARTTLS')).toEqual(['220 2.0.0 Ready to start TLS']);
    c.close();
    const { stdout } = await run('swaks', [
      '--server',
      `127.0.0.1:${relay.port}`,
      '--tls',
      '--from',
      'a@example.com',
      '--to',
      'b@example.com',
    ]);
    expect(stdout).toMatch(/TLS started/);
    expect(stdout).toMatch(/<~ {2}250 2\.0\.0 Ok: queued as /);
  });

  it('reloads a renewed certificate without a restart, and keeps the old one when the new pair is broken', async () => {
    const live = await selfSignedCert(dir, 'live', 'first.example.com');
    const renewed = await selfSignedCert(dir, 'renewed', 'second.example.com');
    const other = await selfSignedCert(dir, 'other', 'other.example.com');
    const relay = await startTestRelay({ smtp: { tls: { ...live, reloadSeconds: 0.1 } } });
    relays.push(relay);
    expect(await servedCN(relay.port)).toBe('first.example.com');
    await copyFile(renewed.keyFile, live.keyFile);
    await copyFile(renewed.certFile, live.certFile);
    await new Promise((r) => setTimeout(r, 400));
    expect(await servedCN(relay.port)).toBe('second.example.com');
    // A certificate whose key does not match: ignored.
    await copyFile(other.certFile, live.certFile);
    await new Promise((r) => setTimeout(r, 400));
    expect(await servedCN(relay.port)).toBe('second.example.com');
  });

  it('with required: true refuses mail before STARTTLS', async () => {
    const relay = await startTestRelay({ smtp: { tls: { certFile, keyFile, required: true } } });
    relays.push(relay);
    const c = await SmtpDialog.open(relay.port);
    await c.reply();
    await c.cmd('EHLO client.example.com');
    expect(await c.cmd('MAIL FROM:<a@example.com>')).toEqual([
      '530 5.7.0 Must issue a STARTTLS command first',
    ]);
    c.close();
  });
});
