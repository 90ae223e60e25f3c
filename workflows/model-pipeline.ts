import {
  ApplicationFailure,
  condition,
  log,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { PipelineActivities } from '../activities/index.js';
import { STAGES, STAGE_STATE, type StageName } from '../src/shared/constants.js';
import { durationMs } from '../src/shared/duration.js';
import { ErrorType, RunOutcome } from '../src/shared/errors.js';
import type { AliasRecord, CodeVersion, ModelVersionRecord } from '../src/shared/registry-types.js';
import type { PipelineSpec } from '../src/spec/schema.js';
import { stageSearchAttribute } from '../src/shared/search-attributes.js';
import {
  approveUpdate,
  progressQuery,
  rejectUpdate,
  statusQuery,
  type DecisionRequest,
  type DecisionResult,
  type PipelineStatus,
} from './messages.js';
import { dataPreset, deploymentPreset, evaluationPreset, quickPreset, trainingPreset } from './presets.js';

export interface PipelineInput {
  spec: PipelineSpec;
  code: CodeVersion;
  submittedBy: string;
  trainingTaskQueue: string;
}

export interface PipelineResult {
  outcome: RunOutcome;
  model: string;
  version: number;
  sha256: string;
  dataVersion: string;
  metrics: Record<string, number | null>;
  deployedAlias: string | null;
  previousVersion: number | null;
}

/** How often a promotion re-checks gates after losing the alias race to another run. */
const MAX_PROMOTION_ATTEMPTS = 20;

export async function modelPipeline(input: PipelineInput): Promise<PipelineResult> {
  const { spec } = input;
  const info = workflowInfo();
  const run = { workflowId: info.workflowId, runId: info.runId };
  const quick = proxyActivities<PipelineActivities>(quickPreset);
  const data = proxyActivities<PipelineActivities>(dataPreset);
  const training = proxyActivities<PipelineActivities>(trainingPreset(spec.trainer, input.trainingTaskQueue));
  const evaluation = proxyActivities<PipelineActivities>(evaluationPreset);
  const deployment = proxyActivities<PipelineActivities>(deploymentPreset);

  const status: PipelineStatus = {
    model: spec.name,
    stage: 'validate',
    outcome: RunOutcome.Running,
    stages: Object.fromEntries(STAGES.map((s) => [s, { state: STAGE_STATE.pending }])) as PipelineStatus['stages'],
  };
  let decision: { result: DecisionResult; comment: string | null } | undefined;

  setHandler(statusQuery, () => status);
  setHandler(progressQuery, () => ({
    stage: status.stage,
    completedStages: STAGES.filter((s) => status.stages[s].state === STAGE_STATE.done || status.stages[s].state === STAGE_STATE.skipped).length,
    totalStages: STAGES.length,
  }));

  const validateDecision = (request: DecisionRequest, kind: 'approve' | 'reject'): void => {
    const awaiting = status.awaitingApproval;
    if (!awaiting || decision) throw new Error(`no decision is awaited: run is at stage "${status.stage}" (${status.outcome})`);
    if (request.model !== awaiting.model || request.version !== awaiting.version) {
      throw new Error(`this run awaits a decision on ${awaiting.model}@${awaiting.version}, not ${request.model}@${request.version}`);
    }
    if (request.sha256 !== awaiting.sha256) {
      throw new Error(`artifact hash ${request.sha256.slice(0, 12)}… does not match the candidate ${awaiting.sha256.slice(0, 12)}…`);
    }
    if (!awaiting.reviewers.includes(request.reviewer)) {
      throw new Error(`"${request.reviewer}" is not a reviewer of ${awaiting.model} (reviewers: ${awaiting.reviewers.join(', ')})`);
    }
    if (request.reviewer === awaiting.submittedBy) {
      throw new Error(`"${request.reviewer}" submitted this run and cannot decide it (four-eyes rule)`);
    }
    if (kind === 'reject' && !request.comment?.trim()) throw new Error('a rejection needs a comment');
  };
  const decide = (kind: 'approved' | 'rejected') => (request: DecisionRequest): DecisionResult => {
    const result: DecisionResult = {
      decision: kind,
      model: request.model,
      version: request.version,
      reviewer: request.reviewer,
      decidedAt: new Date().toISOString(),
    };
    decision = { result, comment: request.comment?.trim() || null };
    return result;
  };
  setHandler(approveUpdate, decide('approved'), { validator: (r) => validateDecision(r, 'approve') });
  setHandler(rejectUpdate, decide('rejected'), { validator: (r) => validateDecision(r, 'reject') });

  const begin = (stage: StageName): void => {
    status.stage = stage;
    status.stages[stage] = { state: STAGE_STATE.running, startedAt: new Date().toISOString() };
    upsertSearchAttributes([{ key: stageSearchAttribute, value: stage }]);
  };
  const end = (stage: StageName, detail?: string, state: typeof STAGE_STATE.done | typeof STAGE_STATE.skipped = STAGE_STATE.done): void => {
    status.stages[stage] = { ...status.stages[stage], state, endedAt: new Date().toISOString(), ...(detail ? { detail } : {}) };
  };

  let current: StageName = 'validate';
  try {
    // 1. Data: store content-addressed, validate and profile, split.
    begin((current = 'validate'));
    const dataset = await data.ingestDataset({ model: spec.name, source: spec.dataset.source });
    status.dataVersion = dataset.sha256;
    const validation = await data.validateDataset({ model: spec.name, dataset, spec, workflowId: run.workflowId, runId: run.runId });
    const split = await data.splitDataset({ model: spec.name, dataset, spec });
    end('validate', `data ${dataset.sha256.slice(0, 12)}: ${validation.rowCount} rows, ${split.trainRows} train / ${split.holdoutRows} holdout`);

    // 2. Training (own task queue, heartbeats).
    begin((current = 'train'));
    const artifact = await training.trainModel({ model: spec.name, spec, split });
    status.artifactSha256 = artifact.sha256;
    end('train', `${artifact.framework} ${artifact.algorithm}, model ${artifact.sha256.slice(0, 12)}`);

    // 3. Evaluation of the exact artifact, next to production on the same holdout.
    begin((current = 'evaluate'));
    let production: AliasRecord | null = await quick.getAlias({ model: spec.name, alias: spec.deployment.alias });
    let round = 1;
    let report = await evaluation.evaluateModel({ model: spec.name, spec, artifact, split, production, workflowId: run.workflowId, runId: run.runId, round });
    status.metrics = report.metrics;
    status.gates = report.gates;
    if (!report.passed) {
      const failed = report.gates.filter((g) => !g.passed).map((g) => `${g.gate} (actual ${g.actual ?? 'n/a'})`);
      throw ApplicationFailure.create({
        type: ErrorType.GateFailed,
        nonRetryable: true,
        message: `evaluation gates failed: ${failed.join('; ')}`,
        details: [report.gates],
      });
    }
    end('evaluate', report.gates.length ? `${report.gates.length} gates passed` : 'no gates configured');

    // 4. Registration: all artifacts exist, so the version record can be written.
    begin((current = 'register'));
    const record: ModelVersionRecord = await quick.registerVersion({
      model: spec.name,
      spec,
      dataset,
      validation,
      split,
      artifact,
      evaluation: report,
      code: input.code,
      run: { ...run, submittedBy: input.submittedBy },
    });
    status.version = record.version;
    end('register', `${spec.name}@${record.version}`);

    // 5. Approval.
    begin((current = 'approve'));
    if (spec.approval.mode === 'auto') {
      await quick.recordDecision({ model: spec.name, version: record.version, sha256: artifact.sha256, decision: 'auto', by: [], comment: null, run });
      end('approve', 'automatic: all gates passed');
    } else {
      const timeoutMs = durationMs(spec.approval.timeout);
      status.awaitingApproval = {
        model: spec.name,
        version: record.version,
        sha256: artifact.sha256,
        reviewers: spec.approval.reviewers,
        submittedBy: input.submittedBy,
        deadline: new Date(Date.now() + timeoutMs).toISOString(),
      };
      log.info('awaiting approval', { model: spec.name, version: record.version, reviewers: spec.approval.reviewers });
      const decided = await condition(() => decision !== undefined, timeoutMs);
      delete status.awaitingApproval;
      if (!decided || !decision) {
        await quick.recordDecision({ model: spec.name, version: record.version, sha256: artifact.sha256, decision: 'expired', by: [], comment: null, run });
        status.outcome = RunOutcome.Expired;
        throw ApplicationFailure.create({
          type: ErrorType.ApprovalExpired,
          nonRetryable: true,
          message: `no decision on ${spec.name}@${record.version} within ${spec.approval.timeout}; nothing deployed`,
        });
      }
      const { result, comment } = decision;
      await quick.recordDecision({
        model: spec.name,
        version: record.version,
        sha256: artifact.sha256,
        decision: result.decision,
        by: [result.reviewer],
        comment,
        run,
      });
      if (result.decision === 'rejected') {
        status.outcome = RunOutcome.Rejected;
        throw ApplicationFailure.create({
          type: ErrorType.ApprovalRejected,
          nonRetryable: true,
          message: `${spec.name}@${record.version} rejected by ${result.reviewer}: ${comment ?? ''}`,
        });
      }
      end('approve', `approved by ${result.reviewer}`);
    }

    // 6. Deployment: compare-and-swap the alias; if another run promoted meanwhile,
    // the candidate must beat the new production model before it may replace it.
    begin((current = 'deploy'));
    for (let attempt = 1; ; attempt++) {
      const promoted = await deployment.promoteVersion({
        model: spec.name,
        alias: spec.deployment.alias,
        version: record.version,
        expectedVersion: production?.version ?? null,
        strategy: spec.deployment.strategy,
        run,
      });
      if (promoted.ok) {
        end('deploy', `${spec.deployment.alias} → ${spec.name}@${record.version} (was ${promoted.previousVersion ?? 'none'})`);
        status.stage = 'done';
        status.outcome = RunOutcome.Deployed;
        return {
          outcome: RunOutcome.Deployed,
          model: spec.name,
          version: record.version,
          sha256: artifact.sha256,
          dataVersion: dataset.sha256,
          metrics: report.metrics,
          deployedAlias: spec.deployment.alias,
          previousVersion: promoted.previousVersion,
        };
      }
      if (attempt >= MAX_PROMOTION_ATTEMPTS) {
        throw ApplicationFailure.create({
          type: ErrorType.GateFailed,
          nonRetryable: true,
          message: `${spec.deployment.alias} kept moving during promotion (${attempt} attempts); ${spec.name}@${record.version} stays registered, not deployed`,
        });
      }
      production = promoted.current;
      log.info('production moved during this run; re-checking gates', { now: production?.version ?? null });
      round += 1;
      report = await evaluation.evaluateModel({ model: spec.name, spec, artifact, split, production, workflowId: run.workflowId, runId: run.runId, round });
      if (!report.passed) {
        throw ApplicationFailure.create({
          type: ErrorType.GateFailed,
          nonRetryable: true,
          message: `${spec.name}@${record.version} no longer passes its gates against the new production version ${production?.version ?? 'none'}`,
          details: [report.gates],
        });
      }
    }
  } catch (err) {
    status.stages[current] = { ...status.stages[current], state: STAGE_STATE.failed, endedAt: new Date().toISOString() };
    status.error = err instanceof Error ? err.message : String(err);
    if (status.outcome === RunOutcome.Running) status.outcome = outcomeOf(err);
    throw err;
  }
}

function outcomeOf(err: unknown): RunOutcome {
  let cause: unknown = err;
  while (cause instanceof Error) {
    if (cause instanceof ApplicationFailure) {
      if (cause.type === ErrorType.DataValidation) return RunOutcome.DataInvalid;
      if (cause.type === ErrorType.GateFailed) return RunOutcome.GateFailed;
    }
    cause = cause.cause;
  }
  return RunOutcome.Failed;
}
