import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RELAY_CONTRACT } from '../../../scripts/image/contract.ts';
import { contractDiff, parseFinalStage } from '../../../scripts/image/dockerfile.ts';
import { ROOT, relayRuntimeConfig } from '../../../scripts/image/images.ts';

// The Dockerfile (how users with Docker build the image) and scripts/image (how the node tests
// build it without Docker) must promise the same runtime: a change to one side fails here.

const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const diff = (text: string) =>
  contractDiff(parseFinalStage(text), relayRuntimeConfig(), RELAY_CONTRACT.app, process.version);

describe('Dockerfile final stage vs the Docker-free image (scripts/image)', () => {
  it('agree on user, workdir, env, entrypoint and its node flags, cmd, ports, copied paths', () => {
    expect(diff(dockerfile)).toEqual([]);
  });

  it('the node that goes into the image has the base image major version', () => {
    expect(parseFinalStage(dockerfile).base).toMatch(/nodejs\d+-/);
  });

  // Each edit below is one a maintainer could make to the Dockerfile alone: the check must name it.
  const edits: [string, (t: string) => string, RegExp][] = [
    ['USER', (t) => t.replace('USER 65532:65532', 'USER 0'), /^USER: /],
    ['WORKDIR', (t) => t.replace(/(FROM gcr[^\n]*\n)WORKDIR \/app/, '$1WORKDIR /srv'), /^WORKDIR: /],
    [
      'a node flag',
      (t) => t.replace('--heap-growing-percent=50', '--heap-growing-percent=40'),
      /^ENTRYPOINT: /,
    ],
    ['CMD', (t) => t.replace('CMD ["--help"]', 'CMD ["relay"]'), /^CMD: /],
    ['a port', (t) => t.replace('EXPOSE 25 9090 8080', 'EXPOSE 25 9090'), /^EXPOSE: /],
    ['ENV', (t) => t.replace('ENV NODE_ENV=production', 'ENV NODE_ENV=production TZ=UTC'), /^ENV: /],
    ['a COPY', (t) => t.replace('COPY crds ./crds\n', ''), /^COPY: /],
    ['a COPY destination', (t) => t.replace('COPY crds ./crds', 'COPY crds /crds'), /^COPY: /],
    ['the base image', (t) => t.replace('nodejs20-debian12', 'nodejs22-debian12'), /^FROM nodejsNN: /],
  ];
  for (const [what, edit, named] of edits) {
    it(`names a Dockerfile-only change of ${what}`, () => {
      const edited = edit(dockerfile);
      expect(edited).not.toBe(dockerfile);
      // (A WORKDIR change also moves the relative COPY destinations: more than one line is fine.)
      expect(diff(edited).some((line) => named.test(line))).toBe(true);
    });
  }

  it('names an image-only change (the builder config drifting from the Dockerfile)', () => {
    const config = { ...relayRuntimeConfig(), User: '1000:1000' };
    expect(contractDiff(parseFinalStage(dockerfile), config, RELAY_CONTRACT.app, process.version)).toEqual([
      'USER: Dockerfile "65532:65532", image "1000:1000"',
    ]);
  });

  it('refuses a final-stage instruction it does not model instead of ignoring it', () => {
    expect(() => parseFinalStage(`${dockerfile}\nVOLUME /data\n`)).toThrow(/VOLUME/);
    expect(() => parseFinalStage(dockerfile.replace('CMD ["--help"]', 'CMD --help'))).toThrow(/exec form/);
  });

  it('reads continuation lines, legacy ENV and stage-relative COPY sources', () => {
    const stage = parseFinalStage(
      'FROM a AS b\nWORKDIR /w\nFROM c\nWORKDIR /x\nENV A 1 2\nENV B="q r" \\\n  C=3\nCOPY --from=b /w/out ./o\n',
    );
    expect(stage.env).toEqual({ A: '1 2', B: 'q r', C: '3' });
    expect(stage.copies).toEqual([{ from: 'b', sources: ['out'], to: '/x/o' }]);
  });
});
