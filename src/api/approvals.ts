import { WorkflowNotFoundError } from '@temporalio/common';
import type { z } from 'zod';
import type { Identity } from '../auth/tokens.js';
import { VersionNotFoundError } from '../registry/registry.js';
import type { ModelVersionRecord } from '../shared/registry-types.js';
import { modelSearchAttribute } from '../shared/search-attributes.js';
import { approveUpdate, rejectUpdate, type AwaitingApproval, type DecisionRequest, type DecisionResult, type PipelineStatus } from '../../workflows/messages.js';
import type { modelPipeline } from '../../workflows/index.js';
import type { ApiDeps } from './deps.js';
import { badRequest, notFound } from './http.js';
import { errorText, PIPELINE_WORKFLOW_TYPE, queryStatus } from './pipeline-runs.js';
import type { Authorizer } from './policy.js';
import type { approvalItem, decisionResponse, metricComparison } from './schemas.js';
import { decisionUpdateId } from '../runs.js';

/** Bounds the work of one listing; a namespace with more running pipelines needs paging (not yet). */
const MAX_RUNS_LISTED = 500;
const QUERY_CONCURRENCY = 8;

export type ApprovalItem = z.output<typeof approvalItem>;

/** Whether the run's approval policy lets `caller` decide now (the workflow's validator has the last word). */
export function mayDecide(awaiting: AwaitingApproval, caller: Identity): boolean {
  if (awaiting.submittedBy === caller.identity) return false; // four-eyes
  if ((awaiting.approvals ?? []).some((a) => a.reviewer === caller.identity)) return false; // already counted
  const groups = awaiting.groups ?? [];
  return awaiting.reviewers.includes(caller.identity) || caller.groups.some((g) => groups.includes(g));
}

export function compareMetrics(
  candidate: Record<string, number | null>,
  production: Record<string, number | null> | undefined,
): Array<z.output<typeof metricComparison>> {
  const names = [...new Set([...Object.keys(candidate), ...Object.keys(production ?? {})])].filter((m) => m !== 'support');
  return names.map((metric) => {
    const c = candidate[metric] ?? null;
    const p = production?.[metric] ?? null;
    return { metric, candidate: c, production: p, delta: c !== null && p !== null ? c - p : null };
  });
}

async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * Running pipeline runs of this deployment that await a decision the caller may make
 * (by the run's approval policy and by the API policy), each with the candidate's
 * metrics beside production's on the same holdout. Runs that did not answer are
 * listed as unavailable only when the caller may read their model (an unknown model:
 * admins only), so the listing reveals nothing about models the caller cannot see.
 */
export async function listApprovals(
  deps: ApiDeps,
  authz: Authorizer,
  caller: Identity,
): Promise<{ approvals: ApprovalItem[]; unavailable: Array<{ workflowId: string; error: string }> }> {
  const runs: Array<{ workflowId: string; runId: string; model: string | undefined }> = [];
  const query = `ExecutionStatus = 'Running' AND WorkflowType = '${PIPELINE_WORKFLOW_TYPE}'`;
  for await (const execution of deps.client.workflow.list({ query })) {
    // The namespace may be shared: only runs on this deployment's task queue are ours.
    if (execution.type !== PIPELINE_WORKFLOW_TYPE || execution.taskQueue !== deps.config.taskQueues.pipeline) continue;
    const model = execution.typedSearchAttributes.get(modelSearchAttribute) || undefined;
    runs.push({ workflowId: execution.workflowId, runId: execution.runId, model });
    if (runs.length >= MAX_RUNS_LISTED) break;
  }
  const mayRead = (model: string | undefined): boolean => (model ? authz.can(caller, 'read', model) : authz.isAdmin(caller));

  const unavailable: Array<{ workflowId: string; error: string }> = [];
  const found = await mapBounded(runs, QUERY_CONCURRENCY, async (run): Promise<ApprovalItem | null> => {
    // Nothing is asked of a run the caller could not see anyway.
    if (!mayRead(run.model)) return null;
    const handle = deps.client.workflow.getHandle<typeof modelPipeline>(run.workflowId, run.runId);
    let status: PipelineStatus;
    try {
      status = await queryStatus(deps, handle);
    } catch (err) {
      unavailable.push({ workflowId: run.workflowId, error: errorText(err) });
      return null;
    }
    const awaiting = status.awaitingApproval;
    if (!awaiting || !mayDecide(awaiting, caller)) return null;
    // The model the decision route will check: the API policy must let the caller decide it.
    if ((run.model !== undefined && awaiting.model !== run.model) || !authz.canDecide(caller, awaiting.model)) return null;
    let record: ModelVersionRecord | null = null;
    try {
      record = await deps.registry.getVersion(awaiting.model, awaiting.version);
    } catch (err) {
      if (!(err instanceof VersionNotFoundError)) throw err;
    }
    const candidate = status.metrics ?? record?.evaluation.metrics ?? {};
    const production = record?.evaluation.production ?? null;
    return {
      workflowId: run.workflowId,
      runId: run.runId,
      model: awaiting.model,
      version: awaiting.version,
      sha256: awaiting.sha256,
      submittedBy: awaiting.submittedBy,
      deadline: awaiting.deadline,
      reviewers: awaiting.reviewers,
      groups: awaiting.groups ?? [],
      quorum: awaiting.quorum ?? 1,
      approvals: awaiting.approvals ?? [],
      escalated: awaiting.escalated ?? false,
      dataVersion: status.dataVersion ?? record?.data.sha256 ?? null,
      metrics: { candidate, production },
      comparison: compareMetrics(candidate, production?.metrics),
      gates: status.gates ?? record?.evaluation.gates ?? [],
    };
  });
  const approvals = found.filter((a): a is ApprovalItem => a !== null).sort((a, b) => a.deadline.localeCompare(b.deadline));
  return { approvals, unavailable };
}

/**
 * Approves or rejects model@version as the authenticated caller. The run is the one
 * the version record names (only it can await a decision on that version); the
 * decision carries the caller's identity and groups as authenticated, never as
 * claimed, and the workflow's validator applies the run's approval policy.
 */
export async function decideVersion(
  deps: ApiDeps,
  caller: Identity,
  kind: 'approve' | 'reject',
  model: string,
  version: number,
  body: { comment?: string | undefined; sha256?: string | undefined },
): Promise<z.output<typeof decisionResponse>> {
  const comment = body.comment?.trim() || undefined;
  if (kind === 'reject' && !comment) throw badRequest('comment: a rejection needs a comment', { issues: [{ field: 'comment', message: 'a rejection needs a comment' }] });
  const awaitingNone = `no run is awaiting a decision on ${model}@${version}`;

  let record: ModelVersionRecord;
  try {
    record = await deps.registry.getVersion(model, version);
  } catch (err) {
    if (err instanceof VersionNotFoundError) throw notFound(`${awaitingNone}: the version does not exist`);
    throw err;
  }
  const { workflowId, runId } = record.run;
  const handle = deps.client.workflow.getHandle<typeof modelPipeline>(workflowId, runId);
  // Same id as the CLI's decide(): a repeated decision is idempotent, whoever sends it.
  const updateId = decisionUpdateId(kind, model, version, caller.identity);

  // The same request again (same update id) answers with the first result, even after the run moved on.
  // (A refused update, WorkflowUpdateFailedError, is a 403 from the error handler.)
  const first = await handle
    .getUpdateHandle<DecisionResult>(updateId)
    .result()
    .catch((err: unknown) => {
      if (err instanceof WorkflowNotFoundError) return null;
      throw err;
    });
  if (first) return { ...first, workflowId, runId };

  let status: PipelineStatus;
  try {
    status = await queryStatus(deps, handle);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw notFound(awaitingNone);
    throw err;
  }
  const awaiting = status.awaitingApproval;
  if (!awaiting || awaiting.model !== model || awaiting.version !== version) {
    const decided = await deps.registry.getDecision(model, version);
    const why = decided ? ` (${decided.decision}${decided.by.length ? ` by ${decided.by.join(', ')}` : ''} at ${decided.decidedAt})` : ` (run ${workflowId} is ${status.outcome})`;
    throw notFound(`${awaitingNone}${why}`);
  }

  const request: DecisionRequest = {
    model,
    version,
    sha256: body.sha256 ?? awaiting.sha256,
    reviewer: caller.identity,
    groups: [...caller.groups],
    ...(comment ? { comment } : {}),
  };
  // Not runs.decide(): it queries the status again for a sha256 this request already has.
  const result = await handle.executeUpdate(kind === 'approve' ? approveUpdate : rejectUpdate, { args: [request], updateId });
  return { ...result, workflowId, runId };
}
