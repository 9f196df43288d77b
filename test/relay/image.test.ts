import type { ChildProcess } from 'node:child_process';
import { chown, lstat, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RELAY_CONTRACT, RUNTIME_UID } from '../../scripts/image/contract.ts';
import { contractDiff, parseFinalStage } from '../../scripts/image/dockerfile.ts';
import { buildImage, ROOT } from '../../scripts/image/images.ts';
import {
  canRunRootfs,
  type ExtractedImage,
  extractImage,
  runRootfs,
  runRootfsToEnd,
} from '../helpers/image-rootfs.ts';
import { eventually } from '../helpers/poll.ts';
import { freePort } from '../helpers/ports.ts';

// The images `npm run image` writes, unpacked and run as a runtime with a read-only root would
// (private mount namespace, root bind-mounted ro, tmpfs /tmp, uid 65532, the config's env only):
// the relay answers the seed's Python and Nodemailer snippets run from the client image.
// Needs root for mount/chroot, as the node tests do: without it the test fails saying so, never skips.

const BUILD_TIMEOUT = 900_000; // a cold build compiles src/ and Go's runtime on a shared machine

describe('images from scripts/image, run without Docker', () => {
  let work: string;
  let relay: ExtractedImage;
  let client: ExtractedImage;
  let pause: ExtractedImage;

  beforeAll(async () => {
    if (!canRunRootfs())
      throw new Error('running the images needs root (mount namespace, chroot, setuid 65532)');
    work = await mkdtemp(join(tmpdir(), 'email-relay-image-test-'));
    // One after another: each cold build is CPU-bound (tsc, gzip, go build).
    const extracted = async (kind: 'relay' | 'client' | 'pause') =>
      extractImage((await buildImage({ kind })).archive);
    relay = await extracted('relay');
    client = await extracted('client');
    pause = await extracted('pause');
  }, BUILD_TIMEOUT);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('the relay image config and rootfs keep the Dockerfile final stage contract', async () => {
    const node = await runRootfsToEnd({
      rootfs: relay.rootfs,
      config: relay.config,
      argv: ['/nodejs/bin/node', '--version'],
    });
    expect(node.code).toBe(0);
    const stage = parseFinalStage(await readFile(join(ROOT, 'Dockerfile'), 'utf8'));
    expect(contractDiff(stage, relay.config, RELAY_CONTRACT.app, node.stdout.trim())).toEqual([]);
    // Every COPY destination is in the layer, root-owned and not writable by the runtime user.
    for (const { to } of stage.copies) {
      const st = await stat(join(relay.rootfs, to));
      expect({ to, uid: st.uid, groupOrOtherWrite: (st.mode & 0o022) !== 0 }).toEqual({
        to,
        uid: 0,
        groupOrOtherWrite: false,
      });
    }
    const tmp = await lstat(join(relay.rootfs, 'tmp'));
    expect(tmp.mode & 0o7777).toBe(0o1777);
    const passwd = await readFile(join(relay.rootfs, 'etc/passwd'), 'utf8');
    expect(passwd).toContain(`nonroot:x:${RUNTIME_UID}:${RUNTIME_UID}:`);
    // /etc/hosts (the pod's own name, hostAliases) before DNS, as on distroless.
    expect(await readFile(join(relay.rootfs, 'etc/nsswitch.conf'), 'utf8')).toMatch(/^hosts: files dns$/m);
    // The production dependencies are there, the dev ones are not.
    await expect(stat(join(relay.rootfs, 'app/node_modules/smtp-server/package.json'))).resolves.toBeTruthy();
    await expect(stat(join(relay.rootfs, 'app/node_modules/vitest'))).rejects.toThrow(/ENOENT/);
  });

  it('ENTRYPOINT + CMD run as 65532 on a read-only root and print the usage', async () => {
    const r = await runRootfsToEnd({ rootfs: relay.rootfs, config: relay.config });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage:\n {2}email-relay relay /);
  });

  describe('the relay from its image takes mail from the client image', () => {
    let child: ChildProcess;
    let smtpPort: number;
    let spool: string;
    let log = '';

    beforeAll(async () => {
      smtpPort = await freePort();
      const httpPort = await freePort();
      spool = await mkdtemp(join(work, 'spool-'));
      await chown(spool, RUNTIME_UID, RUNTIME_UID);
      child = runRootfs({
        rootfs: relay.rootfs,
        config: relay.config,
        argv: [
          ...relay.config.Entrypoint,
          'relay',
          '--listen',
          `127.0.0.1:${smtpPort}`,
          '--http',
          `127.0.0.1:${httpPort}`,
          '--spool',
          '/spool',
          '--upstream',
          'smtp://127.0.0.1:1',
          '--hostname',
          'relay.image-test.example',
        ],
        mounts: { '/spool': spool },
      });
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        log += d;
      });
      child.stderr!.setEncoding('utf8').on('data', (d: string) => {
        log += d;
      });
      await eventually(
        'the relay from its image to answer /readyz',
        async () => {
          if (child.exitCode !== null) throw new Error(`relay exited ${child.exitCode}:\n${log}`);
          return (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).ok || undefined;
        },
        { timeoutMs: 60_000, everyMs: 200 },
      ).catch((err: Error) => {
        throw new Error(`${err.message}\n${log}`);
      });
    }, 90_000);

    afterAll(async () => {
      if (child && child.exitCode === null) {
        child.kill('SIGKILL');
      }
    });

    it("the seed's Python smtplib snippet (python3 from the client image) gets 250", async () => {
      const snippet = [
        'import smtplib',
        'from email.mime.text import MIMEText',
        `server = smtplib.SMTP('127.0.0.1', ${smtpPort})`,
        "code, reply = server.docmd('NOOP')",
        "server.sendmail('from@example.com', 'to@example.com', 'Subject: from python\\n\\nmessage')",
        "print('sent', code)",
        'server.quit()',
      ].join('\n');
      const r = await runRootfsToEnd({
        rootfs: client.rootfs,
        config: client.config,
        argv: ['python3', '-c', snippet],
      });
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('sent 250');
    });

    it("the seed's Nodemailer snippet (node + nodemailer from the client image) gets 250 ... queued", async () => {
      const snippet = `
        const nodemailer = require('nodemailer');
        const transporter = nodemailer.createTransport({ host: '127.0.0.1', port: ${smtpPort}, secure: false });
        transporter.sendMail({ from: 'from@example.com', to: 'to@example.com', subject: 'Hi', text: 'Hello' })
          .then((info) => console.log(info.response), (err) => { console.error(err); process.exit(1); });`;
      const r = await runRootfsToEnd({
        rootfs: client.rootfs,
        config: client.config,
        argv: ['node', '-e', snippet],
      });
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(/^250 .*queued/);
    });

    it('SIGTERM stops it with exit 0; the queue CLI from the image lists both messages in its spool', async () => {
      const closed = new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
      child.kill('SIGTERM');
      expect(await closed).toBe(0);
      const list = await runRootfsToEnd({
        rootfs: relay.rootfs,
        config: relay.config,
        argv: [...relay.config.Entrypoint, 'queue', 'list', '--spool', '/spool', '--json'],
        mounts: { '/spool': spool },
      });
      expect(list.code).toBe(0);
      const queued = JSON.parse(list.stdout) as { from: string; rcpt?: unknown }[];
      expect(queued.map((m) => m.from).sort()).toEqual(['from@example.com', 'from@example.com']);
    });
  });

  it('the pause image: /pause runs as 65535 and exits 0 on SIGTERM', async () => {
    const child = runRootfs({ rootfs: pause.rootfs, config: pause.config });
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      err += d;
    });
    // Give it a moment to get past the launcher's mounts to the exec of /pause (the signal must reach pause).
    await new Promise((r) => setTimeout(r, 1000));
    expect(child.exitCode).toBe(null);
    const closed = new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    child.kill('SIGTERM');
    expect(await closed).toBe(0);
    expect(err).toBe('');
    expect(pause.config.Entrypoint).toEqual(['/pause']);
  });
});
