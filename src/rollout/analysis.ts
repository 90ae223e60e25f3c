import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import type { z } from 'zod';
import { rolloutBoundsSchema, type RolloutBounds } from '../spec/schema.js';
import { sqlString } from '../data/load.js';
import { chiSquare, jsDivergence, permutationPValue } from '../monitoring/divergence.js';
import { downloadPredictionWindow, openPredictionTable, PREDICTIONS_TABLE } from '../monitoring/prediction-window.js';
import { ARMS, type Arm } from '../serving/prediction-log.js';
import type { ArtifactStore } from '../store/artifact-store.js';

/**
 * What `predictionHistogram` counts: `probability` = 10 equal bins of the last class's
 * probability (binary classifiers), `label` = rows per predicted label (more classes),
 * `value` = regression outputs on the caller's edges, `none` = no successful output.
 */
export type HistogramKind = 'probability' | 'label' | 'value' | 'none';

export interface ArmStats {
  arm: Arm;
  versions: number[];
  /** Distinct requestIds. */
  requests: number;
  rows: number;
  /** Requests with a row that has an `error` or no `output`. */
  errors: number;
  /** errors / requests; 0 when there are no requests. */
  errorRate: number;
  /** Per request (latency is per request, shared by its rows); null when no latency was logged. */
  latencyP50Ms: number | null;
  latencyP95Ms: number | null;
  histogramKind: HistogramKind;
  /** One name per bin, the same for every arm of one armStats call. */
  histogramBins: string[];
  predictionHistogram: number[];
}

export interface WindowFilter {
  rolloutId?: string;
  /** Inclusive. */
  from: Date;
  /** Exclusive. */
  to: Date;
}

export interface ArmStatsOptions extends WindowFilter {
  /**
   * Bin edges for regression outputs, strictly ascending: n edges give n + 1 bins
   * (below the first edge, between neighbours, at or above the last). Required when
   * the window holds regression outputs.
   */
  regressionEdges?: readonly number[];
}

const PROBABILITY_BINS = 10;

function windowParams(filter: WindowFilter): { where: string; params: (number | string)[] } {
  for (const [name, value] of [['from', filter.from], ['to', filter.to]] as const) {
    if (!(value instanceof Date) || Number.isNaN(value.getTime())) throw new Error(`rollout analysis: "${name}" is not a valid Date`);
  }
  if (filter.from.getTime() >= filter.to.getTime()) {
    throw new Error(`rollout analysis: window is empty: from (${filter.from.toISOString()}) must be before to (${filter.to.toISOString()})`);
  }
  // epoch_ms truncates to whole ms, which keeps [from, to) exact for ms-precision bounds
  let where = 'epoch_ms("time") >= $1::BIGINT AND epoch_ms("time") < $2::BIGINT';
  const params: (number | string)[] = [filter.from.getTime(), filter.to.getTime()];
  if (filter.rolloutId !== undefined) {
    where += ' AND rolloutId = $3';
    params.push(filter.rolloutId);
  }
  return { where, params };
}

async function rows(conn: DuckDBConnection, sql: string, params: (number | string)[]): Promise<Record<string, unknown>[]> {
  return (await conn.runAndReadAll(sql, params)).getRowObjectsJS();
}

function num(value: unknown): number {
  return typeof value === 'bigint' ? Number(value) : Number(value ?? 0);
}

function numOrNull(value: unknown): number | null {
  return value === null || value === undefined ? null : num(value);
}

const FAILED = '(error IS NOT NULL OR output IS NULL)';
const PROBABILITY_MAP = `TRY_CAST(json_extract(output, '$.probabilities') AS MAP(VARCHAR, DOUBLE))`;

function checkEdges(edges: readonly number[] | undefined): number[] {
  if (edges === undefined || edges.length === 0) {
    throw new Error('rollout analysis: the window holds regression outputs; pass regressionEdges (strictly ascending numbers) to bin them');
  }
  for (let i = 0; i < edges.length; i++) {
    if (!Number.isFinite(edges[i])) throw new Error(`rollout analysis: regressionEdges[${i}] is not a finite number: ${edges[i]}`);
    if (i > 0 && edges[i]! <= edges[i - 1]!) throw new Error(`rollout analysis: regressionEdges must be strictly ascending; [${i - 1}]=${edges[i - 1]} >= [${i}]=${edges[i]}`);
  }
  return [...edges];
}

interface HistogramPlan {
  kind: HistogramKind;
  bins: string[];
  /** SQL yielding the 0-based bin of a successful row (NULL = not counted). */
  binExpr: string;
}

/**
 * Bin edges for regression outputs when none are given: production's deciles in the
 * window (deduplicated), so the candidate is binned on the distribution it must match.
 */
async function productionDeciles(conn: DuckDBConnection, ok: string, params: (number | string)[]): Promise<number[]> {
  const [r] = await rows(
    conn,
    `SELECT quantile_cont(TRY_CAST(json_extract(output, '$.value') AS DOUBLE), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]) AS q
     FROM ${PREDICTIONS_TABLE} WHERE ${ok} AND arm = 'production'`,
    params,
  );
  const q = ((r?.['q'] as number[] | null) ?? []).filter((x) => Number.isFinite(x));
  const unique = [...new Set(q)];
  // No production values (or all equal): one edge still splits the candidate's values around it.
  return unique.length > 0 ? unique : [0];
}

/** Bins shared by all arms, so their histograms can be compared. */
async function histogramPlan(conn: DuckDBConnection, where: string, params: (number | string)[], edges: readonly number[] | undefined): Promise<HistogramPlan> {
  const ok = `${where} AND NOT ${FAILED}`;
  const [kinds] = await rows(
    conn,
    `SELECT count(*) FILTER (WHERE json_type(json_extract(output, '$.probabilities')) = 'OBJECT' OR json_extract_string(output, '$.label') IS NOT NULL) AS classification,
            count(*) FILTER (WHERE json_type(json_extract(output, '$.value')) IN ('DOUBLE', 'BIGINT', 'UBIGINT')) AS regression
     FROM ${PREDICTIONS_TABLE} WHERE ${ok}`,
    params,
  );
  const classification = num(kinds?.['classification']);
  const regression = num(kinds?.['regression']);
  if (classification > 0 && regression > 0) {
    throw new Error(`rollout analysis: the window mixes classification (${classification} rows) and regression (${regression} rows) outputs; analyse one model task at a time`);
  }
  if (regression > 0) {
    const e = checkEdges(edges ?? (await productionDeciles(conn, ok, params)));
    const bins = [`< ${e[0]}`, ...e.slice(1).map((edge, i) => `[${e[i]}, ${edge})`), `>= ${e[e.length - 1]}`];
    const v = `TRY_CAST(json_extract(output, '$.value') AS DOUBLE)`;
    const binExpr = `CASE WHEN ${v} IS NULL THEN NULL ${e.map((edge, i) => `WHEN ${v} < ${edge} THEN ${i}`).join(' ')} ELSE ${e.length} END`;
    return { kind: 'value', bins, binExpr };
  }
  if (classification === 0) return { kind: 'none', bins: ['none'], binExpr: 'NULL' };

  // Class order as the model wrote it (the keys of `probabilities`), then any other label seen.
  const keyLists = await rows(
    conn,
    `SELECT DISTINCT json_keys(json_extract(output, '$.probabilities')) AS k FROM ${PREDICTIONS_TABLE}
     WHERE ${ok} AND json_type(json_extract(output, '$.probabilities')) = 'OBJECT' ORDER BY k`,
    params,
  );
  const labels = await rows(conn, `SELECT DISTINCT json_extract_string(output, '$.label') AS l FROM ${PREDICTIONS_TABLE} WHERE ${ok} AND json_extract_string(output, '$.label') IS NOT NULL ORDER BY l`, params);
  const classes: string[] = [];
  for (const list of keyLists) for (const k of (list['k'] as string[] | null) ?? []) if (!classes.includes(k)) classes.push(k);
  const probabilityClasses = classes.length;
  for (const l of labels) if (!classes.includes(l['l'] as string)) classes.push(l['l'] as string);

  if (classes.length <= 2 && probabilityClasses === classes.length && probabilityClasses > 0) {
    const positive = classes[classes.length - 1]!;
    const bins = Array.from({ length: PROBABILITY_BINS }, (_, i) => `P(${positive}) in [${i / PROBABILITY_BINS}, ${(i + 1) / PROBABILITY_BINS}${i === PROBABILITY_BINS - 1 ? ']' : ')'}`);
    const p = `map_extract_value(${PROBABILITY_MAP}, ${sqlString(positive)})`;
    // least/greatest skip NULLs, so a missing probability must stay NULL explicitly
    return { kind: 'probability', bins, binExpr: `CASE WHEN ${p} IS NULL THEN NULL ELSE least(greatest(floor(${p} * ${PROBABILITY_BINS}), 0), ${PROBABILITY_BINS - 1})::INTEGER END` };
  }
  const binExpr = `CASE json_extract_string(output, '$.label') ${classes.map((c, i) => `WHEN ${sqlString(c)} THEN ${i}`).join(' ')} ELSE NULL END`;
  return { kind: 'label', bins: classes, binExpr };
}

/**
 * Per-arm counts, error rate, latency quantiles and prediction histogram for the rows
 * with time in [from, to) (and the rollout, when given), from the `predictions` table.
 * Every arm is present; an arm without rows has zero counts and null latencies.
 */
export async function armStats(conn: DuckDBConnection, options: ArmStatsOptions): Promise<Record<Arm, ArmStats>> {
  const { where, params } = windowParams(options);
  const plan = await histogramPlan(conn, where, params, options.regressionEdges);
  const result = Object.fromEntries(
    ARMS.map((arm): [Arm, ArmStats] => [
      arm,
      {
        arm,
        versions: [],
        requests: 0,
        rows: 0,
        errors: 0,
        errorRate: 0,
        latencyP50Ms: null,
        latencyP95Ms: null,
        histogramKind: plan.kind,
        histogramBins: [...plan.bins],
        predictionHistogram: plan.bins.map(() => 0),
      },
    ]),
  ) as Record<Arm, ArmStats>;

  const counts = await rows(
    conn,
    `SELECT arm, count(*) AS rows, count(DISTINCT requestId) AS requests, count(DISTINCT requestId) FILTER (WHERE ${FAILED}) AS errors,
            list(DISTINCT version) AS versions
     FROM ${PREDICTIONS_TABLE} WHERE ${where} GROUP BY arm`,
    params,
  );
  for (const r of counts) {
    const s = result[r['arm'] as Arm];
    s.rows = num(r['rows']);
    s.requests = num(r['requests']);
    s.errors = num(r['errors']);
    // Per request, not per row: one failed 10 000-row batch is one failure, not 10 000.
    s.errorRate = s.requests === 0 ? 0 : s.errors / s.requests;
    s.versions = ((r['versions'] as unknown[] | null) ?? []).map(num).sort((a, b) => a - b);
  }

  // quantile_cont interpolates linearly between order statistics (numpy's default)
  const latency = await rows(
    conn,
    `SELECT arm, quantile_cont(lat, 0.5) AS p50, quantile_cont(lat, 0.95) AS p95
     FROM (SELECT arm, requestId, max(latencyMs) AS lat FROM ${PREDICTIONS_TABLE} WHERE ${where} GROUP BY arm, requestId)
     GROUP BY arm`,
    params,
  );
  for (const r of latency) {
    const s = result[r['arm'] as Arm];
    s.latencyP50Ms = numOrNull(r['p50']);
    s.latencyP95Ms = numOrNull(r['p95']);
  }

  if (plan.kind !== 'none') {
    const hist = await rows(
      conn,
      `SELECT arm, bin, count(*) AS n FROM (SELECT arm, ${plan.binExpr} AS bin FROM ${PREDICTIONS_TABLE} WHERE ${where} AND NOT ${FAILED})
       WHERE bin IS NOT NULL GROUP BY arm, bin`,
      params,
    );
    for (const r of hist) result[r['arm'] as Arm].predictionHistogram[num(r['bin'])] = num(r['n']);
  }
  return result;
}

// The bounds live with the pipeline spec (deployment.bounds); re-exported for callers of the analysis.
export { rolloutBoundsSchema, type RolloutBounds } from '../spec/schema.js';

export type RolloutBoundsInput = z.input<typeof rolloutBoundsSchema>;

/** Errors at or above this many are judged even below minRequests: errors are the most urgent signal. */
const MIN_ERRORS_FOR_EARLY_VERDICT = 5;

export type Verdict = 'healthy' | 'unhealthy' | 'insufficient';

export interface Breach {
  measure: 'error_rate' | 'latency_p95' | 'prediction_shift';
  /** For prediction_shift: 0 (the baseline's divergence from itself). */
  baseline: number;
  /** For prediction_shift: the JS divergence of the candidate's histogram from the baseline's. */
  candidate: number;
  /** The threshold the candidate value exceeded. */
  bound: number;
  message: string;
}

export interface ArmComparison {
  verdict: Verdict;
  breaches: Breach[];
  summary: string;
}

const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;
const ms = (x: number): string => `${x.toFixed(2)} ms`;

export function compareArms(baseline: ArmStats, candidate: ArmStats, bounds: RolloutBounds): ArmComparison {
  const names = `${candidate.arm} vs ${baseline.arm}`;
  const breaches: Breach[] = [];
  /** What was measured past a bound but not counted, for the summary. */
  const notes: string[] = [];
  const errorBound = baseline.errorRate + bounds.maxErrorRateIncrease;
  const errorBreach: Breach | undefined =
    candidate.rows > 0 && candidate.errorRate > errorBound
      ? {
          measure: 'error_rate',
          baseline: baseline.errorRate,
          candidate: candidate.errorRate,
          bound: errorBound,
          message: `${candidate.arm} error rate ${pct(candidate.errorRate)} (${candidate.errors}/${candidate.requests} requests) exceeds ${baseline.arm} ${pct(baseline.errorRate)} + ${pct(bounds.maxErrorRateIncrease)}`,
        }
      : undefined;

  const short = [baseline, candidate].filter((s) => s.requests < bounds.minRequests);
  if (short.length > 0) {
    const why = short.map((s) => `${s.arm} has ${s.requests} requests`).join(', ');
    if (errorBreach && candidate.errors >= MIN_ERRORS_FOR_EARLY_VERDICT) {
      return { verdict: 'unhealthy', breaches: [errorBreach], summary: `${names}: unhealthy before enough traffic (${why}): ${errorBreach.message}` };
    }
    return { verdict: 'insufficient', breaches: [], summary: `${names}: insufficient traffic: ${why}, need ${bounds.minRequests} each` };
  }

  if (errorBreach) breaches.push(errorBreach);

  const baseP95 = baseline.latencyP95Ms;
  const candP95 = candidate.latencyP95Ms;
  if (baseP95 !== null && candP95 !== null) {
    const bound = Math.max(baseP95 * bounds.maxLatencyP95Ratio, baseP95 + bounds.minLatencyIncreaseMs);
    if (candP95 > bound) {
      breaches.push({
        measure: 'latency_p95',
        baseline: baseP95,
        candidate: candP95,
        bound,
        message: `${candidate.arm} p95 latency ${ms(candP95)} exceeds ${baseline.arm} ${ms(baseP95)} × ${bounds.maxLatencyP95Ratio} and + ${bounds.minLatencyIncreaseMs} ms`,
      });
    }
  }

  if (baseline.histogramBins.join('\n') !== candidate.histogramBins.join('\n')) {
    throw new Error(`compareArms: ${baseline.arm} and ${candidate.arm} histograms have different bins; take both from one armStats call`);
  }
  const sum = (h: readonly number[]): number => h.reduce((a, b) => a + b, 0);
  if (sum(baseline.predictionHistogram) > 0 && sum(candidate.predictionHistogram) > 0) {
    const shift = jsDivergence(baseline.predictionHistogram, candidate.predictionHistogram);
    if (shift > bounds.maxPredictionShift) {
      // A bound of 1 judges on the divergence alone: no test is run.
      const pValue = bounds.predictionShiftPValue >= 1 ? undefined : shiftPValue(baseline.predictionHistogram, candidate.predictionHistogram);
      const p = pValue === undefined ? '' : pValue < 1e-4 ? pValue.toExponential(1) : pValue.toFixed(4);
      if (pValue === undefined || pValue < bounds.predictionShiftPValue) {
        breaches.push({
          measure: 'prediction_shift',
          baseline: 0,
          candidate: shift,
          bound: bounds.maxPredictionShift,
          message: `${candidate.arm} predictions diverge from ${baseline.arm}: JS divergence ${shift.toFixed(4)} > ${bounds.maxPredictionShift}${pValue === undefined ? '' : ` (p ${p} < ${bounds.predictionShiftPValue})`}`,
        });
      } else {
        notes.push(`prediction JS divergence ${shift.toFixed(4)} but p ${p} >= ${bounds.predictionShiftPValue}: within chance at ${candidate.requests} and ${baseline.requests} requests`);
      }
    }
  }

  if (breaches.length > 0) return { verdict: 'unhealthy', breaches, summary: `${names}: unhealthy: ${breaches.map((b) => b.message).join('; ')}` };
  return {
    verdict: 'healthy',
    breaches,
    summary:
      `${names}: healthy over ${candidate.requests} and ${baseline.requests} requests ` +
      `(error rate ${pct(candidate.errorRate)} vs ${pct(baseline.errorRate)}, p95 ${candP95 === null ? 'n/a' : ms(candP95)} vs ${baseP95 === null ? 'n/a' : ms(baseP95)})` +
      (notes.length ? `; ${notes.join('; ')}` : ''),
  };
}

/**
 * How likely a divergence this large is between two samples of one distribution: the
 * chi-square test where every cell expects 5 or more, else a permutation test of the
 * divergence itself (999 seeded rounds), which stays exact for sparse bins and for arms of
 * very different sizes (a 5 % canary).
 */
function shiftPValue(baseline: readonly number[], candidate: readonly number[]): number {
  const chi = chiSquare(baseline, candidate);
  return chi.minExpected >= 5 ? chi.pValue : permutationPValue(baseline, candidate, jsDivergence);
}

export interface ShadowComparison {
  kind: 'classification' | 'regression' | 'none';
  /** Shadow rows (of the rollout, in the window) matched with a production row on (requestId, rowIndex). */
  pairs: number;
  /** Pairs where both sides produced an output. */
  comparablePairs: number;
  /** Shadow rows without a production row in the downloaded window. */
  unmatchedShadowRows: number;
  /** Share of comparable pairs with equal labels (classification) or values within 1e-6 relative (regression). */
  agreement: number | null;
  /** Classification: per pair, mean over classes of |shadow - production| probability; averaged over pairs. */
  meanAbsProbabilityDiff: number | null;
  /** Regression: mean |shadow - production| value. */
  meanAbsDiff: number | null;
  shadowRows: number;
  shadowErrors: number;
  shadowErrorRate: number | null;
  /** Over the paired requests, per request. */
  productionLatencyP95Ms: number | null;
  shadowLatencyP95Ms: number | null;
}

export const REGRESSION_AGREEMENT_TOLERANCE = 1e-6;

/**
 * Shadow rows of a rollout against the production rows they copy. Shadow rows are
 * chosen by rollout and time; their production rows by (requestId, rowIndex) alone,
 * since production rows need not carry the rollout id.
 */
export async function shadowComparison(conn: DuckDBConnection, options: WindowFilter & { rolloutId: string }): Promise<ShadowComparison> {
  const { where, params } = windowParams(options);
  // A batch write is create-if-absent, so duplicates should not exist; one row per key keeps pairs honest if they do.
  const cte = `
    s AS (SELECT * FROM ${PREDICTIONS_TABLE} WHERE arm = 'shadow' AND ${where}
          QUALIFY row_number() OVER (PARTITION BY requestId, rowIndex ORDER BY "time") = 1),
    p AS (SELECT * FROM ${PREDICTIONS_TABLE} WHERE arm = 'production'
          QUALIFY row_number() OVER (PARTITION BY requestId, rowIndex ORDER BY "time") = 1),
    pairs AS (
      SELECT s.requestId, s.rowIndex, p.output AS po, s.output AS so, p.latencyMs AS plat, s.latencyMs AS slat,
             (p.error IS NULL AND p.output IS NOT NULL AND s.error IS NULL AND s.output IS NOT NULL) AS comparable
      FROM s JOIN p USING (requestId, rowIndex))`;

  const [counts] = await rows(
    conn,
    `WITH ${cte}
     SELECT (SELECT count(*) FROM s) AS shadow_rows,
            (SELECT count(*) FROM s WHERE ${FAILED}) AS shadow_errors,
            (SELECT count(*) FROM pairs) AS pairs,
            (SELECT count(*) FROM pairs WHERE comparable) AS comparable,
            (SELECT count(*) FROM pairs WHERE comparable AND json_extract_string(po, '$.label') IS NOT NULL AND json_extract_string(so, '$.label') IS NOT NULL) AS labelled,
            (SELECT count(*) FROM pairs WHERE comparable AND TRY_CAST(json_extract(po, '$.value') AS DOUBLE) IS NOT NULL AND TRY_CAST(json_extract(so, '$.value') AS DOUBLE) IS NOT NULL) AS valued,
            (SELECT quantile_cont(lat, 0.95) FROM (SELECT max(plat) AS lat FROM pairs GROUP BY requestId)) AS p_p95,
            (SELECT quantile_cont(lat, 0.95) FROM (SELECT max(slat) AS lat FROM pairs GROUP BY requestId)) AS s_p95`,
    params,
  );
  const shadowRows = num(counts?.['shadow_rows']);
  const shadowErrors = num(counts?.['shadow_errors']);
  const pairs = num(counts?.['pairs']);
  const comparablePairs = num(counts?.['comparable']);
  const labelled = num(counts?.['labelled']);
  const valued = num(counts?.['valued']);
  if (labelled > 0 && valued > 0) {
    throw new Error(`shadow comparison: rollout "${options.rolloutId}" pairs mix classification (${labelled}) and regression (${valued}) outputs`);
  }
  const base: ShadowComparison = {
    kind: labelled > 0 ? 'classification' : valued > 0 ? 'regression' : 'none',
    pairs,
    comparablePairs,
    unmatchedShadowRows: shadowRows - pairs,
    agreement: null,
    meanAbsProbabilityDiff: null,
    meanAbsDiff: null,
    shadowRows,
    shadowErrors,
    shadowErrorRate: shadowRows === 0 ? null : shadowErrors / shadowRows,
    productionLatencyP95Ms: numOrNull(counts?.['p_p95']),
    shadowLatencyP95Ms: numOrNull(counts?.['s_p95']),
  };
  if (comparablePairs === 0) return base;

  if (base.kind === 'classification') {
    const [agree] = await rows(
      conn,
      `WITH ${cte},
       probs AS (SELECT requestId, rowIndex,
                        TRY_CAST(json_extract(po, '$.probabilities') AS MAP(VARCHAR, DOUBLE)) AS pm, TRY_CAST(json_extract(so, '$.probabilities') AS MAP(VARCHAR, DOUBLE)) AS sm
                 FROM pairs WHERE comparable),
       per_class AS (SELECT requestId, rowIndex, pm, sm, unnest(list_distinct(list_concat(map_keys(pm), map_keys(sm)))) AS k
                     FROM probs WHERE pm IS NOT NULL AND sm IS NOT NULL),
       per_pair AS (SELECT avg(abs(coalesce(map_extract_value(sm, k), 0) - coalesce(map_extract_value(pm, k), 0))) AS d
                    FROM per_class GROUP BY requestId, rowIndex)
       SELECT (SELECT avg(CASE WHEN json_extract_string(po, '$.label') = json_extract_string(so, '$.label') THEN 1.0 ELSE 0.0 END) FROM pairs WHERE comparable) AS agreement,
              (SELECT avg(d) FROM per_pair) AS prob_diff`,
      params,
    );
    base.agreement = numOrNull(agree?.['agreement']);
    base.meanAbsProbabilityDiff = numOrNull(agree?.['prob_diff']);
  } else if (base.kind === 'regression') {
    const [agree] = await rows(
      conn,
      `WITH ${cte},
       v AS (SELECT TRY_CAST(json_extract(po, '$.value') AS DOUBLE) AS a, TRY_CAST(json_extract(so, '$.value') AS DOUBLE) AS b FROM pairs WHERE comparable)
       SELECT avg(CASE WHEN abs(a - b) <= ${REGRESSION_AGREEMENT_TOLERANCE} * greatest(abs(a), abs(b)) THEN 1.0 ELSE 0.0 END) AS agreement,
              avg(abs(a - b)) AS diff
       FROM v WHERE a IS NOT NULL AND b IS NOT NULL`,
      params,
    );
    base.agreement = numOrNull(agree?.['agreement']);
    base.meanAbsDiff = numOrNull(agree?.['diff']);
  }
  return base;
}

export interface AnalyzeWindowOptions {
  model: string;
  rolloutId?: string;
  from: Date;
  to: Date;
  baselineArm?: 'production';
  candidateArm: Exclude<Arm, 'production'>;
  bounds?: RolloutBoundsInput;
  /** Parent of the temporary download directory (removed afterwards). */
  workDir: string;
  regressionEdges?: readonly number[];
}

export interface WindowReport {
  model: string;
  rolloutId: string | null;
  from: string;
  to: string;
  baselineArm: 'production';
  candidateArm: Exclude<Arm, 'production'>;
  bounds: RolloutBounds;
  /** Objects listed in the window's hour partitions, and how many were downloaded. */
  objects: number;
  files: number;
  rows: number;
  invalidRows: number;
  baseline: ArmStats;
  candidate: ArmStats;
  comparison: ArmComparison;
  /** Present when the candidate is the shadow arm (and a rolloutId was given). */
  shadow: ShadowComparison | null;
}

/** Downloads a window of prediction logs, compares candidate with baseline and returns a JSON-serialisable report. */
export async function analyzeWindow(store: ArtifactStore, options: AnalyzeWindowOptions): Promise<WindowReport> {
  const bounds = rolloutBoundsSchema.parse(options.bounds ?? {});
  const baselineArm = options.baselineArm ?? 'production';
  const filter: WindowFilter = { from: options.from, to: options.to, ...(options.rolloutId !== undefined ? { rolloutId: options.rolloutId } : {}) };
  windowParams(filter);
  const dir = await mkdtemp(join(options.workDir, 'rollout-analysis-'));
  let instance: DuckDBInstance | undefined;
  let conn: DuckDBConnection | undefined;
  try {
    const window = await downloadPredictionWindow(store, options.model, options.from, options.to, dir);
    instance = await DuckDBInstance.create(':memory:');
    conn = await instance.connect();
    const table = await openPredictionTable(conn, window.files);
    if (options.candidateArm === 'shadow') {
      // A shadow scores copies of some production requests (copies are skipped under load):
      // compare it with production on exactly those requests, not on all of them.
      await conn.run(`DELETE FROM ${PREDICTIONS_TABLE} WHERE arm = 'production' AND requestId NOT IN (SELECT requestId FROM ${PREDICTIONS_TABLE} WHERE arm = 'shadow')`);
    }
    const arms = await armStats(conn, { ...filter, ...(options.regressionEdges ? { regressionEdges: options.regressionEdges } : {}) });
    const baseline = arms[baselineArm];
    const candidate = arms[options.candidateArm];
    const comparison = compareArms(baseline, candidate, bounds);
    const shadow =
      options.candidateArm === 'shadow' && options.rolloutId !== undefined
        ? await shadowComparison(conn, { from: options.from, to: options.to, rolloutId: options.rolloutId })
        : null;
    return {
      model: options.model,
      rolloutId: options.rolloutId ?? null,
      from: options.from.toISOString(),
      to: options.to.toISOString(),
      baselineArm,
      candidateArm: options.candidateArm,
      bounds,
      objects: window.objects,
      files: window.files.length,
      rows: table.rows,
      invalidRows: table.invalidRows,
      baseline,
      candidate,
      comparison,
      shadow,
    };
  } finally {
    conn?.closeSync();
    instance?.closeSync();
    await rm(dir, { recursive: true, force: true });
  }
}
