import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readStat, tree } from './proc.ts';
import { freePort, onCleanup, run, sleep, waitUntil } from './util.ts';

/**
 * A private Postfix instance (Debian's package) relaying loopback mail to the sink: its own
 * config and queue directories under a temp dir, `postfix -c <dir> start|stop`. Defaults
 * otherwise, so queue files are fsynced before 250 as on any Postfix.
 */

export const POSTFIX = ['/usr/sbin/postfix', '/sbin/postfix'].find(existsSync);

export interface PostfixInstance {
  port: number;
  dir: string;
  /** PID of master(8); every other Postfix process is its child. */
  pid: number;
  version: string;
  log(): Promise<string>;
  stop(): Promise<void>;
}

// Debian's master.cf services, chroot off (the queue lives in a temp dir), smtpd on our port.
const masterCf = (port: number) => `\
127.0.0.1:${port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
`;

const mainCf = (root: string, sinkPort: number) => `\
compatibility_level = 3.6
queue_directory = ${root}/queue
data_directory = ${root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.example.com
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
relayhost = [127.0.0.1]:${sinkPort}
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = ${root}/postfix.log
maillog_file_prefixes = ${root}
biff = no
`;

export async function startPostfix(sinkPort: number): Promise<PostfixInstance> {
  if (!POSTFIX) throw new Error('postfix not found (Debian: apt-get install postfix)');
  if (process.getuid?.() !== 0) throw new Error('the Postfix instance needs root (mail_owner/setgid_group)');
  const root = await mkdtemp(join(tmpdir(), 'bench-postfix-'));
  await chmod(root, 0o755); // daemons running as "postfix" reach data_directory and the log
  const etc = join(root, 'etc');
  await mkdir(etc);
  await mkdir(join(root, 'queue'));
  await mkdir(join(root, 'data'));
  const owner = (await readFile('/etc/passwd', 'utf8')).split('\n').find((l) => l.startsWith('postfix:'));
  if (!owner) throw new Error('no "postfix" user (Debian: apt-get install postfix)');
  const [, , uid, gid] = owner.split(':');
  await chown(join(root, 'data'), Number(uid), Number(gid)); // master.lock, as postfix-script wants
  const pf = (...args: string[]) => run(POSTFIX, ['-c', etc, ...args], 30_000);

  let pid = 0;
  let stopped = false;
  const stop = onCleanup(async () => {
    if (stopped) return;
    stopped = true;
    const procs = pid ? tree(pid) : [];
    await pf('stop').catch(() => undefined);
    await waitUntil('postfix master to exit', () => !existsSync(`/proc/${pid}`), 10_000).catch(
      () => undefined,
    );
    // Anything left of this instance (same pid and start time as seen before the stop) is killed.
    for (const p of procs) {
      if (readStat(p.pid)?.startTime !== p.startTime) continue;
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {}
    }
    await rm(root, { recursive: true, force: true });
  });

  for (let tries = 0; ; tries++) {
    const port = await freePort();
    await writeFile(join(etc, 'main.cf'), mainCf(root, sinkPort));
    await writeFile(join(etc, 'master.cf'), masterCf(port));
    try {
      const started = await pf('start');
      if (started.code !== 0) {
        const log = await readFile(join(root, 'postfix.log'), 'utf8').catch(() => '');
        throw new Error(
          `postfix start failed: ${started.stderr.trim()}\n${log.trim().split('\n').slice(-5).join('\n')}`,
        );
      }
      const pidFile = join(root, 'queue', 'pid', 'master.pid');
      await waitUntil('postfix master.pid', () => existsSync(pidFile), 10_000);
      pid = Number((await readFile(pidFile, 'utf8')).trim());
      await waitUntil(`postfix smtpd on ${port}`, () => greets(port), 10_000, 100);
      const version = (await run('postconf', ['-c', etc, '-h', 'mail_version'])).stdout.trim();
      return { port, dir: root, pid, version, log: () => readFile(join(root, 'postfix.log'), 'utf8'), stop };
    } catch (err) {
      if (tries >= 2) {
        await stop();
        throw err;
      }
      await pf('stop').catch(() => undefined);
      await sleep(500);
    }
  }
}

/** Does a 220 greeting come from this port? */
async function greets(port: number): Promise<boolean> {
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(2000, () => done(false));
    s.on('error', () => done(false));
    s.on('data', (d: Buffer) => done(d.toString().startsWith('220')));
  });
}
