import { Context } from '@temporalio/activity';
import type { CodeVersion, RunTrigger } from '../src/shared/registry-types.js';
import type { MonitoringSpec, PipelineSpec } from '../src/spec/schema.js';
import { runMonitorWindow } from '../src/monitoring/monitor.js';
import type { MonitorResult } from '../src/monitoring/results.js';
import { monitorScheduleId, removeSchedule, retrainScheduleId, scheduleExists, upsertSchedule } from '../src/temporal/schedules.js';
import { ALIASES } from '../src/shared/constants.js';
import type { ActivityDeps } from './deps.js';
import { activityLogger, withHeartbeat, withScratchDir } from './context.js';
import { classified } from './errors.js';
import { MONITOR_WORKFLOW, RETRAINING_CONTROLLER, RETRAIN_SIGNAL, SCHEDULED_RETRAIN_WORKFLOW, retrainingControllerId } from '../src/shared/monitoring.js';

/** What a retraining runs: the pipeline spec and code of the deployed version's run. */
export interface RetrainTarget {
  spec: PipelineSpec;
  code: CodeVersion;
  trainingTaskQueue: string;
  /**
   * The version whose deployment set the schedule carrying this target. A request is refused
   * once production is another version (a rollback, or a schedule update that failed).
   * Absent in targets set before this field existed: those are not checked.
   */
  deployedVersion?: number;
}

export interface RetrainRequest {
  model: string;
  target: RetrainTarget;
  trigger: RunTrigger;
  /** Cooldown and daily limit apply to decay reports; a timetable only waits for a running retraining. */
  limits: { cooldown: string; maxPerDay: number } | null;
  requestedAt: string;
}

/** Whether a retraining request went to the controller; `reason` says why not. */
export interface RetrainRequestOutcome {
  requested: boolean;
  reason?: string;
}

/** Why a request's target is not production's (its schedule was set by another deployment), or undefined when it is. */
async function staleTarget(deps: ActivityDeps, request: RetrainRequest): Promise<string | undefined> {
  const { deployedVersion } = request.target;
  if (deployedVersion === undefined) return undefined;
  const production = await deps.registry.getAlias(request.model, ALIASES.production);
  if (production?.version === deployedVersion) return undefined;
  const now = production ? `${request.model}@${production.version}` : 'no version';
  return `${ALIASES.production} is ${now}, but this request's target was set when ${request.model}@${deployedVersion} was deployed (a rollback, or a schedule update that failed, since); deploy from the current spec to set the schedules again`;
}

export interface MonitorInput {
  model: string;
  monitoring: MonitoringSpec;
  target: RetrainTarget;
}

export function monitoringActivities(deps: ActivityDeps) {
  return {
    /** One monitor window; idempotent (its result is keyed by the window's end), so a retry after a store outage loses nothing. */
    async runMonitor(input: { model: string; windowStart: string; windowEnd: string; monitoring: MonitoringSpec }): Promise<MonitorResult> {
      const log = activityLogger(deps.logger);
      return classified(() =>
        withHeartbeat(() =>
          withScratchDir(deps.workDir, async (dir) => {
            const result = await runMonitorWindow(deps.store, deps.registry, {
              model: input.model,
              windowStart: new Date(input.windowStart),
              windowEnd: new Date(input.windowEnd),
              monitoring: input.monitoring,
              workDir: dir,
            });
            const level = result.verdict === 'decay' ? 'warn' : 'info';
            log[level]({ model: input.model, version: result.version, verdict: result.verdict, sampleSize: result.sampleSize, breaches: result.breaches.map((b) => b.message), resultKey: result.resultKey }, 'monitor window judged');
            return result;
          }),
        ),
      );
    },

    /**
     * Hands a retraining request to the model's retraining controller (started if needed):
     * one workflow per model decides, so a burst of reports starts at most one retraining.
     */
    async requestRetraining(request: RetrainRequest): Promise<RetrainRequestOutcome> {
      const log = activityLogger(deps.logger);
      const client = Context.current().client;
      // The target comes from the schedule's arguments, set when a version was deployed. Once
      // production is another version (a rollback, a failed schedule update), the target is
      // stale: retraining it could replace production with a model of another spec.
      const stale = await staleTarget(deps, request);
      if (stale) {
        log.warn({ model: request.model, trigger: request.trigger, reason: stale }, 'retraining not requested: its target was set by a deployment that is no longer in production');
        return { requested: false, reason: stale };
      }
      await client.workflow.signalWithStart(RETRAINING_CONTROLLER, {
        workflowId: retrainingControllerId(request.model),
        taskQueue: Context.current().info.taskQueue,
        args: [{ model: request.model }],
        signal: RETRAIN_SIGNAL,
        signalArgs: [request],
      });
      log.info({ model: request.model, trigger: request.trigger }, 'retraining requested');
      return { requested: true };
    },

    /**
     * After a deployment, the model's schedules follow the deployed spec: its monitor schedule
     * (and timetable retraining) are created or updated, or removed when the spec has none, so
     * a monitor set by an earlier version does not go on judging (and retraining) by a spec
     * that is no longer deployed. Returns the ids of the schedules the model now has.
     */
    async ensureSchedules(input: { model: string; target: RetrainTarget; version?: number }): Promise<string[]> {
      const log = activityLogger(deps.logger);
      const client = Context.current().client;
      const taskQueue = Context.current().info.taskQueue;
      const { spec } = input.target;
      // Monitors judge production: a deployment to another alias leaves its schedules alone,
      // and so does a late call (a retry) once production has moved to another version.
      const leaveAlone = async (reason: string): Promise<string[]> => {
        log.info({ model: input.model, version: input.version ?? null, reason }, 'schedules left as they are');
        const ids: string[] = [];
        for (const id of [monitorScheduleId(input.model), retrainScheduleId(input.model)]) if (await scheduleExists(client, id)) ids.push(id);
        return ids;
      };
      if (spec.deployment.alias !== ALIASES.production) return leaveAlone(`deployed to "${spec.deployment.alias}"; schedules follow ${ALIASES.production}`);
      if (input.version !== undefined) {
        const production = await deps.registry.getAlias(input.model, ALIASES.production);
        if (production?.version !== input.version) return leaveAlone(`${ALIASES.production} is now ${production ? `version ${production.version}` : 'unset'}, not version ${input.version}`);
      }
      const ids: string[] = [];
      const target: RetrainTarget = input.version === undefined ? input.target : { ...input.target, deployedVersion: input.version };
      if (spec.monitoring) {
        const args: [MonitorInput] = [{ model: input.model, monitoring: spec.monitoring, target }];
        await upsertSchedule(client, {
          scheduleId: monitorScheduleId(input.model),
          workflowType: MONITOR_WORKFLOW,
          args,
          taskQueue,
          workflowId: `monitor-run-${input.model}`,
          spec: { every: spec.monitoring.interval },
          note: `monitors ${input.model} every ${spec.monitoring.interval} (from its pipeline spec)`,
        });
        ids.push(monitorScheduleId(input.model));
      } else if (await removeSchedule(client, monitorScheduleId(input.model))) {
        log.info({ model: input.model, scheduleId: monitorScheduleId(input.model) }, 'monitor schedule removed: the deployed spec has no monitoring');
      }
      if (spec.schedule) {
        await upsertSchedule(client, {
          scheduleId: retrainScheduleId(input.model),
          workflowType: SCHEDULED_RETRAIN_WORKFLOW,
          args: [{ model: input.model, target, scheduleId: retrainScheduleId(input.model) }],
          taskQueue,
          workflowId: `retrain-run-${input.model}`,
          spec: spec.schedule.cron ? { cron: spec.schedule.cron } : { every: spec.schedule.every! },
          note: `retrains ${input.model} ${spec.schedule.cron ? `on ${spec.schedule.cron.join(', ')}` : `every ${spec.schedule.every}`} (from its pipeline spec)`,
        });
        ids.push(retrainScheduleId(input.model));
      } else if (await removeSchedule(client, retrainScheduleId(input.model))) {
        log.info({ model: input.model, scheduleId: retrainScheduleId(input.model) }, 'retraining schedule removed: the deployed spec has no schedule');
      }
      return ids;
    },
  };
}
