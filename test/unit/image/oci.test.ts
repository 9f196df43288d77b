import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type RuntimeConfig, writeOciArchive } from '../../../scripts/image/oci.ts';
import { Rootfs, sharedLibraries } from '../../../scripts/image/rootfs.ts';

// The OCI writer on a tiny rootfs: what `ctr images import` reads (index.json with the name
// annotations, manifest -> config + layer by digest and size, diff_id of the uncompressed layer),
// and that the bytes depend only on the entries (same digest on rebuild, whatever the host mtimes).

interface TarEntry {
  header: tar.Header;
  body: Buffer;
}

async function readTar(buf: Buffer): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  const ex = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c) => chunks.push(c as Buffer));
      stream.on('end', () => {
        out.push({ header, body: Buffer.concat(chunks) });
        next();
      });
      stream.resume();
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
  });
  ex.end(buf);
  await done;
  return out;
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const config: RuntimeConfig = {
  User: '65532:65532',
  WorkingDir: '/app',
  Env: ['A=1'],
  Entrypoint: ['/bin/x'],
};

describe('writeOciArchive', () => {
  let dir: string;
  let hostFile: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'email-relay-oci-'));
    hostFile = join(dir, 'host.js');
    await writeFile(hostFile, 'console.log(1)\n', { mode: 0o600 });
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));
  afterEach(() => {
    vi.useRealTimers();
  });

  async function build(out: string): Promise<Awaited<ReturnType<typeof writeOciArchive>>> {
    const fs = new Rootfs();
    fs.data('/etc/passwd', 'root:x:0:0::/:/x\n');
    fs.dir('/tmp', { mode: 0o1777 });
    fs.dir('/home/nonroot', { mode: 0o700, uid: 65532, gid: 65532 });
    fs.symlink('/usr/bin/x', '/bin/x');
    await fs.file('/app/deep/er/host.js', hostFile);
    return writeOciArchive('localhost/t:1', config, fs.list(), join(dir, out), 'test');
  }

  it('writes an OCI layout ctr can follow from index.json to the layer', async () => {
    const r = await build('a.tar');
    const files = new Map((await readTar(await readFile(r.archive))).map((e) => [e.header.name, e.body]));
    expect(JSON.parse(files.get('oci-layout')!.toString())).toEqual({ imageLayoutVersion: '1.0.0' });
    const index = JSON.parse(files.get('index.json')!.toString());
    expect(index.manifests).toHaveLength(1);
    expect(index.manifests[0].annotations).toEqual({
      'io.containerd.image.name': 'localhost/t:1',
      'org.opencontainers.image.ref.name': '1',
    });
    const blob = (d: string) => files.get(`blobs/sha256/${d.slice(7)}`)!;
    const manifestBytes = blob(index.manifests[0].digest);
    expect(sha(manifestBytes)).toBe(index.manifests[0].digest);
    expect(manifestBytes.length).toBe(index.manifests[0].size);
    const manifest = JSON.parse(manifestBytes.toString());
    const cfgBytes = blob(manifest.config.digest);
    expect([sha(cfgBytes), cfgBytes.length]).toEqual([manifest.config.digest, manifest.config.size]);
    const layer = blob(manifest.layers[0].digest);
    expect([sha(layer), layer.length]).toEqual([manifest.layers[0].digest, manifest.layers[0].size]);
    const cfg = JSON.parse(cfgBytes.toString());
    expect(cfg.config).toEqual(config);
    expect(cfg.rootfs.diff_ids).toEqual([sha(gunzipSync(layer))]);
    // Docker's manifest.json beside it names the same blobs.
    expect(JSON.parse(files.get('manifest.json')!.toString())).toEqual([
      {
        Config: `blobs/sha256/${manifest.config.digest.slice(7)}`,
        RepoTags: ['localhost/t:1'],
        Layers: [`blobs/sha256/${manifest.layers[0].digest.slice(7)}`],
      },
    ]);
  });

  it('the layer: sorted, parents first, mtime 0, owners and modes as declared, host modes normalised', async () => {
    const r = await build('b.tar');
    const outer = await readTar(await readFile(r.archive));
    const layer = outer.find((e) => e.header.name === `blobs/sha256/${r.layerDigest.slice(7)}`)!;
    const entries = await readTar(gunzipSync(layer.body));
    const names = entries.map((e) => e.header.name);
    expect(names).toEqual([
      'app',
      'app/deep',
      'app/deep/er',
      'app/deep/er/host.js',
      'etc',
      'etc/passwd',
      'home',
      'home/nonroot',
      'tmp',
      'usr',
      'usr/bin',
      'usr/bin/x',
    ]);
    for (const e of entries) expect(e.header.mtime.getTime()).toBe(0);
    const h = (n: string) => entries.find((e) => e.header.name === n)!.header;
    expect([h('tmp').mode, h('tmp').uid]).toEqual([0o1777, 0]);
    expect([h('home/nonroot').mode, h('home/nonroot').uid, h('home/nonroot').gid]).toEqual([
      0o700, 65532, 65532,
    ]);
    // 0600 on the host, 0644 in the image: the host's umask does not reach the digest.
    expect([h('app/deep/er/host.js').mode, h('app/deep/er/host.js').uid]).toEqual([0o644, 0]);
    expect([h('usr/bin/x').type, h('usr/bin/x').linkname]).toEqual(['symlink', '/bin/x']);
  });

  it('same entries, same digests: a rebuild a day later with a touched host file is byte-identical', async () => {
    // Only Date is faked (streams and zlib keep their real timers): any wall-clock time that
    // leaked into a header or the gzip stream would change the digest.
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2030-01-01T00:00:00Z'));
    const a = await build('c.tar');
    vi.setSystemTime(new Date('2030-01-02T00:00:00Z'));
    await writeFile(hostFile, 'console.log(1)\n'); // new mtime, same bytes
    const b = await build('d.tar');
    vi.useRealTimers();
    expect(b.manifestDigest).toBe(a.manifestDigest);
    expect(sha(await readFile(b.archive))).toBe(sha(await readFile(a.archive)));
    await writeFile(hostFile, 'console.log(2)\n');
    expect((await build('e.tar')).manifestDigest).not.toBe(a.manifestDigest);
  });
});

describe('sharedLibraries', () => {
  it("names the host node's libc and ELF interpreter, as ldd resolves them", async () => {
    const libs = await sharedLibraries(process.execPath);
    expect(libs.some((l) => /\/libc\.so\.6$/.test(l))).toBe(true);
    expect(libs.some((l) => /\/ld-linux-x86-64\.so\.2$/.test(l))).toBe(true);
    expect(libs.every((l) => l.startsWith('/'))).toBe(true);
  });
});
