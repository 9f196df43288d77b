import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { anchorsOfFile, headingAnchors, linkTargets } from '../../helpers/markdown.ts';

const root = resolve(import.meta.dirname, '../../..');
const docs = [
  'README.md',
  ...readdirSync(join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

/** Every problem with the links of one file: outside the repo, missing file, missing anchor. */
function brokenLinks(file: string): string[] {
  const abs = join(root, file);
  const text = readFileSync(abs, 'utf8');
  const problems: string[] = [];
  for (const target of linkTargets(text)) {
    if (/^(https?|mailto):/.test(target)) continue;
    const [pathPart = '', anchor] = target.split('#', 2);
    const dest = pathPart ? resolve(dirname(abs), decodeURIComponent(pathPart)) : abs;
    const rel = relative(root, dest);
    if (rel.startsWith('..') || rel.startsWith('/')) {
      problems.push(`${target}: outside the repository`);
      continue;
    }
    if (!existsSync(dest)) {
      problems.push(`${target}: no such file`);
      continue;
    }
    if (anchor && (statSync(dest).isDirectory() || !anchorsOfFile(dest).has(anchor))) {
      problems.push(`${target}: no heading #${anchor} in ${rel}`);
    }
  }
  return problems;
}

describe('links in README.md and docs/', () => {
  it('finds the docs', () => {
    expect(docs).toEqual(
      expect.arrayContaining(['docs/architecture.md', 'docs/operations.md', 'docs/reference.md']),
    );
  });

  for (const file of docs) {
    it(`${file}: every link resolves inside the repository`, () => {
      expect(brokenLinks(file)).toEqual([]);
    });
    it(`${file}: names nothing outside the repository (../shared, the seed file)`, () => {
      const text = readFileSync(join(root, file), 'utf8');
      expect(text).not.toMatch(/\.\.\/shared|\/work\/shared|shared\/DESIGN|seeds\/000_/);
    });
  }

  it('the checker itself catches a missing file, a missing anchor and an escape', () => {
    expect(headingAnchors('# A b\n## A b\n### Queue: list & show\n')).toEqual(
      new Set(['a-b', 'a-b-1', 'queue-list--show']),
    );
    expect(linkTargets('see [x](../shared/DESIGN.md) and `[y](z.md)`\n```\n[w](v.md)\n```\n')).toEqual([
      '../shared/DESIGN.md',
    ]);
  });
});
