import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { StageName, StageState } from '../src/shared/constants.js';
import type { GateResult } from '../src/shared/registry-types.js';
import type { RunOutcome } from '../src/shared/errors.js';

export interface StageStatus {
  state: StageState;
  startedAt?: string;
  endedAt?: string;
  detail?: string;
}

export interface AwaitingApproval {
  model: string;
  version: number;
  sha256: string;
  /** Who may decide now (escalation adds to these). */
  reviewers: string[];
  groups: string[];
  quorum: number;
  approvals: Array<{ reviewer: string; at: string; comment: string | null }>;
  escalated: boolean;
  submittedBy: string;
  deadline: string;
}

export interface PipelineStatus {
  model: string;
  stage: StageName | 'done';
  outcome: RunOutcome;
  stages: Record<StageName, StageStatus>;
  dataVersion?: string;
  version?: number;
  artifactSha256?: string;
  metrics?: Record<string, number | null>;
  gates?: GateResult[];
  awaitingApproval?: AwaitingApproval;
  /** Set while a canary, shadow or A/B rollout deploys this run's version. */
  rollout?: { workflowId: string; rolloutId: string };
  /** The model's schedules after deployment (monitor-<model>, retrain-<model>); unset when they could not be set. */
  schedules?: string[];
  error?: string;
}

export interface PipelineProgress {
  stage: StageName | 'done';
  completedStages: number;
  totalStages: number;
}

/** A decision names exactly what it decides: model, version and artifact hash. */
export interface DecisionRequest {
  model: string;
  version: number;
  sha256: string;
  reviewer: string;
  /** The reviewer's groups, as established by whoever authenticated them (the API). */
  groups?: string[];
  comment?: string;
}

export interface DecisionResult {
  /** 'approval_recorded': counted toward the quorum, which is not reached yet. */
  decision: 'approved' | 'rejected' | 'approval_recorded';
  model: string;
  version: number;
  reviewer: string;
  decidedAt: string;
  approvals: number;
  quorum: number;
}

export const statusQuery = defineQuery<PipelineStatus>('status');
export const progressQuery = defineQuery<PipelineProgress>('progress');
export const approveUpdate = defineUpdate<DecisionResult, [DecisionRequest]>('approve');
export const rejectUpdate = defineUpdate<DecisionResult, [DecisionRequest]>('reject');
