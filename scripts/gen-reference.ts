/**
 * Writes docs/reference.md from the same zod schemas the CRDs come from (`npm run reference`):
 * the EmailRelay and EmailPolicy fields exactly as the API server validates them, and the relay's
 * own configuration file. `--check` writes nothing and exits 1 when the checked-in file is stale.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { configSchema } from '../src/config/schema.ts';
import { KINDS, openApiSchema } from '../src/operator/api/crd.ts';
import { API_VERSION } from '../src/operator/api/meta.ts';
import { createOperatorMetrics } from '../src/operator/runtime/metrics.ts';
import { createRelayMetrics } from '../src/relay/metrics.ts';

type Schema = Record<string, unknown>;
interface Row {
  path: string;
  type: string;
  dflt: string;
  description: string;
}

const MAX_SAFE = new Set([Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]);

function typeOf(s: Schema): string {
  if (s['x-kubernetes-int-or-string']) return 'int or string';
  if (s['type'] === 'array') {
    const items = (s['items'] ?? {}) as Schema;
    return `${typeOf(items)}[]`;
  }
  if (s['type'] === 'object' && s['additionalProperties'] && !s['properties']) {
    return `map[string]${typeOf(s['additionalProperties'] as Schema)}`;
  }
  if (s['enum']) return (s['enum'] as unknown[]).map((v) => `\`${String(v)}\``).join(' \\| ');
  return String(s['type'] ?? 'any');
}

/** Bounds and shapes worth a reader's eye; regex patterns stay in the CRD (`kubectl explain`). */
function constraints(s: Schema): string[] {
  const out: string[] = [];
  const num = (k: string, label: string) => {
    const v = s[k];
    if (typeof v === 'number' && !MAX_SAFE.has(v)) out.push(`${label} ${v}`);
  };
  num('minimum', '≥');
  num('exclusiveMinimum', '>');
  num('maximum', '≤');
  num('minLength', 'min length');
  num('maxLength', 'max length');
  num('minItems', 'min items');
  num('maxItems', 'max items');
  if (s['pattern'] && String(s['pattern']).length <= 40) out.push(`pattern \`${String(s['pattern'])}\``);
  return out;
}

const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function walk(s: Schema, path: string, required: boolean, rows: Row[], rules: string[]): void {
  const hasDefault = s['default'] !== undefined;
  const desc = [String(s['description'] ?? '')];
  const extra = constraints(s);
  if (extra.length) desc.push(`(${extra.join(', ')})`);
  if (required && !hasDefault) desc.unshift('**Required.**');
  for (const v of (s['x-kubernetes-validations'] ?? []) as { rule: string; message: string }[]) {
    rules.push(`- \`${path || '.'}\`: ${v.message} (\`${v.rule}\`)`);
  }
  if (path) {
    rows.push({
      path,
      type: typeOf(s),
      // An object's default is the defaults of its fields, listed on their own rows.
      dflt: hasDefault && s['type'] !== 'object' ? `\`${JSON.stringify(s['default'])}\`` : '',
      description: cell(desc.filter(Boolean).join(' ')),
    });
  }
  const props = s['properties'] as Record<string, Schema> | undefined;
  if (s['type'] === 'object' && props) {
    const req = new Set((s['required'] ?? []) as string[]);
    for (const [name, child] of Object.entries(props)) {
      walk(child, path ? `${path}.${name}` : name, req.has(name), rows, rules);
    }
  }
  const items = s['items'] as Schema | undefined;
  if (s['type'] === 'array' && items?.['type'] === 'object' && items['properties']) {
    walk({ ...items, description: undefined }, `${path}[]`, false, [], rules);
    const req = new Set((items['required'] ?? []) as string[]);
    for (const [name, child] of Object.entries(items['properties'] as Record<string, Schema>)) {
      walk(child, `${path}[].${name}`, req.has(name), rows, rules);
    }
  }
}

function section(title: string, intro: string, schema: Schema, prefix: string): string {
  const rows: Row[] = [];
  const rules: string[] = [];
  walk(schema, prefix, false, rows, rules);
  // The root row (prefix itself) restates the intro.
  const body = rows.filter((r) => r.path !== prefix);
  const lines = [
    `## ${title}`,
    '',
    intro,
    '',
    '| Field | Type | Default | Description |',
    '|---|---|---|---|',
  ];
  for (const r of body) lines.push(`| \`${r.path}\` | ${r.type} | ${r.dflt} | ${r.description} |`);
  if (rules.length)
    lines.push('', 'Checked by the API server (CEL) and again by the operator:', '', ...rules);
  return `${lines.join('\n')}\n`;
}

/** The metrics of a registry (Node's default process metrics left out), as a table. */
async function metricsTable(registry: import('prom-client').Registry): Promise<string[]> {
  const rows = ['| Metric | Type | Labels | Meaning |', '|---|---|---|---|'];
  for (const m of await registry.getMetricsAsJSON()) {
    const labels =
      (registry.getSingleMetric(m.name) as unknown as { labelNames?: string[] }).labelNames ?? [];
    rows.push(
      `| \`${m.name}\` | ${m.type} | ${labels.map((l) => `\`${l}\``).join(', ')} | ${cell(m.help)} |`,
    );
  }
  return rows;
}

async function metricsSection(): Promise<string> {
  return [
    '## Metrics',
    '',
    'Generated from the registries the relay and the operator serve on `/metrics`, so this list is',
    "what they export. Both also export Node's process metrics (`process_*`, `nodejs_*`).",
    '',
    '### Relay',
    '',
    ...(await metricsTable(createRelayMetrics({ defaultMetrics: false }).registry)),
    '',
    '### Operator',
    '',
    ...(await metricsTable(createOperatorMetrics({ defaultMetrics: false }).registry)),
    '',
  ].join('\n');
}

export async function renderReference(): Promise<string> {
  const parts = [
    '# Reference',
    '',
    '<!-- Generated by scripts/gen-reference.ts from src/operator/api and src/config; do not edit (npm run reference). -->',
    '',
    `The fields of the \`${API_VERSION}\` kinds, generated from the zod schemas that also generate`,
    'the CRDs in `crds/` and that the operator parses with, so this page, `kubectl explain` and the',
    'operator cannot disagree. Then the relay configuration file (`email-relay relay --config`),',
    "which the operator renders into each relay's ConfigMap and which a relay outside Kubernetes",
    'reads directly.',
    '',
    '- [EmailRelay spec](#emailrelay-spec)',
    '- [EmailRelay status](#emailrelay-status)',
    '- [EmailPolicy spec](#emailpolicy-spec)',
    '- [EmailPolicy status](#emailpolicy-status)',
    '- [Relay configuration file](#relay-configuration-file)',
    '- [Metrics](#metrics)',
    '',
  ];
  for (const kind of KINDS) {
    parts.push(section(`${kind.kind} spec`, kind.description, openApiSchema(kind.spec), 'spec'));
    parts.push(
      section(`${kind.kind} status`, 'Written by the operator.', openApiSchema(kind.status), 'status'),
    );
  }
  const config = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Schema;
  parts.push(
    section(
      'Relay configuration file',
      'YAML or JSON. Environment variables (`EMAIL_RELAY_HOSTNAME`, `EMAIL_RELAY_LISTEN`, `EMAIL_RELAY_HTTP`, ' +
        '`EMAIL_RELAY_UPSTREAM`, `EMAIL_RELAY_SPOOL`, `EMAIL_RELAY_ALLOW`, `EMAIL_RELAY_LOG_LEVEL`) override the ' +
        'file and flags override both; an invalid value exits with status 2 and names the field. Durations are ' +
        'seconds, sizes bytes. Secrets are never values here, only paths to mounted files.',
      config,
      '',
    ),
  );
  parts.push(await metricsSection());
  return `${parts.join('\n').trimEnd()}\n`;
}

const isMain = process.argv[1] && import.meta.filename === process.argv[1];
if (isMain) {
  const path = join(import.meta.dirname, '..', 'docs', 'reference.md');
  const text = await renderReference();
  const current = await readFile(path, 'utf8').catch(() => undefined);
  if (current !== text) {
    if (process.argv.includes('--check')) {
      process.stderr.write('stale docs/reference.md (run npm run reference)\n');
      process.exit(1);
    }
    await writeFile(path, text);
    process.stdout.write('wrote docs/reference.md\n');
  }
}
