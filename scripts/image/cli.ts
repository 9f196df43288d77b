import { copyFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { importIntoContainerd } from './containerd.ts';
import { buildImage, IMAGE_KINDS, type ImageKind } from './images.ts';

// npm run image -- [relay|client|pause|all] [--out FILE] [--name REF] [--import [--containerd-address SOCK]]
// Progress goes to stderr; one line per image on stdout: "<name> <archive> <manifest digest>".

const USAGE = `usage: npm run image -- [relay|client|pause|all] [options]
  (default: relay)  relay = the product image (Dockerfile's final stage, without Docker);
                    client = node + nodemailer + python3 for test pods; pause = pod sandbox
  --out FILE                 also copy the OCI archive to FILE (one image only)
  --name REF                 image reference (default localhost/email-relay[-KIND]:<package version>)
  --import                   import into containerd's k8s.io namespace with ctr
  --containerd-address SOCK  containerd socket for --import (default: ctr's default)
  --snapshotter NAME         snapshotter to unpack into on --import`;

const log = (line: string) => process.stderr.write(`[image] ${line}\n`);

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: {
      out: { type: 'string' },
      name: { type: 'string' },
      import: { type: 'boolean', default: false },
      'containerd-address': { type: 'string' },
      snapshotter: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const which = positionals[0] ?? 'relay';
  if (positionals.length > 1 || (which !== 'all' && !IMAGE_KINDS.includes(which as ImageKind))) {
    throw new UsageError(`unknown image ${positionals.join(' ')}`);
  }
  const kinds = which === 'all' ? IMAGE_KINDS : [which as ImageKind];
  if (kinds.length > 1 && (values.out || values.name))
    throw new UsageError('--out and --name take one image');
  for (const kind of kinds) {
    const started = Date.now();
    const img = await buildImage({ kind, ...(values.name ? { name: values.name } : {}), log });
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    log(
      `${img.name}: ${img.cached ? 'cached' : 'built'} in ${secs}s, layer ${(img.layerSize / 2 ** 20).toFixed(1)} MiB gz ` +
        `(${(img.layerTarSize / 2 ** 20).toFixed(1)} MiB), manifest ${img.manifestDigest}`,
    );
    let archive = img.archive;
    if (values.out) {
      await copyFile(img.archive, values.out);
      archive = values.out;
    }
    if (values.import) {
      const out = await importIntoContainerd(archive, {
        name: img.name,
        digest: img.manifestDigest,
        ...(values['containerd-address'] ? { address: values['containerd-address'] } : {}),
        ...(values.snapshotter ? { snapshotter: values.snapshotter } : {}),
      });
      log(`imported into containerd (k8s.io): ${out.trim()}`);
    }
    process.stdout.write(`${img.name} ${archive} ${img.manifestDigest}\n`);
  }
}

class UsageError extends Error {}

main().catch((err: unknown) => {
  if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    process.exit(2);
  }
  process.stderr.write(`[image] ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
