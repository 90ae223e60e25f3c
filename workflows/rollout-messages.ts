import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { RolloutOutcome, RolloutStep } from '../src/shared/registry-types.js';
import type { DeploymentStrategy } from '../src/spec/schema.js';

export const ROLLOUT_STATES = ['validating', 'running', 'paused', 'awaiting_decision', 'promoting', 'rolling_back', 'done'] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];

export interface RolloutStatus {
  rolloutId: string;
  model: string;
  /** The alias the candidate is promoted to at the end. */
  alias: string;
  version: number;
  sha256: string;
  strategy: DeploymentStrategy;
  requestedBy: string;
  state: RolloutState;
  /** Share of traffic on the candidate now (100 for shadow: every request is copied). */
  percent: number;
  productionVersion: number | null;
  steps: RolloutStep[];
  lastAnalysis?: { at: string; verdict: string; summary: string; requests: { production: number; candidate: number } };
  /** When a shadow or A/B rollout stops waiting for a decision (then it ends, production unchanged). */
  decisionDeadline?: string;
  outcome?: RolloutOutcome;
  reason?: string;
}

/** Who asks, as established by whoever authenticated them (the API, or the CLI's operator). */
export interface RolloutControlRequest {
  by: string;
  reason?: string;
}

export const rolloutStatusQuery = defineQuery<RolloutStatus>('rolloutStatus');
/** Canary: skip the remaining steps. Shadow and A/B: the decision to promote. */
export const promoteRolloutUpdate = defineUpdate<RolloutStatus, [RolloutControlRequest]>('promoteRollout');
/** Canary only: hold at the current share (health checks go on). */
export const pauseRolloutUpdate = defineUpdate<RolloutStatus, [RolloutControlRequest]>('pauseRollout');
export const resumeRolloutUpdate = defineUpdate<RolloutStatus, [RolloutControlRequest]>('resumeRollout');
/** Undo every step taken; production stays as it was. */
export const abortRolloutUpdate = defineUpdate<RolloutStatus, [RolloutControlRequest]>('abortRollout');

/** One rollout at a time per model: its workflow id is fixed. */
export function rolloutWorkflowId(model: string): string {
  return `rollout-${model}`;
}
