import { z } from 'zod';
import { DURATION_PATTERN } from '../shared/duration.js';
import { NAME_PATTERN } from '../shared/names.js';
import { METRICS_BY_TASK } from '../eval/metrics.js';
import { driftThresholdsSchema } from '../monitoring/thresholds.js';

const duration = z.string().regex(DURATION_PATTERN, 'must be a duration such as 30s, 15m, 2h or 3d');
const name = z
  .string()
  .regex(NAME_PATTERN, 'must be 1-63 characters of a-z, 0-9, "-" or "_", starting with a letter or digit');

export const COLUMN_TYPES = ['integer', 'float', 'categorical', 'boolean'] as const;
export const TASK_TYPES = ['classification', 'regression'] as const;
/** The metrics a spec may name: exactly those evaluation computes, for either task. */
export const METRIC_NAMES = [...METRICS_BY_TASK.classification, ...METRICS_BY_TASK.regression] as const;

const columnSchema = z
  .object({
    type: z.enum(COLUMN_TYPES),
    nullable: z.boolean().default(false),
    min: z.number().optional(),
    max: z.number().optional(),
    values: z.array(z.string()).min(1).optional(),
  })
  .strict()
  .refine((c) => c.min === undefined || c.max === undefined || c.min <= c.max, {
    message: 'min must not exceed max',
    path: ['min'],
  });

const expectationSchema = z.discriminatedUnion('rule', [
  z.object({ rule: z.literal('not_null'), column: z.string() }).strict(),
  z.object({ rule: z.literal('between'), column: z.string(), min: z.number(), max: z.number() }).strict(),
  z.object({ rule: z.literal('in_set'), column: z.string(), values: z.array(z.string()).min(1) }).strict(),
  z.object({ rule: z.literal('unique'), column: z.string() }).strict(),
  z.object({ rule: z.literal('max_null_fraction'), column: z.string(), max: z.number().min(0).max(1) }).strict(),
  z
    .object({
      rule: z.literal('row_count'),
      min: z.number().int().nonnegative().optional(),
      max: z.number().int().positive().optional(),
    })
    .strict(),
  z
    .object({
      rule: z.literal('mean_between'),
      column: z.string(),
      min: z.number(),
      max: z.number(),
    })
    .strict(),
  z.object({ rule: z.literal('custom'), check: name, column: z.string().optional() }).strict(),
]);

const datasetSchema = z
  .object({
    source: z
      .string()
      .min(1)
      .refine((s) => /\.(csv|parquet)$/i.test(s), 'must end in .csv or .parquet'),
  })
  .strict();

const commandTrainerSchema = z
  .object({
    kind: z.literal('command'),
    /** argv; "{python}" is replaced by the trainer venv's interpreter. Relative paths resolve against the pipeline file. */
    command: z.array(z.string().min(1)).min(1),
    params: z.record(z.string(), z.unknown()).default({}),
    timeout: duration.default('2h'),
    heartbeatTimeout: duration.default('2m'),
    retries: z.number().int().min(0).max(10).default(2),
  })
  .strict();

const tsTrainerSchema = z
  .object({
    kind: z.literal('typescript'),
    /** Name under which the trainer is registered on the worker. */
    name,
    params: z.record(z.string(), z.unknown()).default({}),
    timeout: duration.default('2h'),
    heartbeatTimeout: duration.default('2m'),
    retries: z.number().int().min(0).max(10).default(2),
  })
  .strict();

const gateSchema = z
  .object({ metric: z.enum(METRIC_NAMES), min: z.number().optional(), max: z.number().optional() })
  .strict()
  .refine((g) => g.min !== undefined || g.max !== undefined, { message: 'a gate needs min or max', path: ['min'] });

const evaluationSchema = z
  .object({
    primaryMetric: z.enum(METRIC_NAMES).optional(),
    gates: z.array(gateSchema).default([]),
    beatProduction: z.object({ metric: z.enum(METRIC_NAMES), minDelta: z.number().default(0) }).strict().optional(),
    slices: z.array(z.string()).default([]),
  })
  .strict();

const manualApprovalSchema = z
  .object({
    mode: z.literal('manual'),
    /** Identities that may decide. */
    reviewers: z.array(name).default([]),
    /** Groups whose members may decide (group membership comes from the caller's API token). */
    groups: z.array(name).default([]),
    /** How many distinct approvals promote the candidate; one rejection ends the run. */
    quorum: z.number().int().min(1).max(20).default(1),
    timeout: duration.default('72h'),
    /** Reminders go out this long before the deadline, e.g. ['24h', '1h']. */
    remindBefore: z.array(duration).default([]),
    /** After this long without a decision, a second set of reviewers is asked too. */
    escalation: z
      .object({ after: duration, reviewers: z.array(name).default([]), groups: z.array(name).default([]) })
      .strict()
      .refine((e) => e.reviewers.length + e.groups.length > 0, { message: 'escalation needs reviewers or groups', path: ['reviewers'] })
      .optional(),
  })
  .strict()
  .superRefine((a, ctx) => {
    if (a.reviewers.length + a.groups.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['reviewers'], message: 'manual approval needs reviewers or groups' });
    }
    const people = new Set([...a.reviewers, ...(a.escalation?.reviewers ?? [])]).size;
    if (a.groups.length === 0 && (a.escalation?.groups.length ?? 0) === 0 && a.quorum > people) {
      ctx.addIssue({ code: 'custom', path: ['quorum'], message: `quorum ${a.quorum} exceeds the ${people} reviewers who could approve` });
    }
  });

const approvalSchema = z.discriminatedUnion('mode', [z.object({ mode: z.literal('auto') }).strict(), manualApprovalSchema]);

const webhookSchema = z
  .object({
    url: z.string().url('must be an absolute http(s) URL'),
    /** Which events to send (default: all). */
    events: z
      .array(z.enum(['approval_requested', 'approval_reminder', 'approval_escalated', 'approved', 'rejected', 'expired', 'deployed', 'rolled_back', 'monitor_breach', 'retraining_started']))
      .optional(),
  })
  .strict();

export const DEPLOYMENT_STRATEGIES = ['direct', 'canary', 'shadow', 'ab'] as const;
export type DeploymentStrategy = (typeof DEPLOYMENT_STRATEGIES)[number];

/** Bounds a candidate must stay within next to production while it takes traffic. */
export const rolloutBoundsSchema = z
  .object({
    /** Requests per arm below which no verdict is given (a step keeps baking instead). */
    minRequests: z.number().int().min(1).max(1_000_000).default(30),
    /** Candidate error rate minus production's (absolute: 0.02 = two percentage points). */
    maxErrorRateIncrease: z.number().min(0).max(1).default(0.02),
    /** p95 latency breaches only when it is both this many times production's... */
    maxLatencyP95Ratio: z.number().min(1).default(1.5),
    /** ...and this many milliseconds above it, so sub-millisecond noise never trips it. */
    minLatencyIncreaseMs: z.number().min(0).default(5),
    /** Jensen-Shannon divergence (bits) between the arms' prediction histograms. */
    maxPredictionShift: z.number().min(0).max(1).default(0.1),
    /**
     * ...counted only when a test of the two histograms (chi-square, or a permutation test of the
     * divergence where bins are sparse) gives a p-value below this: a few dozen requests per arm
     * differ by chance by more than 0.1 bits.
     * 1 judges on the divergence alone.
     */
    predictionShiftPValue: z.number().gt(0).max(1).default(0.01),
  })
  .strict();
export type RolloutBounds = z.output<typeof rolloutBoundsSchema>;
const ROLLOUT_BOUNDS_DEFAULTS = rolloutBoundsSchema.parse({});

const percent = z.number().gt(0).max(100);

const canarySchema = z
  .object({
    /** Percent of traffic at each step; increasing, ending at 100. */
    steps: z.array(percent).min(1).max(20).default([5, 25, 50, 100]),
    /** How long each step runs before it is judged. */
    bake: duration.default('10m'),
    /** A step without enough requests to judge keeps baking up to this long, then rolls back. */
    maxBake: duration.optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.steps.some((s, i) => i > 0 && s <= c.steps[i - 1]!)) ctx.addIssue({ code: 'custom', path: ['steps'], message: 'steps must increase' });
    if (c.steps.at(-1) !== 100) ctx.addIssue({ code: 'custom', path: ['steps'], message: 'the last step must be 100 (all traffic) before promotion' });
  });

const shadowSchema = z
  .object({
    /** How long the candidate scores copies of production requests before the report is written. */
    duration: duration.default('1h'),
    /** Without a promote decision by then, the shadow ends and production is unchanged. */
    decisionTimeout: duration.default('7d'),
  })
  .strict();

const abSchema = z
  .object({
    /** Percent of request keys sent to the challenger (sticky per key). */
    split: z.number().gt(0).lt(100).default(50),
    decisionTimeout: duration.default('14d'),
  })
  .strict();

export const deploymentSchema = z
  .object({
    alias: name.default('production'),
    /**
     * direct: switch at once. canary: move traffic in steps, analysing each, and roll
     * back automatically on a breach. shadow: the candidate scores copies of requests,
     * never answers, then waits for a decision. ab: fixed split, then a decision.
     */
    strategy: z.enum(DEPLOYMENT_STRATEGIES).default('direct'),
    /** Checks before any traffic: the exact artifact in a fresh session, against the evaluation's answers. */
    validation: z
      .object({
        /** Holdout rows re-scored and compared with what evaluation recorded. */
        sampleRows: z.number().int().min(1).max(200).default(50),
        /** Largest absolute difference allowed between an answer and evaluation's (float rounding only). */
        tolerance: z.number().min(0).max(1).default(1e-5),
        /** p95 of single-row inference must stay under this. */
        maxLatencyMs: z.number().positive().default(250),
      })
      .strict()
      .default({ sampleRows: 50, tolerance: 1e-5, maxLatencyMs: 250 }),
    canary: canarySchema.optional(),
    shadow: shadowSchema.optional(),
    ab: abSchema.optional(),
    /** How often a running rollout is analysed (and rolled back on a breach). */
    analysisInterval: duration.default('1m'),
    bounds: rolloutBoundsSchema.default(ROLLOUT_BOUNDS_DEFAULTS),
  })
  .strict()
  .superRefine((d, ctx) => {
    for (const other of ['canary', 'shadow', 'ab'] as const) {
      if (d[other] !== undefined && d.strategy !== other) {
        ctx.addIssue({ code: 'custom', path: [other], message: `"${other}" settings given but strategy is "${d.strategy}"` });
      }
    }
  })
  // The chosen strategy's settings are always present after parsing (defaults filled in).
  .transform((d) => {
    if (d.strategy === 'canary') return { ...d, canary: d.canary ?? canarySchema.parse({}) };
    if (d.strategy === 'shadow') return { ...d, shadow: d.shadow ?? shadowSchema.parse({}) };
    if (d.strategy === 'ab') return { ...d, ab: d.ab ?? abSchema.parse({}) };
    return d;
  });

const DEPLOYMENT_DEFAULTS = deploymentSchema.parse({});

/** What a monitor judges a deployed model on, and what it does about decay. */
const monitoringSchema = z
  .object({
    /** How often the monitor runs (a Temporal Schedule), and the window of served predictions each run reads. */
    interval: duration.default('1h'),
    /** Drift and data-quality thresholds: defaults, per feature, for the prediction; `minSamples` below which no verdict is given. */
    drift: driftThresholdsSchema.default({ minSamples: 200, defaults: {}, features: {}, prediction: {} }),
    /** Performance against the evaluation baseline once labels arrive through the feedback endpoint. */
    performance: z
      .object({
        /** Default: roc_auc for classification, rmse for regression. */
        metric: z.enum(['accuracy', 'roc_auc', 'rmse']).optional(),
        /** Breach when the metric is worse than evaluation's by more than this (absolute). */
        maxDrop: z.number().min(0).default(0.05),
        /** Labelled predictions needed before performance is judged (AUC on 50 labels varies by ±0.1 by chance alone). */
        minLabels: z.number().int().min(1).default(200),
        /** How long after a prediction its label may arrive and still be joined. */
        labelDelay: duration.default('7d'),
      })
      .strict()
      .default({ maxDrop: 0.05, minLabels: 200, labelDelay: '7d' }),
    /** Decay starts a retraining of the model: the same pipeline, gates, approval and rollout. */
    retrain: z
      .object({
        enabled: z.boolean().default(true),
        /** Which verdicts count as decay. */
        on: z.array(z.enum(['drift', 'quality', 'performance'])).min(1).default(['drift', 'performance']),
        /** No new retraining within this long of the last one started. */
        cooldown: duration.default('6h'),
        /** At most this many retrainings per model in any 24 hours. */
        maxPerDay: z.number().int().min(1).max(100).default(3),
      })
      .strict()
      .default({ enabled: true, on: ['drift', 'performance'], cooldown: '6h', maxPerDay: 3 }),
  })
  .strict();

/** Plain retraining on a timetable: a Temporal Schedule. */
const scheduleSchema = z
  .object({
    /** Cron expression(s), e.g. "0 3 * * 1" (Mondays 03:00 UTC). */
    cron: z.array(z.string().min(9).max(100)).min(1).max(10).optional(),
    /** Or a fixed interval, e.g. "24h". */
    every: duration.optional(),
  })
  .strict()
  .refine((s) => (s.cron === undefined) !== (s.every === undefined), { message: 'give exactly one of "cron" or "every"', path: ['cron'] });

export const pipelineSpecSchema = z
  .object({
    name,
    description: z.string().max(2000).optional(),
    dataset: datasetSchema,
    target: z.object({ column: z.string().min(1), task: z.enum(TASK_TYPES) }).strict(),
    schema: z
      .object({
        columns: z.record(z.string().min(1), columnSchema).refine((c) => Object.keys(c).length > 0, 'needs at least one column'),
        allowExtraColumns: z.boolean().default(false),
      })
      .strict(),
    features: z.array(z.string().min(1)).min(1).optional(),
    expectations: z.array(expectationSchema).default([]),
    split: z
      .object({
        holdoutFraction: z.number().gt(0).lt(1).default(0.2),
        seed: z.number().int().default(42),
      })
      .strict()
      .default({ holdoutFraction: 0.2, seed: 42 }),
    trainer: z.discriminatedUnion('kind', [commandTrainerSchema, tsTrainerSchema]),
    evaluation: evaluationSchema.default({ gates: [], slices: [] }),
    approval: approvalSchema.default({ mode: 'auto' }),
    deployment: deploymentSchema.default(DEPLOYMENT_DEFAULTS),
    /** Scheduled monitoring of the deployed model, and decay-triggered retraining. */
    monitoring: monitoringSchema.optional(),
    /** Retrain on a timetable as well (same pipeline, gates, approval and rollout). */
    schedule: scheduleSchema.optional(),
    /** Signed webhooks (secret and host allowlist come from the worker's environment). */
    notifications: z.object({ webhooks: z.array(webhookSchema).max(10).default([]) }).strict().default({ webhooks: [] }),
  })
  .strict()
  .superRefine((spec, ctx) => {
    const columns = spec.schema.columns;
    if (!(spec.target.column in columns)) {
      ctx.addIssue({ code: 'custom', path: ['target', 'column'], message: `"${spec.target.column}" is not in schema.columns` });
    }
    for (const [i, f] of (spec.features ?? []).entries()) {
      if (!(f in columns)) ctx.addIssue({ code: 'custom', path: ['features', i], message: `"${f}" is not in schema.columns` });
      if (f === spec.target.column) ctx.addIssue({ code: 'custom', path: ['features', i], message: 'the target cannot be a feature' });
    }
    for (const [i, e] of spec.expectations.entries()) {
      if ('column' in e && e.column !== undefined && !(e.column in columns)) {
        ctx.addIssue({ code: 'custom', path: ['expectations', i, 'column'], message: `"${e.column}" is not in schema.columns` });
      }
    }
    for (const [i, s] of spec.evaluation.slices.entries()) {
      if (!(s in columns)) ctx.addIssue({ code: 'custom', path: ['evaluation', 'slices', i], message: `"${s}" is not in schema.columns` });
    }
    const applicable: readonly string[] = METRICS_BY_TASK[spec.target.task];
    const metricsUsed = [
      ...spec.evaluation.gates.map((g, i) => ({ m: g.metric, path: ['evaluation', 'gates', i, 'metric'] })),
      ...(spec.evaluation.beatProduction ? [{ m: spec.evaluation.beatProduction.metric, path: ['evaluation', 'beatProduction', 'metric'] }] : []),
      ...(spec.evaluation.primaryMetric ? [{ m: spec.evaluation.primaryMetric, path: ['evaluation', 'primaryMetric'] }] : []),
    ];
    for (const { m, path } of metricsUsed) {
      if (!applicable.includes(m)) {
        ctx.addIssue({ code: 'custom', path, message: `metric "${m}" does not apply to ${spec.target.task}` });
      }
    }
    const targetType = columns[spec.target.column]?.type;
    if (spec.target.task === 'regression' && targetType && targetType !== 'float' && targetType !== 'integer') {
      ctx.addIssue({ code: 'custom', path: ['target', 'column'], message: 'a regression target must be integer or float' });
    }
  });

/** What the user writes (defaults optional). */
export type PipelineSpecInput = z.input<typeof pipelineSpecSchema>;
/** What Conveyor runs (defaults filled in). */
export type PipelineSpec = z.output<typeof pipelineSpecSchema>;
export type ColumnSpec = PipelineSpec['schema']['columns'][string];
export type Expectation = PipelineSpec['expectations'][number];
export type TrainerSpec = PipelineSpec['trainer'];
export type { MetricName } from '../eval/metrics.js';
export type ManualApproval = z.output<typeof manualApprovalSchema>;
export type WebhookSpec = z.output<typeof webhookSchema>;
export type DeploymentSpec = z.output<typeof deploymentSchema>;
export type MonitoringSpec = z.output<typeof monitoringSchema>;
export type ScheduleSpec = z.output<typeof scheduleSchema>;
export type CanarySettings = NonNullable<DeploymentSpec['canary']>;

/** Formats zod issues as "field.path: message" lines. */
export function formatSpecIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => `${issue.path.length ? issue.path.join('.') : '(spec)'}: ${issue.message}`)
    .join('\n');
}
