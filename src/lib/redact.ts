import { createHmac } from 'node:crypto';

/**
 * Mail addresses in log lines, for teams whose privacy rules forbid them in logs: `mask` keeps
 * the first character of the local part and the domain (`j***@example.com`: which domain defers
 * is still visible), `hash` replaces the local part by a keyed hash (`h-3f9a0c1d2e4b@example.com`:
 * the same address always gives the same token, so one message can still be followed through the
 * logs). Field names never change; only values do.
 */
export type AddressRedaction = 'plain' | 'mask' | 'hash';

// Local part up to the @, then a domain or an address literal; as loose as what can reach a log.
const ADDRESS = /[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)/g;

export function addressRedactor(mode: AddressRedaction, key = ''): (text: string) => string {
  if (mode === 'plain') return (text) => text;
  const one = (addr: string) => {
    const at = addr.lastIndexOf('@');
    const local = addr.slice(0, at);
    const domain = addr.slice(at);
    if (mode === 'mask') return `${local.slice(0, 1)}***${domain}`;
    const token = createHmac('sha256', key).update(local.toLowerCase()).update(domain.toLowerCase());
    return `h-${token.digest('hex').slice(0, 12)}${domain}`;
  };
  return (text) => (text.includes('@') ? text.replace(ADDRESS, one) : text);
}

/** A deep copy of a log object with every address in its string values redacted; Errors kept as they are. */
export function redactValue(value: unknown, redact: (text: string) => string, maxDepth = 8): unknown {
  if (typeof value === 'string') return redact(value);
  if (maxDepth <= 0 || value === null || typeof value !== 'object' || value instanceof Error) return value;
  if (Array.isArray(value)) return value.map((v) => redactValue(v, redact, maxDepth - 1));
  if (Object.getPrototypeOf(value) !== Object.prototype) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = redactValue(v, redact, maxDepth - 1);
  return out;
}
