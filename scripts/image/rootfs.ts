import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

interface Owner {
  mode: number;
  uid: number;
  gid: number;
}

/** One path in an image's root filesystem: a host file copied in, inline bytes, a directory or a symlink. */
export type Entry = Owner & { path: string } & (
    | { type: 'dir' }
    | { type: 'file'; source: string; size: number; mtimeMs: number }
    | { type: 'data'; data: Buffer }
    | { type: 'symlink'; target: string }
  );

/** Leaves files that stat as executable 0755 and everything else 0644: host umasks must not leak into digests. */
function fileMode(hostMode: number): number {
  return hostMode & 0o111 ? 0o755 : 0o644;
}

/**
 * A root filesystem described as entries, not staged on disk: the OCI writer streams host files
 * straight into the layer. Owned by root unless said otherwise; parents appear as 0755 dirs.
 */
export class Rootfs {
  private readonly entries = new Map<string, Entry>();

  dir(path: string, owner: Partial<Owner> = {}): this {
    return this.put({ type: 'dir', path, mode: 0o755, uid: 0, gid: 0, ...owner });
  }

  data(path: string, data: string | Buffer, owner: Partial<Owner> = {}): this {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    return this.put({ type: 'data', path, data: bytes, mode: 0o644, uid: 0, gid: 0, ...owner });
  }

  symlink(path: string, target: string): this {
    return this.put({ type: 'symlink', path, target, mode: 0o777, uid: 0, gid: 0 });
  }

  /** Copies one host file (symlinks followed: the image gets the bytes, not the host's link layout). */
  async file(path: string, source: string): Promise<this> {
    const st = await stat(source);
    if (!st.isFile()) throw new Error(`${source}: not a regular file`);
    return this.put({
      type: 'file',
      path,
      source,
      size: st.size,
      mtimeMs: st.mtimeMs,
      mode: fileMode(st.mode),
      uid: 0,
      gid: 0,
    });
  }

  /**
   * Copies a host directory tree to `path`. `skip(rel)` drops a subtree or file (rel is
   * slash-separated, relative to `source`). Symlinks are followed; dangling ones are left out.
   */
  async tree(path: string, source: string, skip: (rel: string) => boolean = () => false): Promise<this> {
    const walk = async (rel: string): Promise<void> => {
      const dir = rel ? `${source}/${rel}` : source;
      this.dir(rel ? `${path}/${rel}` : path);
      for (const name of (await readdir(dir)).sort()) {
        const childRel = rel ? `${rel}/${name}` : name;
        if (skip(childRel)) continue;
        const st = await stat(`${dir}/${name}`).catch(() => undefined);
        if (!st) continue;
        if (st.isDirectory()) await walk(childRel);
        else if (st.isFile()) await this.file(`${path}/${childRel}`, `${dir}/${name}`);
      }
    };
    await walk('');
    return this;
  }

  /** A dynamically linked host program plus every shared library `ldd` resolves for it, at ldd's paths. */
  async binary(path: string, source: string): Promise<this> {
    await this.file(path, source);
    for (const lib of await sharedLibraries(source)) await this.file(lib, lib);
    return this;
  }

  /** All entries sorted by path, parents before children, with missing parents added as root 0755 dirs. */
  list(): Entry[] {
    const all = new Map(this.entries);
    for (const p of this.entries.keys()) {
      for (let d = posix.dirname(p); d !== '/'; d = posix.dirname(d)) {
        if (!all.has(d)) all.set(d, { type: 'dir', path: d, mode: 0o755, uid: 0, gid: 0 });
      }
    }
    return [...all.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  /**
   * Cache key of the rootfs: paths, modes, owners and, for host files, path + size + mtime (a
   * rebuild is triggered by any edit; the bytes written are still deterministic either way).
   */
  fingerprint(): string {
    const h = createHash('sha256');
    for (const e of this.list()) {
      const what =
        e.type === 'file'
          ? `${e.source}:${e.size}:${e.mtimeMs}`
          : e.type === 'data'
            ? createHash('sha256').update(e.data).digest('hex')
            : e.type === 'symlink'
              ? e.target
              : '';
      h.update(`${e.type}\0${e.path}\0${e.mode}\0${e.uid}\0${e.gid}\0${what}\n`);
    }
    return h.digest('hex');
  }

  private put(e: Entry): this {
    if (!e.path.startsWith('/') || e.path.endsWith('/') || e.path.includes('//')) {
      throw new Error(`rootfs path must be absolute and normalised: ${e.path}`);
    }
    const prev = this.entries.get(e.path);
    // Implicit directory re-added by tree(): keep the first (explicit) owner and mode.
    if (prev?.type === 'dir' && e.type === 'dir') return this;
    this.entries.set(e.path, e);
    return this;
  }
}

/**
 * Absolute paths of the shared libraries (and the ELF interpreter) `ldd` resolves for the given
 * binaries, deduplicated; [] for static ones. One ldd run for many files (python's extension modules).
 */
export async function sharedLibraries(...binaries: string[]): Promise<string[]> {
  let out: string;
  try {
    out = (await execFileP('ldd', binaries, { maxBuffer: 16 << 20 })).stdout;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    if (binaries.length === 1 && /not a dynamic executable/.test(`${e.stdout}${e.stderr}`)) return [];
    throw new Error(`ldd ${binaries.join(' ')}: ${e.stderr || String(err)}`);
  }
  const libs = new Set<string>();
  for (const line of out.split('\n')) {
    if (/not found/.test(line))
      throw new Error(`ldd: ${line.trim()} (needed by one of ${binaries.join(' ')})`);
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (m) libs.add(m[1]!);
  }
  return [...libs].sort();
}

/**
 * What distroless's base gives a program and this rootfs would otherwise lack: /etc/passwd and
 * /etc/group naming root and the "nonroot" user, an nsswitch.conf, a home and a sticky /tmp.
 */
export function addBase(fs: Rootfs, uid: number): void {
  fs.data(
    '/etc/passwd',
    `root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:${uid}:${uid}:nonroot:/home/nonroot:/sbin/nologin\n`,
  );
  fs.data('/etc/group', `root:x:0:\nnonroot:x:${uid}:\n`);
  // Without it glibc asks DNS before /etc/hosts, and a DNS NXDOMAIN then hides the pod's own
  // /etc/hosts entries (its hostname, hostAliases).
  fs.data('/etc/nsswitch.conf', 'passwd: files\ngroup: files\nhosts: files dns\n');
  fs.dir('/home/nonroot', { mode: 0o700, uid, gid: uid });
  fs.dir('/root', { mode: 0o700 });
  // Sticky and world-writable; with a read-only root a pod mounts an emptyDir here if it writes.
  fs.dir('/tmp', { mode: 0o1777 });
}
