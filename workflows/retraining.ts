import { ParentClosePolicy, condition, continueAsNew, defineQuery, defineSignal, log, setHandler, startChild, workflowInfo } from '@temporalio/workflow';
import type { RetrainRequest } from '../activities/monitoring.js';
import { durationMs } from '../src/shared/duration.js';
import { pipelineWorkflowId } from '../src/shared/constants.js';
import { RETRAIN_SIGNAL, RETRAINING_STATE_QUERY, RETRAINING_SUBMITTER } from '../src/shared/monitoring.js';
import { modelPipeline } from './model-pipeline.js';
import { notify } from './monitor.js';

export interface RetrainingDecision {
  at: string;
  decision: 'started' | 'skipped';
  reason: string;
  trigger: RetrainRequest['trigger'];
  workflowId?: string;
}

export interface RetrainingState {
  model: string;
  /** When each retraining of the last 24 hours started (for the daily limit). */
  starts: string[];
  lastStartedAt: string | null;
  /** The retraining pipeline run in progress, if any. */
  running: string | null;
  /** Newest last, at most 100. */
  decisions: RetrainingDecision[];
  started: number;
}

export const retrainRequestedSignal = defineSignal<[RetrainRequest]>(RETRAIN_SIGNAL);
export const retrainingStateQuery = defineQuery<RetrainingState>(RETRAINING_STATE_QUERY);

const DAY_MS = 24 * 3600 * 1000;

/**
 * The one place that decides retraining of a model. Monitors and schedules signal it
 * (signal-with-start); requests queue here and are decided one at a time, so however
 * many decay reports arrive together, at most one retraining runs, none starts within
 * the cooldown of the last, and no more than the daily limit start in 24 hours.
 */
export async function retrainingController(input: { model: string; state?: RetrainingState }): Promise<void> {
  const state: RetrainingState = input.state ?? { model: input.model, starts: [], lastStartedAt: null, running: null, decisions: [], started: 0 };
  const queue: RetrainRequest[] = [];
  setHandler(retrainRequestedSignal, (request) => void queue.push(request));
  setHandler(retrainingStateQuery, () => state);

  const decide = (request: RetrainRequest, decision: RetrainingDecision['decision'], reason: string, workflowId?: string): void => {
    state.decisions.push({ at: new Date().toISOString(), decision, reason, trigger: request.trigger, ...(workflowId ? { workflowId } : {}) });
    if (state.decisions.length > 100) state.decisions.splice(0, state.decisions.length - 100);
    log.info(`retraining ${decision}`, { model: input.model, reason, trigger: request.trigger.kind, workflowId });
  };

  for (;;) {
    await condition(() => queue.length > 0 || (state.running === null && workflowInfo().continueAsNewSuggested));
    if (queue.length === 0) {
      await continueAsNew<typeof retrainingController>({ model: input.model, state });
    }
    const request = queue.shift()!;
    const now = Date.now();
    state.starts = state.starts.filter((s) => now - Date.parse(s) < DAY_MS);
    if (state.running !== null) {
      decide(request, 'skipped', `a retraining is already running (${state.running})`);
      continue;
    }
    if (request.limits) {
      const cooldownMs = durationMs(request.limits.cooldown);
      if (state.lastStartedAt !== null && now - Date.parse(state.lastStartedAt) < cooldownMs) {
        decide(request, 'skipped', `cooldown of ${request.limits.cooldown} since the retraining started at ${state.lastStartedAt}`);
        continue;
      }
      if (state.starts.length >= request.limits.maxPerDay) {
        decide(request, 'skipped', `daily limit reached: ${state.starts.length} of ${request.limits.maxPerDay} retrainings in the last 24 hours`);
        continue;
      }
    }
    state.started += 1;
    const workflowId = pipelineWorkflowId(input.model, `retrain-${state.started}-${workflowInfo().runId.slice(0, 8)}`);
    const child = await startChild(modelPipeline, {
      workflowId,
      args: [{ spec: request.target.spec, code: request.target.code, submittedBy: RETRAINING_SUBMITTER, trainingTaskQueue: request.target.trainingTaskQueue, trigger: request.trigger }],
      // The retraining outlives this controller's run (continue-as-new) and is never cancelled with it.
      parentClosePolicy: ParentClosePolicy.ABANDON,
    });
    const startedAt = new Date().toISOString();
    state.running = workflowId;
    state.lastStartedAt = startedAt;
    state.starts.push(startedAt);
    decide(request, 'started', request.trigger.reason ?? request.trigger.kind, workflowId);
    void child.result().then(
      () => void (state.running = null),
      () => void (state.running = null),
    );
    // Several retrainings in one run each get their own delivery workflows.
    await notify({ model: input.model, target: request.target }, 'retraining_started', { model: input.model, workflowId, trigger: request.trigger }, state.started);
  }
}
