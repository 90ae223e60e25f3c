/** Registry records. Pure types: workflows, activities, CLI and serving share them. */
export interface DatasetRef {
  sha256: string;
  key: string;
  source: string;
  format: 'csv' | 'parquet';
  size: number;
}

export interface SplitRef {
  seed: number;
  holdoutFraction: number;
  trainKey: string;
  holdoutKey: string;
  trainRows: number;
  holdoutRows: number;
  /** Reference profile of the training split for drift monitoring (src/monitoring/reference.ts). */
  referenceKey?: string;
}

export interface ModelArtifactRef {
  sha256: string;
  key: string;
  size: number;
  metadataKey: string;
  framework: string;
  algorithm: string;
}

export interface GateResult {
  gate: string;
  metric: string;
  actual: number | null;
  threshold: number;
  passed: boolean;
  reason?: string;
}

export interface CodeVersion {
  specHash: string;
  gitCommit: string | null;
  gitDirty: boolean;
  pipelineFile: string | null;
}

export interface ModelVersionRecord {
  schemaVersion: 1;
  model: string;
  version: number;
  createdAt: string;
  task: 'classification' | 'regression';
  target: string;
  features: string[];
  artifact: ModelArtifactRef;
  data: DatasetRef & { profileKey: string; rowCount: number; split: SplitRef };
  trainer: { kind: 'command' | 'typescript'; entry: string; params: Record<string, unknown>; codeHashes: Record<string, string> };
  code: CodeVersion;
  evaluation: {
    reportKey: string;
    metrics: Record<string, number | null>;
    gates: GateResult[];
    production: { version: number; metrics: Record<string, number | null> } | null;
    /** Reference profile of the holdout predictions (prediction-drift monitoring). */
    predictionReferenceKey?: string;
  };
  run: { workflowId: string; runId: string; submittedBy: string; trigger?: RunTrigger };
  description?: string;
}

/** Why a pipeline run started: by hand, on a timetable, or because a monitor reported decay. */
export interface RunTrigger {
  kind: 'manual' | 'schedule' | 'decay';
  /** The schedule that started it. */
  scheduleId?: string;
  /** The monitor result that reported decay (an object key), and what it found. */
  monitorResultKey?: string;
  reason?: string;
}

/** One move of an alias. The newest entry of an alias's log is where it points; the log is the deployment history. */
export interface AliasRecord {
  model: string;
  alias: string;
  /** Position in the alias's log, from 1. */
  seq: number;
  version: number;
  sha256: string;
  strategy: string;
  updatedAt: string;
  /** Same instant as updatedAt: when this version started serving under the alias. */
  deployedAt: string;
  previousVersion: number | null;
  run: { workflowId: string; runId: string };
  /** The rollout that made this move (canary, shadow or A/B promotion, or its undo). */
  rolloutId?: string;
  /** Who asked, for moves made by hand (`conveyor rollback`). */
  by?: string;
  reason?: string;
}

export type DeploymentRecord = AliasRecord;

export const TRAFFIC_MODES = ['none', 'canary', 'shadow', 'ab'] as const;
export type TrafficMode = (typeof TRAFFIC_MODES)[number];

/**
 * How serving splits a model's traffic besides its production alias. An append-only
 * log like an alias: entry N+1 is created only if absent. `none` = production only.
 */
export interface TrafficRecord {
  model: string;
  seq: number;
  mode: TrafficMode;
  /** The version taking a share (canary, ab) or copies (shadow) of traffic. */
  candidate: { version: number; sha256: string } | null;
  /** Share of traffic (percent) routed to the candidate; 100 for shadow (every request copied). */
  percent: number;
  rolloutId: string | null;
  /** Which step of the rollout wrote this entry, e.g. "canary-25", "shadow", "cleared". Makes writes retry-safe. */
  step: string;
  workflowId: string | null;
  updatedAt: string;
  reason?: string;
}

export const ROLLOUT_OUTCOMES = ['promoted', 'rolled_back', 'aborted', 'refused'] as const;
export type RolloutOutcome = (typeof ROLLOUT_OUTCOMES)[number];

/** The record a finished rollout leaves in the registry's deployment history. */
export interface RolloutRecord {
  rolloutId: string;
  model: string;
  version: number;
  sha256: string;
  strategy: string;
  alias: string;
  outcome: RolloutOutcome;
  reason: string;
  productionVersion: number | null;
  startedAt: string;
  endedAt: string;
  workflowId: string;
  /** Who started it (the pipeline run's submitter). */
  requestedBy?: string;
  /** Steps taken, in order, with what each analysis found. */
  steps: RolloutStep[];
  /** Objects holding the analyses and reports (pre-deployment validation, shadow comparison). */
  reports: string[];
  decidedBy?: string;
}

export interface RolloutStep {
  step: string;
  percent: number;
  startedAt: string;
  endedAt?: string;
  verdict?: string;
  summary?: string;
}

export interface DecisionRecord {
  model: string;
  version: number;
  sha256: string;
  decision: 'approved' | 'rejected' | 'expired' | 'auto';
  by: string[];
  comment: string | null;
  decidedAt: string;
  run: { workflowId: string; runId: string };
}
