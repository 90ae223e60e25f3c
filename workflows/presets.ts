import type { ActivityOptions } from '@temporalio/workflow';
import { NON_RETRYABLE_ERROR_TYPES } from '../src/shared/errors.js';
import type { TrainerSpec } from '../src/spec/schema.js';

/**
 * One preset per kind of step. Infrastructure failures (MinIO or a worker down)
 * are retried with backoff long enough to ride out a restart; data and gate
 * failures are never retried.
 */
const infraRetry = {
  initialInterval: '1s',
  backoffCoefficient: 2,
  maximumInterval: '30s',
  maximumAttempts: 30,
  nonRetryableErrorTypes: [...NON_RETRYABLE_ERROR_TYPES],
};

export const quickPreset: ActivityOptions = {
  startToCloseTimeout: '30s',
  retry: infraRetry,
};

export const dataPreset: ActivityOptions = {
  startToCloseTimeout: '15m',
  heartbeatTimeout: '2m',
  retry: infraRetry,
};

export const evaluationPreset: ActivityOptions = {
  startToCloseTimeout: '15m',
  heartbeatTimeout: '2m',
  retry: infraRetry,
};

export const deploymentPreset: ActivityOptions = {
  startToCloseTimeout: '1m',
  retry: infraRetry,
};

/** Analysis of a rollout window: downloads part of the prediction log and queries it with DuckDB. */
export const analysisPreset: ActivityOptions = {
  startToCloseTimeout: '10m',
  heartbeatTimeout: '1m',
  retry: infraRetry,
};

export function trainingPreset(trainer: TrainerSpec, taskQueue: string): ActivityOptions {
  return {
    taskQueue,
    startToCloseTimeout: trainer.timeout,
    heartbeatTimeout: trainer.heartbeatTimeout,
    retry: {
      initialInterval: '2s',
      backoffCoefficient: 2,
      maximumInterval: '1m',
      maximumAttempts: trainer.retries + 1,
      nonRetryableErrorTypes: [...NON_RETRYABLE_ERROR_TYPES],
    },
  };
}

/** Webhooks: retried durably with backoff for about a day; a receiver that stays down loses nothing else. */
export const notificationPreset: ActivityOptions = {
  startToCloseTimeout: '30s',
  retry: {
    initialInterval: '5s',
    backoffCoefficient: 2,
    maximumInterval: '10m',
    maximumAttempts: 150,
    nonRetryableErrorTypes: ['WebhookRefusedError'],
  },
};
