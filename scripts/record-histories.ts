/**
 * Records workflow histories for the replay test (test/replay.test.ts): runs the
 * pipeline through each path on a fresh dev stack and saves every history under
 * test/fixtures/histories/. Re-record only when a workflow change is meant to be
 * incompatible — and then guard the old path with patched().
 *
 *   node --import tsx scripts/record-histories.ts [--tag v4] [--only monitoring|monitor-decay]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadConfig } from '../src/config.js';
import { locateBinary, startDevStack } from '../src/dev/servers.js';
import { createLogger } from '../src/logger.js';
import { decide, startPipeline, waitForRun } from '../src/runs.js';
import { loadPipelineFile, type LoadedPipeline } from '../src/spec/load.js';
import { parsePipelineSpec } from '../src/spec/define.js';
import type { PipelineSpecInput } from '../src/spec/schema.js';
import { createWorkers } from '../src/worker.js';
import { statusQuery } from '../workflows/messages.js';
import { monitorModel } from '../workflows/monitor.js';
import { retrainingStateQuery } from '../workflows/retraining.js';
import { RETRAIN_SIGNAL, RETRAINING_CONTROLLER, retrainingControllerId } from '../src/shared/monitoring.js';

const OUT = 'test/fixtures/histories';
/** Histories are kept per release of the workflow code: `--tag v2` writes auto-deployed.v2.json, … */
const tagIndex = process.argv.indexOf('--tag');
const TAG = tagIndex > 0 ? `.${process.argv[tagIndex + 1]}` : '';
/** `--only monitoring` records just the monitoring and retraining histories (v5 onwards). */
const onlyIndex = process.argv.indexOf('--only');
const ONLY = onlyIndex > 0 ? process.argv[onlyIndex + 1] : undefined;

const dir = mkdtempSync(join(tmpdir(), 'conveyor-record-'));
// A local receiver, so the webhook paths (child delivery workflows) are recorded too.
const receiver = createServer((req, res) => {
  req.resume();
  req.on('end', () => res.writeHead(204).end());
});
await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
const stack = await startDevStack({ dir, accessKey: 'record', secretKey: 'record-secret' });
try {
  const config = loadConfig({
    ...process.env,
    TEMPORAL_ADDRESS: stack.temporalAddress,
    CONVEYOR_S3_ENDPOINT: stack.s3Endpoint,
    CONVEYOR_S3_ACCESS_KEY: stack.accessKey,
    CONVEYOR_S3_SECRET_KEY: stack.secretKey,
    CONVEYOR_HOME: join(dir, 'home'),
    CONVEYOR_WEBHOOK_SECRET: 'record-secret-0123456789',
    CONVEYOR_WEBHOOK_ALLOW_HOSTS: '127.0.0.1',
    CONVEYOR_WEBHOOK_ALLOW_PRIVATE: 'true',
  });
  const logger = createLogger({ level: 'warn', pretty: false });
  const workers = await createWorkers({ config, logger });
  const running = workers.run();
  const connection = await Connection.connect({ address: config.temporal.address });
  const client = new Client({ connection });
  const base = await loadPipelineFile('examples/credit-risk/pipeline.ts');
  const variant = (patch: Partial<PipelineSpecInput>): LoadedPipeline => ({ ...base, spec: parsePipelineSpec({ ...base.spec, ...patch }) });

  async function record(name: string, pipeline: LoadedPipeline, during?: (h: Awaited<ReturnType<typeof startPipeline>>) => Promise<void>): Promise<void> {
    const handle = await startPipeline(client, config, pipeline, { submittedBy: 'alice', workflowId: `record-${name}` });
    if (during) await during(handle);
    const end = await waitForRun(handle);
    // The CLI writes the canonical proto JSON that historyFromJSON reads back.
    const json = execFileSync(locateBinary('temporal'), ['workflow', 'show', '--address', config.temporal.address, '--workflow-id', handle.workflowId, '--output', 'json']);
    writeFileSync(join(OUT, `${name}${TAG}.json`), json);
    console.log(`${name}: ${end.outcome} (${(JSON.parse(json.toString()) as { events: unknown[] }).events.length} events)`);
  }

  const approveWhenAsked = (kind: 'approve' | 'reject') => async (handle: Awaited<ReturnType<typeof startPipeline>>) => {
    for (;;) {
      const status = await handle.query(statusQuery);
      if (status.awaitingApproval) {
        await decide(handle, kind, { model: status.model, version: status.awaitingApproval.version, reviewer: 'bob', comment: 'recorded' });
        return;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const manual = { approval: { mode: 'manual' as const, reviewers: ['bob'], timeout: '1h' } };

  const show = (workflowId: string): Buffer =>
    execFileSync(locateBinary('temporal'), ['workflow', 'show', '--address', config.temporal.address, '--workflow-id', workflowId, '--output', 'json']);
  const save = (name: string, json: Buffer): void => {
    writeFileSync(join(OUT, `${name}${TAG}.json`), json);
    console.log(`${name}: ${(JSON.parse(json.toString()) as { events: unknown[] }).events.length} events`);
  };

  if (ONLY === 'monitoring') {
    // v5: a deployment that sets the monitor and timetable schedules, one monitor run (an empty
    // window: no verdict), and the retraining controller starting one retraining.
    const monitored = variant({ monitoring: { interval: '1h', drift: { minSamples: 50 } }, schedule: { every: '24h' } });
    await record('monitored-deployed', monitored);
    const target = { spec: monitored.spec, code: monitored.code, trainingTaskQueue: config.taskQueues.training };
    await client.workflow.execute(monitorModel, { taskQueue: config.taskQueues.pipeline, workflowId: 'record-monitor', args: [{ model: monitored.spec.name, monitoring: monitored.spec.monitoring!, target }] });
    save('monitor-insufficient', show('record-monitor'));
    await client.workflow.signalWithStart(RETRAINING_CONTROLLER, {
      workflowId: retrainingControllerId(monitored.spec.name),
      taskQueue: config.taskQueues.pipeline,
      args: [{ model: monitored.spec.name }],
      signal: RETRAIN_SIGNAL,
      signalArgs: [{ model: monitored.spec.name, target, trigger: { kind: 'schedule', scheduleId: 'retrain-credit-risk' }, limits: null, requestedAt: new Date().toISOString() }],
    });
    const controller = client.workflow.getHandle(retrainingControllerId(monitored.spec.name));
    for (;;) {
      const state = await controller.query(retrainingStateQuery);
      const started = state.decisions.find((d) => d.decision === 'started');
      if (started?.workflowId && state.running === null) {
        save('retrain-deployed', show(started.workflowId));
        break;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    save('retraining-controller', show(controller.workflowId));
    await controller.terminate('recorded');
  }

  if (ONLY === 'monitor-decay') {
    // v6: a monitor run that finds decay and asks for a retraining, with each outcome of
    // requestRetraining: sent, refused (stale target), and no outcome (the activity before v6).
    // The activities are stubs on a queue of their own: only the workflow's commands matter here.
    const { NativeConnection, Worker } = await import('@temporalio/worker');
    const { bundleWorkflows } = await import('../src/worker.js');
    const monitored = variant({ monitoring: { interval: '1h', drift: { minSamples: 50 } } });
    const target = { spec: monitored.spec, code: monitored.code, trainingTaskQueue: config.taskQueues.training, deployedVersion: 1 };
    const queue = 'record-monitor-decay';
    let outcome: unknown;
    const decay = (input: { model: string; windowStart: string; windowEnd: string }) => ({
      model: input.model, version: 1, sha256: 'a'.repeat(64), windowStart: input.windowStart, windowEnd: input.windowEnd, computedAt: input.windowEnd,
      verdict: 'decay', decayKinds: ['drift'], sampleSize: 500, drift: null, performance: null,
      breaches: [{ kind: 'drift', feature: 'income', measure: 'psi', value: 0.33, threshold: 0.2, message: 'income: psi 0.33 > 0.2' }],
      notes: [], resultKey: `monitoring/${input.model}/000001/recorded.json`,
    });
    const stubConnection = await NativeConnection.connect({ address: config.temporal.address });
    const stubWorker = await Worker.create({
      connection: stubConnection,
      taskQueue: queue,
      workflowBundle: await bundleWorkflows(),
      activities: { runMonitor: async (input: { model: string; windowStart: string; windowEnd: string }) => decay(input), requestRetraining: async () => outcome },
    });
    await stubWorker.runUntil(async () => {
      for (const [name, value] of [
        ['monitor-decay-requested', { requested: true }],
        ['monitor-decay-refused', { requested: false, reason: 'production is credit-risk@2, but this request\'s target was set when credit-risk@1 was deployed' }],
        ['monitor-decay-no-outcome', undefined],
      ] as const) {
        outcome = value;
        const summary = await client.workflow.execute(monitorModel, { taskQueue: queue, workflowId: `record-${name}`, args: [{ model: monitored.spec.name, monitoring: monitored.spec.monitoring!, target }] });
        console.log(`${name}: retrainingRequested ${summary.retrainingRequested}`);
        save(name, show(`record-${name}`));
      }
    });
    await stubConnection.close();
  }

  if (!ONLY) await record('auto-deployed', base);
  if (!ONLY) await record('manual-approved', variant(manual), approveWhenAsked('approve'));
  if (!ONLY) await record('manual-rejected', variant(manual), approveWhenAsked('reject'));
  if (!ONLY) await record('gate-failed', variant({ evaluation: { ...base.spec.evaluation, gates: [{ metric: 'roc_auc', min: 0.999 }] } }));
  if (!ONLY) await record('data-invalid', variant({ dataset: { source: join(process.cwd(), 'test/fixtures/data/empty.csv') } }));
  if (TAG && !ONLY) {
    // Quorum of two with an escalation that fires before the second approval.
    const quorum = variant({ approval: { mode: 'manual', reviewers: ['bob', 'carol'], quorum: 2, timeout: '1h', remindBefore: ['3599s'], escalation: { after: '2s', reviewers: ['lena'] } } });
    await record('quorum-escalated', quorum, async (handle) => {
      for (;;) {
        const status = await handle.query(statusQuery);
        const a = status.awaitingApproval;
        if (a && a.approvals.length === 0) await decide(handle, 'approve', { model: status.model, version: a.version, reviewer: 'bob' });
        if (a?.escalated) {
          await decide(handle, 'approve', { model: status.model, version: a.version, reviewer: 'lena' });
          return;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    });
    const hooks = { notifications: { webhooks: [{ url: hookUrl }] } };
    await record('webhooks-approved', variant({ ...manual, ...hooks }), approveWhenAsked('approve'));
    await record('expired-reminded', variant({ approval: { mode: 'manual', reviewers: ['bob'], timeout: '3s', remindBefore: ['2s'] }, ...hooks }));
  }

  if (TAG && !ONLY && !['.v2', '.v3'].includes(TAG)) {
    // v4: deployment through a rollout child workflow. No serving runs here, so the canary
    // gets no traffic, cannot be judged within maxBake, and is rolled back: both histories.
    const canary = variant({ deployment: { strategy: 'canary', canary: { steps: [50, 100], bake: '1s', maxBake: '2s' }, analysisInterval: '1s' } });
    await record('canary-no-traffic', canary);
    const rollout = execFileSync(locateBinary('temporal'), ['workflow', 'show', '--address', config.temporal.address, '--workflow-id', 'rollout-credit-risk', '--output', 'json']);
    writeFileSync(join(OUT, `rollout-canary-no-traffic${TAG}.json`), rollout);
    console.log(`rollout-canary-no-traffic: ${(JSON.parse(rollout.toString()) as { events: unknown[] }).events.length} events`);
  }

  workers.shutdown();
  await running;
  await connection.close();
} finally {
  receiver.close();
  await stack.stop();
  rmSync(dir, { recursive: true, force: true });
}
