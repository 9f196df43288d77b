import { readFile } from 'node:fs/promises';
import { describe, expect, inject, it } from 'vitest';
import { DOC, generateTables, withTables } from '../../../scripts/permissions.ts';

// docs/permissions.md lists every verb each identity holds, generated from the manifests: any
// grant the table lacks (or lists but no longer exists) fails here until the table is regenerated
// (npm run permissions) and the change reviewed. The other tests in this folder check that the
// apiserver's answers for these identities are exactly these rows.

const kubectl = inject('kubectl');

describe('docs/permissions.md', () => {
  it('is the table of what deploy/base, deploy/namespaced and deploy/upgrade-0.1 grant', async () => {
    const doc = await readFile(DOC, 'utf8');
    expect(withTables(doc, await generateTables(kubectl))).toBe(doc);
  });
});
