import { ApplicationFailure, CancellationScope, condition, isCancellation, log, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { PipelineActivities } from '../activities/index.js';
import type { RolloutAnalysis } from '../activities/deployment.js';
import { durationMs } from '../src/shared/duration.js';
import { ErrorType } from '../src/shared/errors.js';
import type { RolloutOutcome, RolloutStep } from '../src/shared/registry-types.js';
import type { DeploymentSpec } from '../src/spec/schema.js';
import { analysisPreset, deploymentPreset, evaluationPreset } from './presets.js';
import {
  abortRolloutUpdate,
  pauseRolloutUpdate,
  promoteRolloutUpdate,
  resumeRolloutUpdate,
  rolloutStatusQuery,
  type RolloutControlRequest,
  type RolloutStatus,
} from './rollout-messages.js';

export interface RolloutInput {
  rolloutId: string;
  model: string;
  version: number;
  sha256: string;
  deployment: DeploymentSpec;
  /** The production version the candidate was judged against; promotion is a compare-and-swap on it. */
  expectedProduction: number | null;
  requestedBy: string;
}

export interface RolloutResult {
  rolloutId: string;
  outcome: RolloutOutcome;
  model: string;
  version: number;
  previousVersion: number | null;
  reason: string;
}

/** Parsed specs always carry the chosen strategy's settings; an input built by hand might not. */
function required<T>(value: T | undefined, name: string): T {
  if (value === undefined) throw ApplicationFailure.create({ type: ErrorType.DeploymentValidation, nonRetryable: true, message: `deployment.${name} settings are missing; parse the spec with pipelineSpecSchema` });
  return value;
}

/** Ends a rollout without promotion; caught below, where every registered undo runs. */
class RolloutStop extends Error {
  constructor(
    readonly outcome: Exclude<RolloutOutcome, 'promoted'>,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Puts a registered version in front of traffic as a saga: pre-deployment validation,
 * then the strategy's steps (each registering its undo), then the alias move. Any
 * failure, breach, abort or cancellation undoes what was done, in reverse, and leaves
 * production as it was. The outcome is recorded in the registry either way.
 */
export async function rolloutWorkflow(input: RolloutInput): Promise<RolloutResult> {
  const info = workflowInfo();
  const run = { workflowId: info.workflowId, runId: info.runId };
  const acts = proxyActivities<PipelineActivities>(deploymentPreset);
  const analysis = proxyActivities<PipelineActivities>(analysisPreset);
  const checks = proxyActivities<PipelineActivities>(evaluationPreset);
  const { deployment } = input;
  const settings = {
    get canary() {
      return required(deployment.canary, 'canary');
    },
    get shadow() {
      return required(deployment.shadow, 'shadow');
    },
    get ab() {
      return required(deployment.ab, 'ab');
    },
  };
  const intervalMs = durationMs(deployment.analysisInterval);
  const startedAt = new Date().toISOString();
  const candidate = { version: input.version, sha256: input.sha256 };
  const candidateArm = deployment.strategy === 'shadow' ? 'shadow' : deployment.strategy === 'ab' ? 'challenger' : 'canary';

  const status: RolloutStatus = {
    rolloutId: input.rolloutId,
    alias: deployment.alias,
    requestedBy: input.requestedBy,
    model: input.model,
    version: input.version,
    sha256: input.sha256,
    strategy: deployment.strategy,
    state: 'validating',
    percent: 0,
    productionVersion: input.expectedProduction,
    steps: [],
  };
  const reports: string[] = [];
  const control: { promote?: RolloutControlRequest; abort?: RolloutControlRequest; paused: boolean } = { paused: false };
  let decidedBy: string | undefined;

  const finished = (): boolean => status.state === 'promoting' || status.state === 'rolling_back' || status.state === 'done';
  setHandler(rolloutStatusQuery, () => status);
  setHandler(
    promoteRolloutUpdate,
    (req) => {
      control.promote = req;
      return status;
    },
    {
      validator: (req) => {
        if (finished()) throw new Error(`rollout ${input.rolloutId} is ${status.state}; nothing to promote`);
        if (status.state === 'validating') throw new Error('the candidate is still being validated; promote once it takes traffic');
        if (!req.by) throw new Error('a promotion names who decided it');
        // Four eyes: whoever asked for the rollout does not decide it.
        if (req.by === input.requestedBy) throw new Error(`${req.by} requested this rollout and cannot promote it; another reviewer decides`);
        if (deployment.strategy === 'shadow' || deployment.strategy === 'ab') {
          const served = status.lastAnalysis?.requests.candidate ?? 0;
          if (served < deployment.bounds.minRequests) {
            throw new Error(`the candidate has answered ${served} requests in the last analysis, fewer than bounds.minRequests (${deployment.bounds.minRequests}); nothing to decide on yet`);
          }
        }
      },
    },
  );
  setHandler(
    pauseRolloutUpdate,
    (req) => {
      control.paused = true;
      status.state = 'paused';
      log.info('rollout paused', { by: req.by });
      return status;
    },
    {
      validator: (req) => {
        if (!req.by) throw new Error('a pause names who asked');
        if (deployment.strategy !== 'canary') throw new Error(`pause applies to canary rollouts; this one is ${deployment.strategy}`);
        if (status.state !== 'running') throw new Error(`rollout is ${status.state}; only a running canary can be paused`);
      },
    },
  );
  setHandler(
    resumeRolloutUpdate,
    (req) => {
      control.paused = false;
      status.state = 'running';
      log.info('rollout resumed', { by: req.by });
      return status;
    },
    {
      validator: (req) => {
        if (!req.by) throw new Error('a resume names who asked');
        if (status.state !== 'paused') throw new Error(`rollout is ${status.state}, not paused`);
      },
    },
  );
  setHandler(
    abortRolloutUpdate,
    (req) => {
      control.abort = req;
      return status;
    },
    {
      validator: (req) => {
        if (finished()) throw new Error(`rollout ${input.rolloutId} is ${status.state}; too late to abort`);
        if (!req.by) throw new Error('an abort names who asked');
      },
    },
  );

  const stopIfAborted = (): void => {
    if (control.abort) {
      decidedBy = control.abort.by;
      throw new RolloutStop('aborted', `aborted by ${control.abort.by}${control.abort.reason ? `: ${control.abort.reason}` : ''}`);
    }
  };

  async function analyse(from: number, reportName?: string): Promise<RolloutAnalysis> {
    const result = await analysis.analyzeRollout({
      model: input.model,
      rolloutId: input.rolloutId,
      candidateArm,
      from: new Date(from).toISOString(),
      to: new Date().toISOString(),
      bounds: deployment.bounds,
      ...(reportName ? { reportName } : {}),
    });
    if (result.reportKey) reports.push(result.reportKey);
    status.lastAnalysis = { at: new Date().toISOString(), verdict: result.verdict, summary: result.summary, requests: result.requests };
    return result;
  }

  /**
   * Watches one step: analyses every interval and rolls back on a breach. Time spent
   * paused does not count toward the bake. Returns when the step may end, or early on
   * a promote decision.
   */
  async function bake(step: RolloutStep, bakeMs: number, maxBakeMs: number, judge: 'canary' | 'shadow', windowFrom: number = Date.now()): Promise<'next' | 'promote'> {
    const from = windowFrom;
    let baked = 0;
    for (;;) {
      const target = baked < bakeMs ? bakeMs : maxBakeMs;
      const tick = Date.now();
      await condition(() => control.abort !== undefined || control.promote !== undefined || control.paused, Math.max(1, Math.min(intervalMs, target - baked)));
      if (!control.paused) baked += Date.now() - tick;
      stopIfAborted();
      if (control.promote) return 'promote';
      if (control.paused) {
        await condition(() => !control.paused || control.abort !== undefined || control.promote !== undefined);
        continue;
      }
      const result = await analyse(from);
      stopIfAborted();
      if (result.verdict === 'unhealthy') {
        step.verdict = 'unhealthy';
        step.summary = result.summary;
        throw new RolloutStop('rolled_back', `${step.step}: ${result.summary}`);
      }
      // A pause that arrived during the analysis holds the step (health checks go on).
      if (control.paused) continue;
      if (baked >= bakeMs) {
        if (result.verdict === 'healthy' || judge === 'shadow') {
          step.verdict = result.verdict;
          step.summary = result.summary;
          return 'next';
        }
        if (baked >= maxBakeMs) {
          step.verdict = 'insufficient';
          step.summary = result.summary;
          throw new RolloutStop('rolled_back', `${step.step}: not enough traffic to judge the candidate after ${Math.round(baked / 1000)} s (${result.summary})`);
        }
      }
    }
  }

  /** Shadow and A/B end by a decision: keep watching (errors still roll back) until one comes or time runs out. */
  async function awaitDecision(from: number, timeoutMs: number, step: RolloutStep): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    status.state = 'awaiting_decision';
    status.decisionDeadline = new Date(deadline).toISOString();
    for (;;) {
      await condition(() => control.abort !== undefined || control.promote !== undefined, Math.max(1, Math.min(intervalMs, deadline - Date.now())));
      stopIfAborted();
      if (control.promote) return;
      if (Date.now() >= deadline) throw new RolloutStop('aborted', `no promote decision within ${deployment.strategy === 'ab' ? settings.ab.decisionTimeout : settings.shadow.decisionTimeout}; production unchanged`);
      const result = await analyse(from);
      stopIfAborted();
      // Arms of an A/B test are meant to differ in predictions and latency; failing requests are never meant.
      const errors = result.breaches.filter((b) => b.measure === 'error_rate');
      if (result.verdict === 'unhealthy' && (deployment.strategy === 'shadow' || errors.length > 0)) {
        step.verdict = 'unhealthy';
        step.summary = result.summary;
        throw new RolloutStop('rolled_back', `${step.step}: ${result.summary}`);
      }
    }
  }

  const undo: Array<{ name: string; run: () => Promise<unknown> }> = [];
  /** Holds while paused, so neither a new share nor the promotion happens until resumed. */
  const whilePaused = async (): Promise<void> => {
    await condition(() => !control.paused || control.abort !== undefined || control.promote !== undefined);
    stopIfAborted();
  };
  // Writes that change what serving does are never cut short by a cancellation: the
  // cancellation lands at the next wait, after the write, and its undo (registered before
  // the write, and harmless if the write never happened) then runs.
  const setTraffic = async (mode: 'canary' | 'shadow' | 'ab', percent: number, stepName: string): Promise<RolloutStep> => {
    await whilePaused();
    if (undo.length === 0) {
      undo.push({ name: 'clear traffic split', run: () => acts.clearTraffic({ model: input.model, rolloutId: input.rolloutId, workflowId: run.workflowId, reason: status.reason ?? 'rollout ended' }) });
    }
    await CancellationScope.nonCancellable(() => acts.setTraffic({ model: input.model, rolloutId: input.rolloutId, workflowId: run.workflowId, mode, candidate, percent, step: stepName }));
    const step: RolloutStep = { step: stepName, percent, startedAt: new Date().toISOString() };
    status.steps.push(step);
    status.percent = percent;
    log.info('rollout step', { step: stepName, percent });
    return step;
  };

  let outcome: RolloutOutcome = 'promoted';
  let previousVersion: number | null = input.expectedProduction;
  try {
    const validation = await checks.validateDeployment({
      model: input.model,
      version: input.version,
      rolloutId: input.rolloutId,
      sampleRows: deployment.validation.sampleRows,
      tolerance: deployment.validation.tolerance,
      maxLatencyMs: deployment.validation.maxLatencyMs,
    });
    reports.push(validation.reportKey);
    stopIfAborted();
    status.state = 'running';

    // With no production version there is nothing to compare with or protect: deploy directly.
    const staged = input.expectedProduction !== null;
    if (!staged) log.info('no production version yet; deploying directly', { strategy: deployment.strategy });
    if (staged && deployment.strategy === 'canary') {
      const { steps, bake: bakeFor, maxBake } = settings.canary;
      const bakeMs = durationMs(bakeFor);
      const maxBakeMs = maxBake ? Math.max(durationMs(maxBake), bakeMs) : bakeMs * 3;
      const rolloutFrom = Date.now();
      for (const percent of steps) {
        const step = await setTraffic('canary', percent, `canary-${percent}`);
        // At 100 % production takes no requests in the step itself: the candidate is then
        // judged against production over the whole rollout so far.
        const next = await bake(step, bakeMs, maxBakeMs, 'canary', percent === 100 && steps.length > 1 ? rolloutFrom : Date.now());
        step.endedAt = new Date().toISOString();
        if (next === 'promote') {
          decidedBy = control.promote!.by;
          step.summary = `${step.summary ?? ''} promoted early by ${control.promote!.by}`.trim();
          break;
        }
      }
    } else if (staged && deployment.strategy === 'shadow') {
      const from = Date.now();
      const step = await setTraffic('shadow', 100, 'shadow');
      const ms = durationMs(settings.shadow.duration);
      if ((await bake(step, ms, ms, 'shadow')) === 'next') {
        const report = await analyse(from, 'shadow-comparison');
        step.summary = report.summary;
        await awaitDecision(from, durationMs(settings.shadow.decisionTimeout), step);
      }
      step.endedAt = new Date().toISOString();
      decidedBy = control.promote!.by;
    } else if (staged && deployment.strategy === 'ab') {
      const from = Date.now();
      const step = await setTraffic('ab', settings.ab.split, `ab-${settings.ab.split}`);
      await awaitDecision(from, durationMs(settings.ab.decisionTimeout), step);
      const report = await analyse(from, 'ab-comparison');
      step.summary = report.summary;
      if (report.breaches.some((b) => b.measure === 'error_rate')) throw new RolloutStop('rolled_back', `${step.step}: ${report.summary}`);
      step.endedAt = new Date().toISOString();
      decidedBy = control.promote!.by;
    }

    if (!staged || deployment.strategy === 'direct') decidedBy = input.requestedBy;
    await whilePaused();
    stopIfAborted();
    status.state = 'promoting';
    const restoreTo = input.expectedProduction;
    if (restoreTo !== null) {
      // Compare-and-swap from the candidate: a no-op if the promotion never happened.
      undo.push({
        name: 'restore alias',
        run: () => acts.restoreAlias({ model: input.model, alias: deployment.alias, fromVersion: input.version, toVersion: restoreTo, rolloutId: input.rolloutId, reason: status.reason ?? 'rollout undone', run }),
      });
    }
    const promoted = await CancellationScope.nonCancellable(() =>
      acts.promoteVersion({ model: input.model, alias: deployment.alias, version: input.version, expectedVersion: input.expectedProduction, strategy: deployment.strategy, rolloutId: input.rolloutId, run }),
    );
    if (!promoted.ok) {
      throw new RolloutStop('rolled_back', `${deployment.alias} moved to ${promoted.current?.version ?? 'none'} during the rollout (expected ${input.expectedProduction ?? 'none'}); not promoted`);
    }
    previousVersion = promoted.previousVersion;
    status.state = 'done';
    // Serving already sends this version all traffic; clearing the split changes nothing it
    // answers, so a failure here is logged, never undoes the promotion.
    if (status.steps.length > 0) {
      await CancellationScope.nonCancellable(() => acts.clearTraffic({ model: input.model, rolloutId: input.rolloutId, workflowId: run.workflowId, reason: 'promoted' })).catch((err: unknown) =>
        log.error('promoted, but the traffic split could not be cleared', { error: String(err) }),
      );
    }
    status.reason = `${input.model}@${input.version} promoted to ${deployment.alias} (was ${promoted.previousVersion ?? 'none'})`;
  } catch (err) {
    if (err instanceof RolloutStop) {
      outcome = err.outcome;
      status.reason = err.message;
    } else if (isCancellation(err)) {
      outcome = 'aborted';
      status.reason = 'rollout cancelled';
    } else if (err instanceof Error && 'cause' in err && err.cause instanceof ApplicationFailure && err.cause.type === ErrorType.DeploymentValidation) {
      outcome = 'refused';
      status.reason = err.cause.message;
    } else {
      outcome = 'rolled_back';
      status.reason = `rollout failed: ${err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err)}`;
    }
    status.state = 'rolling_back';
    log.warn('rolling back', { reason: status.reason, undo: undo.map((u) => u.name).reverse() });
    // Undo runs even when the rollout itself was cancelled.
    // Every undo is tried even if one fails; a failed undo is named in the record.
    const failedUndo: string[] = [];
    await CancellationScope.nonCancellable(async () => {
      for (const step of [...undo].reverse()) {
        try {
          await step.run();
        } catch (undoErr) {
          failedUndo.push(`${step.name}: ${undoErr instanceof Error ? (undoErr.cause instanceof Error ? undoErr.cause.message : undoErr.message) : String(undoErr)}`);
        }
      }
    });
    if (failedUndo.length) {
      status.reason = `${status.reason}; UNDO FAILED (${failedUndo.join('; ')}) — check the traffic split and alias by hand`;
      log.error('undo failed', { failedUndo });
    }
    previousVersion = input.expectedProduction;
  }

  status.state = 'done';
  status.outcome = outcome;
  await CancellationScope.nonCancellable(() =>
    acts.recordRollout({
      rolloutId: input.rolloutId,
      model: input.model,
      version: input.version,
      sha256: input.sha256,
      strategy: deployment.strategy,
      alias: deployment.alias,
      outcome,
      reason: status.reason ?? '',
      productionVersion: input.expectedProduction,
      startedAt,
      endedAt: new Date().toISOString(),
      workflowId: run.workflowId,
      requestedBy: input.requestedBy,
      steps: status.steps,
      reports,
      ...(decidedBy ? { decidedBy } : {}),
    }),
  );
  log.info('rollout ended', { outcome, reason: status.reason });
  return { rolloutId: input.rolloutId, outcome, model: input.model, version: input.version, previousVersion, reason: status.reason ?? '' };
}
