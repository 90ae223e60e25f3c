/**
 * Temporal Schedules for Conveyor: one monitor schedule per deployed model
 * (`monitor-<model>`) and optional retraining schedules (`retrain-<model>`).
 *
 * Every schedule uses overlap policy SKIP (a run of a schedule never overlaps
 * the previous one, so two trainings of one model never run at once) and a
 * catch-up window of one hour (an action missed while Temporal was down runs
 * once when it is back; older misses are dropped).
 */
import {
  ScheduleAlreadyRunning,
  ScheduleNotFoundError,
  ScheduleOverlapPolicy,
  type CalendarSpecDescription,
  type Client,
  type Range,
  type ScheduleDescription,
  type ScheduleHandle,
  type ScheduleOptionsStartWorkflowAction,
  type ScheduleSpec,
  type ScheduleSpecDescription,
  type Workflow,
} from '@temporalio/client';
import type { SearchAttributePair } from '@temporalio/common';
import { DURATION_PATTERN, durationMs } from '../shared/duration.js';
import { isValidName } from '../shared/names.js';
import { modelSearchAttribute } from '../shared/search-attributes.js';

const SCHEDULE_OVERLAP = ScheduleOverlapPolicy.SKIP;
export const SCHEDULE_CATCHUP_WINDOW = '1h';

export type ScheduleKind = 'monitor' | 'retrain' | 'other';

export function monitorScheduleId(model: string): string {
  return `monitor-${checkModel(model)}`;
}

export function retrainScheduleId(model: string): string {
  return `retrain-${checkModel(model)}`;
}

function checkModel(model: string): string {
  if (!isValidName(model)) throw new Error(`"${model}" is not a valid model name (lowercase letters, digits, "-" and "_", at most 63 characters)`);
  return model;
}

/** Ids of schedules this module manages or accepts: conservative so they are safe in URLs, logs and shell commands. */
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const KIND_ID = /^(monitor|retrain)-(.*)$/;

/** The kind and model an id names; throws on ids that are not acceptable. */
export function parseScheduleId(id: string): { kind: ScheduleKind; model: string | null } {
  const match = KIND_ID.exec(id);
  if (match) {
    const model = match[2]!;
    if (!isValidName(model)) {
      throw new Error(`invalid schedule id "${id}": after "${match[1]}-" must come a model name (lowercase letters, digits, "-" and "_", at most 63 characters)`);
    }
    return { kind: match[1] as ScheduleKind, model };
  }
  if (!SAFE_ID.test(id)) {
    throw new Error(`invalid schedule id "${id}": use monitor-<model>, retrain-<model>, or letters, digits, ".", "_" and "-" (at most 128 characters)`);
  }
  return { kind: 'other', model: null };
}

/** Exactly one of the two (the pipeline spec's `schedule` section fits as is; for monitors pass `{ every: monitoring.interval }`). */
export interface ScheduleTiming {
  every?: string;
  cron?: string[];
}

export interface UpsertScheduleOptions {
  scheduleId: string;
  /** Name of the workflow type (no worker needs to be known here). */
  workflowType: string;
  args: unknown[];
  taskQueue: string;
  /** Id of started workflows; Temporal appends the scheduled time (`<workflowId>-2026-01-01T00:00:00Z`). */
  workflowId: string;
  /** `{ every: '1h' }` (a duration like 30s, 15m, 2h, 1d) or `{ cron: ['0 3 * * *'] }`. */
  spec: ScheduleTiming;
  /** Only set on creation: Temporal cannot update a schedule's memo. */
  memo?: Record<string, unknown>;
  /**
   * The model the schedule belongs to; set as the ConveyorModel search attribute on the schedule and on every workflow it starts.
   * Defaults to the model named by a monitor-/retrain- id.
   */
  model?: string;
  /** More typed search attributes for the schedule and its workflows. */
  searchAttributes?: SearchAttributePair[];
  /** Why the schedule exists (shown by `schedule list`); kept while the schedule is paused (the pause note wins). */
  note: string;
}

function compileSpec(spec: ScheduleTiming): ScheduleSpec {
  if ((spec.every === undefined) === (spec.cron === undefined)) throw new Error('a schedule needs exactly one of "every" or "cron"');
  if (spec.every !== undefined) {
    if (!DURATION_PATTERN.test(spec.every)) throw new Error(`invalid schedule interval "${spec.every}" (expected e.g. 30s, 15m, 2h, 1d)`);
    const every = durationMs(spec.every);
    if (every < 1000) throw new Error(`schedule interval "${spec.every}" is too short (at least 1s)`);
    return { intervals: [{ every }] };
  }
  const cron = spec.cron ?? [];
  if (!cron.length) throw new Error('a cron schedule needs at least one expression');
  return { cronExpressions: [...cron] };
}

/**
 * Creates the schedule, or updates the spec, action and policies of an existing one, keeping
 * whether it is paused (and the pause note). Safe to call concurrently for the same id.
 */
export async function upsertSchedule(client: Client, opts: UpsertScheduleOptions): Promise<{ created: boolean }> {
  const parsed = parseScheduleId(opts.scheduleId);
  const model = opts.model ?? parsed.model ?? undefined;
  if (model !== undefined) checkModel(model);
  const searchAttributes: SearchAttributePair[] = [
    ...(model !== undefined ? [{ key: modelSearchAttribute, value: model }] : []),
    ...(opts.searchAttributes ?? []).filter((p) => model === undefined || p.key.name !== modelSearchAttribute.name),
  ];
  const spec = compileSpec(opts.spec);
  const action: ScheduleOptionsStartWorkflowAction<Workflow> = {
    type: 'startWorkflow',
    workflowType: opts.workflowType,
    args: opts.args,
    taskQueue: opts.taskQueue,
    workflowId: opts.workflowId,
    ...(searchAttributes.length ? { typedSearchAttributes: searchAttributes } : {}),
  };
  const policies = { overlap: SCHEDULE_OVERLAP, catchupWindow: SCHEDULE_CATCHUP_WINDOW, pauseOnFailure: false };
  const handle = client.schedule.getHandle(opts.scheduleId);
  // create → exists → update; update → deleted meanwhile → create again. Two rounds settle any race.
  for (let attempt = 0; ; attempt++) {
    try {
      await client.schedule.create({
        scheduleId: opts.scheduleId,
        spec,
        action,
        policies,
        ...(opts.memo ? { memo: opts.memo } : {}),
        ...(searchAttributes.length ? { typedSearchAttributes: searchAttributes } : {}),
        state: { paused: false, note: opts.note },
      });
      return { created: true };
    } catch (err) {
      if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    }
    try {
      await handle.update((previous) => ({
        spec,
        action,
        policies,
        ...(searchAttributes.length ? { typedSearchAttributes: searchAttributes } : {}),
        state: {
          paused: previous.state.paused,
          note: previous.state.paused ? previous.state.note : opts.note,
          ...(previous.state.remainingActions !== undefined ? { remainingActions: previous.state.remainingActions } : {}),
        },
      }));
      return { created: false };
    } catch (err) {
      if (!(err instanceof ScheduleNotFoundError) || attempt >= 2) throw err;
    }
  }
}

export interface ScheduleActionRef {
  scheduledAt: string;
  startedAt: string;
  workflowId: string;
  runId: string;
}

export interface ScheduleInfo {
  id: string;
  kind: ScheduleKind;
  model: string | null;
  paused: boolean;
  note: string | null;
  /** Human: "every 1h", "cron 0 3 * * *" (several joined with "; "). */
  spec: string;
  workflowType: string;
  /** Up to 3 upcoming action times (ISO). */
  nextActionTimes: string[];
  /** The last 3 actions, oldest first. */
  recentActions: ScheduleActionRef[];
  /** Workflows started by the schedule that are still running. */
  running: number;
  /** Actions waiting behind a running one (backfills with BUFFER_ALL). */
  buffered: number;
  actionsTaken: number;
  skippedOverlap: number;
  missedCatchupWindow: number;
}

/** Unknown ids become an error naming the id. */
async function withSchedule<T>(id: string, fn: (handle: ScheduleHandle) => Promise<T>, client: Client): Promise<T> {
  parseScheduleId(id);
  try {
    return await fn(client.schedule.getHandle(id));
  } catch (err) {
    if (err instanceof ScheduleNotFoundError) throw new Error(`schedule "${id}" not found`, { cause: err });
    throw err;
  }
}

export async function describeSchedule(client: Client, id: string): Promise<ScheduleDescription> {
  return withSchedule(id, (h) => h.describe(), client);
}

function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

const FULL_RANGES: Record<string, [number, number]> = { second: [0, 59], minute: [0, 59], hour: [0, 23], dayOfMonth: [1, 31] };

function formatRanges<U extends string | number>(ranges: Range<U>[], field: string): string {
  const full = FULL_RANGES[field];
  if (!ranges.length) return '*';
  if (full && ranges.length === 1 && ranges[0]!.start === full[0] && ranges[0]!.end === full[1] && ranges[0]!.step <= 1) return '*';
  if ((field === 'month' || field === 'dayOfWeek') && ranges.length === 1 && ranges[0]!.step <= 1) {
    const r = ranges[0]!;
    const whole = field === 'month' ? r.start === 'JANUARY' && r.end === 'DECEMBER' : r.start === 'SUNDAY' && r.end === 'SATURDAY';
    if (whole) return '*';
  }
  return ranges
    .map((r) => {
      const short = (v: U) => (typeof v === 'string' ? v.slice(0, 3) : String(v));
      const base = r.end === r.start ? short(r.start) : `${short(r.start)}-${short(r.end)}`;
      return r.step > 1 ? `${base}/${r.step}` : base;
    })
    .join(',');
}

function formatCalendar(c: CalendarSpecDescription): string {
  if (c.comment) return c.comment;
  const fields = ['minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek'] as const;
  const parts = fields.map((f) => formatRanges(c[f] as Range<string | number>[], f));
  const second = formatRanges(c.second, 'second');
  return second === '0' ? parts.join(' ') : `${second} ${parts.join(' ')}`;
}

/** "every 1h", "cron 0 3 * * *", several joined by "; ". */
export function formatScheduleSpec(spec: ScheduleSpecDescription): string {
  const parts = [
    ...(spec.intervals ?? []).map((i) => `every ${formatDuration(i.every)}${i.offset ? ` (offset ${formatDuration(i.offset)})` : ''}`),
    ...(spec.calendars ?? []).map((c) => `cron ${formatCalendar(c)}`),
  ];
  return parts.join('; ') || 'no spec (trigger or backfill only)';
}

function toInfo(id: string, d: ScheduleDescription): ScheduleInfo {
  let parsed: { kind: ScheduleKind; model: string | null };
  try {
    parsed = parseScheduleId(id);
  } catch {
    parsed = { kind: 'other', model: null };
  }
  const model = d.typedSearchAttributes.get(modelSearchAttribute) ?? parsed.model;
  return {
    id,
    kind: parsed.kind,
    model,
    paused: d.state.paused,
    note: d.state.note ?? null,
    spec: formatScheduleSpec(d.spec),
    workflowType: d.action.workflowType,
    nextActionTimes: d.info.nextActionTimes.slice(0, 3).map((t) => t.toISOString()),
    recentActions: d.info.recentActions.slice(-3).map((a) => ({
      scheduledAt: a.scheduledAt.toISOString(),
      startedAt: a.takenAt.toISOString(),
      workflowId: a.action.workflow.workflowId,
      runId: a.action.workflow.firstExecutionRunId,
    })),
    running: d.info.runningActions.length,
    buffered: Number(d.raw.info?.bufferSize ?? 0),
    actionsTaken: d.info.numActionsTaken,
    skippedOverlap: d.info.numActionsSkippedOverlap,
    missedCatchupWindow: d.info.numActionsMissedCatchupWindow,
  };
}

/**
 * All schedules (or a model's), sorted by id. Ids come from Temporal's visibility store, which lags
 * a second or so behind creates and deletes; each one is then described for its current state.
 */
export async function listSchedules(client: Client, opts: { model?: string } = {}): Promise<ScheduleInfo[]> {
  if (opts.model !== undefined) checkModel(opts.model);
  const ids: string[] = [];
  for await (const summary of client.schedule.list({ pageSize: 100 })) ids.push(summary.scheduleId);
  const infos: ScheduleInfo[] = [];
  for (const id of [...new Set(ids)].sort()) {
    let d: ScheduleDescription;
    try {
      d = await client.schedule.getHandle(id).describe();
    } catch (err) {
      if (err instanceof ScheduleNotFoundError) continue; // deleted since it was listed
      throw err;
    }
    const info = toInfo(id, d);
    if (opts.model === undefined || info.model === opts.model) infos.push(info);
  }
  return infos;
}

export async function getSchedule(client: Client, id: string): Promise<ScheduleInfo> {
  return toInfo(id, await describeSchedule(client, id));
}

export async function pauseSchedule(client: Client, id: string, note = 'paused with conveyor schedule pause'): Promise<void> {
  await withSchedule(id, (h) => h.pause(note), client);
}

export async function unpauseSchedule(client: Client, id: string, note = 'unpaused with conveyor schedule unpause'): Promise<void> {
  await withSchedule(id, (h) => h.unpause(note), client);
}

/** Starts the action now. SKIP by default: nothing starts while a run of this schedule is still running. */
export async function triggerSchedule(client: Client, id: string, overlap: ScheduleOverlapPolicy = ScheduleOverlapPolicy.SKIP): Promise<void> {
  await withSchedule(id, (h) => h.trigger(overlap), client);
}

export async function deleteSchedule(client: Client, id: string): Promise<void> {
  await withSchedule(id, (h) => h.delete(), client);
}

/** Runs `fn` on the schedule's handle: true when it did, false when the schedule does not exist. */
async function onExisting(client: Client, id: string, fn: (handle: ScheduleHandle) => Promise<unknown>): Promise<boolean> {
  parseScheduleId(id);
  try {
    await fn(client.schedule.getHandle(id));
    return true;
  } catch (err) {
    if (err instanceof ScheduleNotFoundError) return false;
    throw err;
  }
}

/** Whether the schedule exists (described, not listed: the list lags creates and deletes). */
export function scheduleExists(client: Client, id: string): Promise<boolean> {
  return onExisting(client, id, (h) => h.describe());
}

/** Deletes the schedule if it exists; true when it did (a retried call finds it gone and says false). */
export function removeSchedule(client: Client, id: string): Promise<boolean> {
  return onExisting(client, id, (h) => h.delete());
}

/**
 * Runs the actions the spec would have taken in [from, to] (both ends included). BUFFER_ALL by default:
 * every backfilled action runs, one after another, never two at once (SKIP would drop all but the first
 * while it runs).
 */
export async function backfillSchedule(
  client: Client,
  id: string,
  from: Date,
  to: Date,
  overlap: ScheduleOverlapPolicy = ScheduleOverlapPolicy.BUFFER_ALL,
): Promise<void> {
  if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime())) throw new Error('backfill needs valid --from and --to times (ISO 8601)');
  if (from.getTime() >= to.getTime()) throw new Error(`backfill range is empty: ${from.toISOString()} is not before ${to.toISOString()}`);
  await withSchedule(id, (h) => h.backfill({ start: from, end: to, overlap }), client);
}
