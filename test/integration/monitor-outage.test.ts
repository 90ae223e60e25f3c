import { randomUUID } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { DuckDBInstance } from '@duckdb/node-api';
import { isAlive, minioHealthy, stablePort, startMinio, waitUntil, type ServerProcess } from '../../src/dev/servers.js';
import { MinioArtifactStore } from '../../src/store/minio-store.js';
import { Registry } from '../../src/registry/registry.js';
import { keys } from '../../src/store/keys.js';
import { createWorkers } from '../../src/worker.js';
import { featureKind } from '../../src/data/features.js';
import { loadModel, parseModelMetadata, sha256Hex } from '../../src/eval/onnx-model.js';
import { buildReferenceProfile, fileRelation } from '../../src/monitoring/reference.js';
import { listMonitorResults } from '../../src/monitoring/results.js';
import type { PredictionRecord } from '../../src/serving/prediction-log.js';
import type { MonitorInput } from '../../activities/monitoring.js';
import { monitorModel } from '../../workflows/monitor.js';
import { toCsv } from '../../examples/credit-risk/generate.js';
import { FIXTURE_FEATURES, FIXTURE_METADATA_BYTES, FIXTURE_MODEL_BYTES, FIXTURE_MODEL_SHA, creditRows, fixtureVersionDraft } from '../helpers/fixture-model.js';
import { examplePipeline } from '../helpers/pipelines.js';
import { testConfig, testLogger, workflowBundle } from '../helpers/stack.js';

const MODEL = 'credit-outage';
const ROWS = 300;

describe('a monitor run while MinIO is down', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  });

  it('retries through the outage and completes when MinIO is back, with the window fixed at its start (stored once)', async () => {
    // A MinIO of this test's own: the shared one serves other test files in parallel and must stay up.
    // Restarted on the same ports: ones that no client socket can have taken meanwhile.
    const port = await stablePort();
    const consolePort = await stablePort([port]);
    const config = testConfig('monitor-outage', { CONVEYOR_S3_ENDPOINT: `http://127.0.0.1:${port}` });
    cleanups.push(() => rmSync(config.home, { recursive: true, force: true }));
    const dataDir = join(config.home, 'minio-data');
    const logFile = join(config.home, 'minio.log');
    const startOwnMinio = async (): Promise<ServerProcess> => {
      const server = startMinio({ dataDir, port, consolePort, accessKey: config.s3.accessKey, secretKey: config.s3.secretKey, logFile });
      await waitUntil('private MinIO', () => minioHealthy(port), 30_000, logFile, server);
      return server;
    };
    let minio = await startOwnMinio();
    cleanups.push(() => minio.stop());
    const killMinio = async (): Promise<void> => {
      const exited = new Promise<void>((resolve) => minio.child!.once('exit', () => resolve()));
      process.kill(minio.pid, 'SIGKILL');
      await exited;
      expect(isAlive(minio.pid)).toBe(false);
      expect(await minioHealthy(port)).toBe(false);
    };

    const store = new MinioArtifactStore(config.s3);
    await store.ensureBucket();
    const registry = new Registry(store);
    const pipeline = await examplePipeline((s) => ({
      ...s,
      name: MODEL,
      monitoring: { interval: '1h', drift: { minSamples: 150 }, retrain: { enabled: false } },
    }));

    // Version 1 of the model: the fixture ONNX model, with a training reference profile so drift can be judged.
    const columns = pipeline.spec.schema.columns;
    const features = FIXTURE_FEATURES.map((name) => {
      const column = columns[name]!;
      return { name, kind: featureKind(column.type), ...(column.min !== undefined ? { min: column.min } : {}), ...(column.max !== undefined ? { max: column.max } : {}) };
    });
    const referenceCsv = join(config.home, 'reference.csv');
    writeFileSync(referenceCsv, toCsv(creditRows(2000, 71)));
    const duck = await DuckDBInstance.create(':memory:');
    const conn = await duck.connect();
    const reference = await buildReferenceProfile(conn, fileRelation(referenceCsv), features);
    conn.closeSync();
    duck.closeSync();
    const referenceKey = `test/${MODEL}/reference.json`;
    await store.put(referenceKey, JSON.stringify(reference), { contentType: 'application/json' });
    const metadataKey = keys.modelMetadata(sha256Hex(FIXTURE_METADATA_BYTES));
    await store.put(keys.modelBlob(FIXTURE_MODEL_SHA), FIXTURE_MODEL_BYTES);
    await store.put(metadataKey, FIXTURE_METADATA_BYTES);
    const draft = fixtureVersionDraft({ model: MODEL, artifact: { sha256: FIXTURE_MODEL_SHA, key: keys.modelBlob(FIXTURE_MODEL_SHA), size: FIXTURE_MODEL_BYTES.length, metadataKey }, run: 'outage-1' });
    const v1 = await registry.registerVersion({ ...draft, data: { ...draft.data, split: { ...draft.data.split, referenceKey } } });
    expect(v1.version).toBe(1);
    await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: { workflowId: 'wf-outage-1', runId: 'run-outage-1' } });

    // 300 served predictions (the model's real answers), a few minutes old: inside the window of a run started now.
    const rows = creditRows(ROWS, 72);
    const loaded = await loadModel(FIXTURE_MODEL_BYTES, FIXTURE_MODEL_SHA, parseModelMetadata(JSON.parse(FIXTURE_METADATA_BYTES.toString('utf8'))));
    const prediction = await loaded.predict(rows).finally(() => loaded.release());
    if (prediction.task !== 'classification') throw new Error('the fixture model is a classifier');
    const servedAt = new Date(Date.now() - 5 * 60_000);
    const requestId = randomUUID();
    const records: PredictionRecord[] = rows.map((row, i) => ({
      requestId,
      rowIndex: i,
      time: servedAt.toISOString(),
      model: MODEL,
      version: 1,
      sha256: FIXTURE_MODEL_SHA,
      arm: 'production',
      features: row,
      output: {
        label: prediction.labels[i]!,
        probabilities: Object.fromEntries(prediction.classes.map((c, j) => [String(c), prediction.probabilities[i * prediction.classes.length + j]!])),
      },
      latencyMs: 1,
    }));
    await store.put(keys.predictionBatch(MODEL, servedAt, 'outage'), records.map((r) => JSON.stringify(r)).join('\n') + '\n', { contentType: 'application/x-ndjson' });

    // In-process workers on this test's task queues, storing into the private MinIO.
    const workers = await createWorkers({ config, logger: testLogger, workflowBundle: await workflowBundle(), roles: ['pipeline'] });
    const running = workers.run();
    cleanups.push(async () => {
      workers.shutdown();
      await running;
    });
    const connection = await Connection.connect({ address: config.temporal.address });
    cleanups.push(() => connection.close());
    const client = new Client({ connection, namespace: config.temporal.namespace });

    // The store goes down before the run starts, so its very first attempt meets the outage.
    await killMinio();
    const input: MonitorInput = { model: MODEL, monitoring: pipeline.spec.monitoring!, target: { spec: pipeline.spec, code: pipeline.code, trainingTaskQueue: config.taskQueues.training } };
    const handle = await client.workflow.start(monitorModel, { taskQueue: config.taskQueues.pipeline, workflowId: `monitor-outage-${randomUUID().slice(0, 8)}`, args: [input] });
    const startTime = (await handle.describe()).startTime;
    // The window the run stands for, fixed when it started (no schedule: its start time).
    const expectedEnd = startTime.toISOString();
    const expectedStart = new Date(startTime.getTime() - 3_600_000).toISOString();

    // Wait until the activity has failed at least twice against the dead store (attempt 3 pending).
    let pending: { attempt?: number | null; lastFailure?: { message?: string | null } | null } | undefined;
    const waitDeadline = Date.now() + 30_000;
    while (Date.now() < waitDeadline) {
      const described = await handle.describe();
      expect(described.status.name).toBe('RUNNING');
      pending = described.raw.pendingActivities?.[0] ?? undefined;
      if ((pending?.attempt ?? 0) >= 3) break;
      await sleep(200);
    }
    expect(pending?.attempt).toBeGreaterThanOrEqual(3);
    // Attempts 1 and 2 failed because the store refused connections; attempt 3 waits out its backoff.
    expect(pending?.lastFailure?.message).toMatch(/ECONNREFUSED/);
    const failedAttempts = pending!.attempt! - 1;
    expect(await minioHealthy(port)).toBe(false);

    // MinIO comes back on the same port and data directory.
    minio = await startOwnMinio();
    const restartedAt = Date.now();
    const summary = await handle.result();

    expect(summary.verdict).not.toBe('insufficient_data');
    expect(summary.verdict).toBe('ok');
    expect(summary.version).toBe(1);
    expect(summary.retrainingRequested).toBe(false);
    // The window did not move to the restart time.
    expect(summary.windowEnd).toBe(expectedEnd);
    expect(summary.windowStart).toBe(expectedStart);
    expect(Date.parse(summary.windowEnd)).toBeLessThan(restartedAt);
    const resultKey = keys.monitorResult(MODEL, 1, startTime);
    expect(summary.resultKey).toBe(resultKey);

    // The activity succeeded on a later attempt, after the failed ones (history keeps the attempt that completed).
    const history = await handle.fetchHistory();
    const activityStarts = (history.events ?? []).filter((e) => e.activityTaskStartedEventAttributes);
    expect(activityStarts).toHaveLength(1);
    expect(activityStarts[0]!.activityTaskStartedEventAttributes!.attempt).toBeGreaterThan(failedAttempts);

    // Stored exactly once, for that window, computed after the store came back.
    const stored = (await store.list(keys.monitorPrefix(MODEL))).filter((k) => k.endsWith('.json'));
    expect(stored).toEqual([resultKey]);
    const results = await listMonitorResults(store, MODEL);
    expect(results).toHaveLength(1);
    expect(results[0]).toMatchObject({ windowStart: expectedStart, windowEnd: expectedEnd, verdict: 'ok', version: 1, sampleSize: ROWS, resultKey });
    expect(Date.parse(results[0]!.computedAt)).toBeGreaterThanOrEqual(restartedAt - 1000);
  }, 90_000);
});
