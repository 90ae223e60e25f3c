/**
 * Reference profile of a model version's training data, the baseline drift is measured
 * against. It is plain JSON so it can be stored next to the model version.
 */
import type { DuckDBConnection } from '@duckdb/node-api';
import type { FeatureKind } from '../data/features.js';
import { firstRow, quoteIdent } from '../data/load.js';

export const OTHER_CATEGORY = '__other__';

export interface FeatureInput {
  name: string;
  kind: FeatureKind;
  /** Declared valid range (e.g. the spec's min/max); when set it replaces the reference's own range for out-of-range checks. */
  min?: number;
  max?: number;
}

/**
 * Numeric values are the column as DOUBLE; NULL and text that does not parse are missing,
 * NaN and ±Infinity are present but never binned (they count as out of range).
 */
export interface NumericReference {
  kind: 'numeric';
  /** Finite values. */
  count: number;
  nullRate: number;
  min: number;
  max: number;
  specMin?: number;
  specMax?: number;
  /**
   * PSI bins from the interior quantiles (strictly increasing, all below max): bin 0 is
   * (-inf, b[0]], bin i is (b[i-1], b[i]], the last is (b[last], +inf), so current values
   * outside the reference range fall in the end bins. A constant column has one bin.
   */
  boundaries: number[];
  /** [min, ...boundaries, max] deduplicated: the bins' edges for display. */
  edges: number[];
  counts: number[];
  proportions: number[];
  /** Reference CDF, P(X <= point), at its own quantiles (deduplicated); the KS grid. */
  cdf: { points: number[]; values: number[] };
}

/** Categorical values are the column as text (booleans read "true"/"false"). */
export interface CategoricalReference {
  kind: 'categorical';
  /** Non-null values. */
  count: number;
  nullRate: number;
  distinct: number;
  /** Most frequent values (ties by value); counts and proportions have one more entry, for OTHER_CATEGORY. */
  categories: string[];
  counts: number[];
  proportions: number[];
  /** The other known values (those folded into OTHER_CATEGORY), sorted; values in neither list are unseen. */
  otherValues: string[];
  /** False when the reference had more distinct values than were kept, so "unseen" cannot be judged. */
  domainComplete: boolean;
}

export type FeatureReference = NumericReference | CategoricalReference;

export interface ReferenceProfile {
  version: 1;
  rowCount: number;
  features: Record<string, FeatureReference>;
  /** The model's output over the reference data, profiled like a feature. */
  prediction?: { column: string; reference: FeatureReference };
}

export interface ReferenceOptions {
  /** Quantile bins for PSI (before deduplication). Default 10 (deciles). */
  bins?: number;
  /** Quantiles of the KS grid. Default 100 (percentiles). */
  cdfPoints?: number;
  /** Categories kept as PSI/chi-square bins; the rest become OTHER_CATEGORY. Default 20. */
  topK?: number;
  /** Distinct values remembered to tell "other" from "unseen". Default 10 000. */
  domainLimit?: number;
  prediction?: { column: string; kind: FeatureKind };
}

/**
 * Profiles `relation` (a table name or any SQL FROM item, see tableRelation/fileRelation)
 * in two scans: one for counts, ranges, quantiles and categorical frequencies, one for
 * the exact reference counts on the (approximate) quantile grid.
 */
export async function buildReferenceProfile(
  conn: DuckDBConnection,
  relation: string,
  features: readonly FeatureInput[],
  opts: ReferenceOptions = {},
): Promise<ReferenceProfile> {
  const bins = positiveInt('bins', opts.bins ?? 10);
  const cdfPoints = positiveInt('cdfPoints', opts.cdfPoints ?? 100);
  const topK = positiveInt('topK', opts.topK ?? 20);
  const domainLimit = Math.max(topK, positiveInt('domainLimit', opts.domainLimit ?? 10_000));

  const all: FeatureInput[] = [...features];
  if (opts.prediction !== undefined) {
    if (features.some((f) => f.name === opts.prediction!.column)) {
      throw new Error(`prediction column "${opts.prediction.column}" is also listed as a feature`);
    }
    all.push({ name: opts.prediction.column, kind: opts.prediction.kind });
  }
  if (all.length === 0) throw new Error('no features to profile');
  const exprs = await valueExpressions(conn, relation, all);

  const fractions = [...new Set([...grid(bins), ...grid(cdfPoints)])].sort((a, b) => a - b);
  const selects = ['count(*) AS n'];
  all.forEach((f, i) => {
    const x = exprs[i]!;
    if (f.kind === 'numeric') {
      const fin = finite(x);
      selects.push(
        `count(${x}) AS nn${i}`,
        `count(${fin}) AS nf${i}`,
        `min(${fin}) AS lo${i}`,
        `max(${fin}) AS hi${i}`,
        // t-digest: exact quantiles with a list of fractions take minutes on millions of rows, and the
        // points need not be exact: reference counts and CDF values are counted exactly at them
        `approx_quantile(${fin}, [${fractions.join(', ')}]) AS q${i}`,
      );
    } else {
      selects.push(`count(${x}) AS nn${i}`, `histogram(${x}) AS h${i}`);
    }
  });
  const r = await firstRow(conn, `SELECT ${selects.join(', ')} FROM ${relation}`);
  const rowCount = Number(r['n']);
  if (rowCount === 0) throw new Error('reference data is empty');

  const out: FeatureReference[] = [];
  const numericGrids: Array<{ index: number; points: number[]; interior: number[] }> = [];
  all.forEach((f, i) => {
    const nullRate = (rowCount - Number(r[`nn${i}`])) / rowCount;
    if (f.kind === 'categorical') {
      out.push(categoricalReference(f.name, histogramEntries(r[`h${i}`], f.name), nullRate, topK, domainLimit));
      return;
    }
    const count = Number(r[`nf${i}`]);
    if (count === 0) throw new Error(`feature "${f.name}": no finite numeric values in the reference data`);
    const min = Number(r[`lo${i}`]);
    const max = Number(r[`hi${i}`]);
    const q = (r[`q${i}`] as number[]).map((x) => Math.min(max, Math.max(min, x)));
    const at = (fraction: number): number => (fraction === 0 ? min : fraction === 1 ? max : q[fractions.indexOf(fraction)]!);
    const points = uniqueSorted(grid(cdfPoints).map(at));
    // a boundary at max would leave an always-empty reference bin above it
    const interior = uniqueSorted(grid(bins).slice(1, -1).map(at)).filter((x) => x < max);
    numericGrids.push({ index: i, points, interior });
    out.push({
      kind: 'numeric',
      count,
      nullRate,
      min,
      max,
      ...(f.min === undefined ? {} : { specMin: f.min }),
      ...(f.max === undefined ? {} : { specMax: f.max }),
      boundaries: interior,
      edges: uniqueSorted([min, ...interior, max]),
      counts: [],
      proportions: [],
      cdf: { points, values: [] },
    });
  });

  if (numericGrids.length > 0) {
    const hist = await firstRow(
      conn,
      `SELECT ${numericGrids.map((g) => `histogram(${finite(exprs[g.index]!)}, ${doubleList(gridBoundaries(g.points, g.interior))}) AS g${g.index}`).join(', ')} FROM ${relation}`,
    );
    for (const g of numericGrids) {
      const ref = out[g.index] as NumericReference;
      const cum = cumulativeAt(histogramEntries(hist[`g${g.index}`], all[g.index]!.name), gridBoundaries(g.points, g.interior));
      ref.cdf.values = g.points.map((p) => cum.get(p)! / ref.count);
      ref.counts = binCounts(cum, g.interior, ref.count);
      ref.proportions = ref.counts.map((c) => c / ref.count);
    }
  }

  const profile: ReferenceProfile = { version: 1, rowCount, features: {} };
  features.forEach((f, i) => {
    profile.features[f.name] = out[i]!;
  });
  if (opts.prediction !== undefined) profile.prediction = { column: opts.prediction.column, reference: out[features.length]! };
  return profile;
}

function categoricalReference(name: string, entries: Array<[string, number]>, nullRate: number, topK: number, domainLimit: number): CategoricalReference {
  const count = entries.reduce((a, [, n]) => a + n, 0);
  if (count === 0) throw new Error(`feature "${name}": no non-null values in the reference data`);
  entries.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const top = entries.slice(0, topK);
  const rest = entries.slice(topK);
  const counts = [...top.map(([, n]) => n), rest.reduce((a, [, n]) => a + n, 0)];
  return {
    kind: 'categorical',
    count,
    nullRate,
    distinct: entries.length,
    categories: top.map(([v]) => v),
    counts,
    proportions: counts.map((n) => n / count),
    otherValues: rest
      .slice(0, domainLimit - topK)
      .map(([v]) => v)
      .sort(),
    domainComplete: entries.length <= domainLimit,
  };
}

// ---- helpers shared with drift.ts ----

/** A table (or view) name as a FROM item. */
export function tableRelation(name: string): string {
  return quoteIdent(name);
}

/** A local CSV, JSON Lines or Parquet file as a FROM item, by extension. */
export function fileRelation(path: string): string {
  const quoted = `'${path.replaceAll("'", "''")}'`;
  if (/\.parquet$/i.test(path)) return `read_parquet(${quoted})`;
  if (/\.csv(\.gz)?$/i.test(path)) return `read_csv(${quoted}, header = true)`;
  if (/\.(jsonl|ndjson)(\.gz)?$/i.test(path)) return `read_json(${quoted}, format = 'newline_delimited')`;
  throw new Error(`cannot tell the format of "${path}": expected .parquet, .csv or .jsonl`);
}

const NUMERIC_TYPES = /^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|FLOAT|DOUBLE|DECIMAL.*)$/;

/**
 * The SQL for each feature's value: DOUBLE for numeric features (TRY_CAST from text, so
 * CSV columns read as VARCHAR work too) and VARCHAR for categorical ones.
 */
export async function valueExpressions(conn: DuckDBConnection, relation: string, features: readonly FeatureInput[]): Promise<string[]> {
  const described = (await conn.runAndReadAll(`DESCRIBE SELECT * FROM ${relation}`)).getRowObjectsJS();
  const types = new Map(described.map((d) => [String(d['column_name']).toLowerCase(), String(d['column_type'])]));
  return features.map((f) => {
    const type = types.get(f.name.toLowerCase());
    if (type === undefined) throw new Error(`feature "${f.name}": no such column in the data`);
    const q = quoteIdent(f.name);
    if (f.kind === 'categorical') return type === 'VARCHAR' ? q : `CAST(${q} AS VARCHAR)`;
    if (type === 'DOUBLE') return q;
    return NUMERIC_TYPES.test(type) ? `CAST(${q} AS DOUBLE)` : `TRY_CAST(${q} AS DOUBLE)`;
  });
}

export function finite(x: string): string {
  return `CASE WHEN isfinite(${x}) THEN ${x} END`;
}

/** k/n for k = 0..n. */
function grid(n: number): number[] {
  return Array.from({ length: n + 1 }, (_, k) => k / n);
}

export function uniqueSorted(xs: readonly number[]): number[] {
  return [...new Set(xs)].sort((a, b) => a - b);
}

/** Boundaries of the counting histogram: the KS points plus the PSI bin boundaries. */
export function gridBoundaries(points: readonly number[], interior: readonly number[]): number[] {
  return uniqueSorted([...points, ...interior]);
}

/** A DOUBLE[] literal that round-trips every value exactly (a bare 0.1 would be a DECIMAL). */
export function doubleList(xs: readonly number[]): string {
  return `[${xs.map((x) => `'${x}'::DOUBLE`).join(', ')}]`;
}

/** DuckDB's histogram() result (a MAP) as [key, count] pairs. */
export function histogramEntries<K extends string | number>(value: unknown, feature: string): Array<[K, number]> {
  if (value === null || value === undefined) return [];
  if (!Array.isArray(value)) throw new Error(`feature "${feature}": unexpected histogram result from DuckDB`);
  return value.map((e: { key: K; value: bigint | number }) => [e.key, Number(e.value)]);
}

/**
 * Count of values <= b for each boundary b, from histogram(x, boundaries): DuckDB puts x
 * in the first bucket whose key is >= x, and values above the last boundary under a
 * larger key.
 */
export function cumulativeAt(entries: Array<[number, number]>, boundaries: readonly number[]): Map<number, number> {
  const sorted = [...entries].sort((a, b) => a[0] - b[0]);
  const out = new Map<number, number>();
  let j = 0;
  let sum = 0;
  for (const b of boundaries) {
    while (j < sorted.length && sorted[j]![0] <= b) sum += sorted[j++]![1];
    out.set(b, sum);
  }
  return out;
}

/** Counts in the PSI bins (-inf, i0], (i0, i1], ..., (i_last, +inf) of `total` finite values. */
export function binCounts(cumulative: Map<number, number>, interior: readonly number[], total: number): number[] {
  const cum = interior.map((b) => cumulative.get(b)!);
  return [...cum.map((c, i) => c - (i === 0 ? 0 : cum[i - 1]!)), total - (cum.at(-1) ?? 0)];
}

function positiveInt(name: string, n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${n}`);
  return n;
}
