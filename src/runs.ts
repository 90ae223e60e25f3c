import { randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import { WorkflowFailedError, type Client, type WorkflowHandle, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { ApplicationFailure, CancelledFailure, TerminatedFailure, TimeoutFailure } from '@temporalio/common';
import type { Config } from './config.js';
import { pipelineWorkflowId } from './shared/constants.js';
import { ErrorType, RunOutcome } from './shared/errors.js';
import { modelSearchAttribute } from './shared/search-attributes.js';
import type { LoadedPipeline } from './spec/load.js';
import { approveUpdate, rejectUpdate, statusQuery, type DecisionRequest, type DecisionResult, type PipelineStatus } from '../workflows/messages.js';
import type { modelPipeline, PipelineInput, PipelineResult } from '../workflows/index.js';

export type PipelineHandle = WorkflowHandleWithFirstExecutionRunId<typeof modelPipeline>;

export function currentUser(): string {
  return process.env.CONVEYOR_USER ?? userInfo().username;
}

export async function startPipeline(
  client: Client,
  config: Config,
  pipeline: LoadedPipeline,
  opts: { submittedBy?: string; workflowId?: string } = {},
): Promise<PipelineHandle> {
  const input: PipelineInput = {
    spec: pipeline.spec,
    code: pipeline.code,
    submittedBy: opts.submittedBy ?? currentUser(),
    trainingTaskQueue: config.taskQueues.training,
  };
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return client.workflow.start<typeof modelPipeline>('modelPipeline', {
    taskQueue: config.taskQueues.pipeline,
    workflowId: opts.workflowId ?? pipelineWorkflowId(pipeline.spec.name, `${stamp}-${randomUUID().slice(0, 8)}`),
    args: [input],
    typedSearchAttributes: [{ key: modelSearchAttribute, value: pipeline.spec.name }],
  });
}

export interface RunEnd {
  outcome: RunOutcome;
  result?: PipelineResult;
  message?: string;
  failureType?: string;
}

/** Waits for the run and maps how it ended onto a stable outcome (and CLI exit code). */
export async function waitForRun(handle: WorkflowHandle): Promise<RunEnd> {
  try {
    const result = (await handle.result()) as PipelineResult;
    return { outcome: result.outcome, result };
  } catch (err) {
    if (!(err instanceof WorkflowFailedError)) throw err;
    return describeFailure(err.cause);
  }
}

export function describeFailure(cause: unknown): RunEnd {
  if (cause instanceof CancelledFailure) return { outcome: RunOutcome.Cancelled, message: 'run was cancelled' };
  if (cause instanceof TerminatedFailure) return { outcome: RunOutcome.Failed, message: 'run was terminated' };
  if (cause instanceof TimeoutFailure) return { outcome: RunOutcome.Failed, message: 'run timed out' };
  // An activity failure wraps the ApplicationFailure that says what went wrong.
  let inner: unknown = cause;
  while (inner instanceof Error && !(inner instanceof ApplicationFailure) && inner.cause) inner = inner.cause;
  const failure = inner instanceof ApplicationFailure ? inner : undefined;
  const outcomes: Record<string, RunOutcome> = {
    [ErrorType.DataValidation]: RunOutcome.DataInvalid,
    [ErrorType.GateFailed]: RunOutcome.GateFailed,
    [ErrorType.ApprovalRejected]: RunOutcome.Rejected,
    [ErrorType.ApprovalExpired]: RunOutcome.Expired,
  };
  return {
    outcome: (failure?.type && outcomes[failure.type]) || RunOutcome.Failed,
    message: failure?.message ?? (cause instanceof Error ? cause.message : String(cause)),
    ...(failure?.type ? { failureType: failure.type } : {}),
  };
}

export async function runStatus(handle: WorkflowHandle): Promise<PipelineStatus> {
  return handle.query(statusQuery);
}

/**
 * Finds the run awaiting a decision on model@version. Queries need a worker polling the
 * run's task queue; when some runs could not be queried and none matched, that is the
 * error reported, not "no run is awaiting".
 */
export async function findAwaitingRun(client: Client, model: string, version: number): Promise<WorkflowHandle<typeof modelPipeline>> {
  const query = `${modelSearchAttribute.name} = '${model.replace(/'/g, '')}' AND ExecutionStatus = 'Running'`;
  const failures: Array<{ workflowId: string; taskQueue: string; error: unknown }> = [];
  for await (const execution of client.workflow.list({ query })) {
    const handle = client.workflow.getHandle<typeof modelPipeline>(execution.workflowId, execution.runId);
    let status: PipelineStatus;
    try {
      status = await handle.query(statusQuery);
    } catch (error) {
      failures.push({ workflowId: execution.workflowId, taskQueue: execution.taskQueue, error });
      continue;
    }
    if (status.awaitingApproval?.version === version) return handle;
  }
  const first = failures[0];
  if (first) {
    const err = first.error;
    const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
    const message = err instanceof Error ? `${err.message}${cause}` : String(err);
    throw new Error(
      `could not query ${failures.length} running run(s) of ${model} to find the one awaiting a decision on version ${version} ` +
        `(is a worker running on task queue ${first.taskQueue}?): ${first.workflowId}: ${message}`,
    );
  }
  throw new Error(`no run of ${model} is awaiting a decision on version ${version}`);
}

export async function decide(
  handle: WorkflowHandle,
  kind: 'approve' | 'reject',
  request: Omit<DecisionRequest, 'sha256'> & { sha256?: string },
): Promise<DecisionResult> {
  const status = await handle.query(statusQuery);
  const sha256 = request.sha256 ?? status.awaitingApproval?.sha256 ?? status.artifactSha256 ?? '';
  const update = kind === 'approve' ? approveUpdate : rejectUpdate;
  // The update id makes a repeated decision idempotent: Temporal returns the first result.
  return handle.executeUpdate(update, {
    args: [{ ...request, sha256 }],
    updateId: `${kind}-${request.model}-${request.version}-${request.reviewer}`,
  });
}
