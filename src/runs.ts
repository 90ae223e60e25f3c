import { randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import { WorkflowFailedError, type Client, type WorkflowHandle, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { ApplicationFailure, CancelledFailure, TerminatedFailure, TimeoutFailure } from '@temporalio/common';
import type { Config } from './config.js';
import { pipelineWorkflowId } from './shared/constants.js';
import { OUTCOME_BY_ERROR_TYPE, RunOutcome } from './shared/errors.js';
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
  return {
    outcome: (failure?.type && OUTCOME_BY_ERROR_TYPE[failure.type]) || RunOutcome.Failed,
    message: failure?.message ?? (cause instanceof Error ? cause.message : String(cause)),
    ...(failure?.type ? { failureType: failure.type } : {}),
  };
}

export async function runStatus(handle: WorkflowHandle): Promise<PipelineStatus> {
  return handle.query(statusQuery);
}

export async function decide(
  handle: WorkflowHandle,
  kind: 'approve' | 'reject',
  request: Omit<DecisionRequest, 'sha256'> & { sha256?: string },
): Promise<DecisionResult> {
  // Only ask the run for the candidate's hash when the caller did not bind the decision to one.
  const sha256 = request.sha256 ?? (await candidateSha256(handle));
  const update = kind === 'approve' ? approveUpdate : rejectUpdate;
  return handle.executeUpdate(update, { args: [{ ...request, sha256 }], updateId: decisionUpdateId(kind, request.model, request.version, request.reviewer) });
}

async function candidateSha256(handle: WorkflowHandle): Promise<string> {
  const status = await handle.query(statusQuery);
  return status.awaitingApproval?.sha256 ?? status.artifactSha256 ?? '';
}

/** One decision per reviewer, kind and version: a repeat with this id gets Temporal's first result. */
export function decisionUpdateId(kind: 'approve' | 'reject', model: string, version: number, reviewer: string): string {
  return `${kind}-${model}-${version}-${reviewer}`;
}
