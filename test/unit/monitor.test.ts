import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { generateCreditRisk, type CreditRiskRow } from '../../examples/credit-risk/generate.js';
import { classificationMetrics } from '../../src/eval/metrics.js';
import { sha256Hex } from '../../src/eval/onnx-model.js';
import { runMonitorWindow } from '../../src/monitoring/monitor.js';
import { buildReferenceProfile, fileRelation, type FeatureInput, type ReferenceProfile } from '../../src/monitoring/reference.js';
import { listMonitorResults, type MonitorResult } from '../../src/monitoring/results.js';
import { Registry } from '../../src/registry/registry.js';
import type { Arm, PredictionRecord } from '../../src/serving/prediction-log.js';
import { pipelineSpecSchema, type MonitoringSpec } from '../../src/spec/schema.js';
import { MemoryArtifactStore } from '../../src/store/memory-store.js';
import { keys } from '../../src/store/keys.js';
import { FIXTURE_FEATURES, FIXTURE_METADATA_BYTES, FIXTURE_MODEL_SHA, fixtureVersionDraft } from '../helpers/fixture-model.js';

const CATEGORICAL = new Set(['home_ownership', 'purpose', 'region']);
const FEATURES: FeatureInput[] = FIXTURE_FEATURES.map((name) => ({ name, kind: CATEGORICAL.has(name) ? 'categorical' : 'numeric' }));
const NUMERIC = FEATURES.filter((f) => f.kind === 'numeric').map((f) => f.name);

const WINDOW_START = new Date('2026-03-02T11:00:00.000Z');
const WINDOW_END = new Date('2026-03-02T12:00:00.000Z');
const HOUR = 3_600_000;

/** A stand-in for the model: a fixed logistic score of the features (no ONNX needed). */
function score(row: CreditRiskRow): number {
  const n = (x: unknown, fallback: number): number => (typeof x === 'number' && Number.isFinite(x) ? x : fallback);
  const z = -1.6 - 0.0135 * (n(row['credit_score'], 665) - 665) + 3 * (n(row['debt_to_income'], 0.32) - 0.32) - 1.2 * Math.log(n(row['income'], 52000) / 52000);
  return 1 / (1 + Math.exp(-z));
}

const featuresOf = (row: CreditRiskRow): Record<string, string | number | null> => Object.fromEntries(FIXTURE_FEATURES.map((f) => [f, row[f] ?? null]));

/** Monitoring section as a spec would give it (defaults filled in), with overrides. */
function monitoringSpec(overrides: Record<string, unknown> = {}): MonitoringSpec {
  const spec = pipelineSpecSchema.shape.monitoring.unwrap().parse(overrides);
  return spec;
}

let scratch: string;
let references: { training: ReferenceProfile; prediction: ReferenceProfile; rocAuc: number; accuracy: number };

async function profile(rows: Array<Record<string, unknown>>, features: FeatureInput[], name: string): Promise<ReferenceProfile> {
  const path = join(scratch, `${name}.jsonl`);
  await writeFile(path, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  try {
    return await buildReferenceProfile(conn, fileRelation(path), features);
  } finally {
    conn.closeSync();
    instance.closeSync();
  }
}

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'monitor-test-'));
  const train = generateCreditRisk({ rows: 4000, seed: 101 });
  const holdout = generateCreditRisk({ rows: 3000, seed: 202 });
  const training = await profile(train.map(featuresOf), FEATURES, 'train');
  const probs = holdout.map(score);
  const prediction = await profile(probs.map((p) => ({ prediction: p })), [{ name: 'prediction', kind: 'numeric' }], 'prediction');
  const m = classificationMetrics(
    holdout.map((r) => r['default'] as number),
    probs.flatMap((p) => [1 - p, p]),
    [0, 1],
  );
  references = { training, prediction, rocAuc: m.roc_auc!, accuracy: m.accuracy! };
});

afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe('runMonitorWindow', () => {
  let store: MemoryArtifactStore;
  let registry: Registry;
  let workDir: string;

  beforeEach(async () => {
    store = new MemoryArtifactStore();
    registry = new Registry(store);
    workDir = await mkdtemp(join(scratch, 'work-'));
  });

  /** Registers version 1 of `model` (with reference profiles unless told otherwise) and makes it production. */
  async function deploy(model: string, opts: { references?: boolean } = {}): Promise<void> {
    const metadataKey = keys.modelMetadata(sha256Hex(FIXTURE_METADATA_BYTES));
    await store.put(metadataKey, FIXTURE_METADATA_BYTES);
    const draft = fixtureVersionDraft({ model, artifact: { sha256: FIXTURE_MODEL_SHA, key: keys.modelBlob(FIXTURE_MODEL_SHA), size: 1, metadataKey }, run: '1' });
    const withRefs = opts.references ?? true;
    const referenceKey = `test/${model}/reference.json`;
    const predictionReferenceKey = `test/${model}/prediction-reference.json`;
    if (withRefs) {
      await store.put(referenceKey, JSON.stringify(references.training));
      await store.put(predictionReferenceKey, JSON.stringify(references.prediction));
    }
    await registry.registerVersion({
      ...draft,
      data: { ...draft.data, split: { ...draft.data.split, ...(withRefs ? { referenceKey } : {}) } },
      evaluation: {
        ...draft.evaluation,
        metrics: { roc_auc: references.rocAuc, accuracy: references.accuracy },
        ...(withRefs ? { predictionReferenceKey } : {}),
      },
    });
    await registry.moveAlias({ model, alias: 'production', version: 1, expectedVersion: null, run: { workflowId: 'wf-p1', runId: 'run-p1' } });
  }

  interface LogOptions {
    arm?: Arm;
    version?: number;
    error?: boolean;
    start?: Date;
    end?: Date;
    prefix?: string;
  }

  /** Writes one prediction batch of `rows`, spread evenly over [start, end); returns the records. */
  async function logPredictions(model: string, rows: CreditRiskRow[], opts: LogOptions = {}): Promise<PredictionRecord[]> {
    const start = (opts.start ?? WINDOW_START).getTime();
    const span = (opts.end ?? WINDOW_END).getTime() - start;
    const prefix = opts.prefix ?? `${opts.arm ?? 'production'}-${opts.version ?? 1}`;
    const records = rows.map((row, i): PredictionRecord => {
      const p = score(row);
      return {
        requestId: `${prefix}-${i}`,
        rowIndex: 0,
        time: new Date(start + Math.floor((i * span) / rows.length)).toISOString(),
        model,
        version: opts.version ?? 1,
        sha256: FIXTURE_MODEL_SHA,
        arm: opts.arm ?? 'production',
        features: featuresOf(row),
        output: opts.error ? null : { label: p >= 0.5 ? 1 : 0, probabilities: { '0': 1 - p, '1': p } },
        ...(opts.error ? { error: 'inference failed' } : {}),
        latencyMs: 1,
      };
    });
    // one batch per hour partition, as the log writes them
    const byHour = new Map<string, PredictionRecord[]>();
    for (const r of records) {
      const hour = r.time.slice(0, 13);
      byHour.set(hour, [...(byHour.get(hour) ?? []), r]);
    }
    let n = 0;
    for (const batch of byHour.values()) {
      const key = keys.predictionBatch(model, new Date(batch[0]!.time), `${prefix.replace(/[^a-z0-9]/g, '')}${n++}`);
      await store.put(key, batch.map((r) => JSON.stringify(r)).join('\n') + '\n');
    }
    return records;
  }

  /** Sends labels back for `records` (received at `receivedAt`), `labelOf` giving each label. */
  async function sendFeedback(model: string, records: PredictionRecord[], labelOf: (i: number) => unknown, receivedAt: Date, suffix = 'fb'): Promise<void> {
    const lines = records.map((r, i) => JSON.stringify({ model, requestId: r.requestId, rowIndex: r.rowIndex, label: labelOf(i), receivedAt: receivedAt.toISOString() }));
    await store.put(keys.feedbackBatch(model, receivedAt, suffix), lines.join('\n') + '\n');
  }

  const run = (model: string, monitoring: MonitoringSpec = monitoringSpec(), now = new Date(WINDOW_END.getTime() + 2 * HOUR)): Promise<MonitorResult> =>
    runMonitorWindow(store, registry, { model, windowStart: WINDOW_START, windowEnd: WINDOW_END, monitoring, workDir, now });

  it('finds nothing when the window looks like the training data', async () => {
    await deploy('same');
    await logPredictions('same', generateCreditRisk({ rows: 1500, seed: 303 }));
    const result = await run('same');
    expect(result.breaches).toEqual([]);
    expect(result.verdict).toBe('ok');
    expect(result.decayKinds).toEqual([]);
    expect(result.sampleSize).toBe(1500);
    expect(result.drift?.verdict).toBe('ok');
    expect(result.drift?.prediction?.judged).toBe(true);
    expect(result.version).toBe(1);
    expect(result.sha256).toBe(FIXTURE_MODEL_SHA);
    expect(result.resultKey).toBe(keys.monitorResult('same', 1, WINDOW_END));
    // no labels: performance measured on nothing, not judged
    expect(result.performance).toMatchObject({ metric: 'roc_auc', baseline: references.rocAuc, value: null, labels: 0, breached: false });
    expect(await listMonitorResults(store, 'same')).toEqual([result]);
  });

  it('reports drift of income, and of the prediction it moves, but not of unrelated features', async () => {
    await deploy('drifted');
    await logPredictions('drifted', generateCreditRisk({ rows: 1500, seed: 303, drift: 'income' }));
    const result = await run('drifted');
    expect(result.verdict).toBe('decay');
    expect(result.decayKinds).toContain('drift');
    const drifted = new Set(result.breaches.filter((b) => b.kind === 'drift').map((b) => b.feature));
    expect(drifted.has('income')).toBe(true);
    for (const f of NUMERIC.filter((n) => n !== 'income')) expect(result.breaches.filter((b) => b.feature === f)).toEqual([]);
    expect(result.breaches.find((b) => b.feature === 'income' && b.measure === 'psi')?.message).toMatch(/^income: psi/);
    // the scorer uses income, so the predictions moved too
    expect(result.breaches.some((b) => b.feature === 'prediction' && b.kind === 'drift')).toBe(true);
  });

  it('gives no verdict below minSamples', async () => {
    await deploy('few');
    await logPredictions('few', generateCreditRisk({ rows: 80, seed: 303, drift: 'income' }));
    const result = await run('few');
    expect(result.verdict).toBe('insufficient_data');
    expect(result.breaches).toEqual([]);
    expect(result.sampleSize).toBe(80);
    expect(result.drift?.verdict).toBe('insufficient_data');
    expect(result.notes.join('\n')).toMatch(/only 80 rows of few@1 in the window; 200 are needed/);
  });

  it('reports a feature sent as null far more often than in training as a quality breach', async () => {
    await deploy('nulls');
    const rows = generateCreditRisk({ rows: 1500, seed: 303 }).map((r, i) => (i % 3 === 0 ? { ...r, debt_to_income: null } : r));
    const empty = await run('nulls'); // an empty window first: no rows, no verdict
    expect(empty.verdict).toBe('insufficient_data');
    expect(empty.sampleSize).toBe(0);
    await logPredictions('nulls', rows);
    const later = await runMonitorWindow(store, registry, {
      model: 'nulls',
      windowStart: WINDOW_START,
      windowEnd: new Date(WINDOW_END.getTime() + 1), // another window end: a new result
      monitoring: monitoringSpec(),
      workDir,
      now: WINDOW_END,
    });
    expect(later.verdict).toBe('decay');
    expect(later.decayKinds).toContain('quality');
    const breach = later.breaches.find((b) => b.feature === 'debt_to_income' && b.measure === 'nullRateIncrease');
    expect(breach?.kind).toBe('quality');
    expect(breach?.value).toBeCloseTo(1 / 3, 2);
  });

  it('joins labels that arrive after the window and measures performance against evaluation', async () => {
    await deploy('labels');
    const rows = generateCreditRisk({ rows: 2000, seed: 404 });
    const records = await logPredictions('labels', rows);
    // labels arrive the next day; one batch arrives after `now` and is not used
    const arrival = new Date(WINDOW_END.getTime() + 20 * HOUR);
    await sendFeedback('labels', records.slice(0, 1500), (i) => rows[i]!['default'], arrival, 'a');
    await sendFeedback('labels', records.slice(1500), (i) => rows[1500 + i]!['default'], new Date(arrival.getTime() + 10 * HOUR), 'b');
    const now = new Date(arrival.getTime() + HOUR);
    const result = await run('labels', monitoringSpec({ performance: { maxDrop: 0.08 } }), now);
    expect(result.performance?.labels).toBe(1500);
    expect(result.performance?.metric).toBe('roc_auc');
    expect(result.performance?.value).not.toBeNull();
    expect(result.performance?.value).toBeGreaterThan(references.rocAuc - 0.08);
    expect(result.performance?.breached).toBe(false);
    expect(result.performance?.from).toBe(new Date(WINDOW_END.getTime() - 7 * 24 * HOUR).toISOString());
    expect(result.verdict).toBe('ok');
  });

  it('labels as strings match numeric classes, the latest label wins, and accuracy can be asked for', async () => {
    await deploy('strings');
    const rows = generateCreditRisk({ rows: 600, seed: 505 });
    const records = await logPredictions('strings', rows);
    const arrival = new Date(WINDOW_END.getTime() + HOUR);
    // first every label wrong, then corrected (as strings)
    await sendFeedback('strings', records, (i) => 1 - (rows[i]!['default'] as number), arrival, 'wrong');
    await sendFeedback('strings', records, (i) => String(rows[i]!['default']), new Date(arrival.getTime() + 60_000), 'right');
    const result = await run('strings', monitoringSpec({ performance: { metric: 'accuracy', maxDrop: 0.1 } }), new Date(arrival.getTime() + HOUR));
    expect(result.performance?.metric).toBe('accuracy');
    expect(result.performance?.labels).toBe(600);
    expect(result.performance?.baseline).toBe(references.accuracy);
    expect(result.performance?.breached).toBe(false);
    expect(Math.abs(result.performance!.drop!)).toBeLessThan(0.1);
  });

  it('reports a performance breach when the model predicts the labels badly', async () => {
    await deploy('bad');
    const rows = generateCreditRisk({ rows: 1000, seed: 606 });
    // the predictions were made over the last day, before this window
    const records = await logPredictions('bad', rows, { start: new Date(WINDOW_END.getTime() - 24 * HOUR), end: WINDOW_START });
    await sendFeedback('bad', records, (i) => 1 - (rows[i]!['default'] as number), WINDOW_END);
    const result = await run('bad');
    // no rows in the drift window, but performance was judged
    expect(result.sampleSize).toBe(0);
    expect(result.drift?.verdict).toBe('insufficient_data');
    expect(result.verdict).toBe('decay');
    expect(result.decayKinds).toEqual(['performance']);
    const breach = result.breaches.find((b) => b.kind === 'performance')!;
    expect(breach).toMatchObject({ measure: 'roc_auc', threshold: 0.05 });
    expect(breach.feature).toBeUndefined();
    expect(result.performance?.breached).toBe(true);
    expect(result.performance?.labels).toBe(1000);
    expect(result.performance!.drop!).toBeGreaterThan(0.3);
  });

  it('does not judge performance below minLabels', async () => {
    await deploy('fewlabels');
    const rows = generateCreditRisk({ rows: 300, seed: 707 });
    const records = await logPredictions('fewlabels', rows);
    await sendFeedback('fewlabels', records.slice(0, 20), (i) => 1 - (rows[i]!['default'] as number), WINDOW_END);
    const result = await run('fewlabels');
    expect(result.performance).toMatchObject({ labels: 20, value: null, drop: null, breached: false });
    expect(result.notes.join('\n')).toMatch(/only 20 labelled predictions/);
  });

  it('is idempotent: a second run of the same window returns the stored result', async () => {
    await deploy('again');
    await logPredictions('again', generateCreditRisk({ rows: 500, seed: 303 }));
    const first = await run('again');
    // more (drifted) rows arrive late; the window's result is already fixed
    await logPredictions('again', generateCreditRisk({ rows: 1500, seed: 808, drift: 'income' }), { prefix: 'late' });
    const second = await run('again', monitoringSpec(), new Date(WINDOW_END.getTime() + 5 * HOUR));
    expect(second).toEqual(first);
    expect(second.resultKey).toBe(first.resultKey);
    expect(await store.list(keys.monitorPrefix('again'))).toEqual([first.resultKey]);
  });

  it('gives no verdict for a version registered without reference profiles', async () => {
    await deploy('old', { references: false });
    await logPredictions('old', generateCreditRisk({ rows: 1000, seed: 303, drift: 'income' }));
    const result = await run('old');
    expect(result.verdict).toBe('insufficient_data');
    expect(result.drift).toBeNull();
    expect(result.breaches).toEqual([]);
    expect(result.sampleSize).toBe(1000);
    expect(result.notes).toContain('no reference profile for old@1 (registered before monitoring); retrain to monitor it');
  });

  it('measures only the production version on the production arm, without failed rows', async () => {
    await deploy('arms');
    await logPredictions('arms', generateCreditRisk({ rows: 1000, seed: 303 }));
    const drifted = (seed: number): CreditRiskRow[] => generateCreditRisk({ rows: 800, seed, drift: 'income' });
    await logPredictions('arms', drifted(1), { arm: 'canary', version: 2 });
    await logPredictions('arms', drifted(2), { arm: 'shadow', version: 2 });
    await logPredictions('arms', drifted(3), { arm: 'challenger', version: 2 });
    await logPredictions('arms', drifted(4), { arm: 'production', version: 2 });
    await logPredictions('arms', drifted(5), { arm: 'canary', version: 1, prefix: 'canary-one' });
    await logPredictions('arms', drifted(6).slice(0, 300), { error: true, prefix: 'failed' });
    // outside the window
    await logPredictions('arms', drifted(7), { start: WINDOW_END, end: new Date(WINDOW_END.getTime() + HOUR), prefix: 'after' });
    await logPredictions('arms', drifted(8), { start: new Date(WINDOW_START.getTime() - HOUR), end: WINDOW_START, prefix: 'before' });
    const result = await run('arms');
    expect(result.sampleSize).toBe(1000);
    expect(result.drift?.sampleSize).toBe(1000);
    expect(result.breaches).toEqual([]);
    expect(result.verdict).toBe('ok');
    expect(result.notes).toContain('300 rows of arms@1 in the window failed inference and were left out');
  });

  it('measures a regression model by RMSE against evaluation, and its predicted values for drift', async () => {
    const model = 'regress';
    const value = (row: CreditRiskRow): number => 100 * score(row);
    const holdout = generateCreditRisk({ rows: 2000, seed: 909 });
    const predictionRef = await profile(holdout.map((r) => ({ prediction: value(r) })), [{ name: 'prediction', kind: 'numeric' }], 'regress-prediction');
    const referenceKey = `test/${model}/reference.json`;
    const predictionReferenceKey = `test/${model}/prediction-reference.json`;
    await store.put(referenceKey, JSON.stringify(references.training));
    await store.put(predictionReferenceKey, JSON.stringify(predictionRef));
    const draft = fixtureVersionDraft({ model, artifact: { sha256: FIXTURE_MODEL_SHA, key: keys.modelBlob(FIXTURE_MODEL_SHA), size: 1, metadataKey: 'none' }, run: '1' });
    await registry.registerVersion({
      ...draft,
      task: 'regression',
      target: 'risk',
      data: { ...draft.data, split: { ...draft.data.split, referenceKey } },
      evaluation: { ...draft.evaluation, metrics: { rmse: 2 }, predictionReferenceKey },
    });
    await registry.moveAlias({ model, alias: 'production', version: 1, expectedVersion: null, run: { workflowId: 'wf-p1', runId: 'run-p1' } });
    const rows = generateCreditRisk({ rows: 1000, seed: 303 });
    const records = (await logPredictions(model, rows)).map((r, i) => ({ ...r, output: { value: value(rows[i]!) } }));
    // rewrite the batch with regression outputs
    for (const key of await store.list(keys.predictionsPrefix(model))) await store.put(key, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
    // labels 1 above half the predictions and 3 below the others: RMSE √5 ≈ 2.24, 0.24 worse than evaluation's 2
    await sendFeedback(model, records, (i) => value(rows[i]!) + (i % 2 === 0 ? 1 : -3), WINDOW_END);
    const ok = await run(model, monitoringSpec({ performance: { maxDrop: 0.5 } }));
    expect(ok.performance).toMatchObject({ metric: 'rmse', baseline: 2, labels: 1000, breached: false });
    expect(ok.performance!.value).toBeCloseTo(Math.sqrt(5), 6);
    expect(ok.performance!.drop).toBeCloseTo(Math.sqrt(5) - 2, 6);
    expect(ok.drift?.prediction?.judged).toBe(true);
    expect(ok.verdict).toBe('ok');
    const strict = await runMonitorWindow(store, registry, {
      model,
      windowStart: WINDOW_START,
      windowEnd: new Date(WINDOW_END.getTime() + 1),
      monitoring: monitoringSpec({ performance: { maxDrop: 0.1 } }),
      workDir,
      now: new Date(WINDOW_END.getTime() + HOUR),
    });
    expect(strict.verdict).toBe('decay');
    expect(strict.decayKinds).toEqual(['performance']);
    expect(strict.breaches[0]).toMatchObject({ kind: 'performance', measure: 'rmse', threshold: 0.1 });
  });

  it('refuses a model without a production version', async () => {
    await expect(run('nothing')).rejects.toThrow(/no production version/);
  });
});
