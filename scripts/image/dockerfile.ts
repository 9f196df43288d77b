import { posix } from 'node:path';
import type { RuntimeConfig } from './oci.ts';

// Reads what a Dockerfile's final stage promises at run time (USER, WORKDIR, ENV, ENTRYPOINT, CMD,
// EXPOSE, COPY destinations), so a test can hold the Docker-free image to the same contract.
// Only the instruction forms this project uses are understood; anything else in the final stage
// that would change the runtime contract is an error, not silently ignored.

export interface StageContract {
  /** The final stage's base image, e.g. gcr.io/distroless/nodejs20-debian12:nonroot */
  base: string;
  user?: string;
  workdir: string;
  env: Record<string, string>;
  entrypoint?: string[];
  cmd?: string[];
  exposedPorts: string[];
  /** COPY lines: the source paths (as written) and the absolute destination in the image. */
  copies: { from?: string; sources: string[]; to: string }[];
}

/** Logical lines: comments dropped, `\` continuations joined. */
function instructions(text: string): { op: string; args: string }[] {
  const out: { op: string; args: string }[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!pending && (line === '' || line.startsWith('#'))) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const full = pending + line;
    pending = '';
    const m = /^(\S+)\s*(.*)$/.exec(full);
    if (m) out.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim() });
  }
  return out;
}

function execForm(op: string, args: string): string[] {
  let v: unknown;
  try {
    v = JSON.parse(args);
  } catch {
    throw new Error(`Dockerfile: ${op} must use the exec form ["..."], got: ${args}`);
  }
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) {
    throw new Error(`Dockerfile: ${op} must be a JSON array of strings`);
  }
  return v;
}

/** The runtime contract of the last `FROM` stage. */
export function parseFinalStage(text: string): StageContract {
  const all = instructions(text);
  const lastFrom = all.map((i) => i.op).lastIndexOf('FROM');
  if (lastFrom < 0) throw new Error('Dockerfile: no FROM');
  // WORKDIR of each named earlier stage: `COPY --from=build /app/dist` means the build's `dist`.
  const stageWorkdirs: Record<string, string> = {};
  let current: string | undefined;
  for (const { op, args } of all.slice(0, lastFrom)) {
    if (op === 'FROM') {
      current = /\sAS\s+(\S+)\s*$/i.exec(args)?.[1];
      if (current) stageWorkdirs[current] = '/';
    } else if (op === 'WORKDIR' && current) {
      stageWorkdirs[current] = posix.resolve(stageWorkdirs[current]!, args);
    }
  }
  const base = all[lastFrom]!.args.split(/\s+/)[0]!;
  const stage: StageContract = { base, workdir: '/', env: {}, exposedPorts: [], copies: [] };
  for (const { op, args } of all.slice(lastFrom + 1)) {
    switch (op) {
      case 'USER':
        stage.user = args;
        break;
      case 'WORKDIR':
        stage.workdir = posix.resolve(stage.workdir, args);
        break;
      case 'ENV': {
        // ENV K=V [K2=V2...] (values unquoted or "double quoted"), or the legacy ENV K V.
        const pairs = [...args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g)];
        if (pairs.length === 0) {
          const [k, ...v] = args.split(/\s+/);
          stage.env[k!] = v.join(' ');
        }
        for (const [, k, v] of pairs) stage.env[k!] = v!.startsWith('"') ? (JSON.parse(v!) as string) : v!;
        break;
      }
      case 'ENTRYPOINT':
        stage.entrypoint = execForm(op, args);
        // Docker: a later ENTRYPOINT resets an inherited CMD.
        stage.cmd = undefined;
        break;
      case 'CMD':
        stage.cmd = execForm(op, args);
        break;
      case 'EXPOSE':
        for (const p of args.split(/\s+/)) stage.exposedPorts.push(p.includes('/') ? p : `${p}/tcp`);
        break;
      case 'COPY': {
        const words = args.split(/\s+/);
        const flags = words.filter((w) => w.startsWith('--'));
        const paths = words.filter((w) => !w.startsWith('--'));
        const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
        if (paths.length < 2) throw new Error(`Dockerfile: COPY needs a source and a destination: ${args}`);
        const to = posix.resolve(stage.workdir, paths.at(-1)!);
        const root = from ? stageWorkdirs[from] : '/';
        if (root === undefined) throw new Error(`Dockerfile: COPY --from=${from}: no stage of that name`);
        // Sources as paths relative to the build context (or to the named stage's WORKDIR).
        const sources = paths.slice(0, -1).map((p) => posix.relative(root, posix.resolve(root, p)));
        stage.copies.push({ ...(from ? { from } : {}), sources, to });
        break;
      }
      case 'ARG':
      case 'LABEL':
        break;
      default:
        throw new Error(
          `Dockerfile: final stage has ${op}, which scripts/image/dockerfile.ts does not model; ` +
            'teach it (and the image builder) what it means for the runtime contract',
        );
    }
  }
  return stage;
}

export interface AppPath {
  from: string;
  to: string;
}

/**
 * Every way the Dockerfile's final stage and the Docker-free image disagree, as sentences naming the
 * field; [] when they agree. `app` is what the builder puts under the workdir (contract.ts),
 * `nodeVersion` the version of the node binary in the image.
 */
export function contractDiff(
  stage: StageContract,
  config: RuntimeConfig,
  app: readonly AppPath[],
  nodeVersion: string,
): string[] {
  const diffs: string[] = [];
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  const check = (field: string, docker: unknown, image: unknown) => {
    if (!same(docker, image)) {
      diffs.push(`${field}: Dockerfile ${JSON.stringify(docker)}, image ${JSON.stringify(image)}`);
    }
  };
  check('USER', stage.user, config.User);
  check('WORKDIR', stage.workdir, config.WorkingDir);
  check('ENTRYPOINT', stage.entrypoint, config.Entrypoint);
  check('CMD', stage.cmd, config.Cmd);
  check('EXPOSE', [...stage.exposedPorts].sort(), Object.keys(config.ExposedPorts ?? {}).sort());
  // PATH comes from the base image (distroless), not from the Dockerfile; every other variable must match.
  const imageEnv = Object.fromEntries(
    config.Env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]).filter(
      ([k]) => k !== 'PATH',
    ),
  );
  check('ENV', sortKeys(stage.env), sortKeys(imageEnv));
  // The image carries the host's node: its major must be the base image's (nodejs20 -> 20.x).
  check('FROM nodejsNN', /\/nodejs(\d+)-/.exec(stage.base)?.[1], nodeVersion.replace(/^v/, '').split('.')[0]);
  const dockerCopies = stage.copies.map((c) => ({ from: c.sources.join(' '), to: c.to }));
  check('COPY', sortBy(dockerCopies), sortBy(app.map(({ from, to }) => ({ from, to }))));
  return diffs;
}

function sortKeys(o: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)));
}

function sortBy(list: AppPath[]): AppPath[] {
  return [...list].sort((a, b) => (a.to < b.to ? -1 : a.to > b.to ? 1 : 0));
}
