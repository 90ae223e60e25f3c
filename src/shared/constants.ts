/** Task queues and id builders, shared by the worker, the CLI, the API and tests. */
export const TASK_QUEUES = {
  /** Workflows and light activities (data, evaluation, registry). */
  pipeline: 'conveyor-pipeline',
  /** Training runs here so heavy work can be placed on its own machines. */
  training: 'conveyor-training',
} as const;

export const SEARCH_ATTRIBUTES = {
  model: 'ConveyorModel',
  stage: 'ConveyorStage',
} as const;

export const ALIASES = { production: 'production' } as const;

/** Runs of one model share a prefix so `temporal workflow list` can find them. */
export function pipelineWorkflowId(model: string, suffix: string): string {
  return `pipeline-${model}-${suffix}`;
}

/** Stage names, in order. */
export const STAGES = ['validate', 'train', 'evaluate', 'register', 'approve', 'deploy'] as const;
export type StageName = (typeof STAGES)[number];

export const STAGE_STATE = {
  pending: 'pending',
  running: 'running',
  done: 'done',
  failed: 'failed',
  skipped: 'skipped',
} as const;
export type StageState = (typeof STAGE_STATE)[keyof typeof STAGE_STATE];
