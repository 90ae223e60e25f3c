import { WorkflowUpdateFailedError, type WorkflowExecutionDescription, type WorkflowHandle } from '@temporalio/client';
import { WorkflowNotFoundError } from '@temporalio/common';
import { z } from 'zod';
import type { Identity } from '../auth/tokens.js';
import { AliasConflictError, VersionArchivedError } from '../registry/registry.js';
import { ALIASES } from '../shared/constants.js';
import {
  abortRolloutUpdate,
  pauseRolloutUpdate,
  promoteRolloutUpdate,
  resumeRolloutUpdate,
  rolloutStatusQuery,
  rolloutWorkflowId,
  type RolloutControlRequest,
  type RolloutStatus,
} from '../../workflows/rollout-messages.js';
import type { rolloutWorkflow } from '../../workflows/rollout.js';
import type { ApiDeps } from './deps.js';
import { conflict, defineRoute, notFound, ok, type RouteSpec } from './http.js';
import * as s from './schemas.js';

const TAG = 'rollouts';
export const ROLLOUT_WORKFLOW_TYPE = 'rolloutWorkflow';
const DEFAULT_QUERY_TIMEOUT_MS = 5000;
const MAX_REASON = 1000;
// C0/C1 control characters, except \t and \n.
const CONTROL_EXCEPT_NEWLINE_TAB = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

const reason = z
  .string()
  .max(MAX_REASON)
  .refine((v) => !CONTROL_EXCEPT_NEWLINE_TAB.test(v), 'must not contain control characters')
  .optional()
  .meta({ description: 'Why; recorded with the action.' });

// ---------------------------------------------------------------- schemas

export const rolloutControlBody = z.strictObject({ reason });
export const rollbackBody = z.strictObject({
  toVersion: z
    .number()
    .int()
    .min(1)
    .max(Number.MAX_SAFE_INTEGER)
    .optional()
    .meta({ description: 'Version to put back in production. Default: the version production pointed at before its current entry.' }),
  reason,
});

const rolloutStep = z.object({
  step: z.string(),
  percent: z.number(),
  startedAt: z.string(),
  endedAt: z.string().optional(),
  verdict: z.string().optional(),
  summary: z.string().optional(),
});

export const rolloutStatusSchema = z
  .looseObject({
    rolloutId: z.string(),
    model: z.string(),
    version: z.number(),
    sha256: z.string(),
    strategy: z.string(),
    state: z.string().meta({ description: 'validating, running, paused, awaiting_decision, promoting, rolling_back or done.' }),
    percent: z.number().meta({ description: 'Share of traffic on the candidate now (100 for shadow: every request is copied).' }),
    productionVersion: z.number().nullable(),
    steps: z.array(rolloutStep),
    lastAnalysis: z
      .object({ at: z.string(), verdict: z.string(), summary: z.string(), requests: z.object({ production: z.number(), candidate: z.number() }) })
      .optional(),
    decisionDeadline: z.string().optional(),
    outcome: z.string().optional(),
    reason: z.string().optional(),
  })
  .meta({ description: 'The running rollout\'s status query (RolloutStatus).' });

export const rolloutRecordSchema = z
  .looseObject({
    rolloutId: z.string(),
    model: z.string(),
    version: z.number(),
    sha256: z.string(),
    strategy: z.string(),
    alias: z.string(),
    outcome: z.enum(['promoted', 'rolled_back', 'aborted', 'refused']),
    reason: z.string(),
    productionVersion: z.number().nullable(),
    startedAt: z.string(),
    endedAt: z.string(),
    workflowId: z.string(),
    steps: z.array(rolloutStep),
    reports: z.array(z.string()),
    decidedBy: z.string().optional(),
  })
  .meta({ description: 'A finished rollout as recorded in the registry (RolloutRecord).' });

export const trafficRecordSchema = z
  .looseObject({
    model: z.string(),
    seq: z.number(),
    mode: z.enum(['none', 'canary', 'shadow', 'ab']),
    candidate: z.object({ version: z.number(), sha256: z.string() }).nullable(),
    percent: z.number(),
    rolloutId: z.string().nullable(),
    step: z.string(),
    workflowId: z.string().nullable(),
    updatedAt: z.string(),
    reason: z.string().optional(),
  })
  .meta({ description: 'The model\'s current traffic split (TrafficRecord); mode "none" = production only.' });

export const rolloutResponse = z.object({
  model: z.string(),
  running: z.boolean().meta({ description: 'Whether a rollout of the model is running now.' }),
  status: rolloutStatusSchema.nullable().meta({ description: 'The running rollout (null when none runs).' }),
  last: rolloutRecordSchema.nullable().meta({ description: 'The latest finished rollout (null while one runs, or if none ever finished).' }),
  traffic: trafficRecordSchema.nullable().meta({ description: 'The current traffic split (null: never split).' }),
});

export const rolloutActionResponse = z.object({
  model: z.string(),
  action: z.enum(['promote', 'pause', 'resume', 'abort']),
  by: z.string(),
  status: rolloutStatusSchema.meta({ description: 'The rollout\'s status when the workflow accepted the request (promote and abort take effect right after).' }),
});


export const rollbackResponse = z.object({
  model: z.string(),
  action: z.enum(['aborted_rollout', 'alias_moved']),
  from: z.number().meta({ description: 'aborted_rollout: the candidate the rollout was putting in front of traffic. alias_moved: the version production pointed at.' }),
  to: z.number().nullable().meta({ description: 'The version production points at afterwards (aborted_rollout: unchanged; null if it was never set).' }),
  by: z.string(),
  message: z.string(),
  status: rolloutStatusSchema.optional().meta({ description: 'aborted_rollout: the rollout\'s status when it accepted the abort.' }),
  entry: s.aliasRecord.optional().meta({ description: 'alias_moved: the new production alias entry (also the deployment record).' }),
});

// ---------------------------------------------------------------- helpers

interface RunningRollout {
  handle: WorkflowHandle<typeof rolloutWorkflow>;
  desc: WorkflowExecutionDescription;
}

/**
 * The model's rollout workflow if one is running on this deployment (same namespace and
 * pipeline task queue); null otherwise. Another deployment's workflow with the same id
 * counts as none.
 */
async function runningRollout(deps: ApiDeps, model: string): Promise<RunningRollout | null> {
  const handle = deps.client.workflow.getHandle<typeof rolloutWorkflow>(rolloutWorkflowId(model));
  let desc: WorkflowExecutionDescription;
  try {
    desc = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return null;
    throw err;
  }
  if (desc.status.name !== 'RUNNING' || desc.type !== ROLLOUT_WORKFLOW_TYPE || desc.taskQueue !== deps.config.taskQueues.pipeline) return null;
  // Pin the run: an update must reach the execution just described, not a later one.
  return { handle: deps.client.workflow.getHandle<typeof rolloutWorkflow>(desc.workflowId, desc.runId), desc };
}

async function queryRollout(deps: ApiDeps, handle: WorkflowHandle): Promise<RolloutStatus> {
  const ms = deps.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
  return deps.client.withDeadline(Date.now() + ms, () => handle.query(rolloutStatusQuery));
}

const notRunning = (model: string) => conflict(`no rollout of ${model} is running`);

const UPDATES = {
  promote: promoteRolloutUpdate,
  pause: pauseRolloutUpdate,
  resume: resumeRolloutUpdate,
  abort: abortRolloutUpdate,
} as const;
type RolloutAction = keyof typeof UPDATES;

/** Sends one control update as the authenticated caller; the workflow's validator refusals are 409s with its message. */
async function controlRollout(deps: ApiDeps, caller: Identity, model: string, action: RolloutAction, why: string | undefined): Promise<RolloutStatus> {
  const running = await runningRollout(deps, model);
  if (!running) throw notRunning(model);
  const request: RolloutControlRequest = { by: caller.identity, ...(why?.trim() ? { reason: why.trim() } : {}) };
  try {
    return await running.handle.executeUpdate(UPDATES[action], { args: [request] });
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) throw conflict(err.cause?.message ?? err.message);
    // Ended between the describe and the update.
    if (err instanceof WorkflowNotFoundError) throw notRunning(model);
    throw err;
  }
}

const errors = (more: Record<number, string>) =>
  Object.fromEntries(Object.entries(more).map(([status, description]) => [status, { description, schema: s.errorResponse }]));

const ACTION_TEXT: Record<RolloutAction, { summary: string; description: string }> = {
  promote: {
    summary: 'Promote the running rollout',
    description:
      'Canary: skip the remaining steps and promote now. Shadow and A/B: the decision to promote. Needs read on the model and the right ' +
      'to decide it (the same rule as approving its runs: one of the model\'s `approve` groups when the API policy has them; members of ' +
      '`admin` always). Recorded as decided by the authenticated caller.',
  },
  pause: {
    summary: 'Pause the running canary',
    description: 'Holds the canary at its current share (health checks go on; time paused does not count toward the bake). Canary only. Needs operate.',
  },
  resume: { summary: 'Resume a paused canary', description: 'Needs operate.' },
  abort: {
    summary: 'Abort the running rollout',
    description: 'Undoes every step taken (the traffic split goes back to production only); production stays as it was. Needs operate.',
  },
};

// ---------------------------------------------------------------- routes

export const rolloutRoutes: RouteSpec[] = [
  defineRoute({
    method: 'GET',
    path: '/v1/models/:model/rollout',
    operationId: 'getRollout',
    summary: 'The model\'s running rollout, or the latest finished one',
    description:
      'While a rollout of the model runs: its status (state, share of traffic, steps with their verdicts, last analysis). Otherwise the ' +
      'latest finished rollout as recorded in the registry. Either way the current traffic split. 404 if the model never had a rollout.',
    tag: TAG,
    access: 'read',
    params: s.modelParams,
    responses: {
      200: { description: 'The rollout.', schema: rolloutResponse },
      ...errors({ 404: 'The model never had a rollout.', 503: 'A rollout runs but no worker answered its status query in time.' }),
    },
    handler: async ({ deps, params }) => {
      const { model } = params;
      const running = await runningRollout(deps, model);
      const [status, traffic] = await Promise.all([running ? queryRollout(deps, running.handle) : null, deps.registry.getTraffic(model)]);
      const last = status ? null : ((await deps.registry.listRollouts(model)).at(-1) ?? null);
      if (!status && !last) throw notFound(`no rollout of ${model} was ever started`);
      return ok({ model, running: status !== null, status, last, traffic });
    },
  }),

  ...(['promote', 'pause', 'resume', 'abort'] as const).map((action) =>
    defineRoute({
      method: 'POST',
      path: `/v1/models/:model/rollout/${action}`,
      operationId: `${action}Rollout`,
      summary: ACTION_TEXT[action].summary,
      description: ACTION_TEXT[action].description,
      tag: TAG,
      access: action === 'promote' ? 'read' : 'operate',
      params: s.modelParams,
      body: rolloutControlBody,
      bodyOptional: true,
      responses: {
        200: { description: 'Accepted by the rollout.', schema: rolloutActionResponse },
        ...errors({
          403: action === 'promote' ? 'No read right on the model, or not in its `approve` groups.' : 'No operate right on the model.',
          409: 'No rollout of the model is running, or the rollout refused the request in its state (the message says why).',
          503: 'No worker answered in time.',
        }),
      },
      handler: async ({ deps, authz, caller, params, body, req }) => {
        // Promotion is a deployment decision: the same right as approving the model's runs.
        if (action === 'promote') authz.requireDecide(caller, params.model);
        const status = await controlRollout(deps, caller, params.model, action, body.reason);
        req.log.info({ model: params.model, action, rolloutId: status.rolloutId, state: status.state }, 'rollout control');
        return ok({ model: params.model, action, by: caller.identity, status });
      },
    }),
  ),

  defineRoute({
    method: 'POST',
    path: '/v1/models/:model/rollback',
    operationId: 'rollback',
    summary: 'Abort the running rollout, or move production back',
    description:
      'If a rollout of the model is running, aborts it (as `POST …/rollout/abort`: production stays as it was; `toVersion`, if given, ' +
      'must be that production version). Otherwise moves the `production` alias back to the version it pointed at before its current ' +
      'entry, or to `toVersion`, with compare-and-swap on the current version. The move is recorded with strategy "rollback", `by` ' +
      '(the authenticated caller), `reason` and run { workflowId: "api", runId: <request id> }. Without `toVersion`, a production ' +
      'entry that is itself a rollback is not undone (409): repeating a rollback must not put back what it removed. Needs operate.',
    tag: TAG,
    access: 'operate',
    params: s.modelParams,
    body: rollbackBody,
    bodyOptional: true,
    responses: {
      200: { description: 'What was done.', schema: rollbackResponse },
      ...errors({
        404: 'No such version (`toVersion`).',
        409: 'Nothing to roll back to (the message says why), the target is archived, production moved meanwhile, or the rollout refused the abort.',
      }),
    },
    handler: async ({ deps, caller, params, body, req }) => {
      const { model } = params;
      const by = caller.identity;
      const why = body.reason?.trim() || undefined;

      const running = await runningRollout(deps, model);
      if (running) {
        const current = await queryRollout(deps, running.handle);
        if (body.toVersion !== undefined && body.toVersion !== current.productionVersion) {
          throw conflict(
            `rollout ${current.rolloutId} of ${model}@${current.version} is running; rolling back aborts it and leaves production at ` +
              `${current.productionVersion === null ? 'none' : `v${current.productionVersion}`}. Abort it first, then roll back to v${body.toVersion}`,
          );
        }
        const status = await controlRollout(deps, caller, model, 'abort', why ?? 'rollback');
        req.log.info({ model, rolloutId: status.rolloutId, by }, 'rollback: rollout aborted');
        return ok({
          model,
          action: 'aborted_rollout',
          from: status.version,
          to: status.productionVersion,
          by,
          message: `aborted rollout ${status.rolloutId} of ${model}@${status.version}; production stays at ${status.productionVersion === null ? 'none' : `v${status.productionVersion}`}`,
          status,
        });
      }

      const current = await deps.registry.getAlias(model, ALIASES.production);
      if (!current) throw conflict(`${model} has never been in production; nothing to roll back`);
      let target = body.toVersion;
      if (target === undefined) {
        if (current.strategy === 'rollback') {
          throw conflict(
            `${model}@production was itself rolled back (v${current.previousVersion ?? 'none'} → v${current.version}${current.by ? ` by ${current.by}` : ''} at ${current.deployedAt}); ` +
              'name the version to move to (toVersion) to go further',
          );
        }
        if (current.previousVersion === null) {
          throw conflict(`${model}@production has pointed at v${current.version} since it was first set; there is no earlier version to roll back to`);
        }
        target = current.previousVersion;
      }
      if (target === current.version) throw conflict(`${model}@production already points at v${target}; nothing to roll back`);
      try {
        const entry = await deps.registry.moveAlias({
          model,
          alias: ALIASES.production,
          version: target,
          expectedVersion: current.version,
          strategy: 'rollback',
          by,
          ...(why ? { reason: why } : {}),
          run: { workflowId: 'api', runId: String(req.id) },
        });
        req.log.info({ model, from: current.version, to: target, by }, 'rollback: production moved');
        return ok({ model, action: 'alias_moved', from: current.version, to: entry.version, by, message: `${model}@production → v${entry.version} (was v${current.version})`, entry });
      } catch (err) {
        if (err instanceof VersionArchivedError) throw conflict(`${model}@${target} is archived; unarchive it before rolling back to it (${err.message})`);
        if (err instanceof AliasConflictError) {
          const now = await deps.registry.getAlias(model, ALIASES.production);
          throw conflict(`${err.message}; look again before rolling back`, { currentVersion: now?.version ?? null });
        }
        throw err;
      }
    },
  }),
];
