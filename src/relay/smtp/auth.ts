import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { promisify } from 'node:util';

const scryptP = promisify(scrypt) as (pw: string, salt: Buffer, len: number) => Promise<Buffer>;

/**
 * SMTP AUTH credentials for clients that are not pods (VMs, other clusters): a file of
 * `user:secret` lines, e.g. a Kubernetes Secret key. The secret is a password or, better,
 * `scrypt:<salt b64>:<hash b64>` (see `hashPassword`). Re-read when the file changes, so a
 * rotated Secret takes effect without a restart.
 */
export class UserFile {
  private users = new Map<string, string>();
  private mtime = -1;

  constructor(readonly path: string) {}

  async verify(user: string, password: string): Promise<boolean> {
    await this.refresh();
    const secret = this.users.get(user);
    // Unknown users cost the same as known ones: no user enumeration by timing.
    const expected =
      secret ?? `scrypt:${Buffer.alloc(16).toString('base64')}:${Buffer.alloc(32).toString('base64')}`;
    const ok = await matches(expected, password);
    return ok && secret !== undefined;
  }

  private async refresh(): Promise<void> {
    const s = await stat(this.path);
    if (s.mtimeMs === this.mtime) return;
    const text = await readFile(this.path, 'utf8');
    const users = new Map<string, string>();
    for (const line of text.split(/\r?\n/)) {
      if (!line.trim() || line.startsWith('#')) continue;
      const i = line.indexOf(':');
      if (i > 0) users.set(line.slice(0, i), line.slice(i + 1));
    }
    this.users = users;
    this.mtime = s.mtimeMs;
  }
}

async function matches(secret: string, password: string): Promise<boolean> {
  const m = /^scrypt:([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(secret);
  if (m) {
    const hash = Buffer.from(m[2]!, 'base64');
    const got = await scryptP(password, Buffer.from(m[1]!, 'base64'), hash.length);
    return timingSafeEqual(got, hash);
  }
  const a = Buffer.from(secret);
  const b = Buffer.from(password);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** `scrypt:<salt>:<hash>` for a users file line (`email-relay` users never need plain passwords on disk). */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scryptP(password, salt, 32);
  return `scrypt:${salt.toString('base64')}:${hash.toString('base64')}`;
}
