import { posix } from 'node:path';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/common';
import type { WorkflowExecutionDescription, WorkflowHandle } from '@temporalio/client';
import type { Identity } from '../auth/tokens.js';
import { pipelineWorkflowId } from '../shared/constants.js';
import type { CodeVersion } from '../shared/registry-types.js';
import { modelSearchAttribute } from '../shared/search-attributes.js';
import { InvalidSpecError, parsePipelineSpec } from '../spec/define.js';
import { specHash } from '../spec/load.js';
import type { PipelineSpec } from '../spec/schema.js';
import { startPipeline } from '../runs.js';
import { statusQuery, type PipelineStatus } from '../../workflows/messages.js';
import type { modelPipeline } from '../../workflows/index.js';
import type { ApiDeps } from './deps.js';
import { conflict, invalid, notFound, type Issue } from './http.js';

export const PIPELINE_WORKFLOW_TYPE = 'modelPipeline';
const DEFAULT_QUERY_TIMEOUT_MS = 5000;

function specIssues(err: InvalidSpecError): Issue[] {
  return err.issues
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const at = line.indexOf(': ');
      const path = at < 0 ? '' : line.slice(0, at);
      return { field: path === '' || path === '(spec)' ? 'spec' : `spec.${path}`, message: at < 0 ? line : line.slice(at + 2) };
    });
}

// Percent-encoded bytes, control characters, backslashes and dot segments have no
// business in a path the worker opens on behalf of an API caller.
function pathProblem(path: string): string | null {
  if (/[\u0000-\u001f\u007f]/.test(path)) return 'must not contain control characters';
  if (path.includes('\\')) return 'must not contain backslashes';
  if (/%[0-9a-f]{2}/i.test(path)) return 'must not contain percent-encoded characters';
  if (path.split('/').some((s) => s === '..' || s === '.')) return 'must not contain "." or ".." path segments';
  return null;
}

const SCRIPT = /\.(py|mjs|cjs|js|ts|sh|bash|r|jl|rb|pl)$/i;

/**
 * The API has no base directory, so every path in a spec submitted through it must be
 * absolute (on the worker's filesystem) or an s3:// URL; relative paths are refused
 * rather than resolved against whatever the API process's working directory is.
 */
export function apiPathIssues(spec: PipelineSpec): Issue[] {
  const issues: Issue[] = [];
  const source = spec.dataset.source;
  if (source.startsWith('s3://')) {
    const problem = pathProblem(source.slice('s3://'.length));
    if (problem) issues.push({ field: 'spec.dataset.source', message: problem });
  } else if (!posix.isAbsolute(source)) {
    issues.push({ field: 'spec.dataset.source', message: 'must be an absolute path or an s3:// URL (the API has no base directory for relative paths)' });
  } else {
    const problem = pathProblem(source);
    if (problem) issues.push({ field: 'spec.dataset.source', message: problem });
  }
  if (spec.trainer.kind === 'command') {
    spec.trainer.command.forEach((arg, i) => {
      const field = `spec.trainer.command.${i}`;
      if (/^\{[a-z_]+\}$/.test(arg)) return; // placeholder such as {python}
      // A flag's value ("--data=./x.csv") is checked like an argument of its own.
      const value = arg.startsWith('-') ? arg.slice(arg.indexOf('=') + 1 || arg.length) : arg;
      if (value === '') return;
      if (value.includes('\\')) return issues.push({ field, message: 'must not contain backslashes' });
      if (value.includes('/') || SCRIPT.test(value) || value === '.' || value === '..' || value.startsWith('~')) {
        if (value.startsWith('s3://')) return issues.push({ field, message: 'trainer arguments are local paths; s3:// is for the dataset source' });
        if (!posix.isAbsolute(value)) {
          return issues.push({ field, message: `"${value}" looks like a relative path; use an absolute path on the worker (the API has no base directory)` });
        }
        const problem = pathProblem(value);
        if (problem) issues.push({ field, message: problem });
      }
      return undefined;
    });
  }
  return issues;
}

/** Validates a spec submitted through the API (the API's path rules are `checkApiPaths`, after the operate check). */
export function parseApiSpec(raw: unknown): PipelineSpec {
  try {
    return parsePipelineSpec(raw);
  } catch (err) {
    if (err instanceof InvalidSpecError) throw invalid(specIssues(err));
    throw err;
  }
}

export function checkApiPaths(spec: PipelineSpec): void {
  const issues = apiPathIssues(spec);
  if (issues.length) throw invalid(issues);
}

/**
 * A workflow id chosen through the API must be one of the model's own pipeline ids
 * (`pipeline-<model>-…`), so it can never take the id of another kind of workflow
 * (e.g. the `notify-…` webhook deliveries) or look like another kind of run.
 */
export function checkApiWorkflowId(model: string, workflowId: string | undefined): void {
  if (workflowId === undefined) return;
  const prefix = pipelineWorkflowId(model, '');
  if (!workflowId.startsWith(prefix) || workflowId.length === prefix.length) {
    throw invalid([{ field: 'workflowId', message: `must start with "${prefix}" followed by at least one character (the pipeline runs of model "${model}")` }]);
  }
}

export async function startApiRun(
  deps: ApiDeps,
  caller: Identity,
  spec: PipelineSpec,
  opts: { workflowId?: string; code?: { gitCommit?: string | null; gitDirty?: boolean; pipelineFile?: string | null } },
): Promise<{ workflowId: string; runId: string; model: string }> {
  // No git lookup here: the API's own checkout says nothing about where the spec came from.
  const code: CodeVersion = {
    specHash: specHash(spec),
    gitCommit: opts.code?.gitCommit ?? null,
    gitDirty: opts.code?.gitDirty ?? false,
    pipelineFile: opts.code?.pipelineFile ?? null,
  };
  try {
    const handle = await startPipeline(deps.client, deps.config, { spec, code, file: '' }, {
      submittedBy: caller.identity,
      ...(opts.workflowId ? { workflowId: opts.workflowId } : {}),
    });
    return { workflowId: handle.workflowId, runId: handle.firstExecutionRunId, model: spec.name };
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) throw conflict(`a run with workflow id "${opts.workflowId ?? ''}" is already running`);
    throw err;
  }
}

interface DescribedRun {
  handle: WorkflowHandle<typeof modelPipeline>;
  desc: WorkflowExecutionDescription;
  model: string;
}

/**
 * The latest run with this workflow id, if it is a pipeline run of this deployment
 * (same namespace and pipeline task queue); anything else is "not found".
 */
export async function describeRun(deps: ApiDeps, workflowId: string): Promise<DescribedRun> {
  const handle = deps.client.workflow.getHandle<typeof modelPipeline>(workflowId);
  let desc: WorkflowExecutionDescription;
  try {
    desc = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw notFound(`no pipeline run "${workflowId}"`);
    throw err;
  }
  const model = desc.typedSearchAttributes.get(modelSearchAttribute);
  if (desc.type !== PIPELINE_WORKFLOW_TYPE || desc.taskQueue !== deps.config.taskQueues.pipeline || !model) {
    throw notFound(`no pipeline run "${workflowId}"`);
  }
  return { handle, desc, model };
}

/** The status query, bounded in time: without a worker a query would wait for one. */
export async function queryStatus(deps: ApiDeps, handle: WorkflowHandle): Promise<PipelineStatus> {
  const ms = deps.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
  return deps.client.withDeadline(Date.now() + ms, () => handle.query(statusQuery));
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
