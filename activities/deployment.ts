import { ApplicationFailure } from '@temporalio/activity';
import { ErrorType } from '../src/shared/errors.js';
import type { AliasRecord, RolloutRecord, TrafficMode, TrafficRecord } from '../src/shared/registry-types.js';
import type { RolloutBounds } from '../src/spec/schema.js';
import { ArtifactIntegrityError, type LoadedModel, type Prediction } from '../src/eval/onnx-model.js';
import { loadStoredModel } from '../src/eval/stored-model.js';
import { AliasConflictError, TrafficOwnedError } from '../src/registry/registry.js';
import { keys } from '../src/store/keys.js';
import type { Arm } from '../src/serving/prediction-log.js';
import { analyzeWindow, type Verdict } from '../src/rollout/analysis.js';
import type { ActivityDeps } from './deps.js';
import { activityLogger, withHeartbeat, withScratchDir } from './context.js';
import { classified } from './errors.js';
import type { EvaluationSample } from './evaluation.js';

export interface ValidateDeploymentInput {
  model: string;
  version: number;
  rolloutId: string;
  sampleRows: number;
  tolerance: number;
  maxLatencyMs: number;
}

export interface DeploymentValidationReport {
  model: string;
  version: number;
  sha256: string;
  rows: number;
  /** Largest absolute difference between an answer and evaluation's answer to the same row. */
  maxAbsDiff: number;
  latencyP50Ms: number;
  latencyP95Ms: number;
  passed: boolean;
  problems: string[];
  reportKey: string;
}

export interface TrafficInput {
  model: string;
  rolloutId: string;
  workflowId: string;
  mode: TrafficMode;
  candidate: { version: number; sha256: string } | null;
  percent: number;
  step: string;
  reason?: string;
}

export interface AnalyzeRolloutInput {
  model: string;
  rolloutId: string;
  candidateArm: Exclude<Arm, 'production'>;
  from: string;
  to: string;
  bounds: RolloutBounds;
  /** Stored under this report name when given (the end-of-step verdicts). */
  reportName?: string;
}


export interface RolloutAnalysis {
  verdict: Verdict;
  summary: string;
  breaches: Array<{ measure: string; message: string }>;
  requests: { production: number; candidate: number };
  reportKey: string | null;
}

export interface RestoreAliasInput {
  model: string;
  alias: string;
  /** Move back only if the alias still points at the rollout's version. */
  fromVersion: number;
  toVersion: number;
  rolloutId: string;
  reason: string;
  run: { workflowId: string; runId: string };
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function flatOutputs(prediction: Prediction): number[] {
  return Array.from(prediction.task === 'classification' ? prediction.probabilities : prediction.values);
}

export function deploymentActivities(deps: ActivityDeps) {
  return {
    /**
     * Before any traffic: loads the exact registered artifact (hash checked) in a fresh
     * inference session, re-scores the holdout rows evaluation kept, and requires the
     * same answers and a single-row p95 latency within budget.
     */
    async validateDeployment(input: ValidateDeploymentInput): Promise<DeploymentValidationReport> {
      const log = activityLogger(deps.logger);
      return classified(() =>
        withHeartbeat(async () => {
          const record = await deps.registry.getVersion(input.model, input.version);
          const reportKey = keys.rolloutReport(input.model, input.rolloutId, 'pre-deployment-validation');
          const refuse = (message: string): never => {
            throw ApplicationFailure.create({ type: ErrorType.DeploymentValidation, nonRetryable: true, message: `pre-deployment validation of ${input.model}@${input.version}: ${message}` });
          };
          const evaluation = JSON.parse((await deps.store.get(record.evaluation.reportKey)).toString('utf8')) as { sample?: EvaluationSample };
          const sample = evaluation.sample;
          if (!sample || sample.rows.length === 0) refuse(`its evaluation report ${record.evaluation.reportKey} holds no sample answers to compare with; re-run its pipeline`);
          let model: LoadedModel;
          try {
            model = await loadStoredModel(deps.store, record.artifact);
          } catch (err) {
            if (err instanceof ArtifactIntegrityError) refuse(`the stored artifact is not the one evaluated: ${err.message}`);
            throw err;
          }
          const problems: string[] = [];
          try {
            const rows = sample!.rows.slice(0, input.sampleRows);
            const expected = sample!.outputs.slice(0, (sample!.outputs.length / sample!.rows.length) * rows.length);
            // Evaluation scored these rows in one batch; a batch of the same rows gives bit-comparable answers.
            const actual = flatOutputs(await model.predict(rows));
            let maxAbsDiff = 0;
            if (actual.length !== expected.length) problems.push(`${actual.length} outputs for ${rows.length} rows, evaluation had ${expected.length}`);
            for (let i = 0; i < Math.min(actual.length, expected.length); i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(actual[i]! - expected[i]!));
            if (!(maxAbsDiff <= input.tolerance)) problems.push(`answers differ from evaluation's by up to ${maxAbsDiff} (tolerance ${input.tolerance})`);
            const latencies: number[] = [];
            for (const row of rows) {
              const started = performance.now();
              await model.predict([row]);
              latencies.push(performance.now() - started);
            }
            latencies.sort((a, b) => a - b);
            const latencyP50Ms = quantile(latencies, 0.5);
            const latencyP95Ms = quantile(latencies, 0.95);
            if (latencyP95Ms > input.maxLatencyMs) problems.push(`single-row p95 latency ${latencyP95Ms.toFixed(2)} ms exceeds the budget of ${input.maxLatencyMs} ms`);
            const report: DeploymentValidationReport = {
              model: input.model,
              version: input.version,
              sha256: record.artifact.sha256,
              rows: rows.length,
              maxAbsDiff,
              latencyP50Ms,
              latencyP95Ms,
              passed: problems.length === 0,
              problems,
              reportKey,
            };
            await deps.store.put(reportKey, JSON.stringify(report, null, 2), { contentType: 'application/json' });
            log.info({ model: input.model, version: input.version, maxAbsDiff, latencyP95Ms, passed: report.passed }, 'pre-deployment validation');
            if (!report.passed) refuse(problems.join('; '));
            return report;
          } finally {
            await model.release();
          }
        }),
      );
    },

    /** Writes the model's traffic split; re-writing a step this rollout already wrote is a no-op. */
    async setTraffic(input: TrafficInput): Promise<TrafficRecord> {
      const log = activityLogger(deps.logger);
      return classified(async () => {
        try {
          const entry = await deps.registry.setTraffic({
            model: input.model,
            mode: input.mode,
            candidate: input.candidate,
            percent: input.percent,
            rolloutId: input.rolloutId,
            step: input.step,
            workflowId: input.workflowId,
            ...(input.reason ? { reason: input.reason } : {}),
          });
          log.info({ model: input.model, mode: input.mode, percent: input.percent, step: input.step, seq: entry.seq }, 'traffic split set');
          return entry;
        } catch (err) {
          if (err instanceof TrafficOwnedError) throw ApplicationFailure.create({ type: ErrorType.TrafficOwned, nonRetryable: true, message: err.message });
          throw err;
        }
      });
    },

    /** Undo of a traffic step: production only again, unless another rollout owns the split now. */
    async clearTraffic(input: { model: string; rolloutId: string; workflowId: string; reason: string }): Promise<TrafficRecord | null> {
      return classified(async () => {
        const current = await deps.registry.getTraffic(input.model);
        if (!current || current.rolloutId !== input.rolloutId) return current;
        if (current.mode === 'none') return current;
        return deps.registry.setTraffic({ model: input.model, mode: 'none', candidate: null, percent: 0, rolloutId: input.rolloutId, step: 'cleared', workflowId: input.workflowId, reason: input.reason });
      });
    },

    /** Compares the candidate's arm with production's over a window of the prediction log. */
    async analyzeRollout(input: AnalyzeRolloutInput): Promise<RolloutAnalysis> {
      return classified(() =>
        withHeartbeat(() =>
          withScratchDir(deps.workDir, async (dir) => {
            const report = await analyzeWindow(deps.store, {
              model: input.model,
              rolloutId: input.rolloutId,
              from: new Date(input.from),
              to: new Date(input.to),
              baselineArm: 'production',
              candidateArm: input.candidateArm,
              bounds: input.bounds,
              workDir: dir,
            });
            let reportKey: string | null = null;
            if (input.reportName) {
              reportKey = keys.rolloutReport(input.model, input.rolloutId, input.reportName);
              await deps.store.put(reportKey, JSON.stringify(report, null, 2), { contentType: 'application/json' });
            }
            return {
              verdict: report.comparison.verdict,
              summary: report.comparison.summary,
              breaches: report.comparison.breaches.map((b) => ({ measure: b.measure, message: b.message })),
              requests: { production: report.baseline.requests, candidate: report.candidate.requests },
              reportKey,
            };
          }),
        ),
      );
    },

    /** Undo of a promotion: the alias goes back, if it still points at the rollout's version. */
    async restoreAlias(input: RestoreAliasInput): Promise<AliasRecord | null> {
      return classified(async () => {
        try {
          return await deps.registry.moveAlias({
            model: input.model,
            alias: input.alias,
            version: input.toVersion,
            expectedVersion: input.fromVersion,
            run: input.run,
            strategy: 'rollback',
            rolloutId: input.rolloutId,
            reason: input.reason,
          });
        } catch (err) {
          // Someone moved it since: their move stands.
          if (err instanceof AliasConflictError) return deps.registry.getAlias(input.model, input.alias);
          throw err;
        }
      });
    },

    async recordRollout(record: RolloutRecord): Promise<RolloutRecord> {
      return classified(() => deps.registry.recordRollout(record));
    },
  };
}
