/** PromQL helpers for the monitoring tests. */

const PROMQL_WORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'le',
]);

/** Metric names in a PromQL expression: identifiers that are not functions, keywords or label names. */
export function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(by|without|on|ignoring)\s*\([^)]*\)/g, '');
  const names = new Set<string>();
  for (const m of stripped.matchAll(/[A-Za-z_:][\w:]*(?!\w)(?!\s*\()/g)) {
    if (!PROMQL_WORDS.has(m[0])) names.add(m[0]);
  }
  return [...names];
}
