import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import type { Entry } from './rootfs.ts';

// A single-layer OCI image layout, tarred: what `ctr images import` (and `docker load`, through the
// Docker-style manifest.json beside index.json) accepts. Every byte is a function of the entries:
// mtime 0, root-owned unless the entry says otherwise, sorted, gzip without name or time.

/** The `config` object of an OCI image config (the runtime part). */
export interface RuntimeConfig {
  User: string;
  WorkingDir?: string;
  Env: string[];
  Entrypoint: string[];
  Cmd?: string[];
  ExposedPorts?: Record<string, Record<string, never>>;
}

export interface ImageResult {
  /** Fully qualified reference, e.g. localhost/email-relay:0.1.0 */
  name: string;
  archive: string;
  manifestDigest: string;
  configDigest: string;
  layerDigest: string;
  /** Bytes of the gzipped layer and of the uncompressed layer tar. */
  layerSize: number;
  layerTarSize: number;
}

const EPOCH = new Date(0);
/** The host's architecture in OCI terms: the image carries the host's binaries. */
const ARCH = ({ x64: 'amd64', arm64: 'arm64' } as Record<string, string>)[process.arch] ?? process.arch;
const EPOCH_ISO = '1970-01-01T00:00:00Z';
const MEDIA = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

/** Writes the image `name` with one layer holding `entries` to `out` (atomically, via a temp file beside it). */
export async function writeOciArchive(
  name: string,
  config: RuntimeConfig,
  entries: Entry[],
  out: string,
  createdBy: string,
): Promise<ImageResult> {
  const work = await mkdtemp(join(dirname(out), '.oci-'));
  try {
    const layerFile = join(work, 'layer.tar.gz');
    const { diffId, layerTarSize } = await writeLayer(entries, layerFile);
    const layerDigest = await sha256File(layerFile);
    const layerSize = (await stat(layerFile)).size;

    const configJson = json({
      architecture: ARCH,
      os: 'linux',
      created: EPOCH_ISO,
      config,
      rootfs: { type: 'layers', diff_ids: [diffId] },
      history: [{ created: EPOCH_ISO, created_by: createdBy }],
    });
    const configDigest = sha256(configJson);
    const manifestJson = json({
      schemaVersion: 2,
      mediaType: MEDIA.manifest,
      config: { mediaType: MEDIA.config, digest: configDigest, size: configJson.length },
      layers: [{ mediaType: MEDIA.layer, digest: layerDigest, size: layerSize }],
    });
    const manifestDigest = sha256(manifestJson);
    const tag = name.slice(name.lastIndexOf(':') + 1);
    const indexJson = json({
      schemaVersion: 2,
      mediaType: MEDIA.index,
      manifests: [
        {
          mediaType: MEDIA.manifest,
          digest: manifestDigest,
          size: manifestJson.length,
          platform: { architecture: ARCH, os: 'linux' },
          annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': tag },
        },
      ],
    });
    const blob = (d: string) => `blobs/sha256/${d.slice('sha256:'.length)}`;
    const dockerManifest = json([
      { Config: blob(configDigest), RepoTags: [name], Layers: [blob(layerDigest)] },
    ]);

    const tmpOut = join(work, 'image.tar');
    const pack = tar.pack();
    const written = pipeline(Readable.from(pack), createWriteStream(tmpOut));
    const add = (header: Partial<tar.Header> & { name: string }, body?: Buffer) =>
      new Promise<void>((resolve, reject) => {
        const h = { mtime: EPOCH, uid: 0, gid: 0, ...header };
        const done = (err?: Error | null) => (err ? reject(err) : resolve());
        if (body) pack.entry(h, body, done);
        else pack.entry(h, done);
      });
    await add({ name: 'oci-layout' }, json({ imageLayoutVersion: '1.0.0' }));
    await add({ name: 'index.json' }, indexJson);
    await add({ name: 'manifest.json' }, dockerManifest);
    await add({ name: 'blobs', type: 'directory', mode: 0o755 });
    await add({ name: 'blobs/sha256', type: 'directory', mode: 0o755 });
    await add({ name: blob(configDigest) }, configJson);
    await add({ name: blob(manifestDigest) }, manifestJson);
    // The layer is streamed: it can be hundreds of MB.
    await new Promise<void>((resolve, reject) => {
      const sink = pack.entry(
        { name: blob(layerDigest), size: layerSize, mtime: EPOCH, mode: 0o644 },
        (err) => (err ? reject(err) : resolve()),
      );
      const rs = createReadStream(layerFile);
      rs.on('error', reject);
      rs.on('data', (chunk) => {
        if (!sink.write(chunk)) {
          rs.pause();
          sink.once('drain', () => rs.resume());
        }
      });
      rs.on('end', () => sink.end(undefined));
    });
    pack.finalize();
    await written;
    await rename(tmpOut, out);
    return {
      name,
      archive: out,
      manifestDigest,
      configDigest,
      layerDigest,
      layerSize,
      layerTarSize,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Streams the entries as a tar through sha256 (the diff_id) and gzip into `file`. */
async function writeLayer(entries: Entry[], file: string): Promise<{ diffId: string; layerTarSize: number }> {
  const pack = tar.pack();
  const tarHash = createHash('sha256');
  let layerTarSize = 0;
  const written = pipeline(
    Readable.from(pack),
    hashing(tarHash, (n) => {
      layerTarSize += n;
    }),
    // Level 6 (zlib's default): the layer is mostly the node binary; 9 buys ~2% for twice the CPU.
    createGzip({ level: 6 }),
    createWriteStream(file),
  );
  for (const e of entries) {
    const name = e.path.slice(1);
    const header = { name, mode: e.mode, uid: e.uid, gid: e.gid, mtime: EPOCH };
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null) => (err ? reject(err) : resolve());
      switch (e.type) {
        case 'dir':
          pack.entry({ ...header, type: 'directory' }, done);
          break;
        case 'symlink':
          pack.entry({ ...header, type: 'symlink', linkname: e.target }, done);
          break;
        case 'data':
          pack.entry({ ...header, type: 'file' }, e.data, done);
          break;
        case 'file':
          readFile(e.source).then((buf) => {
            if (buf.length !== e.size) reject(new Error(`${e.source} changed while the image was built`));
            else pack.entry({ ...header, type: 'file' }, buf, done);
          }, reject);
          break;
      }
    });
  }
  pack.finalize();
  await written;
  return { diffId: `sha256:${tarHash.digest('hex')}`, layerTarSize };
}

function hashing(hash: Hash, count: (n: number) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      count(chunk.length);
      cb(null, chunk);
    },
  });
}

function json(v: unknown): Buffer {
  return Buffer.from(JSON.stringify(v));
}

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return `sha256:${h.digest('hex')}`;
}
