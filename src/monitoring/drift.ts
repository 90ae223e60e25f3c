/**
 * Drift and data-quality measures of a window of served data against a ReferenceProfile.
 * Everything comes from one aggregate scan of the window; the statistics are then
 * computed here from the counts.
 */
import type { DuckDBConnection } from '@duckdb/node-api';
import { driftThresholdsSchema, DEFAULT_THRESHOLDS, type DriftThresholds, type DriftThresholdsInput, type ResolvedThresholds } from './thresholds.js';
import { firstRow, quoteIdent } from '../data/load.js';
import { chiSquare, jsDivergence, ksPValue, ksStatistic, psi } from './divergence.js';
import {
  binCounts,
  cumulativeAt,
  doubleList,
  finite,
  gridBoundaries,
  histogramEntries,
  valueExpressions,
  type CategoricalReference,
  type FeatureReference,
  type NumericReference,
  type ReferenceProfile,
} from './reference.js';

export { driftThresholdsSchema, DEFAULT_THRESHOLDS } from './thresholds.js';
export type { MeasureThresholds, DriftThresholds, DriftThresholdsInput } from './thresholds.js';

export type MeasureName = Exclude<keyof ResolvedThresholds, 'constant'> | 'constant';

export interface Breach {
  feature: string;
  measure: MeasureName;
  value: number;
  threshold: number;
  /** '>' : breached for being above the threshold; '<' : below it (p-values). */
  comparison: '>' | '<';
  message: string;
}

export interface FeatureMeasures {
  /** Share of the window's rows where the value is missing. */
  nullRate: number;
  referenceNullRate: number;
  nullRateIncrease: number;
  /** Distinct non-null values is 1 (numeric: min = max over finite values). */
  constant: boolean;
  psi?: number;
  ks?: number;
  ksPValue?: number;
  /** Share of non-null values outside [min, max] (spec bounds where given, else the reference's), NaN/Infinity included. */
  outOfRange?: number;
  chi2?: number;
  chi2Df?: number;
  chi2PValue?: number;
  js?: number;
  /** Share of non-null values the reference never had; absent when the reference domain was truncated. */
  unseen?: number;
}

export interface FeatureDrift {
  kind: FeatureReference['kind'];
  /** Non-null values in the window (numeric: finite ones, the values the distribution measures use). */
  count: number;
  /** False when count < minSamples: distribution measures were neither computed nor judged. */
  judged: boolean;
  measures: FeatureMeasures;
  breaches: Breach[];
  /** Most frequent unseen categories in the window, at most 10. */
  unseenExamples?: Array<{ value: string; count: number }>;
}

export interface DriftReport {
  sampleSize: number;
  minSamples: number;
  verdict: 'ok' | 'drift' | 'insufficient_data';
  features: Record<string, FeatureDrift>;
  prediction?: FeatureDrift & { column: string };
  /** Every breach, features first then the prediction; empty for insufficient_data. */
  breaches: Breach[];
}

export interface DriftOptions {
  /** Only rows with start <= column < end (timestamps as ISO strings or Dates, compared as TIMESTAMPTZ). */
  window?: { column: string; start?: string | Date; end?: string | Date };
  /** Column holding the prediction in the served data, if it differs from the reference's. */
  predictionColumn?: string;
}

/**
 * Measures the rows of `relation` (a table name or SQL FROM item, see fileRelation) against
 * the reference in a single aggregate scan. Columns missing from the data are an error.
 */
export async function measureDrift(
  conn: DuckDBConnection,
  relation: string,
  reference: ReferenceProfile,
  thresholds: DriftThresholdsInput = {},
  opts: DriftOptions = {},
): Promise<DriftReport> {
  const t = driftThresholdsSchema.parse(thresholds);
  const unknown = Object.keys(t.features).filter((f) => !(f in reference.features));
  if (unknown.length) throw new Error(`thresholds name features the reference does not have: ${unknown.join(', ')}`);

  const items: Array<{ name: string; column: string; ref: FeatureReference }> = Object.entries(reference.features).map(([name, ref]) => ({
    name,
    column: name,
    ref,
  }));
  if (reference.prediction !== undefined) {
    items.push({ name: reference.prediction.column, column: opts.predictionColumn ?? reference.prediction.column, ref: reference.prediction.reference });
  }
  const exprs = await valueExpressions(
    conn,
    relation,
    items.map((it) => ({ name: it.column, kind: it.ref.kind })),
  );

  const selects = ['count(*) AS n'];
  items.forEach((it, i) => {
    const x = exprs[i]!;
    selects.push(`count(${x}) AS nn${i}`);
    if (it.ref.kind === 'numeric') {
      const fin = finite(x);
      const { lo, hi } = range(it.ref);
      // NaN sorts above every number in DuckDB and ±Infinity is outside any finite range
      selects.push(
        `histogram(${fin}, ${doubleList(gridBoundaries(it.ref.cdf.points, it.ref.boundaries))}) AS h${i}`,
        `count_if(${x} < '${lo}'::DOUBLE OR ${x} > '${hi}'::DOUBLE) AS oor${i}`,
        `min(${fin}) AS lo${i}`,
        `max(${fin}) AS hi${i}`,
      );
    } else {
      selects.push(`histogram(${x}) AS h${i}`);
    }
  });
  const { where, params } = windowFilter(opts.window);
  const r = await firstRow(conn, `SELECT ${selects.join(', ')} FROM ${relation}${where}`, params);

  const n = Number(r['n']);
  const insufficient = n < t.minSamples;
  const results: FeatureDrift[] = items.map((it, i) => {
    const limits = resolve(t, it.name, reference.prediction !== undefined && i === items.length - 1);
    const nonNull = Number(r[`nn${i}`]);
    const nullRate = n === 0 ? 0 : (n - nonNull) / n;
    const base = { nullRate, referenceNullRate: it.ref.nullRate, nullRateIncrease: nullRate - it.ref.nullRate };
    const drift =
      it.ref.kind === 'numeric'
        ? numericDrift(it.name, it.ref, r, i, nonNull, t.minSamples, base)
        : categoricalDrift(it.ref, histogramEntries<string>(r[`h${i}`], it.name), t.minSamples, base);
    if (!insufficient) drift.breaches = judge(it.name, it.ref, drift, limits);
    return drift;
  });

  const features: Record<string, FeatureDrift> = {};
  Object.keys(reference.features).forEach((name, i) => {
    features[name] = results[i]!;
  });
  const report: DriftReport = { sampleSize: n, minSamples: t.minSamples, verdict: 'ok', features, breaches: [] };
  if (reference.prediction !== undefined) report.prediction = { column: items.at(-1)!.column, ...results.at(-1)! };
  report.breaches = results.flatMap((f) => f.breaches);
  report.verdict = insufficient ? 'insufficient_data' : report.breaches.length > 0 ? 'drift' : 'ok';
  return report;
}

type BaseMeasures = Pick<FeatureMeasures, 'nullRate' | 'referenceNullRate' | 'nullRateIncrease'>;

function numericDrift(
  name: string,
  ref: NumericReference,
  r: Record<string, unknown>,
  i: number,
  nonNull: number,
  minSamples: number,
  base: BaseMeasures,
): FeatureDrift {
  const entries = histogramEntries<number>(r[`h${i}`], name);
  const cum = cumulativeAt(entries, gridBoundaries(ref.cdf.points, ref.boundaries));
  const finiteCount = entries.reduce((a, [, c]) => a + c, 0);
  const lo = r[`lo${i}`];
  const hi = r[`hi${i}`];
  const constant = finiteCount > 0 && Number(lo) === Number(hi);
  const measures: FeatureMeasures = { ...base, constant };
  const judged = finiteCount >= minSamples;
  if (judged) {
    const current = binCounts(cum, ref.boundaries, finiteCount);
    measures.psi = psi(ref.counts, current);
    measures.ks = ksStatistic(
      ref.cdf.values,
      ref.cdf.points.map((p) => cum.get(p)! / finiteCount),
    );
    measures.ksPValue = ksPValue(measures.ks, ref.count, finiteCount);
    measures.outOfRange = Number(r[`oor${i}`]) / nonNull;
  }
  return { kind: 'numeric', count: finiteCount, judged, measures, breaches: [] };
}

function categoricalDrift(ref: CategoricalReference, entries: Array<[string, number]>, minSamples: number, base: BaseMeasures): FeatureDrift {
  const index = new Map(ref.categories.map((c, k) => [c, k]));
  const other = new Set(ref.otherValues);
  const counts = ref.counts.map(() => 0);
  const unseen: Array<{ value: string; count: number }> = [];
  let count = 0;
  for (const [value, c] of entries) {
    count += c;
    const k = index.get(value);
    if (k !== undefined) counts[k]! += c;
    else if (other.has(value) || !ref.domainComplete) counts[counts.length - 1]! += c;
    else unseen.push({ value, count: c });
  }
  const measures: FeatureMeasures = { ...base, constant: entries.length === 1 };
  const judged = count >= minSamples;
  const drift: FeatureDrift = { kind: 'categorical', count, judged, measures, breaches: [] };
  if (!judged) return drift;
  const unseenCount = unseen.reduce((a, u) => a + u.count, 0);
  if (ref.domainComplete) {
    measures.unseen = unseenCount / count;
    if (unseen.length) drift.unseenExamples = unseen.sort((a, b) => b.count - a.count || (a.value < b.value ? -1 : 1)).slice(0, 10);
  }
  // an empty other bin on both sides carries no information; drop it so it adds no df
  const keep = counts.map((c, k) => c > 0 || ref.counts[k]! > 0);
  const refKept = ref.counts.filter((_, k) => keep[k]);
  const curKept = counts.filter((_, k) => keep[k]);
  if (count - unseenCount > 0) {
    const chi = chiSquare(refKept, curKept);
    measures.chi2 = chi.statistic;
    measures.chi2Df = chi.df;
    measures.chi2PValue = chi.pValue;
    measures.js = jsDivergence(refKept, curKept);
  }
  return drift;
}

function judge(feature: string, ref: FeatureReference, drift: FeatureDrift, t: ResolvedThresholds): Breach[] {
  const m = drift.measures;
  const out: Breach[] = [];
  const above = (measure: Exclude<MeasureName, 'constant'>, value: number | undefined): void => {
    const threshold = t[measure];
    if (value === undefined || threshold === null || !(value > threshold)) return;
    out.push({ feature, measure, value, threshold, comparison: '>', message: `${feature}: ${measure} ${fmt(value)} > ${threshold}` });
  };
  const below = (measure: 'ksPValue' | 'chi2PValue', value: number | undefined): void => {
    const threshold = t[measure];
    if (value === undefined || threshold === null || !(value < threshold)) return;
    out.push({ feature, measure, value, threshold, comparison: '<', message: `${feature}: ${measure} ${fmt(value)} < ${threshold}` });
  };
  above('nullRateIncrease', m.nullRateIncrease);
  above('psi', m.psi);
  above('ks', m.ks);
  below('ksPValue', m.ksPValue);
  above('outOfRange', m.outOfRange);
  above('js', m.js);
  below('chi2PValue', m.chi2PValue);
  above('unseen', m.unseen);
  const referenceVaried = ref.kind === 'numeric' ? ref.min < ref.max : ref.distinct > 1;
  if (t.constant && drift.judged && m.constant && referenceVaried) {
    out.push({ feature, measure: 'constant', value: 1, threshold: 1, comparison: '>', message: `${feature}: holds a single value, unlike the reference` });
  }
  return out;
}

function resolve(t: DriftThresholds, name: string, isPrediction: boolean): ResolvedThresholds {
  const merged = { ...DEFAULT_THRESHOLDS };
  const layers = [t.defaults, isPrediction ? t.prediction : t.features[name]];
  for (const layer of layers) {
    if (layer === undefined) continue;
    for (const [k, v] of Object.entries(layer) as Array<[keyof ResolvedThresholds, ResolvedThresholds[keyof ResolvedThresholds]]>) {
      if (v !== undefined) (merged as Record<keyof ResolvedThresholds, unknown>)[k] = v;
    }
  }
  return merged;
}

function range(ref: NumericReference): { lo: number; hi: number } {
  return { lo: ref.specMin ?? ref.min, hi: ref.specMax ?? ref.max };
}

function windowFilter(window: DriftOptions['window']): { where: string; params: string[] } {
  if (window === undefined) return { where: '', params: [] };
  const col = quoteIdent(window.column);
  const conditions: string[] = [];
  const params: string[] = [];
  const iso = (x: string | Date): string => (x instanceof Date ? x.toISOString() : x);
  if (window.start !== undefined) {
    params.push(iso(window.start));
    conditions.push(`${col} >= CAST($${params.length} AS TIMESTAMPTZ)`);
  }
  if (window.end !== undefined) {
    params.push(iso(window.end));
    conditions.push(`${col} < CAST($${params.length} AS TIMESTAMPTZ)`);
  }
  return { where: conditions.length ? ` WHERE ${conditions.join(' AND ')}` : '', params };
}

function fmt(x: number): string {
  return Number(x.toPrecision(4)).toString();
}
