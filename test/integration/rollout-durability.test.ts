import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { rolloutWorkflow } from '../../workflows/rollout.js';
import { rolloutStatusQuery, rolloutWorkflowId } from '../../workflows/rollout-messages.js';
import { deploymentSchema } from '../../src/spec/schema.js';
import { Registry } from '../../src/registry/registry.js';
import { MinioArtifactStore } from '../../src/store/minio-store.js';
import { startServing, type RunningService } from '../../src/serving/service.js';
import type { TrafficRecord } from '../../src/shared/registry-types.js';
import { keys } from '../../src/store/keys.js';
import { configEnv, testConfig, testLogger } from '../helpers/stack.js';
import { creditRows, registerFixtureVersion } from '../helpers/fixture-model.js';
import { Traffic } from '../helpers/traffic.js';
import { killWorker, startWorkerProcess } from '../helpers/worker-process.js';

const TOKEN = 'rollout-durability-token-00001';
const ROWS = creditRows(300, 31);

describe('rollouts and version switches under failure and load', () => {
  const config = testConfig('rollout-durable');
  const store = new MinioArtifactStore(config.s3);
  const registry = new Registry(store);
  let connection: Connection;
  let client: Client;
  let serving: RunningService;
  const workers: ChildProcess[] = [];

  beforeAll(async () => {
    await store.ensureBucket();
    connection = await Connection.connect({ address: config.temporal.address });
    client = new Client({ connection });
    serving = await startServing({ ...config, serving: { ...config.serving, port: 0, pollIntervalMs: 50 } }, testLogger, { port: 0, tokens: [TOKEN], predictionLog: { flushIntervalMs: 250 } });
  });

  afterAll(async () => {
    for (const w of workers) await killWorker(w);
    await serving?.close();
    await connection?.close();
  });

  it('a worker killed during a canary: the rollout continues from its step on a new worker, each step written once', async () => {
    const model = 'durable-canary';
    const v1 = await registerFixtureVersion(store, registry, model, 'd1');
    await registry.moveAlias({ model, alias: 'production', version: v1.version, expectedVersion: null, run: { workflowId: 'setup', runId: 'setup' } });
    const v2 = await registerFixtureVersion(store, registry, model, 'd2');
    await serving.host.refresh();
    const load = new Traffic({ url: serving.url, token: TOKEN, model, row: (i) => ROWS[i % ROWS.length]!, concurrency: 2, pauseMs: 3 }).start();

    workers.push(await startWorkerProcess(configEnv(config)));
    // Latency is not under test here (rollout.test.ts rolls a slow candidate back): while the whole
    // suite shares 2 vCPUs, per-request p95 swings by several ms between arms of the same model.
    const deployment = deploymentSchema.parse({ strategy: 'canary', canary: { steps: [20, 60, 100], bake: '4s' }, analysisInterval: '1s', bounds: { minRequests: 10, minLatencyIncreaseMs: 60_000 } });
    const handle = await client.workflow.start(rolloutWorkflow, {
      taskQueue: config.taskQueues.pipeline,
      workflowId: rolloutWorkflowId(model),
      args: [{ rolloutId: `${model}-r1`, model, version: v2.version, sha256: v2.artifact.sha256, deployment, expectedProduction: 1, requestedBy: 'test' }],
    });
    // Up to 60 s: a worker process starting while the whole suite runs can take a large part of it.
    for (let i = 0; i < 600; i++) {
      const status = await handle.query(rolloutStatusQuery);
      if (status.steps.length >= 2) break;
      await sleep(100);
    }
    // On failure the message carries the whole status (state, verdicts, reasons): why the canary did not move on.
    const reached = await handle.query(rolloutStatusQuery);
    expect(reached.steps.map((s) => s.step), JSON.stringify(reached)).toEqual(['canary-20', 'canary-60']);
    await killWorker(workers[0]!);
    // The canary holds at 60 % while no worker runs: serving keeps routing by the split.
    await sleep(3000);
    expect(await registry.getTraffic(model)).toMatchObject({ mode: 'canary', percent: 60 });
    workers.push(await startWorkerProcess(configEnv(config)));

    const result = await handle.result();
    const answers = await load.stop();
    expect(result).toMatchObject({ outcome: 'promoted', previousVersion: 1 });
    expect(answers.filter((a) => a.status !== 200)).toEqual([]);
    const entries: TrafficRecord[] = [];
    for (const key of await store.list(keys.trafficPrefix(model))) entries.push(JSON.parse((await store.get(key)).toString('utf8')) as TrafficRecord);
    expect(entries.map((e) => e.step)).toEqual(['canary-20', 'canary-60', 'canary-100', 'cleared']);
    expect(await registry.getAlias(model, 'production')).toMatchObject({ version: 2, strategy: 'canary' });
    const [record] = await registry.listRollouts(model);
    expect(record!.steps.map((s) => s.verdict)).toEqual(['healthy', 'healthy', 'healthy']);
  });

  it('switching versions under a bounded load fails zero requests', async () => {
    const model = 'switch-load';
    for (const run of ['s1', 's2', 's3']) await registerFixtureVersion(store, registry, model, run);
    let current: number | null = null;
    const moveTo = async (version: number): Promise<void> => {
      await registry.moveAlias({ model, alias: 'production', version, expectedVersion: current, run: { workflowId: 'switch', runId: `to-${version}-${Date.now()}` } });
      current = version;
    };
    await moveTo(1);
    await serving.host.refresh();
    const load = new Traffic({ url: serving.url, token: TOKEN, model, row: (i) => ROWS[i % ROWS.length]!, concurrency: 8, pauseMs: 0, limit: 3000 }).start();
    const finished = load.done();
    let settled = false;
    void finished.then(() => (settled = true));
    const sequence = [2, 3, 1, 3, 2, 1, 2];
    for (const version of sequence) {
      if (settled) break;
      await sleep(150);
      await moveTo(version);
    }
    const answers = await finished;
    expect(answers).toHaveLength(3000);
    expect(answers.filter((a) => a.status !== 200)).toEqual([]);
    expect(new Set(answers.map((a) => a.version))).toEqual(new Set([1, 2, 3]));
  });
});
