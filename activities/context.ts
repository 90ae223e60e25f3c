import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Context } from '@temporalio/activity';
import type { Logger } from '../src/logger.js';

/** A pino child logger carrying the workflow and run ids of the current activity. */
export function activityLogger(base: Logger): Logger {
  const { info } = Context.current();
  return base.child({
    workflowId: info.workflowExecution?.workflowId,
    runId: info.workflowExecution?.runId,
    activity: info.activityType,
    attempt: info.attempt,
  });
}

/** A scratch directory private to this activity attempt, removed afterwards. */
export async function withScratchDir<T>(root: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const { info } = Context.current();
  const dir = join(
    root,
    'scratch',
    `${info.workflowExecution?.workflowId ?? 'standalone'}-${info.workflowExecution?.runId ?? info.activityId}`.replace(/[^A-Za-z0-9_.-]/g, '_'),
    `${info.activityId}-${info.attempt}`,
  );
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** How often a long activity reports liveness, well inside any heartbeat timeout. */
export const LIVENESS_INTERVAL_MS = 5_000;

/**
 * Heartbeats for the whole body of a long activity (downloads, DuckDB, uploads),
 * not only its middle, so a slow transfer is not mistaken for a dead worker.
 * `details` supplies the latest progress to report.
 */
export async function withHeartbeat<T>(fn: () => Promise<T>, details: () => unknown = () => undefined): Promise<T> {
  const ctx = Context.current();
  ctx.heartbeat(details());
  const timer = setInterval(() => ctx.heartbeat(details()), LIVENESS_INTERVAL_MS);
  try {
    return await fn();
  } finally {
    clearInterval(timer);
  }
}
