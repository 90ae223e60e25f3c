import { mulberry32 } from '../shared/random.js';

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

/**
 * Pearson chi-square test of homogeneity on a 2 x k contingency table: do the two count
 * vectors come from the same categorical distribution? Both are samples, so the reference
 * counts are not treated as exact. Bins empty in both are dropped; df = remaining bins - 1.
 * `minExpected` is the smallest expected cell count: below 5 the approximation does not hold.
 */
export function chiSquare(reference: readonly number[], current: readonly number[]): { statistic: number; df: number; pValue: number; minExpected: number } {
  checkSameLength(reference, current);
  const nr = reference.reduce((a, b) => a + b, 0);
  const nc = current.reduce((a, b) => a + b, 0);
  if (nr <= 0 || nc <= 0) throw new Error('chi-square needs counts in both distributions');
  const n = nr + nc;
  let statistic = 0;
  let bins = 0;
  let minExpected = Infinity;
  for (let i = 0; i < reference.length; i++) {
    const total = reference[i]! + current[i]!;
    if (total <= 0) continue;
    bins++;
    const er = (total * nr) / n;
    const ec = (total * nc) / n;
    minExpected = Math.min(minExpected, er, ec);
    statistic += (reference[i]! - er) ** 2 / er + (current[i]! - ec) ** 2 / ec;
  }
  const df = bins - 1;
  return { statistic, df, pValue: df === 0 ? 1 : chiSquarePValue(statistic, df), minExpected };
}

/**
 * Permutation p-value of `statistic` for two count vectors over the same bins: the share of
 * random splits of the pooled observations (same arm sizes) whose statistic is at least the
 * observed one, (hits + 1) / (rounds + 1). Exact where the chi-square approximation is not
 * (sparse bins, very unequal arms). Seeded, so the same counts always give the same p-value.
 * Each round draws the smaller arm by a partial Fisher-Yates shuffle: O(rounds x smaller arm).
 */
export function permutationPValue(a: readonly number[], b: readonly number[], statistic: (a: readonly number[], b: readonly number[]) => number, rounds = 999, seed = 0x9e3779b9): number {
  checkSameLength(a, b);
  const na = a.reduce((x, y) => x + y, 0);
  const nb = b.reduce((x, y) => x + y, 0);
  if (na <= 0 || nb <= 0) return 1;
  const observed = statistic(a, b);
  const pool = new Uint16Array(na + nb);
  let at = 0;
  for (let i = 0; i < a.length; i++) for (let c = a[i]! + b[i]!; c > 0; c--) pool[at++] = i;
  const m = Math.min(na, nb);
  const total = a.map((ai, i) => ai + b[i]!);
  const rand = mulberry32(seed);
  const drawn = new Array<number>(a.length);
  const rest = new Array<number>(a.length);
  let hits = 0;
  for (let r = 0; r < rounds; r++) {
    drawn.fill(0);
    for (let k = 0; k < m; k++) {
      const j = k + Math.floor(rand() * (pool.length - k));
      const v = pool[j]!;
      pool[j] = pool[k]!;
      pool[k] = v;
      drawn[v]!++;
    }
    for (let i = 0; i < rest.length; i++) rest[i] = total[i]! - drawn[i]!;
    // The drawn split has the smaller arm's size; the statistic sees the arms in their order.
    const value = na <= nb ? statistic(drawn, rest) : statistic(rest, drawn);
    if (value >= observed - 1e-12) hits++;
  }
  return (hits + 1) / (rounds + 1);
}

/** P(X >= x) for X ~ chi-square with df degrees of freedom. */
export function chiSquarePValue(x: number, df: number): number {
  if (!(df > 0)) throw new Error(`chi-square needs positive degrees of freedom, got ${df}`);
  if (x <= 0) return 1;
  return regularisedGammaQ(df / 2, x / 2);
}

/** ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; ~15 significant digits). */
function lnGamma(x: number): number {
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
    -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - lnGamma(1 - x);
  const z = x - 1;
  let sum = c[0]!;
  for (let i = 1; i < c.length; i++) sum += c[i]! / (z + i);
  const t = z + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(sum);
}

/** Q(a, x) = Γ(a, x) / Γ(a): the series for x < a + 1, else a Lentz continued fraction. */
function regularisedGammaQ(a: number, x: number): number {
  const logPrefix = -x + a * Math.log(x) - lnGamma(a);
  if (x < a + 1) {
    let term = 1 / a;
    let sum = term;
    for (let n = 1; n < 10_000; n++) {
      term *= x / (a + n);
      sum += term;
      if (Math.abs(term) < Math.abs(sum) * 1e-15) break;
    }
    return Math.min(1, Math.max(0, 1 - sum * Math.exp(logPrefix)));
  }
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 10_000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-15) break;
  }
  return Math.min(1, Math.max(0, Math.exp(logPrefix) * h));
}

/**
 * Kolmogorov-Smirnov distance: the largest gap between two CDFs evaluated at the same
 * points. Evaluated only at those points, it is a lower bound on the exact statistic.
 */
export function ksStatistic(cdfA: readonly number[], cdfB: readonly number[]): number {
  checkSameLength(cdfA, cdfB);
  let d = 0;
  for (let i = 0; i < cdfA.length; i++) d = Math.max(d, Math.abs(cdfA[i]! - cdfB[i]!));
  return d;
}

/**
 * Asymptotic p-value of the two-sample KS test for distance d between samples of sizes n
 * and m (Kolmogorov distribution with Stephens' small-sample correction).
 */
export function ksPValue(d: number, n: number, m: number): number {
  if (n <= 0 || m <= 0) throw new Error(`KS needs two non-empty samples, got sizes ${n} and ${m}`);
  if (d <= 0) return 1;
  const ne = Math.sqrt((n * m) / (n + m));
  const lambda = (ne + 0.12 + 0.11 / ne) * d;
  if (lambda < 0.2) return 1; // the series converges slowly here and its sum is 1 to 1e-10
  let sum = 0;
  for (let j = 1; j <= 100; j++) {
    const term = Math.exp(-2 * j * j * lambda * lambda);
    sum += (j % 2 === 1 ? 1 : -1) * term;
    if (term < 1e-16) break;
  }
  return Math.min(1, Math.max(0, 2 * sum));
}
