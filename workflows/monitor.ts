import { log, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { PipelineActivities } from '../activities/index.js';
import type { MonitorInput, RetrainRequestOutcome, RetrainTarget } from '../activities/monitoring.js';
import { durationMs } from '../src/shared/duration.js';
import { NON_RETRYABLE_ERROR_TYPES } from '../src/shared/errors.js';
import type { MonitorResult } from '../src/monitoring/results.js';
import { analysisPreset, quickPreset } from './presets.js';
import { sendToWebhooks } from './notification.js';

/**
 * A monitor window's activity retries for as long as a store outage may last: the window
 * is fixed by the scheduled time, so a late result is the same result, and none is lost.
 */
const monitorPreset = { ...analysisPreset, retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '1m', nonRetryableErrorTypes: [...NON_RETRYABLE_ERROR_TYPES] } };

/** The instant this run stands for: the schedule's nominal time, or now when triggered by hand. */
function scheduledTime(): number {
  const attrs = workflowInfo().searchAttributes as Record<string, unknown[] | undefined> | undefined;
  const scheduled = attrs?.['TemporalScheduledStartTime']?.[0];
  const at = scheduled instanceof Date ? scheduled.getTime() : typeof scheduled === 'string' ? Date.parse(scheduled) : NaN;
  return Number.isFinite(at) ? at : workflowInfo().startTime.getTime();
}

export interface MonitorSummary {
  verdict: MonitorResult['verdict'];
  version: number;
  windowStart: string;
  windowEnd: string;
  breaches: string[];
  resultKey: string;
  retrainingRequested: boolean;
}

/** Started by the model's monitor schedule: judges one window, alerts on breaches, reports decay. */
export async function monitorModel(input: MonitorInput): Promise<MonitorSummary> {
  const monitor = proxyActivities<PipelineActivities>(monitorPreset);
  const quick = proxyActivities<PipelineActivities>(quickPreset);
  const end = scheduledTime();
  const windowEnd = new Date(end).toISOString();
  const windowStart = new Date(end - durationMs(input.monitoring.interval)).toISOString();
  const result = await monitor.runMonitor({ model: input.model, windowStart, windowEnd, monitoring: input.monitoring });

  const breaches = result.breaches.map((b) => b.message);
  if (breaches.length) {
    log.warn('monitor breach', { model: input.model, version: result.version, breaches });
    await notify(input, 'monitor_breach', { model: input.model, version: result.version, windowStart, windowEnd, verdict: result.verdict, breaches, resultKey: result.resultKey });
  }
  const { retrain } = input.monitoring;
  const decay = result.verdict === 'decay' && result.decayKinds.some((k) => retrain.on.includes(k));
  let requested = false;
  if (decay && retrain.enabled) {
    // Histories from before the activity said whether it sent the request have no outcome: it did.
    const outcome = await quick.requestRetraining({
      model: input.model,
      target: input.target,
      trigger: { kind: 'decay', monitorResultKey: result.resultKey, reason: breaches.slice(0, 5).join('; ') },
      limits: { cooldown: retrain.cooldown, maxPerDay: retrain.maxPerDay },
      requestedAt: new Date().toISOString(),
    });
    requested = (outcome as RetrainRequestOutcome | undefined)?.requested ?? true;
    if (!requested) log.warn('retraining not requested', { model: input.model, reason: outcome.reason });
  }
  return { verdict: result.verdict, version: result.version, windowStart, windowEnd, breaches, resultKey: result.resultKey, retrainingRequested: requested };
}

/** Started by the model's timetable schedule: asks the model's retraining controller for a run. */
export async function scheduledRetraining(input: { model: string; target: RetrainTarget; scheduleId: string }): Promise<void> {
  const quick = proxyActivities<PipelineActivities>(quickPreset);
  await quick.requestRetraining({
    model: input.model,
    target: input.target,
    trigger: { kind: 'schedule', scheduleId: input.scheduleId },
    limits: null,
    requestedAt: new Date().toISOString(),
  });
}

/** The model spec's webhooks for `kind`; `seq` tells apart several events of one kind in one run. */
export async function notify(input: { model: string; target: RetrainTarget }, kind: 'monitor_breach' | 'retraining_started', data: Record<string, unknown>, seq = 0): Promise<void> {
  await Promise.allSettled(sendToWebhooks(input.target.spec.notifications?.webhooks ?? [], kind, `${workflowInfo().runId}-${kind}-${seq}`, data));
}
