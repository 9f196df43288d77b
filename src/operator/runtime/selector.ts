export { matchesSelector } from '../../lib/label-selector.ts';

/** The selector in the string form of `kubectl get -l` and `status.selector`. */
export function selectorString(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}
