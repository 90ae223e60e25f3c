/**
 * One monitor run: the measures of one window of a model's served predictions, for the
 * version behind its `production` alias. Drift and data quality against the training
 * reference profile, prediction drift against the holdout predictions' profile, and —
 * once labels have come back through the feedback endpoint — performance against the
 * evaluation baseline. The result is stored once per (model, version, window end), so
 * the results form a time series and a retried run returns the stored result.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { firstRow, quoteIdent, sqlString } from '../data/load.js';
import { classificationMetrics, regressionMetrics, type Label } from '../eval/metrics.js';
import { parseModelMetadata } from '../eval/onnx-model.js';
import type { Registry } from '../registry/registry.js';
import type { PredictionOutput } from '../serving/prediction-log.js';
import { durationMs } from '../shared/duration.js';
import type { ModelVersionRecord } from '../shared/registry-types.js';
import type { MonitoringSpec } from '../spec/schema.js';
import { ObjectNotFoundError, PreconditionFailedError, type ArtifactStore } from '../store/artifact-store.js';
import { keys } from '../store/keys.js';
import { measureDrift, type Breach, type DriftReport, type FeatureDrift, type MeasureName } from './drift.js';
import { downloadPredictionWindow, openPredictionTable, PREDICTIONS_TABLE } from './prediction-window.js';
import { tableRelation, type FeatureReference, type ReferenceProfile } from './reference.js';
import type { DecayKind, MonitorBreach, MonitorResult, PerformanceResult } from './results.js';

export interface MonitorWindowOptions {
  model: string;
  /** The window is [windowStart, windowEnd); its end names the result. */
  windowStart: Date;
  windowEnd: Date;
  /** The pipeline spec's `monitoring` section (parsed: defaults filled in). */
  monitoring: MonitoringSpec;
  /** Scratch space; a temporary directory is made under it and removed afterwards. */
  workDir: string;
  /** Labels received up to this instant are joined. Default: the current time. */
  now?: Date;
}

/** Table of the window's rows of the monitored version: one column per feature, plus the prediction. */
const WINDOW_TABLE = 'monitor_window';
const FEEDBACK_TABLE = 'feedback_labels';
const DAY_MS = 86_400_000;

const QUALITY_MEASURES: ReadonlySet<MeasureName> = new Set<MeasureName>(['nullRateIncrease', 'outOfRange', 'unseen', 'constant']);

/**
 * Computes (or returns the stored) monitor result of one window for the model's
 * production version, and stores it create-if-absent at `keys.monitorResult`.
 */
/** The model has no production version: there is nothing to monitor (not something a retry fixes). */
export class NoProductionVersionError extends Error {
  constructor(readonly model: string) {
    super(`model "${model}" has no production version: nothing to monitor`);
    this.name = 'NoProductionVersionError';
  }
}

export async function runMonitorWindow(store: ArtifactStore, registry: Registry, options: MonitorWindowOptions): Promise<MonitorResult> {
  const { model, windowStart, windowEnd, monitoring } = options;
  const now = options.now ?? new Date();
  for (const [name, value] of [['windowStart', windowStart], ['windowEnd', windowEnd], ['now', now]] as const) {
    if (!(value instanceof Date) || Number.isNaN(value.getTime())) throw new Error(`monitor window: "${name}" is not a valid Date`);
  }
  if (windowStart.getTime() >= windowEnd.getTime()) {
    throw new Error(`monitor window is empty: start (${windowStart.toISOString()}) must be before end (${windowEnd.toISOString()})`);
  }

  const alias = await registry.getAlias(model, 'production');
  if (alias === null) throw new NoProductionVersionError(model);
  const record = await registry.getVersion(model, alias.version);
  const resultKey = keys.monitorResult(model, record.version, windowEnd);
  const stored = await readResult(store, resultKey);
  if (stored !== null) return stored;

  const notes: string[] = [];
  const label = `${model}@${record.version}`;
  const training = await readReference(store, record.data.split.referenceKey);
  const predictionProfile = await readReference(store, record.evaluation.predictionReferenceKey);
  const predictionRef = predictionProfile?.features['prediction'] ?? predictionProfile?.prediction?.reference ?? null;
  if (training === null) notes.push(`no reference profile for ${label} (registered before monitoring); retrain to monitor it`);
  else if (predictionRef === null) notes.push(`no prediction reference profile for ${label}: prediction drift is not measured`);
  const classes = record.task === 'classification' ? await readClasses(store, record) : null;

  const perf = monitoring.performance;
  const perfFrom = new Date(windowEnd.getTime() - durationMs(perf.labelDelay));

  await mkdir(options.workDir, { recursive: true });
  const dir = await mkdtemp(join(options.workDir, 'monitor-'));
  let instance: DuckDBInstance | undefined;
  let conn: DuckDBConnection | undefined;
  try {
    instance = await DuckDBInstance.create(':memory:');
    conn = await instance.connect();

    const labelCount = await loadFeedback(store, conn, model, perfFrom, now, join(dir, 'feedback'));
    // Predictions older than the drift window are only needed when there are labels to join them with.
    const from = labelCount > 0 && perfFrom.getTime() < windowStart.getTime() ? perfFrom : windowStart;
    const downloaded = await downloadPredictionWindow(store, model, from, windowEnd, join(dir, 'predictions'));
    const table = await openPredictionTable(conn, downloaded.files);
    if (table.invalidRows > 0) notes.push(`${table.invalidRows} unreadable prediction log lines were skipped`);

    const versionRows = `arm = 'production' AND version = ${record.version}`;
    const inWindow = (start: Date): string => `"time" >= ${timestamp(start)} AND "time" < ${timestamp(windowEnd)}`;
    const counts = await firstRow(
      conn,
      `SELECT count(*) FILTER (WHERE error IS NULL AND output IS NOT NULL) AS ok, count(*) FILTER (WHERE error IS NOT NULL OR output IS NULL) AS failed
       FROM ${PREDICTIONS_TABLE} WHERE ${versionRows} AND ${inWindow(windowStart)}`,
    );
    const sampleSize = Number(counts['ok'] ?? 0);
    const failed = Number(counts['failed'] ?? 0);
    if (failed > 0) notes.push(`${failed} rows of ${label} in the window failed inference and were left out`);

    let drift: DriftReport | null = null;
    if (training !== null) {
      const reference = withPrediction(training, predictionRef);
      const predictionColumn = uniqueColumn('prediction', Object.keys(training.features));
      const columns = Object.entries(training.features).map(([name, ref]) => `${featureExpr(name, ref)} AS ${quoteIdent(name)}`);
      if (reference.prediction !== undefined) {
        columns.push(`${predictionExpr(record.task, reference.prediction.reference, classes)} AS ${quoteIdent(predictionColumn)}`);
      }
      const missing = record.features.filter((f) => !(f in training.features));
      if (missing.length) notes.push(`features not in the reference profile, not measured: ${missing.join(', ')}`);
      await conn.run(
        `CREATE OR REPLACE TEMP TABLE ${WINDOW_TABLE} AS SELECT ${columns.join(', ')} FROM ${PREDICTIONS_TABLE}
         WHERE ${versionRows} AND ${inWindow(windowStart)} AND error IS NULL AND output IS NOT NULL`,
      );
      const thresholds = knownFeatureThresholds(monitoring.drift, training, notes);
      drift = await measureDrift(conn, tableRelation(WINDOW_TABLE), reference, thresholds, { predictionColumn });
      if (drift.verdict === 'insufficient_data') {
        notes.push(`only ${drift.sampleSize} rows of ${label} in the window; ${drift.minSamples} are needed for a drift verdict`);
      }
    }

    const breaches: MonitorBreach[] = drift === null ? [] : driftBreaches(drift);
    const performance = await measurePerformance(conn, record, classes, monitoring, {
      from: perfFrom,
      versionRows,
      inWindow: inWindow(perfFrom),
      notes,
    });
    if (performance.breached) {
      breaches.push({
        kind: 'performance',
        measure: performance.metric,
        value: performance.value!,
        threshold: perf.maxDrop,
        message: `${performance.metric} ${fmt(performance.value!)} vs evaluation's ${fmt(performance.baseline!)}: ${fmt(performance.drop!)} worse, more than ${perf.maxDrop}`,
      });
    }

    const driftJudged = drift !== null && drift.verdict !== 'insufficient_data';
    const performanceJudged = performance.value !== null;
    const verdict: MonitorResult['verdict'] = breaches.length > 0 ? 'decay' : driftJudged || performanceJudged ? 'ok' : 'insufficient_data';
    const decayKinds = [...new Set(breaches.map((b) => b.kind))];
    const result: MonitorResult = {
      model,
      version: record.version,
      sha256: record.artifact.sha256,
      windowStart: windowStart.toISOString(),
      windowEnd: windowEnd.toISOString(),
      computedAt: now.toISOString(),
      verdict,
      decayKinds,
      sampleSize,
      drift,
      performance,
      breaches,
      notes,
      resultKey,
    };
    try {
      await store.put(resultKey, JSON.stringify(result, null, 2), { ifAbsent: true, contentType: 'application/json' });
      return result;
    } catch (err) {
      if (!(err instanceof PreconditionFailedError)) throw err;
      // a concurrent (or earlier, lost-answer) run stored this window first: its result stands
      return (await readResult(store, resultKey)) ?? result;
    }
  } finally {
    conn?.closeSync();
    instance?.closeSync();
    await rm(dir, { recursive: true, force: true });
  }
}

async function readResult(store: ArtifactStore, key: string): Promise<MonitorResult | null> {
  const found = await store.getWithEtag(key);
  return found === null ? null : (JSON.parse(found.body.toString('utf8')) as MonitorResult);
}

async function readReference(store: ArtifactStore, key: string | undefined): Promise<ReferenceProfile | null> {
  if (key === undefined) return null;
  try {
    return JSON.parse((await store.get(key)).toString('utf8')) as ReferenceProfile;
  } catch (err) {
    if (err instanceof ObjectNotFoundError) return null;
    throw err;
  }
}

/** The model's classes, in output order, from its metadata; null when it cannot be read. */
async function readClasses(store: ArtifactStore, record: ModelVersionRecord): Promise<Label[] | null> {
  try {
    const metadata = parseModelMetadata(JSON.parse((await store.get(record.artifact.metadataKey)).toString('utf8')));
    return metadata.classes && metadata.classes.length >= 2 ? metadata.classes : null;
  } catch {
    return null;
  }
}

/** The training profile with the holdout predictions' profile as its prediction column. */
function withPrediction(training: ReferenceProfile, prediction: FeatureReference | null): ReferenceProfile {
  const { prediction: _ignored, ...rest } = training;
  return prediction === null ? rest : { ...rest, prediction: { column: 'prediction', reference: prediction } };
}

function uniqueColumn(base: string, taken: readonly string[]): string {
  const lower = new Set(taken.map((t) => t.toLowerCase()));
  let name = base;
  while (lower.has(name.toLowerCase())) name = `_${name}`;
  return name;
}

function jsonPath(key: string): string {
  return sqlString(`$.${JSON.stringify(key)}`);
}

/** A feature's value from the logged `features` JSON: DOUBLE for numeric features, text for categorical ones. */
function featureExpr(name: string, ref: FeatureReference): string {
  const text = `json_extract_string(features, ${jsonPath(name)})`;
  return ref.kind === 'numeric' ? `TRY_CAST(${text} AS DOUBLE)` : text;
}

/**
 * The prediction as evaluation profiled it (activities/evaluation.ts predictionValue):
 * regression → the value; binary → probability of the last class; more classes → the label.
 * The reference's kind says which of the classification forms it holds.
 */
function predictionExpr(task: ModelVersionRecord['task'], ref: FeatureReference, classes: Label[] | null): string {
  if (task === 'regression') return `TRY_CAST(json_extract(output, '$.value') AS DOUBLE)`;
  if (ref.kind === 'categorical') return `json_extract_string(output, '$.label')`;
  if (classes !== null) return `TRY_CAST(json_extract(output, ${sqlString(`$.probabilities.${JSON.stringify(String(classes.at(-1)))}`)}) AS DOUBLE)`;
  // no metadata: the probabilities object lists the classes in the model's order
  return `list_last(map_values(TRY_CAST(json_extract(output, '$.probabilities') AS MAP(VARCHAR, DOUBLE))))`;
}

/** The spec's drift thresholds less per-feature overrides for features the reference lacks (noted). */
function knownFeatureThresholds(t: MonitoringSpec['drift'], reference: ReferenceProfile, notes: string[]): MonitoringSpec['drift'] {
  const unknown = Object.keys(t.features).filter((f) => !(f in reference.features));
  if (unknown.length === 0) return t;
  notes.push(`drift thresholds name features the reference profile does not have, ignored: ${unknown.join(', ')}`);
  return { ...t, features: Object.fromEntries(Object.entries(t.features).filter(([f]) => f in reference.features)) };
}

function driftBreaches(report: DriftReport): MonitorBreach[] {
  const convert = (b: Breach, kind: DecayKind, feature: string): MonitorBreach => ({ kind, feature, measure: b.measure, value: b.value, threshold: b.threshold, message: b.message });
  const out: MonitorBreach[] = [];
  for (const [name, f] of Object.entries(report.features) as Array<[string, FeatureDrift]>) {
    for (const b of f.breaches) out.push(convert(b, QUALITY_MEASURES.has(b.measure) ? 'quality' : 'drift', name));
  }
  // the model's output moved: prediction drift, whichever measure shows it
  for (const b of report.prediction?.breaches ?? []) out.push(convert(b, 'drift', 'prediction'));
  return out;
}

function timestamp(t: Date): string {
  return `CAST(${sqlString(t.toISOString())} AS TIMESTAMPTZ)`;
}

/** UTC days (yyyy-mm-dd) from `from`'s to `to`'s, inclusive. */
function days(from: Date, to: Date): string[] {
  const out: string[] = [];
  for (let t = Math.floor(from.getTime() / DAY_MS) * DAY_MS; t <= to.getTime(); t += DAY_MS) out.push(new Date(t).toISOString().slice(0, 10));
  return out;
}

/**
 * Loads the labels that arrived from `from`'s day up to `now` into FEEDBACK_TABLE, the
 * latest per (requestId, rowIndex); returns how many there are.
 */
async function loadFeedback(store: ArtifactStore, conn: DuckDBConnection, model: string, from: Date, now: Date, dir: string): Promise<number> {
  await conn.run(`CREATE OR REPLACE TEMP TABLE ${FEEDBACK_TABLE} (requestId VARCHAR, rowIndex BIGINT, label VARCHAR)`);
  if (now.getTime() < from.getTime()) return 0;
  const prefix = keys.feedbackPrefix(model);
  const listed = (await Promise.all(days(from, now).map((d) => store.list(`${prefix}${d}/`)))).flat().filter((k) => k.endsWith('.jsonl'));
  if (listed.length === 0) return 0;
  await mkdir(dir, { recursive: true });
  const files = listed.map((k) => join(dir, k.slice(prefix.length).replaceAll('/', '_')));
  for (let i = 0; i < listed.length; i += 8) {
    await Promise.all(listed.slice(i, i + 8).map((k, j) => store.getToFile(k, files[i + j]!)));
  }
  const source =
    `read_json([${files.map(sqlString).join(', ')}], format = 'newline_delimited', ` +
    `columns = {requestId: 'VARCHAR', rowIndex: 'BIGINT', label: 'JSON', receivedAt: 'VARCHAR'}, ignore_errors = true, filename = true)`;
  await conn.run(
    `INSERT INTO ${FEEDBACK_TABLE}
     SELECT requestId, rowIndex, label::VARCHAR FROM (
       SELECT *, TRY_CAST(receivedAt AS TIMESTAMPTZ) AS received FROM ${source}
     )
     WHERE requestId IS NOT NULL AND rowIndex IS NOT NULL AND label IS NOT NULL AND json_type(label) <> 'NULL'
       AND received IS NOT NULL AND received <= ${timestamp(now)}
     QUALIFY row_number() OVER (PARTITION BY requestId, rowIndex ORDER BY received DESC, filename DESC) = 1`,
  );
  return Number((await firstRow(conn, `SELECT count(*) AS n FROM ${FEEDBACK_TABLE}`))['n'] ?? 0);
}

function defaultMetric(task: ModelVersionRecord['task']): PerformanceResult['metric'] {
  return task === 'classification' ? 'roc_auc' : 'rmse';
}

/** Performance of the version's labelled predictions in [from, windowEnd) against evaluation's value of the metric. */
async function measurePerformance(
  conn: DuckDBConnection,
  record: ModelVersionRecord,
  modelClasses: Label[] | null,
  monitoring: MonitoringSpec,
  w: { from: Date; versionRows: string; inWindow: string; notes: string[] },
): Promise<PerformanceResult> {
  const spec = monitoring.performance;
  const metric = spec.metric ?? defaultMetric(record.task);
  const baselineRaw = record.evaluation.metrics[metric];
  const baseline = typeof baselineRaw === 'number' && Number.isFinite(baselineRaw) ? baselineRaw : null;
  const result: PerformanceResult = { metric, baseline, value: null, labels: 0, drop: null, breached: false, from: w.from.toISOString() };
  const applies = record.task === 'classification' ? metric !== 'rmse' : metric === 'rmse';
  if (!applies) {
    w.notes.push(`performance metric ${metric} does not apply to a ${record.task} model; performance is not judged`);
    return result;
  }

  const joined = (
    await conn.runAndReadAll(
      `SELECT p.output::VARCHAR AS output, f.label AS label
       FROM (SELECT * FROM ${PREDICTIONS_TABLE} WHERE ${w.versionRows} AND ${w.inWindow} AND error IS NULL AND output IS NOT NULL
             QUALIFY row_number() OVER (PARTITION BY requestId, rowIndex ORDER BY "time") = 1) p
       JOIN ${FEEDBACK_TABLE} f ON f.requestId = p.requestId AND f.rowIndex = p.rowIndex
       ORDER BY p."time", p.requestId, p.rowIndex`,
    )
  ).getRowObjectsJS() as Array<{ output: string; label: string }>;

  let skipped = 0;
  if (record.task === 'regression') {
    const yTrue: number[] = [];
    const yPred: number[] = [];
    for (const row of joined) {
      const out = JSON.parse(row.output) as Partial<{ value: unknown }>;
      const y = Number(JSON.parse(row.label) as unknown);
      if (typeof out.value !== 'number' || !Number.isFinite(out.value) || !Number.isFinite(y)) {
        skipped++;
        continue;
      }
      yTrue.push(y);
      yPred.push(out.value);
    }
    result.labels = yTrue.length;
    if (yTrue.length >= spec.minLabels) result.value = regressionMetrics(yTrue, yPred).rmse;
  } else {
    let classes = modelClasses;
    const yTrue: string[] = [];
    const proba: number[] = [];
    const predicted: string[] = [];
    for (const row of joined) {
      const out = JSON.parse(row.output) as Partial<Extract<PredictionOutput, { probabilities: unknown }>>;
      const probabilities = out.probabilities;
      if (probabilities === null || typeof probabilities !== 'object') {
        skipped++;
        continue;
      }
      classes ??= Object.keys(probabilities);
      const p = classes.map((c) => probabilities[String(c)]);
      const y = String(JSON.parse(row.label) as unknown);
      if (p.some((x) => typeof x !== 'number' || !Number.isFinite(x)) || !classes.some((c) => String(c) === y)) {
        skipped++;
        continue;
      }
      yTrue.push(y);
      proba.push(...(p as number[]));
      predicted.push(out.label === undefined ? '' : String(out.label));
    }
    result.labels = yTrue.length;
    if (classes !== null && yTrue.length >= spec.minLabels) {
      const known = new Set(classes.map(String));
      const served = predicted.every((l) => known.has(l)) ? predicted : undefined;
      const m = classificationMetrics(yTrue, proba, classes.map(String), served);
      result.value = metric === 'accuracy' ? m.accuracy : m.roc_auc;
    }
  }
  if (skipped > 0) w.notes.push(`${skipped} labelled predictions were left out of performance (label not one of the model's outputs, or no usable output)`);

  if (result.labels < spec.minLabels) {
    result.value = null;
    if (result.labels > 0) w.notes.push(`only ${result.labels} labelled predictions since ${result.from}; ${spec.minLabels} are needed to judge performance`);
    return result;
  }
  if (result.value === null) {
    w.notes.push(`${metric} is undefined on the labelled predictions (e.g. only one class among the labels); performance is not judged`);
    return result;
  }
  if (baseline === null) {
    w.notes.push(`evaluation recorded no ${metric} for ${record.model}@${record.version}; performance is measured but not judged`);
    return result;
  }
  result.drop = metric === 'rmse' ? result.value - baseline : baseline - result.value;
  result.breached = result.drop > spec.maxDrop;
  return result;
}

function fmt(x: number): string {
  return Number(x.toPrecision(4)).toString();
}
