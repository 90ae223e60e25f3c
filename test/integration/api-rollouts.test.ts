import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import type { WorkflowHandle } from '@temporalio/client';
import { hashToken, TokenStore } from '../../src/auth/tokens.js';
import { API_ROUTES, createApiApp, parseApiPolicy } from '../../src/api/index.js';
import { deploymentSchema } from '../../src/spec/schema.js';
import { rolloutWorkflow } from '../../workflows/rollout.js';
import { rolloutWorkflowId } from '../../workflows/rollout-messages.js';
import { configEnv, startTestEnv, type TestEnv } from '../helpers/stack.js';
import { deployFixtureModel, registerFixtureVersion } from '../helpers/fixture-model.js';

const PEOPLE = {
  // alice operates (pause, resume, abort, rollback) but is not in the models' approve groups.
  alice: ['ml-eng'],
  // bob may decide (promote), but not operate.
  bob: ['risk-reviewers'],
  // dave only reads.
  dave: ['analysts'],
  root: ['admin'],
} as const;
type Person = keyof typeof PEOPLE;
const TOKENS = Object.fromEntries(Object.keys(PEOPLE).map((p) => [p, randomBytes(24).toString('base64url')])) as Record<Person, string>;

const MODEL = 'rollout-demo';
/** Production has only ever pointed at v1: nothing to roll back to. */
const FIRST_ONLY = 'rollout-first';
const DEPLOYMENT = deploymentSchema.parse({ strategy: 'canary', canary: { steps: [50, 100], bake: '1h' }, analysisInterval: '1h' });

interface Res {
  status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- test assertions read arbitrary JSON
  json: any;
  text: string;
}

const runCli = promisify(execFile);

describe('rollout control API and CLI (real Temporal + MinIO)', () => {
  let env: TestEnv;
  let app: FastifyInstance;
  let url: string;
  let sha2: string;
  let rollouts = 0;

  async function call(method: 'GET' | 'POST', path: string, opts: { as?: Person; body?: unknown } = {}): Promise<Res> {
    const res = await app.inject({
      method,
      url: path,
      headers: opts.as ? { authorization: `Bearer ${TOKENS[opts.as]}` } : {},
      ...(opts.body !== undefined ? { payload: opts.body as Record<string, unknown> } : {}),
    });
    let json: unknown;
    try {
      json = res.json();
    } catch {
      json = undefined;
    }
    // Every JSON answer of a documented status matches the schema its OpenAPI entry was generated from.
    const route = API_ROUTES.find((r) => r.method === method && new RegExp(`^${r.path.replace(/:[A-Za-z]+/g, '[^/]+')}$`).test(path));
    const schema = route?.responses[res.statusCode]?.schema;
    if (schema) {
      const parsed = schema.safeParse(json);
      if (!parsed.success) throw new Error(`${method} ${path} → ${res.statusCode} does not match its documented schema: ${parsed.error.message}`);
    }
    return { status: res.statusCode, json, text: res.body };
  }

  async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const value = await probe();
      if (value !== undefined) return value;
      await sleep(200);
    }
    throw new Error(`timed out waiting for ${what}`);
  }

  /** Starts a canary of v2 against production v1 and waits until it takes its first step (50%). */
  async function startRollout(): Promise<WorkflowHandle<typeof rolloutWorkflow>> {
    const rolloutId = `${MODEL}-v2-test${++rollouts}`;
    const handle = await env.client.workflow.start(rolloutWorkflow, {
      taskQueue: env.config.taskQueues.pipeline,
      workflowId: rolloutWorkflowId(MODEL),
      args: [{ rolloutId, model: MODEL, version: 2, sha256: sha2, deployment: DEPLOYMENT, expectedProduction: 1, requestedBy: 'alice' }],
    });
    await until('the canary at 50%', async () => {
      const res = await call('GET', `/v1/models/${MODEL}/rollout`, { as: 'dave' });
      return res.json?.status?.rolloutId === rolloutId && res.json.status.percent === 50 ? true : undefined;
    });
    return handle;
  }

  beforeAll(async () => {
    env = await startTestEnv('api-rollouts');
    const tokens = new TokenStore(Object.entries(PEOPLE).map(([identity, groups]) => ({ identity, groups: [...groups], sha256: hashToken(TOKENS[identity as Person]) })));
    const authz = parseApiPolicy({ models: { '*': { read: ['analysts', 'risk-reviewers'], operate: ['ml-eng'], approve: ['risk-reviewers'] } } });
    app = createApiApp({ client: env.client, config: env.config, registry: env.registry, store: env.store, tokens, logger: pino({ level: 'silent' }), authz });
    await app.listen({ host: '127.0.0.1', port: 0 });
    url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;

    await registerFixtureVersion(env.store, env.registry, MODEL, 'v1');
    await env.registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: { workflowId: 'wf-p1', runId: 'run-p1' } });
    sha2 = (await registerFixtureVersion(env.store, env.registry, MODEL, 'v2')).artifact.sha256;
    await deployFixtureModel(env.store, env.registry, FIRST_ONLY);
  });
  afterAll(async () => {
    await app?.close();
    await env?.close();
  });

  it('every rollout route refuses a missing token', async () => {
    const routes = API_ROUTES.filter((r) => /\/roll(out|back)\b/.test(r.path));
    expect(routes.map((r) => `${r.method} ${r.path}`).sort()).toEqual([
      'GET /v1/models/:model/rollout',
      'POST /v1/models/:model/rollback',
      'POST /v1/models/:model/rollout/abort',
      'POST /v1/models/:model/rollout/pause',
      'POST /v1/models/:model/rollout/promote',
      'POST /v1/models/:model/rollout/resume',
    ]);
    for (const r of routes) {
      const res = await call(r.method as 'GET' | 'POST', r.path.replace(':model', MODEL), r.method === 'POST' ? { body: {} } : {});
      expect(res.status, `${r.method} ${r.path}`).toBe(401);
    }
    // Nothing ever ran: 404 for the status, 409 for the controls.
    expect((await call('GET', `/v1/models/${MODEL}/rollout`, { as: 'dave' })).status).toBe(404);
    const none = await call('POST', `/v1/models/${MODEL}/rollout/pause`, { as: 'alice', body: {} });
    expect(none.status).toBe(409);
    expect(none.json.error).toBe(`no rollout of ${MODEL} is running`);
  });

  it('status, pause and resume by an operator, promote only with the decide right, abort undoes the canary', async () => {
    const handle = await startRollout();
    const status = await call('GET', `/v1/models/${MODEL}/rollout`, { as: 'dave' });
    expect(status.status).toBe(200);
    expect(status.json).toMatchObject({
      model: MODEL,
      running: true,
      last: null,
      status: { state: 'running', percent: 50, version: 2, productionVersion: 1, strategy: 'canary', steps: [{ step: 'canary-50', percent: 50 }] },
      traffic: { mode: 'canary', percent: 50, candidate: { version: 2 } },
    });

    // Readers cannot operate.
    expect((await call('POST', `/v1/models/${MODEL}/rollout/pause`, { as: 'dave', body: {} })).status).toBe(403);
    const paused = await call('POST', `/v1/models/${MODEL}/rollout/pause`, { as: 'alice', body: { reason: 'checking dashboards' } });
    expect(paused.status).toBe(200);
    expect(paused.json).toMatchObject({ action: 'pause', by: 'alice', status: { state: 'paused', percent: 50 } });
    // The workflow's validator refuses a second pause: 409 with its message.
    const again = await call('POST', `/v1/models/${MODEL}/rollout/pause`, { as: 'alice' });
    expect(again.status).toBe(409);
    expect(again.json.error).toContain('only a running canary can be paused');
    const resumed = await call('POST', `/v1/models/${MODEL}/rollout/resume`, { as: 'alice', body: {} });
    expect(resumed.json).toMatchObject({ action: 'resume', status: { state: 'running' } });
    expect((await call('GET', `/v1/models/${MODEL}/rollout`, { as: 'dave' })).json.status.state).toBe('running');

    // Operating is not deciding: alice may not promote (the models' approve groups), nor may dave.
    const refused = await call('POST', `/v1/models/${MODEL}/rollout/promote`, { as: 'alice', body: {} });
    expect(refused.status).toBe(403);
    expect(refused.json.error).toContain('approve groups');
    expect((await call('POST', `/v1/models/${MODEL}/rollout/promote`, { as: 'dave', body: {} })).status).toBe(403);
    // ... and bob may decide but not abort.
    expect((await call('POST', `/v1/models/${MODEL}/rollout/abort`, { as: 'bob', body: {} })).status).toBe(403);

    const aborted = await call('POST', `/v1/models/${MODEL}/rollout/abort`, { as: 'alice', body: { reason: 'latency looks off' } });
    expect(aborted.status).toBe(200);
    expect(aborted.json).toMatchObject({ action: 'abort', by: 'alice' });
    const result = await handle.result();
    expect(result).toMatchObject({ outcome: 'aborted', reason: 'aborted by alice: latency looks off' });

    expect((await env.registry.getAlias(MODEL, 'production'))?.version).toBe(1);
    const after = await call('GET', `/v1/models/${MODEL}/rollout`, { as: 'dave' });
    expect(after.json).toMatchObject({
      running: false,
      status: null,
      last: { outcome: 'aborted', version: 2, productionVersion: 1, decidedBy: 'alice', steps: [{ step: 'canary-50' }] },
      traffic: { mode: 'none', percent: 0, candidate: null },
    });
    const late = await call('POST', `/v1/models/${MODEL}/rollout/abort`, { as: 'alice', body: {} });
    expect(late.status).toBe(409);
    expect(late.json.error).toBe(`no rollout of ${MODEL} is running`);
  });

  it('promote by a decider; rollback moves production back and is recorded; a repeated rollback does not undo itself', async () => {
    const handle = await startRollout();
    const promoted = await call('POST', `/v1/models/${MODEL}/rollout/promote`, { as: 'bob', body: { reason: 'looks good' } });
    expect(promoted.status).toBe(200);
    expect(promoted.json).toMatchObject({ action: 'promote', by: 'bob' });
    expect(await handle.result()).toMatchObject({ outcome: 'promoted', previousVersion: 1 });
    expect((await env.registry.getAlias(MODEL, 'production'))?.version).toBe(2);
    expect((await call('GET', `/v1/models/${MODEL}/rollout`, { as: 'dave' })).json.last).toMatchObject({ outcome: 'promoted', decidedBy: 'bob' });

    // Rolling back needs operate.
    expect((await call('POST', `/v1/models/${MODEL}/rollback`, { as: 'bob', body: {} })).status).toBe(403);
    const rolledBack = await call('POST', `/v1/models/${MODEL}/rollback`, { as: 'alice', body: { reason: 'complaints from underwriting' } });
    expect(rolledBack.status, rolledBack.text).toBe(200);
    expect(rolledBack.json).toMatchObject({ action: 'alias_moved', from: 2, to: 1, by: 'alice' });
    const entry = await env.registry.getAlias(MODEL, 'production');
    expect(entry).toMatchObject({ version: 1, previousVersion: 2, strategy: 'rollback', by: 'alice', reason: 'complaints from underwriting', run: { workflowId: 'api' } });

    // Again, without naming a version: it would put back what was just removed, so it is refused.
    const twice = await call('POST', `/v1/models/${MODEL}/rollback`, { as: 'alice', body: {} });
    expect(twice.status).toBe(409);
    expect(twice.json.error).toContain('was itself rolled back');
    // Naming the version the alias already has, a missing version, or an archived one.
    expect((await call('POST', `/v1/models/${MODEL}/rollback`, { as: 'alice', body: { toVersion: 1 } })).status).toBe(409);
    expect((await call('POST', `/v1/models/${MODEL}/rollback`, { as: 'alice', body: { toVersion: 9 } })).status).toBe(404);
    expect((await call('POST', `/v1/models/${MODEL}/rollback`, { as: 'alice', body: { toVersion: 0 } })).status).toBe(400);
    expect((await env.registry.getAlias(MODEL, 'production'))?.seq).toBe(entry!.seq);
  });

  it('rollback while a rollout runs aborts it; with nothing before production it is a 409', async () => {
    const handle = await startRollout();
    const wrongTarget = await call('POST', `/v1/models/${MODEL}/rollback`, { as: 'alice', body: { toVersion: 2 } });
    expect(wrongTarget.status).toBe(409);
    expect(wrongTarget.json.error).toContain('is running');
    const res = await call('POST', `/v1/models/${MODEL}/rollback`, { as: 'alice', body: { reason: 'stop it' } });
    expect(res.status, res.text).toBe(200);
    expect(res.json).toMatchObject({ action: 'aborted_rollout', from: 2, to: 1, by: 'alice', status: { version: 2 } });
    expect(await handle.result()).toMatchObject({ outcome: 'aborted', reason: 'aborted by alice: stop it' });
    expect((await env.registry.getAlias(MODEL, 'production'))?.version).toBe(1);
    expect((await env.registry.getTraffic(MODEL))?.mode).toBe('none');

    const first = await call('POST', `/v1/models/${FIRST_ONLY}/rollback`, { as: 'alice', body: {} });
    expect(first.status).toBe(409);
    expect(first.json.error).toContain('no earlier version');
    expect((await call('POST', '/v1/models/never-deployed/rollback', { as: 'alice', body: {} })).json.error).toContain('never been in production');
    expect((await call('GET', `/v1/models/${FIRST_ONLY}/rollout`, { as: 'dave' })).status).toBe(404);
  });

  it('the CLI shows and controls rollouts, and models history lists finished rollouts next to the alias moves', async () => {
    const cli = async (args: string[], who: Person) => {
      try {
        const { stdout, stderr } = await runCli(process.execPath, [resolve('bin/conveyor.mjs'), ...args], {
          env: { ...process.env, ...configEnv(env.config), LOG_LEVEL: 'warn', CONVEYOR_API_URL: url, CONVEYOR_TOKEN: TOKENS[who] },
        });
        return { code: 0, stdout, stderr };
      } catch (err) {
        const e = err as { code: number; stdout: string; stderr: string };
        return { code: e.code, stdout: e.stdout, stderr: e.stderr };
      }
    };
    const status = await cli(['rollout', 'status', MODEL], 'dave');
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain('no rollout running');
    expect(status.stdout).toContain('aborted');
    expect(status.stdout).toContain('canary-50');
    expect(status.stdout).toContain('production only');
    const asJson = JSON.parse((await cli(['rollout', 'status', MODEL, '--json'], 'dave')).stdout) as { running: boolean; last: { outcome: string } };
    expect(asJson).toMatchObject({ running: false, last: { outcome: 'aborted' } });

    const notRunning = await cli(['rollout', 'pause', MODEL, '--reason', 'x'], 'alice');
    expect(notRunning.code).toBe(1);
    expect(notRunning.stderr).toContain(`409: no rollout of ${MODEL} is running`);
    const refused = await cli(['rollback', FIRST_ONLY], 'alice');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('no earlier version');

    const moved = await cli(['rollback', MODEL, '--to', '2', '--reason', 'fixed upstream'], 'alice');
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stdout).toContain(`production moved: ${MODEL}@production → v2 (was v1) (by alice)`);

    const history = await cli(['models', 'history', MODEL], 'dave');
    expect(history.code, history.stderr).toBe(0);
    expect(history.stdout).toContain('rollouts to production');
    expect(history.stdout).toMatch(/canary v2 \(production v1\): promoted by bob/);
    expect(history.stdout).toMatch(/canary v2 \(production v1\): aborted by alice/);
    expect(history.stdout).toContain('by alice (api) [rollback]: complaints from underwriting');
    const historyJson = JSON.parse((await cli(['models', 'history', MODEL, '--json'], 'dave')).stdout) as { rollouts: Array<{ outcome: string }>; timeline: Array<{ strategy: string; by?: string }> };
    expect(historyJson.rollouts.map((r) => r.outcome)).toEqual(['aborted', 'promoted', 'aborted']);
    expect(historyJson.timeline.map((t) => t.strategy)).toEqual(['direct', 'canary', 'rollback', 'rollback']);
  });
});
