import { RunOutcome } from '../shared/errors.js';
import { waitForRun } from '../runs.js';
import { decideVersion, listApprovals } from './approvals.js';
import { conflict, defineRoute, ok, type RouteSpec } from './http.js';
import { checkApiPaths, checkApiWorkflowId, describeRun, errorText, parseApiSpec, queryStatus, startApiRun } from './pipeline-runs.js';
import * as s from './schemas.js';

const errors = (more: Record<number, string> = {}) =>
  Object.fromEntries(Object.entries(more).map(([status, description]) => [status, { description, schema: s.errorResponse }]));

export const runRoutes: RouteSpec[] = [
  defineRoute({
    method: 'GET',
    path: '/v1/whoami',
    operationId: 'whoami',
    summary: 'The authenticated identity and its groups',
    tag: 'identity',
    access: 'authenticated',
    responses: { 200: { description: 'Who the token belongs to.', schema: s.whoamiResponse } },
    handler: async ({ caller, authz }) =>
      ok({ identity: caller.identity, groups: caller.groups, admin: authz.isAdmin(caller), authorization: authz.mode }),
  }),

  defineRoute({
    method: 'POST',
    path: '/v1/runs',
    operationId: 'startRun',
    summary: 'Start a pipeline run from a spec',
    description:
      'Validates the spec like a pipeline file (400 names every offending field). The API has no base directory, so ' +
      '`dataset.source` must be an absolute path (on the workers) or an s3:// URL, and trainer command arguments that are paths ' +
      'must be absolute; `..` segments, backslashes and percent-encoding are refused. The run is submitted by the authenticated ' +
      'identity (four-eyes: that identity cannot approve it). Needs operate on the spec\'s model. A chosen `workflowId` must ' +
      'start with `pipeline-<model>-` (400 otherwise), so it cannot take the id of another kind of workflow.\n\n' +
      'Production rule: when the API policy sets `production` for the model (its own entry, else `*`), a spec whose ' +
      '`deployment.alias` is `production` (the default) is refused with 403 naming the rule unless `approval.mode` is `manual`, ' +
      '`approval.quorum` is at least `production.minQuorum`, and, when `production.approverGroups` is set, every approval group ' +
      '(escalation groups included) is one of them and no individual reviewers are named: the submitter cannot choose who ' +
      'approves a production deployment. Members of `admin` are NOT exempt from this rule.',
    tag: 'runs',
    access: 'operate',
    body: s.startRunBody,
    bodyDoc: s.startRunBodyDoc,
    responses: {
      201: { description: 'Started; `Location` is the run\'s status URL.', schema: s.runStartedResponse },
      ...errors({
        400: 'Invalid spec or body (including a `workflowId` outside `pipeline-<model>-`).',
        403: 'No operate right on the model, or the spec breaks the model\'s production rule (the message names it).',
        409: 'A run with this workflow id is running.',
      }),
    },
    handler: async ({ deps, authz, caller, body, authorize }) => {
      const spec = parseApiSpec(body.spec);
      authorize('operate', spec.name);
      checkApiPaths(spec);
      checkApiWorkflowId(spec.name, body.workflowId);
      authz.requireProductionRule(spec);
      const started = await startApiRun(deps, caller, spec, {
        ...(body.workflowId ? { workflowId: body.workflowId } : {}),
        ...(body.code ? { code: body.code } : {}),
      });
      return { status: 201, body: started, headers: { location: `/v1/runs/${encodeURIComponent(started.workflowId)}` } };
    },
  }),

  defineRoute({
    method: 'GET',
    path: '/v1/runs/:workflowId',
    operationId: 'getRun',
    summary: 'Status of a pipeline run',
    description:
      'The status query when a worker answers; for a finished run without a worker, how it ended (from Temporal). Only pipeline ' +
      'runs of this deployment (its pipeline task queue) are visible. Needs read on the run\'s model.',
    tag: 'runs',
    access: 'read',
    params: s.runParams,
    responses: { 200: { description: 'The run.', schema: s.runStateResponse }, ...errors({ 404: 'No such pipeline run.' }) },
    handler: async ({ deps, params, authorize }) => {
      const { handle, desc, model } = await describeRun(deps, params.workflowId);
      authorize('read', model);
      const running = desc.status.name === 'RUNNING';
      let statusError: string | undefined;
      const status = await queryStatus(deps, handle).catch((err: unknown) => {
        statusError = errorText(err);
        return null;
      });
      const end = running ? { outcome: RunOutcome.Running } : await waitForRun(handle);
      return ok({
        workflowId: params.workflowId,
        runId: desc.runId,
        model,
        temporalStatus: desc.status.name,
        startedAt: desc.startTime.toISOString(),
        closedAt: desc.closeTime?.toISOString() ?? null,
        // How Temporal says the run ended is authoritative (a cancelled run's own status says "failed").
        outcome: end.outcome,
        ...('message' in end && end.message ? { message: end.message } : {}),
        result: ('result' in end && end.result) || null,
        status,
        ...(statusError ? { statusError } : {}),
      });
    },
  }),

  defineRoute({
    method: 'POST',
    path: '/v1/runs/:workflowId/cancel',
    operationId: 'cancelRun',
    summary: 'Request cancellation of a running pipeline run',
    description: 'Cancels the run (a running trainer is killed; nothing is deployed). Needs operate on the run\'s model.',
    tag: 'runs',
    access: 'operate',
    params: s.runParams,
    responses: {
      202: { description: 'Cancellation requested.', schema: s.cancelResponse },
      ...errors({ 404: 'No such pipeline run.', 409: 'The run is not running.' }),
    },
    handler: async ({ deps, params, authorize, req }) => {
      const { handle, desc, model } = await describeRun(deps, params.workflowId);
      authorize('operate', model);
      if (desc.status.name !== 'RUNNING') throw conflict(`run ${params.workflowId} is not running (${desc.status.name})`);
      await handle.cancel();
      req.log.info({ workflowId: params.workflowId, runId: desc.runId, model }, 'run cancellation requested');
      return ok({ workflowId: params.workflowId, runId: desc.runId, cancelRequested: true }, 202);
    },
  }),

  defineRoute({
    method: 'GET',
    path: '/v1/approvals',
    operationId: 'listApprovals',
    summary: 'Candidates awaiting a decision the caller may make',
    description:
      'Running pipeline runs whose approval policy lists the caller or one of the caller\'s groups, that the caller did not submit ' +
      'and has not approved yet, of models the API policy lets the caller decide (read, and one of the model\'s `approve` groups ' +
      'when it has them); each with the candidate\'s metrics beside the production model\'s on the same holdout, the gate ' +
      'results and the data version. `unavailable` lists only runs of models the caller may read (a run whose model is unknown: ' +
      'admins only).',
    tag: 'approvals',
    access: 'authenticated',
    responses: { 200: { description: 'Pending decisions, earliest deadline first.', schema: s.approvalsResponse } },
    handler: async ({ deps, authz, caller }) => ok(await listApprovals(deps, authz, caller)),
  }),

  ...(['approve', 'reject'] as const).map((kind) =>
    defineRoute({
      method: 'POST',
      path: `/v1/approvals/:model/:version/${kind}`,
      operationId: `${kind}Version`,
      summary: kind === 'approve' ? 'Approve a candidate version' : 'Reject a candidate version',
      description:
        'Needs read on the model (403 that reveals nothing about the version or its run otherwise) and, when the model\'s API ' +
        'policy entry has `approve`, membership in one of those groups (members of `admin` always). Decided by the authenticated ' +
        'caller, with the groups of their token; the run\'s approval policy (reviewers, groups, ' +
        'quorum, four-eyes) is also enforced, by the workflow, which refuses an unauthorized decision before it is recorded (403 with its ' +
        'reason). The decision is bound to `sha256` when given (refused unless it is the candidate\'s artifact). Repeating the same ' +
        `request returns the first result.${kind === 'reject' ? ' A rejection needs a comment.' : ''}`,
      tag: 'approvals',
      access: 'read',
      params: s.versionParams,
      body: s.decisionBody,
      bodyOptional: true,
      responses: {
        200: { description: 'The decision (or, below the quorum, the recorded approval).', schema: s.decisionResponse },
        ...errors({
          400: 'Invalid body (a rejection without comment).',
          403: 'No read right on the model, not in its `approve` groups, or refused by the run\'s approval policy.',
          404: 'No run is awaiting a decision on this version.',
        }),
      },
      handler: async ({ deps, authz, caller, params, body, req }) => {
        // Read was checked before the handler (access: read); now the policy's approve groups, before anything is looked up.
        authz.requireDecide(caller, params.model);
        const result = await decideVersion(deps, caller, kind, params.model, params.version, body);
        req.log.info({ model: params.model, version: params.version, decision: result.decision, workflowId: result.workflowId }, 'decision');
        return ok(result);
      },
    }),
  ),
];
