import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/load.ts';
import { silentLogger } from '../../../src/lib/logger.ts';
import { startRelay } from '../../../src/relay/relay.ts';
import { relaysPerTest } from '../../helpers/relay.ts';
import { mountTmpfs } from '../../helpers/tmpfs.ts';

/**
 * A spool whose file system is read-only (a volume mounted ro, ext4 after errors=remount-ro): the
 * relay must not start as if it could queue mail, must say why, and must leave the queue as it is.
 */

const relayWith = relaysPerTest();

describe('read-only spool', () => {
  let fs: ReturnType<typeof mountTmpfs>;
  beforeAll(() => {
    fs = mountTmpfs(32 * 1024 * 1024);
  });
  afterAll(() => fs?.unmount());

  it('refuses to start naming the spool and the cause, and loses nothing it held', async () => {
    const spool = join(fs.dir, 'spool');
    const relay = await relayWith({
      spool: { dir: spool, minFreeBytes: 0 },
      upstream: { url: 'smtp://127.0.0.1:1' },
    });
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, secure: false });
    await t.sendMail({ from: 'a@example.com', to: 'b@example.com', subject: 'kept', text: 'x' });
    t.close();
    const queued = relay.spool.entries().map((e) => e.id);
    await relay.stop();
    const files = readdirSync(join(spool, 'queue')).concat(readdirSync(join(spool, 'wal')));

    expect(spawnSync('mount', ['-o', 'remount,ro', fs.dir]).status).toBe(0);
    const config = parseConfig({ listen: '127.0.0.1:0', spool: { dir: spool } });
    await expect(startRelay(config, silentLogger, { defaultMetrics: false })).rejects.toThrow(
      `spool ${spool} is on a read-only file system: no mail can be queued there`,
    );
    expect(readdirSync(join(spool, 'queue')).concat(readdirSync(join(spool, 'wal')))).toEqual(files);

    expect(spawnSync('mount', ['-o', 'remount,rw', fs.dir]).status).toBe(0);
    const again = await relayWith({
      spool: { dir: spool, minFreeBytes: 0 },
      upstream: { url: 'smtp://127.0.0.1:1' },
    });
    expect(again.spool.entries().map((e) => e.id)).toEqual(queued);
  }, 60_000);
});
