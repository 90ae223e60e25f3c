import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { hashToken, TokenStore } from '../../src/auth/tokens.js';
import { API_ROUTES, createApiApp, parseApiPolicy, startApi, type ApiPolicy } from '../../src/api/index.js';
import { modelSearchAttribute } from '../../src/shared/search-attributes.js';
import type { PipelineSpec } from '../../src/spec/schema.js';
import { startTestEnv, type TestEnv } from '../helpers/stack.js';
import { examplePipeline } from '../helpers/pipelines.js';

const PEOPLE = {
  // alice submits and also reviews (so the four-eyes rule, not group membership, is what stops her).
  alice: ['ml-eng', 'risk-reviewers'],
  bob: ['risk-reviewers'],
  carol: ['risk-reviewers'],
  root: ['admin'],
  eve: ['marketing'],
  // dave may read credit-risk, but is not in its API approve groups.
  dave: ['analysts'],
} as const;
type Person = keyof typeof PEOPLE;
const TOKENS = Object.fromEntries(Object.keys(PEOPLE).map((p) => [p, randomBytes(24).toString('base64url')])) as Record<Person, string>;
/** Looks like a token, belongs to nobody. */
const WRONG_TOKEN = randomBytes(24).toString('base64url');

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- test assertions read arbitrary JSON
  json: any;
}

describe('governance API (real Temporal + MinIO)', () => {
  let env: TestEnv;
  let app: FastifyInstance;
  let port: number;
  let manualSpec: PipelineSpec;
  let autoSpec: PipelineSpec;
  let authz: ApiPolicy;
  /** Everything the API logged (no redaction configured: the API itself must never log a token). */
  const logLines: string[] = [];

  /** Raw HTTP (node:http sends the path exactly as given: no dot-segment normalization, no re-encoding). */
  function call(method: string, path: string, opts: { as?: Person; token?: string; body?: unknown; raw?: string } = {}): Promise<Res> {
    const token = opts.token ?? (opts.as ? TOKENS[opts.as] : undefined);
    const payload = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port,
          method,
          path,
          headers: {
            ...(token ? { authorization: `Bearer ${token}` } : {}),
            ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
            const out = { status: res.statusCode ?? 0, headers: res.headers, text, json };
            try {
              checkDocumented(method, path, out);
              resolve(out);
            } catch (err) {
              reject(err as Error);
            }
          });
        },
      );
      req.on('error', reject);
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  /** Every JSON response of a documented route and status must match the schema its OpenAPI entry was generated from. */
  function checkDocumented(method: string, path: string, res: Res): void {
    const pathname = path.split('?')[0]!;
    const route = API_ROUTES.find((r) => r.method === method && new RegExp(`^${r.path.replace(/\./g, '\\.').replace(/:[A-Za-z]+/g, '[^/]+')}$`).test(pathname));
    const schema = route?.responses[res.status]?.schema;
    if (!schema || !String(res.headers['content-type']).startsWith('application/json')) return;
    const parsed = schema.safeParse(res.json);
    if (!parsed.success) throw new Error(`${method} ${path} → ${res.status} does not match its documented schema: ${parsed.error.message}`);
  }

  async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const value = await probe();
      if (value !== undefined) return value;
      await sleep(250);
    }
    throw new Error(`timed out waiting for ${what}`);
  }

  beforeAll(async () => {
    env = await startTestEnv('api');
    const tokens = new TokenStore(Object.entries(PEOPLE).map(([identity, groups]) => ({ identity, groups: [...groups], sha256: hashToken(TOKENS[identity as Person]) })));
    // alice's team operates, reviewers read, everybody else (eve) nothing; root is admin. credit-risk has its own entry:
    // analysts (dave) read it too, only reviewers decide it through the API, and production needs two of them.
    authz = parseApiPolicy({
      models: {
        '*': { read: ['risk-reviewers'], operate: ['ml-eng'] },
        'credit-risk': {
          read: ['risk-reviewers', 'analysts'],
          operate: ['ml-eng'],
          approve: ['risk-reviewers'],
          production: { minQuorum: 2, approverGroups: ['risk-reviewers'] },
        },
      },
    });
    const logger = pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) });
    app = createApiApp({ client: env.client, config: env.config, registry: env.registry, store: env.store, tokens, logger, authz });
    await app.listen({ host: '127.0.0.1', port: 0 });
    port = (app.server.address() as { port: number }).port;
    // Paths in the example are resolved against its file, so they are absolute, as the API requires.
    manualSpec = (await examplePipeline((s) => ({ ...s, approval: { mode: 'manual', groups: ['risk-reviewers'], quorum: 2, timeout: '10m' } }))).spec;
    autoSpec = (await examplePipeline()).spec;
  });
  afterAll(async () => {
    await app?.close();
    await env?.close();
  });

  it('every documented route refuses a missing and a wrong token (only /healthz and /openapi.json are public)', async () => {
    const doc = (await call('GET', '/openapi.json')).json;
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' });
    // The document covers every route the app registers (both come from API_ROUTES).
    for (const r of API_ROUTES) expect(doc.paths[r.path.replace(/:([A-Za-z]+)/g, '{$1}')]?.[r.method.toLowerCase()], `${r.method} ${r.path}`).toBeDefined();

    const operations: Array<{ method: string; path: string; public: boolean; op: { parameters: Array<{ name: string; example: string }> } }> = [];
    for (const [template, methods] of Object.entries(doc.paths as Record<string, Record<string, { security: unknown[]; parameters: Array<{ name: string; example: string }> }>>)) {
      for (const [method, op] of Object.entries(methods)) {
        const path = template.replace(/\{([A-Za-z]+)\}/g, (_m, name: string) => {
          const example = op.parameters.find((p) => p.name === name)?.example;
          expect(example, `example for ${name} in ${template}`).toBeDefined();
          return encodeURIComponent(String(example));
        });
        operations.push({ method: method.toUpperCase(), path, public: op.security.length === 0, op });
      }
    }
    expect(operations.length).toBe(API_ROUTES.length);
    expect(operations.filter((o) => o.public).map((o) => o.path).sort()).toEqual(['/healthz', '/openapi.json']);

    for (const o of operations) {
      const body = ['POST', 'PUT', 'PATCH'].includes(o.method) ? {} : undefined;
      const none = await call(o.method, o.path, { body });
      const wrong = await call(o.method, o.path, { token: WRONG_TOKEN, body });
      if (o.public) {
        expect(none.status, `${o.method} ${o.path}`).toBe(200);
        continue;
      }
      for (const res of [none, wrong]) {
        expect(res.status, `${o.method} ${o.path}`).toBe(401);
        expect(String(res.headers['www-authenticate'])).toMatch(/^Bearer/);
        expect(res.text).not.toContain(WRONG_TOKEN);
      }
      // The substituted path does reach the route (so the 401 above came from the route's check).
      const admin = await call(o.method, o.path, { as: 'root', body });
      expect(admin.status, `${o.method} ${o.path} as admin`).not.toBe(401);
      expect(admin.json?.error, `${o.method} ${o.path} as admin`).not.toBe('no such route');
    }

    // Encoded paths route to the same handlers and need the token just the same.
    for (const path of ['/%761/whoami', '/v%31/models', '/v1/%6dodels/credit-risk']) {
      expect((await call('GET', path)).status, path).toBe(401);
      expect((await call('GET', path, { as: 'alice' })).status, path).toBe(path.includes('credit-risk') ? 404 : 200);
    }
    // Unknown routes need a token too (an anonymous caller cannot map the API).
    expect((await call('GET', '/v1/nope')).status).toBe(401);
    expect((await call('GET', '/v1/nope', { as: 'alice' })).status).toBe(404);
    expect((await call('GET', '/v1/whoami', { as: 'alice' })).json).toEqual({ identity: 'alice', groups: ['ml-eng', 'risk-reviewers'], admin: false, authorization: 'policy' });
  });

  it('refuses traversal in model, alias, version and workflow id parameters and in body names with 400, touching nothing', async () => {
    const before = await env.store.list('');
    const tagBody = { tags: { team: 'x' } };
    const attempts: Array<[string, string, unknown, string]> = [
      ['GET', '/v1/models/..', undefined, 'model'],
      ['GET', '/v1/models/%2e%2e', undefined, 'model'],
      ['GET', '/v1/models/%252e%252e', undefined, 'model'],
      ['GET', '/v1/models/..%2f..%2fdatasets', undefined, 'model'],
      ['GET', '/v1/models/%2fetc%2fpasswd/history', undefined, 'model'],
      ['GET', '/v1/models/credit-risk%5c..%5cx', undefined, 'model'],
      ['GET', '/v1/models/Credit-Risk', undefined, 'model'],
      ['GET', '/v1/models/credit-risk/versions/..', undefined, 'version'],
      ['GET', '/v1/models/credit-risk/versions/1%2f..%2f2/lineage', undefined, 'version'],
      ['GET', '/v1/models/credit-risk/versions/-1/card', undefined, 'version'],
      ['GET', '/v1/models/credit-risk/versions/1.5', undefined, 'version'],
      ['GET', '/v1/models/credit-risk/versions/0x1', undefined, 'version'],
      ['GET', '/v1/models/credit-risk/versions/99999999999999999999', undefined, 'version'],
      ['PUT', '/v1/models/credit-risk/aliases/..%2fproduction', { version: 1, expectedVersion: null }, 'alias'],
      ['PUT', '/v1/models/credit-risk/aliases/%2e%2e', { version: 1, expectedVersion: null }, 'alias'],
      ['PUT', '/v1/models/..%2fx/aliases/staging', { version: 1, expectedVersion: null }, 'model'],
      ['PATCH', '/v1/models/%2e%2e/versions/1', tagBody, 'model'],
      ['PATCH', '/v1/models/credit-risk/versions/%2e%2e', tagBody, 'version'],
      ['GET', '/v1/runs/..', undefined, 'workflowId'],
      ['GET', '/v1/runs/%2e%2e%2f%2e%2e%2fregistry', undefined, 'workflowId'],
      ['GET', '/v1/runs/pipeline-credit-risk..x', undefined, 'workflowId'],
      ['GET', '/v1/runs/%2fabs', undefined, 'workflowId'],
      ['POST', '/v1/runs/..%5cx/cancel', undefined, 'workflowId'],
      ['POST', '/v1/approvals/%2e%2e/1/approve', {}, 'model'],
      ['POST', '/v1/approvals/credit-risk/..%2f1/reject', { comment: 'x' }, 'version'],
      // Names in bodies.
      ['POST', '/v1/runs', { spec: { ...manualSpec, name: '../evil' } }, 'spec.name'],
      ['POST', '/v1/runs', { spec: { ...manualSpec, name: '%2e%2e' } }, 'spec.name'],
      ['POST', '/v1/runs', { spec: manualSpec, workflowId: '../../x' }, 'workflowId'],
      ['POST', '/v1/runs', { spec: manualSpec, workflowId: 'a%2fb' }, 'workflowId'],
      ['POST', '/v1/runs', { spec: { ...manualSpec, deployment: { alias: '../production', strategy: 'direct' } } }, 'spec.deployment.alias'],
      ['POST', '/v1/runs', { spec: { ...manualSpec, dataset: { source: 'examples/credit-risk/data/credit-risk.csv' } } }, 'spec.dataset.source'],
      ['POST', '/v1/runs', { spec: { ...manualSpec, dataset: { source: '/tmp/../etc/credit-risk.csv' } } }, 'spec.dataset.source'],
      ['POST', '/v1/runs', { spec: { ...manualSpec, dataset: { source: 's3://bucket/%2e%2e/x.csv' } } }, 'spec.dataset.source'],
      ['POST', '/v1/runs', { spec: { ...manualSpec, dataset: { source: 'C:\\data\\x.csv' } } }, 'spec.dataset.source'],
      ['POST', '/v1/runs', { spec: { ...manualSpec, trainer: { ...manualSpec.trainer, command: ['{python}', './trainers/train_sklearn.py'] } } }, 'spec.trainer.command.1'],
      ['POST', '/v1/runs', { spec: { ...manualSpec, trainer: { ...manualSpec.trainer, command: ['{python}', 'train_sklearn.py'] } } }, 'spec.trainer.command.1'],
      ['POST', '/v1/runs', { spec: { ...manualSpec, trainer: { ...manualSpec.trainer, command: ['{python}', '/opt/../etc/train.py'] } } }, 'spec.trainer.command.1'],
      ['POST', '/v1/runs', { spec: { ...manualSpec, trainer: { ...manualSpec.trainer, command: ['python', '--script=../t.py'] } } }, 'spec.trainer.command.1'],
      ['PATCH', '/v1/models/credit-risk/versions/1', { tags: { '../x': 'y' } }, 'tags.../x'],
      ['PATCH', '/v1/models/credit-risk/versions/1', { removeTags: ['%2e%2e'] }, 'removeTags.0'],
      ['PUT', '/v1/models/credit-risk/aliases/staging', { version: '1/..', expectedVersion: null }, 'version'],
    ];
    for (const [method, path, body, field] of attempts) {
      const res = await call(method, path, { as: 'root', body });
      expect(res.status, `${method} ${path} ${JSON.stringify(body)?.slice(0, 80) ?? ''}`).toBe(400);
      expect(res.json.issues.map((i: { field: string }) => i.field), `${method} ${path}`).toContain(field);
    }
    // Nothing was written, and no run was started.
    expect(await env.store.list('')).toEqual(before);
    const runs = [];
    for await (const e of env.client.workflow.list({ query: `TaskQueue = '${env.config.taskQueues.pipeline}'` })) runs.push(e.workflowId);
    expect(runs).toEqual([]);
  });

  it('POST /v1/runs with an invalid spec is a 400 naming each field', async () => {
    const { target: _t, ...noTarget } = manualSpec;
    const res = await call('POST', '/v1/runs', {
      as: 'alice',
      body: { spec: { ...noTarget, evaluation: { gates: [{ metric: 'rmse', min: 1 }] }, trainer: { kind: 'shell', command: ['x'] } } },
    });
    expect(res.status).toBe(400);
    const fields = res.json.issues.map((i: { field: string }) => i.field);
    expect(fields).toEqual(expect.arrayContaining(['spec.target', 'spec.trainer.kind']));
    expect(res.json.error).toContain('spec.target');
    const unknown = await call('POST', '/v1/runs', { as: 'alice', body: { spec: manualSpec, submittedBy: 'bob' } });
    expect(unknown.status).toBe(400);
    expect(unknown.json.error).toContain('submittedBy');
    expect((await call('POST', '/v1/runs', { as: 'alice', raw: '{"spec": ' })).status).toBe(400);
    expect((await call('POST', '/v1/runs', { as: 'alice', raw: JSON.stringify({ spec: manualSpec, pad: 'x'.repeat(1_100_000) }) })).status).toBe(413);
    // Operating needs the operate right: reviewers only read, outsiders nothing.
    expect((await call('POST', '/v1/runs', { as: 'bob', body: { spec: manualSpec } })).status).toBe(403);
    expect((await call('POST', '/v1/runs', { as: 'eve', body: { spec: manualSpec } })).status).toBe(403);
  });

  it('POST /v1/runs: a chosen workflowId must be one of the model\'s pipeline ids (pipeline-<model>-...)', async () => {
    for (const workflowId of ['notify-approval-requested-0', 'pipeline-credit-risk', 'pipeline-credit-risk-', 'pipeline-churn-x', 'credit-risk-x', 'xpipeline-credit-risk-1']) {
      const res = await call('POST', '/v1/runs', { as: 'alice', body: { spec: manualSpec, workflowId } });
      expect(res.status, workflowId).toBe(400);
      expect(res.json.issues, workflowId).toEqual([{ field: 'workflowId', message: expect.stringContaining('"pipeline-credit-risk-"') }]);
      expect(res.json.error).toMatch(/^workflowId: /);
    }
    // Admins too: the id space is not a matter of rights.
    expect((await call('POST', '/v1/runs', { as: 'root', body: { spec: manualSpec, workflowId: 'notify-x-0' } })).status).toBe(400);
  });

  it('POST /v1/runs deploying to production must ask for an independent manual approval (the policy\'s production rule; admins too)', async () => {
    const manual = (approval: Record<string, unknown>) => ({ ...manualSpec, approval: { mode: 'manual', timeout: '10m', ...approval } });
    const refusals: Array<[Person, unknown, RegExp]> = [
      ['alice', autoSpec, /approval\.mode must be "manual" \(got "auto"\)/],
      // Admins are not exempt.
      ['root', autoSpec, /approval\.mode must be "manual"/],
      ['alice', manual({ groups: ['risk-reviewers'], quorum: 1 }), /approval\.quorum must be at least 2 \(got 1\)/],
      // The submitter's own team, or people the submitter picks, cannot be the approvers.
      ['alice', manual({ groups: ['ml-eng'], quorum: 2 }), /approval\.groups may only name "risk-reviewers" \(not "ml-eng"\)/],
      ['alice', manual({ groups: ['risk-reviewers', 'ml-eng'], quorum: 2 }), /approval\.groups may only name/],
      ['alice', manual({ groups: ['risk-reviewers'], reviewers: ['bob'], quorum: 2 }), /approval\.reviewers must be empty/],
      ['alice', manual({ groups: ['risk-reviewers'], quorum: 2, escalation: { after: '5m', groups: ['ml-eng'] } }), /approval\.escalation\.groups may only name/],
      ['alice', manual({ groups: ['risk-reviewers'], quorum: 2, escalation: { after: '5m', reviewers: ['alice'] } }), /approval\.escalation\.reviewers must be empty/],
    ];
    for (const [who, spec, message] of refusals) {
      const res = await call('POST', '/v1/runs', { as: who, body: { spec } });
      expect(res.status, `${who} ${JSON.stringify((spec as PipelineSpec).approval)}`).toBe(403);
      expect(res.json.error).toContain('"production" rule of model "credit-risk"');
      expect(res.json.error).toMatch(message);
    }
    // The rule is per alias: the same auto-approved spec may deploy to staging (accepted in the cancel test below).
    // Nothing was started by the refusals.
    const runs = [];
    for await (const e of env.client.workflow.list({ query: `TaskQueue = '${env.config.taskQueues.pipeline}'` })) runs.push(e.workflowId);
    expect(runs).toEqual([]);
  });

  it('runs a manual-approval pipeline through the API: listing, four-eyes, outsiders, quorum, idempotent decisions, deployment, lineage', async () => {
    const started = await call('POST', '/v1/runs', { as: 'alice', body: { spec: manualSpec, code: { gitCommit: 'a'.repeat(40), gitDirty: false, pipelineFile: 'examples/credit-risk/pipeline.ts' } } });
    expect(started.status).toBe(201);
    const { workflowId, runId } = started.json;
    expect(started.headers.location).toBe(`/v1/runs/${workflowId}`);
    const again = await call('POST', '/v1/runs', { as: 'alice', body: { spec: manualSpec, workflowId } });
    expect(again.status).toBe(409);

    const running = await call('GET', `/v1/runs/${workflowId}`, { as: 'bob' });
    expect(running.status).toBe(200);
    expect(running.json).toMatchObject({ workflowId, runId, model: 'credit-risk', temporalStatus: 'RUNNING' });
    expect((await call('GET', `/v1/runs/${workflowId}`, { as: 'eve' })).status).toBe(403);
    expect((await call('GET', '/v1/runs/pipeline-credit-risk-nope', { as: 'root' })).status).toBe(404);

    const listed = await until('the candidate in bob\'s approvals', async () => {
      const res = await call('GET', '/v1/approvals', { as: 'bob' });
      expect(res.status).toBe(200);
      return res.json.approvals.find((a: { workflowId: string }) => a.workflowId === workflowId);
    });
    expect(listed).toMatchObject({ model: 'credit-risk', version: 1, submittedBy: 'alice', groups: ['risk-reviewers'], quorum: 2, approvals: [] });
    expect(listed.dataVersion).toMatch(/^[0-9a-f]{64}$/);
    expect(listed.metrics.candidate.roc_auc).toBeGreaterThan(0.7);
    expect(listed.metrics.production).toBeNull(); // first version: nothing in production yet
    expect(listed.comparison.find((c: { metric: string }) => c.metric === 'roc_auc')).toMatchObject({ production: null, delta: null });
    expect(listed.gates.length).toBeGreaterThan(0);
    // The submitter and outsiders are not asked.
    expect((await call('GET', '/v1/approvals', { as: 'alice' })).json.approvals).toEqual([]);
    expect((await call('GET', '/v1/approvals', { as: 'eve' })).json.approvals).toEqual([]);

    const approve = (who: Person, body: unknown = { comment: `${who} checked` }) => call('POST', '/v1/approvals/credit-risk/1/approve', { as: who, body });
    const own = await approve('alice');
    expect(own.status).toBe(403);
    expect(own.json.error).toContain('four-eyes');
    // No read right on the model: refused before anything is looked up, so the answer is the same whether the version
    // exists or not, and names no reviewer, decision or run.
    const noRead = await approve('eve');
    expect(noRead.status).toBe(403);
    expect(noRead.json).toEqual({ error: '"eve" may not read model "credit-risk"' });
    expect((await call('POST', '/v1/approvals/credit-risk/7/approve', { as: 'eve', body: {} })).json).toEqual(noRead.json);
    expect((await call('POST', '/v1/approvals/credit-risk/1/reject', { as: 'eve', body: { comment: 'no' } })).json).toEqual({ error: '"eve" may not read model "credit-risk"' });
    // Read, but not in the model's API approve groups: refused by the API policy before the run is asked.
    const notApprover = await approve('dave');
    expect(notApprover.status).toBe(403);
    expect(notApprover.json.error).toContain('approve groups');
    // An admin passes the API policy but is still bound by the run's own approval policy.
    const admin = await approve('root');
    expect(admin.status).toBe(403);
    expect(admin.json.error).toContain('may not decide');
    for (const res of [noRead, notApprover]) {
      for (const secret of ['alice', 'bob', 'carol', 'risk-reviewers', workflowId, runId, '@1', 'version']) expect(res.text).not.toContain(secret);
    }
    expect((await call('GET', '/v1/approvals', { as: 'dave' })).json).toEqual({ approvals: [], unavailable: [] });
    const noComment = await call('POST', '/v1/approvals/credit-risk/1/reject', { as: 'bob', body: {} });
    expect(noComment.status).toBe(400);
    expect(noComment.json.issues[0].field).toBe('comment');
    const wrongArtifact = await approve('bob', { sha256: '0'.repeat(64) });
    expect(wrongArtifact.status).toBe(403);
    expect(wrongArtifact.json.error).toContain('does not match');
    expect((await call('POST', '/v1/approvals/credit-risk/7/approve', { as: 'bob', body: {} })).status).toBe(404);

    const first = await approve('bob', { comment: 'AUC fine', sha256: listed.sha256 });
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({ decision: 'approval_recorded', reviewer: 'bob', approvals: 1, quorum: 2, workflowId, runId });
    const repeated = await approve('bob');
    expect(repeated.status).toBe(200);
    expect(repeated.json).toEqual(first.json);
    // bob has approved: no longer asked; carol still is, and sees bob's approval.
    expect((await call('GET', '/v1/approvals', { as: 'bob' })).json.approvals).toEqual([]);
    const forCarol = (await call('GET', '/v1/approvals', { as: 'carol' })).json.approvals;
    expect(forCarol.map((a: { approvals: Array<{ reviewer: string }> }) => a.approvals.map((x) => x.reviewer))).toEqual([['bob']]);

    const second = await approve('carol');
    expect(second.json).toMatchObject({ decision: 'approved', approvals: 2 });

    const done = await until('the run to deploy', async () => {
      const res = await call('GET', `/v1/runs/${workflowId}`, { as: 'alice' });
      return res.json.temporalStatus === 'COMPLETED' ? res.json : undefined;
    });
    expect(done).toMatchObject({ outcome: 'deployed', result: { version: 1, deployedAlias: 'production' } });
    // After the run ended, the same request still answers with the first result; others find nothing to decide.
    expect((await approve('bob')).json).toEqual(first.json);
    const late = await call('POST', '/v1/approvals/credit-risk/1/reject', { as: 'root', body: { comment: 'too late' } });
    expect(late.status).toBe(404);
    expect(late.json.error).toContain('approved by bob, carol');
    // Without read, still nothing about the decision.
    const lateOutsider = await call('POST', '/v1/approvals/credit-risk/1/reject', { as: 'eve', body: { comment: 'too late' } });
    expect(lateOutsider.status).toBe(403);
    expect(lateOutsider.text).not.toMatch(/bob|carol|approved/);

    const lineage = await call('GET', '/v1/models/credit-risk/versions/1/lineage', { as: 'bob' });
    expect(lineage.status).toBe(200);
    expect(lineage.json).toMatchObject({
      model: 'credit-risk',
      version: 1,
      dataset: { sha256: listed.dataVersion },
      run: { workflowId, runId, submittedBy: 'alice', gitCommit: 'a'.repeat(40), pipelineFile: 'examples/credit-risk/pipeline.ts' },
      decision: { decision: 'approved', by: ['bob', 'carol'] },
      deployments: [{ alias: 'production', run: { workflowId, runId } }],
      inProduction: true,
      warnings: [],
    });
    expect(lineage.json.dataset.profile.rowCount).toBeGreaterThan(0);
    expect(lineage.json.artifact.sha256).toBe(listed.sha256);

    const card = await call('GET', '/v1/models/credit-risk/versions/1/card', { as: 'bob' });
    expect(card.json).toMatchObject({ model: 'credit-risk', version: 1, approval: { by: ['bob', 'carol'] }, inProduction: true, gatesPassed: true });
    const markdown = await call('GET', '/v1/models/credit-risk/versions/1/card.md', { as: 'bob' });
    expect(markdown.headers['content-type']).toMatch(/^text\/markdown/);
    expect(markdown.text).toContain('# Model card: credit-risk v1');

    const history = await call('GET', `/v1/models/credit-risk/history?at=${encodeURIComponent(new Date().toISOString())}`, { as: 'bob' });
    expect(history.json).toMatchObject({ alias: 'production', timeline: [{ version: 1, to: null, strategy: 'direct' }], metrics: [{ version: 1 }], at: { version: 1 } });
    expect((await call('GET', '/v1/models/credit-risk/history?at=2000-01-01T00:00:00Z', { as: 'bob' })).json.at).toEqual({ time: '2000-01-01T00:00:00Z', version: null });
    const badTime = await call('GET', '/v1/models/credit-risk/history?at=yesterday', { as: 'bob' });
    expect(badTime.status).toBe(400);
    expect(badTime.json.issues[0].field).toBe('at');

    const model = await call('GET', '/v1/models/credit-risk', { as: 'bob' });
    expect(model.json).toMatchObject({ model: 'credit-risk', versions: [{ version: 1, submittedBy: 'alice' }], aliases: { production: { version: 1 } } });
    const version = await call('GET', '/v1/models/credit-risk/versions/1', { as: 'bob' });
    expect(version.json).toMatchObject({ record: { version: 1, run: { submittedBy: 'alice' } }, meta: { tags: {} }, decision: { decision: 'approved' } });
    expect((await call('GET', '/v1/models', { as: 'alice' })).json.models).toEqual([{ model: 'credit-risk', versions: 1, latest: 1, production: 1 }]);
    expect((await call('GET', '/v1/models', { as: 'eve' })).json.models).toEqual([]);
    expect((await call('GET', '/v1/models/credit-risk', { as: 'eve' })).status).toBe(403);
    expect((await call('GET', '/v1/models/credit-risk/versions/2', { as: 'bob' })).status).toBe(404);
    expect((await call('GET', '/v1/models/no-such-model', { as: 'bob' })).status).toBe(404);
  });

  it('moves aliases with compare-and-swap; production only by admins', async () => {
    const put = (who: Person, alias: string, body: unknown) => call('PUT', `/v1/models/credit-risk/aliases/${alias}`, { as: who, body });
    const stale = await put('alice', 'staging', { version: 1, expectedVersion: 3 });
    expect(stale.status).toBe(409);
    expect(stale.json.currentVersion).toBeNull();
    const moved = await put('alice', 'staging', { version: 1, expectedVersion: null });
    expect(moved.status).toBe(200);
    expect(moved.json).toMatchObject({ alias: 'staging', version: 1, previousVersion: null, strategy: 'manual', run: { workflowId: 'api:alice' } });
    const raced = await put('alice', 'staging', { version: 1, expectedVersion: null });
    expect(raced.status).toBe(409);
    expect(raced.json.currentVersion).toBe(1);
    expect((await put('bob', 'staging', { version: 1, expectedVersion: 1 })).status).toBe(403);
    expect((await put('alice', 'staging', { version: 9, expectedVersion: 1 })).status).toBe(404);

    const production = await put('alice', 'production', { version: 1, expectedVersion: 1 });
    expect(production.status).toBe(403);
    expect(production.json.error).toContain('admin');
    const adminStale = await put('root', 'production', { version: 1, expectedVersion: null });
    expect(adminStale.status, adminStale.text).toBe(409);
    expect(adminStale.json.currentVersion).toBe(1);
    expect((await call('GET', '/v1/models/credit-risk', { as: 'bob' })).json.aliases).toMatchObject({ production: { version: 1 }, staging: { version: 1 } });
  });

  it('tags, describes and archives versions; archiving production is a 409', async () => {
    const patch = (who: Person, body: unknown) => call('PATCH', '/v1/models/credit-risk/versions/1', { as: who, body });
    const tagged = await patch('alice', { tags: { team: 'risk', ticket: 'RISK-42' }, description: 'first approved model' });
    expect(tagged.status).toBe(200);
    expect(tagged.json).toMatchObject({ tags: { team: 'risk', ticket: 'RISK-42' }, description: 'first approved model' });
    const removed = await patch('alice', { removeTags: ['ticket'] });
    expect(removed.json.tags).toEqual({ team: 'risk' });
    expect(removed.json.history.map((h: { by: string }) => h.by)).toEqual(['alice', 'alice', 'alice']);

    const archive = await patch('alice', { archived: true, archiveReason: 'superseded' });
    expect(archive.status).toBe(409);
    expect(archive.json.error).toContain('production');
    expect((await patch('alice', { archived: true })).json.issues[0].field).toBe('archiveReason');
    expect((await patch('alice', {})).status).toBe(400);
    expect((await patch('bob', { tags: { x: 'y' } })).status).toBe(403);
    expect((await patch('eve', { tags: { x: 'y' } })).status).toBe(403);
    expect((await call('GET', '/v1/models/credit-risk/versions/1', { as: 'bob' })).json.meta).toMatchObject({ archived: false, tags: { team: 'risk' } });
  });

  it('the model\'s API approve groups bind on top of the run\'s approval policy (deciding and listing)', async () => {
    // Not production, so the production rule does not apply: the submitter asks the analysts (dave's group).
    const spec = { ...manualSpec, approval: { mode: 'manual', groups: ['analysts'], quorum: 1, timeout: '10m' }, deployment: { alias: 'staging', strategy: 'direct' } };
    const started = await call('POST', '/v1/runs', { as: 'alice', body: { spec, workflowId: `pipeline-credit-risk-api-approvers-${Date.now()}` } });
    expect(started.status, started.text).toBe(201);
    const { workflowId } = started.json;
    const awaiting = await until('the run to await a decision', async () => {
      const res = await call('GET', `/v1/runs/${workflowId}`, { as: 'dave' });
      return res.json.status?.awaitingApproval ?? undefined;
    });
    expect(awaiting).toMatchObject({ model: 'credit-risk', version: 2, groups: ['analysts'] });

    // The run's policy asks dave's group, but the API policy lets only risk-reviewers decide credit-risk: not listed, refused.
    expect((await call('GET', '/v1/approvals', { as: 'dave' })).json.approvals).toEqual([]);
    const dave = await call('POST', '/v1/approvals/credit-risk/2/approve', { as: 'dave', body: { comment: 'fine' } });
    expect(dave.status).toBe(403);
    expect(dave.json.error).toBe('"dave" may not decide runs of model "credit-risk" (API policy: not in its approve groups)');
    // bob passes the API policy, but the run's policy does not name him.
    const bob = await call('POST', '/v1/approvals/credit-risk/2/approve', { as: 'bob', body: {} });
    expect(bob.status).toBe(403);
    expect(bob.json.error).toContain('may not decide');
    expect((await call('GET', '/v1/approvals', { as: 'bob' })).json.approvals).toEqual([]);

    expect((await call('POST', `/v1/runs/${workflowId}/cancel`, { as: 'alice' })).status).toBe(202);
    await until('the run to end', async () => {
      const res = await call('GET', `/v1/runs/${workflowId}`, { as: 'alice' });
      return res.json.temporalStatus === 'RUNNING' ? undefined : res.json;
    });
    expect((await env.registry.getDecision('credit-risk', 2))?.decision).not.toBe('approved');
  });

  it('GET /v1/approvals lists unavailable runs only of models the caller may read (unknown model: admins only)', async () => {
    // Runs on a queue no worker polls: their status query times out, so they are "unavailable".
    const taskQueue = `${env.config.taskQueues.pipeline}-nobody`;
    const policy = parseApiPolicy({ models: { ...authz.models, secret: { read: ['secret-team'] } } });
    const tokens = new TokenStore(Object.entries(PEOPLE).map(([identity, groups]) => ({ identity, groups: [...groups], sha256: hashToken(TOKENS[identity as Person]) })));
    const other = createApiApp({
      client: env.client,
      config: { ...env.config, taskQueues: { ...env.config.taskQueues, pipeline: taskQueue } },
      registry: env.registry,
      store: env.store,
      tokens,
      logger: pino({ level: 'silent' }),
      authz: policy,
      queryTimeoutMs: 300,
    });
    const stamp = Date.now();
    const ids = { visible: `pipeline-credit-risk-unavailable-${stamp}`, secret: `pipeline-secret-unavailable-${stamp}`, unknown: `pipeline-unknown-unavailable-${stamp}` };
    const handles = await Promise.all(
      Object.entries(ids).map(([kind, workflowId]) =>
        env.client.workflow.start('modelPipeline', {
          taskQueue,
          workflowId,
          args: [{}],
          ...(kind === 'unknown' ? {} : { typedSearchAttributes: [{ key: modelSearchAttribute, value: kind === 'visible' ? 'credit-risk' : 'secret' }] }),
        }),
      ),
    );
    try {
      const list = async (who: Person) => {
        const res = await other.inject({ method: 'GET', url: '/v1/approvals', headers: { authorization: `Bearer ${TOKENS[who]}` } });
        expect(res.statusCode).toBe(200);
        const body = res.json() as { approvals: unknown[]; unavailable: Array<{ workflowId: string }> };
        expect(body.approvals).toEqual([]);
        return body.unavailable.map((u) => u.workflowId).sort();
      };
      // Wait until the listing (visibility) sees all three.
      const all = Object.values(ids).sort();
      await until('the runs to be listed', async () => ((await list('root')).length === all.length ? true : undefined), 30_000);
      expect(await list('root')).toEqual(all);
      expect(await list('bob')).toEqual([ids.visible]);
      expect(await list('dave')).toEqual([ids.visible]);
      expect(await list('eve')).toEqual([]);
    } finally {
      await Promise.all(handles.map((h) => h.terminate('test over')));
      await other.close();
    }
  });

  it('cancels a running run', async () => {
    // Auto-approved, so not to production (the policy's production rule); staging is fine.
    const stagingSpec = { ...autoSpec, deployment: { alias: 'staging', strategy: 'direct' } };
    const started = await call('POST', '/v1/runs', { as: 'alice', body: { spec: stagingSpec, workflowId: `pipeline-credit-risk-api-cancel-${Date.now()}` } });
    expect(started.status).toBe(201);
    const { workflowId } = started.json;
    expect((await call('POST', `/v1/runs/${workflowId}/cancel`, { as: 'bob' })).status).toBe(403);
    const cancelled = await call('POST', `/v1/runs/${workflowId}/cancel`, { as: 'alice' });
    expect(cancelled.status).toBe(202);
    expect(cancelled.json).toMatchObject({ workflowId, cancelRequested: true });
    const end = await until('the run to end', async () => {
      const res = await call('GET', `/v1/runs/${workflowId}`, { as: 'alice' });
      return res.json.temporalStatus === 'RUNNING' ? undefined : res.json;
    });
    expect(end).toMatchObject({ temporalStatus: 'CANCELLED', outcome: 'cancelled' });
    expect((await call('POST', `/v1/runs/${workflowId}/cancel`, { as: 'alice' })).status).toBe(409);
    expect((await env.registry.getAlias('credit-risk', 'production'))?.version).toBe(1);
  });

  it('logs each request with its request id and identity, and never a token', async () => {
    const res = await call('GET', '/v1/whoami', { as: 'carol' });
    const requestId = String(res.headers['x-request-id']);
    expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
    const entries = logLines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const mine = entries.filter((e) => e.requestId === requestId);
    expect(mine.map((e) => e.msg)).toEqual(expect.arrayContaining(['incoming request', 'request completed']));
    expect(mine.find((e) => e.msg === 'request completed')).toMatchObject({ identity: 'carol', component: 'api' });
    const everything = logLines.join('\n');
    for (const token of [...Object.values(TOKENS), WRONG_TOKEN]) expect(everything).not.toContain(token);
    expect(everything.toLowerCase()).not.toContain('bearer ');
  });

  it('startApi serves the same app on its own Temporal connection, and refuses to start without tokens', async () => {
    const logger = pino({ level: 'silent' });
    await expect(startApi(env.config, logger, { port: 0, tokens: new TokenStore([]) })).rejects.toThrow(/no tokens/);
    const tokens = new TokenStore([{ identity: 'dana', groups: [], sha256: hashToken(TOKENS.alice) }]);
    const api = await startApi(env.config, logger, { host: '127.0.0.1', port: 0, tokens, policy: null });
    try {
      expect((await fetch(`${api.url}/healthz`)).status).toBe(200);
      expect((await fetch(`${api.url}/v1/whoami`)).status).toBe(401);
      const me = await fetch(`${api.url}/v1/whoami`, { headers: { authorization: `Bearer ${TOKENS.alice}` } });
      expect(await me.json()).toEqual({ identity: 'dana', groups: [], admin: false, authorization: 'open' });
      const models = await fetch(`${api.url}/v1/models`, { headers: { authorization: `Bearer ${TOKENS.alice}` } });
      expect(((await models.json()) as { models: Array<{ model: string }> }).models.map((m) => m.model)).toEqual(['credit-risk']);
    } finally {
      await api.close();
    }
  });
});
