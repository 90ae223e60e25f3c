import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registry } from '../../src/registry/registry.js';
import { startServing, type RunningService } from '../../src/serving/service.js';
import type { PredictionRecord } from '../../src/serving/prediction-log.js';
import { keys } from '../../src/store/keys.js';
import { deployFixtureModel, FIXTURE_MODEL_SHA } from '../helpers/fixture-model.js';
import { MinioArtifactStore } from '../../src/store/minio-store.js';
import { testConfig, testLogger } from '../helpers/stack.js';

const MODEL_SHA = FIXTURE_MODEL_SHA;
const MODEL = 'credit-risk';
const TOKEN = 'serving-log-test-token-000001';
const AUTH = { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` };
const ROWS = [
  { age: 78, income: 45729.94, loan_amount: 5152.29, loan_term_months: 12, credit_score: 768, employment_years: 8.7, num_open_accounts: 4, debt_to_income: 0.247, home_ownership: 'OWN', purpose: 'credit_card', region: 'east' },
  { age: 26, income: 42580.78, loan_amount: 20459.04, loan_term_months: 48, credit_score: 611, employment_years: 5.8, num_open_accounts: 1, debt_to_income: 0.37, home_ownership: 'RENT', purpose: 'debt_consolidation', region: 'north' },
];

describe('serving prediction log and feedback, real MinIO', () => {
  const config = testConfig('serving-log');
  const store = new MinioArtifactStore(config.s3);
  let serving: RunningService | undefined;

  beforeAll(async () => {
    await store.ensureBucket();
    const registry = new Registry(store);
    await deployFixtureModel(store, registry, MODEL);
  });

  afterAll(async () => {
    await serving?.close();
  });

  it('logs answered predictions to predictions/<model>/<day>/<hour>/ and flushes them on close', async () => {
    // Long flush interval: only close() writes the rows.
    serving = await startServing({ ...config, serving: { ...config.serving, port: 0, pollIntervalMs: 60_000 } }, testLogger, {
      port: 0,
      tokens: [TOKEN],
      predictionLog: { flushIntervalMs: 60_000 },
    });
    const res = await fetch(`${serving.url}/v1/models/${MODEL}:predict`, { method: 'POST', headers: AUTH, body: JSON.stringify({ instances: ROWS }) });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { requestId: string; predictions: unknown[] };

    const feedback = await fetch(`${serving.url}/v1/models/${MODEL}:feedback`, {
      method: 'POST',
      headers: AUTH,
      body: JSON.stringify({ labels: [{ requestId: body.requestId, rowIndex: 1, label: 0 }] }),
    });
    expect(feedback.status).toBe(202);
    expect(await feedback.json()).toEqual({ accepted: 1 });

    const metrics = await fetch(`${serving.url}/metrics`, { headers: AUTH });
    expect(metrics.status).toBe(200);
    const text = await metrics.text();
    expect(text).toContain('conveyor_predictions_total{model="credit-risk",version="1",arm="production"} 2');
    expect(text).toContain('conveyor_prediction_log_pending 2');
    expect((await fetch(`${serving.url}/metrics`)).status).toBe(401);

    expect(await store.list('predictions/')).toEqual([]);
    await serving.close();
    serving = undefined;

    const written = await store.list(keys.predictionsPrefix(MODEL));
    expect(written).toHaveLength(1);
    expect(written[0]).toMatch(/^predictions\/credit-risk\/\d{4}-\d{2}-\d{2}\/\d{2}\/\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{12}\.jsonl$/);
    const rows = (await store.get(written[0]!)).toString('utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as PredictionRecord);
    expect(rows).toEqual(
      ROWS.map((features, rowIndex) => ({
        requestId: body.requestId,
        rowIndex,
        time: expect.any(String),
        model: MODEL,
        version: 1,
        sha256: MODEL_SHA,
        arm: 'production',
        features,
        output: body.predictions[rowIndex],
        latencyMs: expect.any(Number),
      })),
    );
    expect(written[0]).toContain(`/${rows[0]!.time.slice(0, 10)}/${rows[0]!.time.slice(11, 13)}/`);

    const labels = await store.list(keys.feedbackPrefix(MODEL));
    expect(labels).toHaveLength(1);
    expect(JSON.parse((await store.get(labels[0]!)).toString('utf8'))).toMatchObject({ model: MODEL, requestId: body.requestId, rowIndex: 1, label: 0 });
  });
});
