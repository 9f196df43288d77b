/**
 * A cell is judged over several alternated relay/Postfix pairs in one run, not over one pair:
 * other load on a shared machine moves single passes by ±20 %. Each figure is then given as its
 * spread over the pairs (min, median, max), ratios computed pair by pair.
 */

export interface Spread {
  min: number;
  median: number;
  max: number;
  n: number;
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;

export function spread(values: readonly number[]): Spread {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return { min: Number.NaN, median: Number.NaN, max: Number.NaN, n: 0 };
  const mid = v.length >> 1;
  const median = v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return { min: r3(v[0]!), median: r3(median), max: r3(v.at(-1)!), n: v.length };
}

/** Pair by pair a/b (pairs where either is missing or b is 0 are left out). */
export function ratioSpread<T>(
  pairs: readonly T[],
  a: (p: T) => number | undefined,
  b: (p: T) => number | undefined,
): Spread {
  const out: number[] = [];
  for (const p of pairs) {
    const x = a(p);
    const y = b(p);
    if (x !== undefined && y !== undefined && y !== 0) out.push(x / y);
  }
  return spread(out);
}

/** "1.82x (1.61-2.04)": the median, then min-max over the pairs. */
export function formatRatio(s: Spread | undefined, d = 2): string {
  if (!s?.n) return '-';
  return s.n === 1
    ? `${s.median.toFixed(d)}x`
    : `${s.median.toFixed(d)}x (${s.min.toFixed(d)}–${s.max.toFixed(d)})`;
}

/** "0.9 (0.8-1.4)": median, then min-max. */
export function formatSpread(s: Spread | undefined, d = 1): string {
  if (!s?.n) return '-';
  return s.n === 1 ? s.median.toFixed(d) : `${s.median.toFixed(d)} (${s.min.toFixed(d)}–${s.max.toFixed(d)})`;
}
