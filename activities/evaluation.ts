import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DATASET_TABLE, openDataset } from '../src/data/load.js';
import { buildReferenceProfile, tableRelation } from '../src/monitoring/reference.js';
import type { AliasRecord, GateResult, ModelArtifactRef, SplitRef } from '../src/shared/registry-types.js';
import type { PipelineSpec } from '../src/spec/schema.js';
import { keys } from '../src/store/keys.js';
import { featureColumns } from '../src/data/features.js';
import { readSplitRows, type Row } from '../src/data/read-rows.js';
import type { Prediction } from '../src/eval/onnx-model.js';
import { loadStoredModel, type StoredModelRef } from '../src/eval/stored-model.js';
import { classificationMetrics, regressionMetrics, sliceMetrics } from '../src/eval/metrics.js';
import { evaluateGates } from '../src/eval/gates.js';
import type { ActivityDeps } from './deps.js';
import { activityLogger, withHeartbeat, withScratchDir } from './context.js';
import { classified } from './errors.js';

export interface EvaluateInput {
  model: string;
  spec: PipelineSpec;
  artifact: ModelArtifactRef;
  split: SplitRef;
  production: AliasRecord | null;
  workflowId: string;
  runId?: string;
  /** 1 for the first evaluation; a re-check after losing a promotion race writes its own report. */
  round?: number;
}

export interface EvaluationReport {
  reportKey: string;
  metrics: Record<string, number | null>;
  gates: GateResult[];
  passed: boolean;
  production: { version: number; sha256: string; metrics: Record<string, number | null> } | null;
  holdoutRows: number;
  /** Reference profile of the candidate's holdout predictions, for prediction-drift monitoring. */
  predictionReferenceKey?: string;
}

/** The one number (or label) per row that prediction drift is measured on. */
export function predictionValue(prediction: Prediction, row: number): number | string {
  if (prediction.task === 'regression') return prediction.values[row]!;
  const k = prediction.classes.length;
  // Binary: probability of the last class; more classes: the label.
  return k === 2 ? prediction.probabilities[row * k + 1]! : String(prediction.labels[row]);
}

type Metrics = Record<string, number | null>;

/** Holdout rows (and the candidate's answers to them) kept in the evaluation report for pre-deployment validation. */
export const EVALUATION_SAMPLE_ROWS = 200;

/** First rows of the holdout with the answers evaluation got for them (in the evaluation's own batch). */
export interface EvaluationSample {
  features: string[];
  rows: Row[];
  /** Classification: probability per class, row-major; regression: the values. */
  outputs: number[];
  classes?: Array<number | string>;
}

function evaluationSample(rows: Row[], features: string[], prediction: Prediction): EvaluationSample {
  const sampleRows = rows.map((r) => Object.fromEntries(features.map((f) => [f, r[f] ?? null])));
  if (prediction.task === 'classification') {
    const k = prediction.classes.length;
    return { features, rows: sampleRows, outputs: Array.from(prediction.probabilities.subarray(0, rows.length * k)), classes: [...prediction.classes] };
  }
  return { features, rows: sampleRows, outputs: Array.from(prediction.values.subarray(0, rows.length)) };
}

function scalarMetrics(metrics: object): Metrics {
  const out: Metrics = {};
  for (const [name, value] of Object.entries(metrics)) if (typeof value === 'number' || value === null) out[name] = value;
  return out;
}

export function evaluationActivities(deps: ActivityDeps) {
  async function predictWith(artifact: StoredModelRef, rows: Row[]): Promise<Prediction> {
    const model = await loadStoredModel(deps.store, artifact);
    try {
      return await model.predict(rows);
    } finally {
      await model.release();
    }
  }

  function score(spec: PipelineSpec, rows: Row[], prediction: Prediction) {
    const target = spec.target.column;
    if (prediction.task === 'classification') {
      const yTrue = rows.map((r) => r[target] as number | string);
      const full = classificationMetrics(yTrue, prediction.probabilities, prediction.classes, prediction.labels);
      const slices = Object.fromEntries(
        spec.evaluation.slices.map((column) => [
          column,
          sliceMetrics(rows.map((r) => r[column]), { task: 'classification', yTrue, proba: prediction.probabilities, classes: prediction.classes, predicted: prediction.labels }),
        ]),
      );
      return { metrics: scalarMetrics(full), detail: full, slices };
    }
    const yTrue = rows.map((r) => Number(r[target]));
    const full = regressionMetrics(yTrue, prediction.values);
    const slices = Object.fromEntries(
      spec.evaluation.slices.map((column) => [column, sliceMetrics(rows.map((r) => r[column]), { task: 'regression', yTrue, yPred: prediction.values })]),
    );
    return { metrics: scalarMetrics(full), detail: full, slices };
  }

  return {
    /**
     * Runs the exact stored artifact (hash-verified) with onnxruntime-node on the
     * holdout, and the production model on the same rows, then applies the gates.
     */
    async evaluateModel(input: EvaluateInput): Promise<EvaluationReport> {
      const log = activityLogger(deps.logger);
      return classified(() =>
        withHeartbeat(() => withScratchDir(deps.workDir, async (dir) => {
          const holdoutPath = join(dir, 'holdout.csv');
          await deps.store.getToFile(input.split.holdoutKey, holdoutPath);
          const columns = [...featureColumns(input.spec), input.spec.target.column];
          const rows = await readSplitRows(holdoutPath, input.spec, columns);
          const candidatePrediction = await predictWith(input.artifact, rows);
          const candidate = score(input.spec, rows, candidatePrediction);
          let production: EvaluationReport['production'] = null;
          let notComparable: string | null = null;
          if (input.production) {
            const record = await deps.registry.getVersion(input.model, input.production.version);
            // Scoring production without its inputs would fill them with NaN and flatter the candidate.
            const absent = record.features.filter((f) => !columns.includes(f));
            if (absent.length) {
              notComparable = `production ${input.model}@${record.version} uses features not in this holdout: ${absent.join(', ')}`;
            } else {
              const scored = score(input.spec, rows, await predictWith(record.artifact, rows));
              production = { version: record.version, sha256: record.artifact.sha256, metrics: scored.metrics };
            }
          }
          const gates = evaluateGates({
            metrics: candidate.metrics,
            gates: input.spec.evaluation.gates,
            beatProduction: input.spec.evaluation.beatProduction,
            productionMetrics: production?.metrics ?? null,
          });
          const beat = input.spec.evaluation.beatProduction;
          if (notComparable && beat) {
            const results = gates.results.filter((g) => !g.gate.includes('beats production'));
            results.push({ gate: `${beat.metric} beats production by >= ${beat.minDelta}`, metric: beat.metric, actual: null, threshold: beat.minDelta, passed: false, reason: notComparable });
            gates.results = results;
            gates.passed = false;
          }
          const reportKey = keys.runReport(input.model, input.workflowId, input.runId ?? 'run', `evaluation-${input.round ?? 1}`);
          const report = {
            model: input.model,
            artifact: input.artifact,
            holdoutKey: input.split.holdoutKey,
            holdoutRows: rows.length,
            metrics: candidate.detail,
            slices: candidate.slices,
            production,
            gates: gates.results,
            passed: gates.passed,
            // What pre-deployment validation re-scores: the same rows must get the same answers from the artifact served.
            sample: evaluationSample(rows.slice(0, EVALUATION_SAMPLE_ROWS), featureColumns(input.spec), candidatePrediction),
          };
          await deps.store.put(reportKey, JSON.stringify(report, null, 2), { contentType: 'application/json' });
          const predictionReferenceKey = keys.runReport(input.model, input.workflowId, input.runId ?? 'run', `prediction-reference-${input.round ?? 1}`);
          const values = rows.map((_, i) => predictionValue(candidatePrediction, i));
          const kind = typeof values[0] === 'string' ? 'categorical' : 'numeric';
          const csvPath = join(dir, 'predictions.csv');
          await writeFile(csvPath, `prediction\n${values.map((v) => (typeof v === 'string' ? JSON.stringify(v) : String(v))).join('\n')}\n`);
          const table = await openDataset(csvPath, 'csv');
          try {
            const reference = await buildReferenceProfile(table.connection, tableRelation(DATASET_TABLE), [{ name: 'prediction', kind }]);
            await deps.store.put(predictionReferenceKey, JSON.stringify(reference), { contentType: 'application/json' });
          } finally {
            table.close();
          }
          log.info({ metrics: candidate.metrics, passed: gates.passed, production: production?.version ?? null }, 'model evaluated');
          return { reportKey, metrics: candidate.metrics, gates: gates.results, passed: gates.passed, production, holdoutRows: rows.length, predictionReferenceKey };
        })),
      );
    },
  };
}
