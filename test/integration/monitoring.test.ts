import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { DefaultLogger } from '@temporalio/worker';
import { MockActivityEnvironment } from '@temporalio/testing';
import { monitoringActivities } from '../../activities/monitoring.js';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@temporalio/client';
import { runStatus, startPipeline, waitForRun } from '../../src/runs.js';
import { RunOutcome } from '../../src/shared/errors.js';
import { startServing, type RunningService } from '../../src/serving/service.js';
import { listMonitorResults } from '../../src/monitoring/results.js';
import { describeSchedule, listSchedules, monitorScheduleId, pauseSchedule, retrainScheduleId, triggerSchedule, unpauseSchedule } from '../../src/temporal/schedules.js';
import { retrainingControllerId, RETRAINING_SUBMITTER } from '../../src/shared/monitoring.js';
import { RETRAIN_SIGNAL, RETRAINING_CONTROLLER } from '../../src/shared/monitoring.js';
import type { MonitorInput, RetrainRequest, RetrainTarget } from '../../activities/monitoring.js';
import { monitorModel } from '../../workflows/monitor.js';
import { retrainingStateQuery, type RetrainingState } from '../../workflows/retraining.js';
import { generateCreditRisk } from '../../examples/credit-risk/generate.js';
import { FIXTURE_FEATURES } from '../helpers/fixture-model.js';
import { examplePipeline } from '../helpers/pipelines.js';
import { startTestEnv, testLogger, type TestEnv } from '../helpers/stack.js';
import type { LoadedPipeline } from '../../src/spec/load.js';
import { buildLineage, formatLineage } from '../../src/registry/lineage.js';

const TOKEN = 'monitoring-test-serving-token-01';
const MODEL = 'credit-risk';

type Row = Record<string, string | number | null>;
const features = (rows: Row[]): Row[] => rows.map((r) => Object.fromEntries(FIXTURE_FEATURES.map((f) => [f, r[f] ?? null])));

describe('monitoring and decay-triggered retraining (real Temporal, MinIO, trainer, serving)', () => {
  let env: TestEnv;
  let serving: RunningService;
  let pipeline: LoadedPipeline;
  /** Webhook events received, by kind (signatures are checked by the webhook tests). */
  const events: Array<{ kind: string; data: Record<string, unknown> }> = [];
  const receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      events.push(JSON.parse(body) as { kind: string; data: Record<string, unknown> });
      res.writeHead(204).end();
    });
  });

  beforeAll(async () => {
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
    env = await startTestEnv('monitoring', {}, { CONVEYOR_WEBHOOK_SECRET: 'monitoring-webhook-secret-0001', CONVEYOR_WEBHOOK_ALLOW_HOSTS: '127.0.0.1', CONVEYOR_WEBHOOK_ALLOW_PRIVATE: 'true' });
    serving = await startServing({ ...env.config, serving: { ...env.config.serving, port: 0, pollIntervalMs: 100 } }, testLogger, { port: 0, tokens: [TOKEN], predictionLog: { flushIntervalMs: 200 } });
    pipeline = await examplePipeline((s) => ({
      ...s,
      monitoring: { interval: '1h', drift: { minSamples: 150 }, retrain: { cooldown: '1h', maxPerDay: 3 } },
      schedule: { every: '24h' },
      notifications: { webhooks: [{ url: hookUrl, events: ['monitor_breach', 'retraining_started'] }] },
    }));
    const first = await waitForRun(await startPipeline(env.client, env.config, pipeline, { submittedBy: 'alice' }));
    expect(first.message).toBeUndefined();
    expect(first.outcome).toBe(RunOutcome.Deployed);
    await serving.host.refresh();
  });

  afterAll(async () => {
    await serving?.close();
    await env?.close();
    receiver.close();
  });

  async function serve(rows: Row[]): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < rows.length; i += 50) {
      const res = await fetch(`${serving.url}/v1/models/${MODEL}:predict`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
        body: JSON.stringify({ instances: rows.slice(i, i + 50) }),
      });
      expect(res.status).toBe(200);
      ids.push(((await res.json()) as { requestId: string }).requestId);
    }
    await serving.predictionLog!.flush();
    return ids;
  }

  const monitorInput = (): MonitorInput => ({ model: MODEL, monitoring: pipeline.spec.monitoring!, target: { spec: pipeline.spec, code: pipeline.code, trainingTaskQueue: env.config.taskQueues.training } });
  const runMonitor = (id: string) => env.client.workflow.execute(monitorModel, { taskQueue: env.config.taskQueues.pipeline, workflowId: `${id}-${Date.now()}`, args: [monitorInput()] });
  const controllerState = (client: Client, model = MODEL): Promise<RetrainingState> => client.workflow.getHandle(retrainingControllerId(model)).query(retrainingStateQuery);
  /** Polls the controller's state until `done` holds (bounded by attempts); the error says what was awaited. */
  async function controllerUntil(model: string, done: (state: RetrainingState) => boolean, what: (state: RetrainingState | undefined) => string): Promise<RetrainingState> {
    let state: RetrainingState | undefined;
    for (let i = 0; i < 300; i++) {
      state = await controllerState(env.client, model).catch(() => undefined);
      if (state && done(state)) return state;
      await sleep(100);
    }
    throw new Error(`controller of ${model} ${what(state)}`);
  }
  /** Polls the controller until it has made `n` decisions. */
  const decisions = (model: string, n: number): Promise<RetrainingState> =>
    controllerUntil(model, (s) => s.decisions.length >= n, (s) => `made ${s?.decisions.length ?? 0} of ${n} decisions`);
  /** Polls until the controller has seen its retraining end: a run's result reaches the client before the controller's next workflow task clears `running`. */
  const controllerIdle = (model: string): Promise<RetrainingState> => controllerUntil(model, (s) => s.running === null, () => 'still has a retraining running');
  const decayRequest = (model: string, reason: string): RetrainRequest => ({
    model,
    target: { ...monitorInput().target, spec: { ...pipeline.spec, name: model } },
    trigger: { kind: 'decay', reason },
    limits: { cooldown: '1h', maxPerDay: 3 },
    requestedAt: new Date().toISOString(),
  });
  const report = (request: RetrainRequest) =>
    env.client.workflow.signalWithStart(RETRAINING_CONTROLLER, { workflowId: retrainingControllerId(request.model), taskQueue: env.config.taskQueues.pipeline, args: [{ model: request.model }], signal: RETRAIN_SIGNAL, signalArgs: [request] });

  it('deploying with monitoring set the monitor schedule from the spec; it can be paused and resumed', async () => {
    // Listed from visibility, which lags creation by a second or so: polled (bounded by attempts).
    let schedules = await listSchedules(env.client, { model: MODEL });
    for (let i = 0; i < 100 && schedules.length < 2; i++) {
      await sleep(100);
      schedules = await listSchedules(env.client, { model: MODEL });
    }
    expect(schedules.map((s) => [s.id, s.kind, s.spec, s.workflowType]).sort()).toEqual([
      [monitorScheduleId(MODEL), 'monitor', 'every 1h', 'monitorModel'],
      [retrainScheduleId(MODEL), 'retrain', 'every 1d', 'scheduledRetraining'],
    ]);
    await pauseSchedule(env.client, monitorScheduleId(MODEL), 'test pause');
    expect((await describeSchedule(env.client, monitorScheduleId(MODEL))).state.paused).toBe(true);
    await unpauseSchedule(env.client, monitorScheduleId(MODEL), 'test resume');
    expect((await describeSchedule(env.client, monitorScheduleId(MODEL))).state.paused).toBe(false);
    // Paused again for the tests below: they run monitors by hand and count the controller's
    // decisions, which a firing at the top of the hour (every 1h is aligned to UTC) would add to.
    // Triggering by hand still works while paused.
    await pauseSchedule(env.client, monitorScheduleId(MODEL), 'paused for the rest of the test');
    await pauseSchedule(env.client, retrainScheduleId(MODEL), 'paused for the rest of the test');
  });

  it('too few samples: no verdict and no retraining', async () => {
    await serve(features(generateCreditRisk({ rows: 40, seed: 501 })));
    const summary = await runMonitor('monitor-few');
    expect(summary).toMatchObject({ verdict: 'insufficient_data', retrainingRequested: false, version: 1 });
  });

  it('no drift: verdict ok, labels sent later are joined, no retraining', async () => {
    const rows = generateCreditRisk({ rows: 400, seed: 502 });
    const ids = await serve(features(rows));
    // Ground truth for every row arrives after the predictions (8 requests of 50 rows).
    const labels = ids.flatMap((requestId, r) => rows.slice(r * 50, r * 50 + 50).map((row, rowIndex) => ({ requestId, rowIndex, label: row['default'] })));
    const res = await fetch(`${serving.url}/v1/models/${MODEL}:feedback`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` }, body: JSON.stringify({ labels }) });
    expect(res.status).toBe(202);
    const summary = await runMonitor('monitor-ok');
    expect(summary).toMatchObject({ verdict: 'ok', retrainingRequested: false, breaches: [] });
    const [latest] = await listMonitorResults(env.store, MODEL, { limit: 1 });
    expect(latest!.performance).toMatchObject({ metric: 'roc_auc', labels: 400, breached: false });
    expect(latest!.performance!.value).toBeGreaterThan(0.6);
    await expect(controllerState(env.client)).rejects.toThrow();
  });

  it('drift in one feature: named in the verdict, and exactly one retraining starts, recorded in lineage', async () => {
    await serve(features(generateCreditRisk({ rows: 600, seed: 503, drift: 'income' })));
    const summary = await runMonitor('monitor-drift');
    expect(summary.verdict).toBe('decay');
    expect(summary.retrainingRequested).toBe(true);
    expect(summary.breaches.some((b) => b.includes('income'))).toBe(true);
    const [latest] = await listMonitorResults(env.store, MODEL, { limit: 1 });
    const named = new Set(latest!.breaches.filter((b) => b.kind === 'drift' && b.feature !== 'prediction').map((b) => b.feature));
    expect(named.has('income')).toBe(true);
    expect(named.has('age')).toBe(false);

    const state = await decisions(MODEL, 1);
    expect(state.decisions.map((d) => d.decision)).toEqual(['started']);
    const retraining = env.client.workflow.getHandle(state.decisions[0]!.workflowId!);
    await retraining.result();
    await controllerIdle(MODEL);
    const v2 = await env.registry.getVersion(MODEL, 2);
    expect(v2.run).toMatchObject({ submittedBy: RETRAINING_SUBMITTER, trigger: { kind: 'decay', monitorResultKey: latest!.resultKey } });
    expect(await env.registry.getAlias(MODEL, 'production')).toMatchObject({ version: 2 });
    const lineage = formatLineage(await buildLineage(env.registry, env.store, MODEL, 2));
    expect(lineage).toContain(`started by decay: monitor result ${latest!.resultKey}`);
    // The breach and the retraining went out as webhooks (delivered by their own workflows).
    for (let i = 0; i < 100 && events.length < 2; i++) await sleep(100);
    const breach = events.find((e) => e.kind === 'monitor_breach');
    expect((breach?.data['breaches'] as string[]).some((b) => b.includes('income'))).toBe(true);
    expect(events.find((e) => e.kind === 'retraining_started')?.data).toMatchObject({ model: MODEL, workflowId: state.decisions[0]!.workflowId, trigger: { kind: 'decay' } });
  });

  it('a burst of 50 decay reports starts exactly one retraining; a report within the cooldown starts none', async () => {
    const model = 'credit-burst';
    await Promise.all(Array.from({ length: 50 }, (_, i) => report(decayRequest(model, `report ${i}`))));
    const state = await decisions(model, 50);
    expect(state.decisions.filter((d) => d.decision === 'started')).toHaveLength(1);
    expect(state.decisions.filter((d) => d.decision === 'skipped' && /already running/.test(d.reason))).toHaveLength(49);
    await env.client.workflow.getHandle(state.decisions.find((d) => d.decision === 'started')!.workflowId!).result();
    await controllerIdle(model);
    expect(await env.registry.listVersions(model)).toEqual([1]);

    // credit-risk retrained (after the drift report) less than an hour ago: its cooldown holds.
    await report(decayRequest(MODEL, 'again'));
    const after = await decisions(MODEL, 2);
    expect(after.decisions[1]).toMatchObject({ decision: 'skipped', reason: expect.stringMatching(/^cooldown of 1h since the retraining started at /) });
    expect(await env.registry.listVersions(MODEL)).toEqual([1, 2]);
  });

  it('the daily limit holds once reached; a timetable retraining goes through the same controller', async () => {
    const model = 'credit-burst';
    // One retraining of credit-burst started earlier today; with a limit of 1 a day (and no cooldown to speak of) the next is refused.
    await report({ ...decayRequest(model, 'over the limit'), limits: { cooldown: '1s', maxPerDay: 1 } });
    const state = await decisions(model, 51);
    expect(state.decisions[50]).toMatchObject({ decision: 'skipped', reason: 'daily limit reached: 1 of 1 retrainings in the last 24 hours' });

    // The retrain-<model> schedule set at deployment asks the controller too; a timetable is not held by the cooldown.
    await triggerSchedule(env.client, retrainScheduleId(MODEL));
    const after = await decisions(MODEL, 3);
    expect(after.decisions[2]).toMatchObject({ decision: 'started', trigger: { kind: 'schedule', scheduleId: retrainScheduleId(MODEL) } });
    await env.client.workflow.getHandle(after.decisions[2]!.workflowId!).result();
    expect((await env.registry.getVersion(MODEL, 3)).run.trigger).toEqual({ kind: 'schedule', scheduleId: retrainScheduleId(MODEL) });
  });

  it('a later version deployed from a spec without monitoring or schedule removes the schedules an earlier one set', async () => {
    const model = 'credit-unmonitored';
    const monitored = { ...pipeline, spec: { ...pipeline.spec, name: model, notifications: { webhooks: [] } } };
    const first = await waitForRun(await startPipeline(env.client, env.config, monitored, { submittedBy: 'alice' }));
    expect(first.outcome).toBe(RunOutcome.Deployed);
    // Described, not listed: the list comes from visibility, which lags creation by a second or so.
    expect((await describeSchedule(env.client, monitorScheduleId(model))).action).toMatchObject({ workflowType: 'monitorModel' });
    expect((await describeSchedule(env.client, retrainScheduleId(model))).action).toMatchObject({ workflowType: 'scheduledRetraining' });
    const both = [monitorScheduleId(model), retrainScheduleId(model)];

    // A deployment to another alias leaves production's schedules alone (monitors judge production).
    const staging = await examplePipeline((s) => ({ ...s, name: model, deployment: { ...s.deployment, alias: 'staging' } }));
    const stagingRun = await startPipeline(env.client, env.config, staging, { submittedBy: 'alice' });
    expect((await waitForRun(stagingRun)).outcome).toBe(RunOutcome.Deployed);
    expect(await env.registry.getAlias(model, 'staging')).toMatchObject({ version: 2 });
    expect((await runStatus(stagingRun)).schedules).toEqual(both);
    expect((await describeSchedule(env.client, monitorScheduleId(model))).action).toMatchObject({ workflowType: 'monitorModel' });

    const plain = await examplePipeline((s) => ({ ...s, name: model }));
    const acts = monitoringActivities({ store: env.store, registry: env.registry, logger: testLogger, workDir: tmpdir(), python: 'python3', openBucket: () => env.store });
    const activity = (type: string) => new MockActivityEnvironment({ activityType: type }, { client: env.client, logger: new DefaultLogger('ERROR') });
    const plainTarget = { spec: plain.spec, code: plain.code, trainingTaskQueue: env.config.taskQueues.training };
    // A late call (a retry) for a version that is not production (v1 is) changes nothing.
    expect(await activity('ensureSchedules').run(acts.ensureSchedules, { model, target: plainTarget, version: 2 })).toEqual(both);
    expect((await describeSchedule(env.client, retrainScheduleId(model))).action).toMatchObject({ workflowType: 'scheduledRetraining' });
    // The schedules carry the version whose deployment set them.
    const scheduled = (await describeSchedule(env.client, retrainScheduleId(model))).action as { args?: Array<{ target: RetrainTarget }> };
    expect(scheduled.args?.[0]?.target.deployedVersion).toBe(1);
    // A retraining whose target was set by the deployment of a version not in production (as after
    // a rollback) is refused, and no controller starts.
    const request: RetrainRequest = { model, target: { ...plainTarget, deployedVersion: 2 }, trigger: { kind: 'schedule', scheduleId: retrainScheduleId(model) }, limits: null, requestedAt: new Date().toISOString() };
    expect(await activity('requestRetraining').run(acts.requestRetraining, request)).toEqual({
      requested: false,
      reason: `production is ${model}@1, but this request's target was set when ${model}@2 was deployed (a rollback, or a schedule update that failed, since); deploy from the current spec to set the schedules again`,
    });
    await expect(controllerState(env.client, model)).rejects.toThrow();

    expect(plain.spec.monitoring).toBeUndefined();
    expect(plain.spec.schedule).toBeUndefined();
    const handle = await startPipeline(env.client, env.config, plain, { submittedBy: 'alice' });
    const second = await waitForRun(handle);
    expect(second.outcome).toBe(RunOutcome.Deployed);
    expect((await env.registry.getAlias(model, 'production'))?.version).toBe(3);
    expect((await runStatus(handle)).schedules).toEqual([]);
    await expect(describeSchedule(env.client, monitorScheduleId(model))).rejects.toThrow(`schedule "${monitorScheduleId(model)}" not found`);
    await expect(describeSchedule(env.client, retrainScheduleId(model))).rejects.toThrow(`schedule "${retrainScheduleId(model)}" not found`);
    expect(await listSchedules(env.client, { model })).toEqual([]);
  });
});
