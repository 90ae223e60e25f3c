import {
  ApplicationFailure,
  CancellationScope,
  CancelledFailure,
  condition,
  log,
  proxyActivities,
  setHandler,
  ParentClosePolicy,
  executeChild,
  patched,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { PipelineActivities } from '../activities/index.js';
import { STAGES, STAGE_STATE, type StageName } from '../src/shared/constants.js';
import { durationMs } from '../src/shared/duration.js';
import { ErrorType, OUTCOME_BY_ERROR_TYPE, RunOutcome } from '../src/shared/errors.js';
import type { AliasRecord, CodeVersion, ModelVersionRecord, RunTrigger } from '../src/shared/registry-types.js';
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
import { sendToWebhooks } from './notification.js';
import { ApprovalBallot, approvalEvents } from './approval.js';
import { rolloutWorkflow } from './rollout.js';
import { rolloutWorkflowId } from './rollout-messages.js';
import type { WebhookEventKind } from '../src/notify/webhooks.js';

export interface PipelineInput {
  spec: PipelineSpec;
  code: CodeVersion;
  submittedBy: string;
  trainingTaskQueue: string;
  /** Why the run started (absent: by hand); recorded with the version it registers. */
  trigger?: RunTrigger;
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

/** Workflow changes guarded for replay of older histories; never remove an entry while such runs may exist. */
const PATCHES = {
  noStageSearchAttribute: 'no-stage-search-attribute',
  preDeploymentValidation: 'pre-deployment-validation',
  monitorSchedules: 'monitor-schedules',
  /** Schedules follow every deployment, also one whose spec has no monitoring or schedule (it removes an earlier version's). */
  schedulesFollowEveryDeployment: 'schedules-follow-every-deployment',
} as const;

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
  let ballot: ApprovalBallot | undefined;
  const notifications: Array<Promise<unknown>> = [];
  const webhooks = spec.notifications?.webhooks ?? [];
  /** Webhooks go out alongside the run, never blocking it; each delivery retries on its own. */
  const notify = (kind: WebhookEventKind, data: Record<string, unknown>): void => {
    notifications.push(...sendToWebhooks(webhooks, kind, `${run.runId}-${kind}-${notifications.length}`, data));
  };

  setHandler(statusQuery, () => status);
  setHandler(progressQuery, () => ({
    stage: status.stage,
    completedStages: STAGES.filter((s) => status.stages[s].state === STAGE_STATE.done || status.stages[s].state === STAGE_STATE.skipped).length,
    totalStages: STAGES.length,
  }));

  const validateDecision = (request: DecisionRequest, kind: 'approve' | 'reject'): void => {
    if (!ballot) throw new Error(`no decision is awaited: run is at stage "${status.stage}" (${status.outcome})`);
    ballot.validate(request, kind, status.stage);
  };
  const decide = (kind: 'approve' | 'reject') => (request: DecisionRequest): DecisionResult => {
    // The validator ran just before, in the same workflow task, so the ballot exists.
    return ballot!.record(request, kind, new Date().toISOString());
  };
  setHandler(approveUpdate, decide('approve'), { validator: (r) => validateDecision(r, 'approve') });
  setHandler(rejectUpdate, decide('reject'), { validator: (r) => validateDecision(r, 'reject') });

  const begin = (stage: StageName): void => {
    status.stage = stage;
    status.stages[stage] = { state: STAGE_STATE.running, startedAt: new Date().toISOString() };
    // Earlier releases mirrored every stage into a search attribute: six upserts per run,
    // most of the orchestration overhead (bench/RESULTS.md) and read by nothing. The status
    // query carries the stage; histories from before keep their upserts on replay.
    if (!patched(PATCHES.noStageSearchAttribute)) upsertSearchAttributes([{ key: stageSearchAttribute, value: stage }]);
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
      run: { ...run, submittedBy: input.submittedBy, ...(input.trigger ? { trigger: input.trigger } : {}) },
    });
    status.version = record.version;
    end('register', `${spec.name}@${record.version}`);

    // 5. Approval.
    begin((current = 'approve'));
    if (spec.approval.mode === 'auto') {
      await quick.recordDecision({ model: spec.name, version: record.version, sha256: artifact.sha256, decision: 'auto', by: [], comment: null, run });
      end('approve', 'automatic: all gates passed');
    } else {
      const policy = spec.approval;
      const startedAt = Date.now();
      const deadline = startedAt + durationMs(policy.timeout);
      ballot = new ApprovalBallot(policy, { model: spec.name, version: record.version, sha256: artifact.sha256 }, input.submittedBy, new Date(deadline).toISOString());
      status.awaitingApproval = ballot.awaiting;
      const candidate = { model: spec.name, version: record.version, sha256: artifact.sha256, workflowId: run.workflowId, reviewers: ballot.awaiting.reviewers, groups: ballot.awaiting.groups, deadline: ballot.awaiting.deadline };
      log.info('awaiting approval', { model: spec.name, version: record.version, reviewers: ballot.awaiting.reviewers, groups: ballot.awaiting.groups, quorum: ballot.awaiting.quorum });
      notify('approval_requested', candidate);
      // Reminders and escalation are durable timers: one wait per event, then the deadline.
      // Without them this is a single wait for the whole timeout, as in earlier releases.
      const events = approvalEvents(startedAt, deadline, (policy.remindBefore ?? []).map(durationMs), policy.escalation ? durationMs(policy.escalation.after) : null);
      for (;;) {
        const next = events.find((e) => e.at > Date.now());
        const wakeAt = next ? next.at : deadline;
        if (Date.now() >= deadline) break;
        const decided = await condition(() => ballot!.verdict !== undefined, wakeAt - Date.now());
        if (decided || Date.now() >= deadline) break;
        for (const e of events.filter((x) => x.at <= Date.now())) {
          events.splice(events.indexOf(e), 1);
          if (e.kind === 'approval_escalated') {
            ballot.escalate();
            log.info('approval escalated', { reviewers: ballot.awaiting.reviewers, groups: ballot.awaiting.groups });
          }
          notify(e.kind, { ...candidate, reviewers: ballot.awaiting.reviewers, groups: ballot.awaiting.groups, approvals: ballot.awaiting.approvals.length });
        }
      }
      const verdict = ballot.verdict;
      // Close before the next await: an update arriving while the expiry is recorded must be refused.
      if (!verdict) ballot.close(`expired at ${ballot.awaiting.deadline}`);
      delete status.awaitingApproval;
      if (!verdict) {
        await quick.recordDecision({ model: spec.name, version: record.version, sha256: artifact.sha256, decision: 'expired', by: ballot.awaiting.approvals.map((a) => a.reviewer), comment: null, run });
        status.outcome = RunOutcome.Expired;
        notify('expired', candidate);
        await Promise.allSettled(notifications);
        throw ApplicationFailure.create({
          type: ErrorType.ApprovalExpired,
          nonRetryable: true,
          message: `no decision on ${spec.name}@${record.version} within ${policy.timeout} (${ballot.awaiting.approvals.length} of ${ballot.awaiting.quorum} approvals); nothing deployed`,
        });
      }
      await quick.recordDecision({
        model: spec.name,
        version: record.version,
        sha256: artifact.sha256,
        decision: verdict.kind,
        by: verdict.by,
        comment: verdict.comment,
        run,
      });
      if (verdict.kind === 'rejected') {
        status.outcome = RunOutcome.Rejected;
        notify('rejected', { ...candidate, by: verdict.by, comment: verdict.comment });
        await Promise.allSettled(notifications);
        throw ApplicationFailure.create({
          type: ErrorType.ApprovalRejected,
          nonRetryable: true,
          message: `${spec.name}@${record.version} rejected by ${verdict.by.join(', ')}: ${verdict.comment ?? ''}`,
        });
      }
      notify('approved', { ...candidate, by: verdict.by });
      end('approve', `approved by ${verdict.by.join(', ')}`);
    }

    // 6. Deployment: compare-and-swap the alias; if another run promoted meanwhile,
    // the candidate must beat the new production model before it may replace it.
    begin((current = 'deploy'));
    /** After a deployment: the model's monitor (and timetable) schedules follow this run's spec. */
    const scheduleFollowUps = async (): Promise<void> => {
      // Before the patch, a spec with neither set no schedule and removed none.
      if (!spec.monitoring && !spec.schedule && !patched(PATCHES.schedulesFollowEveryDeployment)) return;
      if (!patched(PATCHES.monitorSchedules)) return;
      try {
        status.schedules = await quick.ensureSchedules({ model: spec.name, target: { spec, code: input.code, trainingTaskQueue: input.trainingTaskQueue }, version: record.version });
      } catch (err) {
        // The version is deployed either way; a schedule that could not be set is reported, not a failed run.
        log.error('could not set the monitor/retraining schedules', { error: String(err) });
        status.schedules = undefined;
      }
    };
    /** The one way a run ends deployed, whichever strategy got it there. */
    const deployed = async (previousVersion: number | null, how: string, event: Record<string, unknown>): Promise<PipelineResult> => {
      end('deploy', `${how}${spec.deployment.alias} → ${spec.name}@${record.version} (was ${previousVersion ?? 'none'})`);
      status.stage = 'done';
      status.outcome = RunOutcome.Deployed;
      notify('deployed', { model: spec.name, version: record.version, sha256: artifact.sha256, alias: spec.deployment.alias, previousVersion, workflowId: run.workflowId, ...event });
      await scheduleFollowUps();
      await Promise.allSettled(notifications);
      return {
        outcome: RunOutcome.Deployed,
        model: spec.name,
        version: record.version,
        sha256: artifact.sha256,
        dataVersion: dataset.sha256,
        metrics: report.metrics,
        deployedAlias: spec.deployment.alias,
        previousVersion,
      };
    };
    const rolloutId = `${spec.name}-v${record.version}-${run.runId.slice(0, 8)}`;
    if (spec.deployment.strategy !== 'direct') {
      // Canary, shadow and A/B rollouts are workflows of their own (one per model at a
      // time): they validate, move traffic step by step, and undo everything on failure.
      const rollout = { workflowId: rolloutWorkflowId(spec.name), rolloutId };
      status.rollout = rollout;
      let result;
      try {
        result = await executeChild(rolloutWorkflow, {
          workflowId: rollout.workflowId,
          args: [{ rolloutId, model: spec.name, version: record.version, sha256: artifact.sha256, deployment: spec.deployment, expectedProduction: production?.version ?? null, requestedBy: input.submittedBy }],
          // Cancelling this run cancels the rollout, which then undoes its steps.
          parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
        });
      } catch (err) {
        if (err instanceof WorkflowExecutionAlreadyStartedError) {
          throw ApplicationFailure.create({ type: ErrorType.TrafficOwned, nonRetryable: true, message: `another rollout of ${spec.name} is in progress (${rollout.workflowId}); ${spec.name}@${record.version} stays registered, not deployed` });
        }
        throw err;
      }
      if (result.outcome !== 'promoted') {
        // Cancelling this run cancelled its rollout, which undid its steps: the run was cancelled, not rolled back.
        if (CancellationScope.current().consideredCancelled) {
          status.outcome = RunOutcome.Cancelled;
          throw new CancelledFailure(`run cancelled during its ${spec.deployment.strategy} rollout; the rollout was undone (${result.reason})`);
        }
        notify('rolled_back', { model: spec.name, version: record.version, sha256: artifact.sha256, strategy: spec.deployment.strategy, outcome: result.outcome, reason: result.reason, rolloutId });
        throw ApplicationFailure.create({ type: ErrorType.RolledBack, nonRetryable: true, message: `${spec.deployment.strategy} rollout of ${spec.name}@${record.version} ${result.outcome.replace('_', ' ')}: ${result.reason}` });
      }
      return deployed(result.previousVersion, `${spec.deployment.strategy} rollout: `, { strategy: spec.deployment.strategy, rolloutId });
    }
    // Before any traffic: the exact artifact, in a fresh session, gives evaluation's answers in time.
    if (patched(PATCHES.preDeploymentValidation)) {
      const { sampleRows, tolerance, maxLatencyMs } = spec.deployment.validation;
      await evaluation.validateDeployment({ model: spec.name, version: record.version, rolloutId, sampleRows, tolerance, maxLatencyMs });
    }
    for (let attempt = 1; ; attempt++) {
      const promoted = await deployment.promoteVersion({
        model: spec.name,
        alias: spec.deployment.alias,
        version: record.version,
        expectedVersion: production?.version ?? null,
        strategy: spec.deployment.strategy,
        run,
      });
      if (promoted.ok) return deployed(promoted.previousVersion, '', {});
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
    await Promise.allSettled(notifications);
    status.stages[current] = { ...status.stages[current], state: STAGE_STATE.failed, endedAt: new Date().toISOString() };
    status.error = err instanceof Error ? err.message : String(err);
    if (status.outcome === RunOutcome.Running) status.outcome = outcomeOf(err);
    throw err;
  }
}

function outcomeOf(err: unknown): RunOutcome {
  let cause: unknown = err;
  while (cause instanceof Error) {
    const outcome = cause instanceof ApplicationFailure && cause.type ? OUTCOME_BY_ERROR_TYPE[cause.type] : undefined;
    if (outcome) return outcome;
    cause = cause.cause;
  }
  return RunOutcome.Failed;
}
