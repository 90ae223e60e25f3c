/**
 * Distances between two binned distributions, shared by rollout analysis and drift
 * monitoring. Inputs are counts (or frequencies) over the same bins, in the same order.
 */

/** Added to empty bins so log ratios stay finite (the usual PSI convention). */
export const EPSILON = 1e-4;

function normalise(counts: readonly number[]): number[] {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total <= 0) return counts.map(() => 0);
  return counts.map((c) => c / total);
}

function checkSameLength(a: readonly number[], b: readonly number[]): void {
  if (a.length !== b.length) throw new Error(`distributions have ${a.length} and ${b.length} bins; they must share bins`);
  if (a.length === 0) throw new Error('distributions have no bins');
}

/**
 * Population stability index: sum over bins of (a - e) * ln(a / e), on proportions.
 * 0 = identical; < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift (common reading).
 */
export function psi(expected: readonly number[], actual: readonly number[]): number {
  checkSameLength(expected, actual);
  const e = normalise(expected).map((x) => Math.max(x, EPSILON));
  const a = normalise(actual).map((x) => Math.max(x, EPSILON));
  let sum = 0;
  for (let i = 0; i < e.length; i++) sum += (a[i]! - e[i]!) * Math.log(a[i]! / e[i]!);
  return sum;
}

/** Jensen-Shannon divergence in bits: 0 = identical, 1 = disjoint. Symmetric and always finite. */
export function jsDivergence(p: readonly number[], q: readonly number[]): number {
  checkSameLength(p, q);
  const pn = normalise(p);
  const qn = normalise(q);
  let sum = 0;
  for (let i = 0; i < pn.length; i++) {
    const m = (pn[i]! + qn[i]!) / 2;
    if (pn[i]! > 0) sum += 0.5 * pn[i]! * Math.log2(pn[i]! / m);
    if (qn[i]! > 0) sum += 0.5 * qn[i]! * Math.log2(qn[i]! / m);
  }
  return Math.min(1, Math.max(0, sum));
}
