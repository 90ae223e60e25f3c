import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPipelineFile, type LoadedPipeline } from '../../src/spec/load.js';
import { startPipeline, waitForRun } from '../../src/runs.js';
import { RunOutcome, ErrorType } from '../../src/shared/errors.js';
import { startServing, type RunningService } from '../../src/serving/service.js';
import { startTestEnv, testLogger, type TestEnv } from '../helpers/stack.js';

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

describe('credit-risk pipeline, automatic approval, real Temporal + MinIO + Python trainer', () => {
  let env: TestEnv;
  let pipeline: LoadedPipeline;
  let serving: RunningService | undefined;

  beforeAll(async () => {
    env = await startTestEnv('auto');
    pipeline = await loadPipelineFile('examples/credit-risk/pipeline.ts');
  });
  afterAll(async () => {
    await serving?.close();
    await env?.close();
  });

  it('validates, trains, evaluates, registers and deploys version 1 with complete lineage', async () => {
    const handle = await startPipeline(env.client, env.config, pipeline, { submittedBy: 'alice' });
    const end = await waitForRun(handle);
    expect(end.message).toBeUndefined();
    expect(end.outcome).toBe(RunOutcome.Deployed);
    expect(end.result?.version).toBe(1);

    const record = await env.registry.getVersion('credit-risk', 1);
    // Data version is the SHA-256 of the exact bytes of the source file.
    expect(record.data.sha256).toBe(sha256(readFileSync(pipeline.spec.dataset.source)));
    // The registered artifact is the stored blob, byte for byte.
    const blob = await env.store.get(record.artifact.key);
    expect(sha256(blob)).toBe(record.artifact.sha256);
    expect(record.run).toEqual({ workflowId: handle.workflowId, runId: handle.firstExecutionRunId, submittedBy: 'alice' });
    expect(record.code.specHash).toMatch(/^[0-9a-f]{64}$/);
    expect(record.trainer.params).toMatchObject({ algorithm: 'logistic_regression' });
    expect(Object.keys(record.trainer.codeHashes).some((f) => f.endsWith('train_sklearn.py'))).toBe(true);
    expect(record.evaluation.metrics.roc_auc).toBeGreaterThan(0.7);
    expect(record.evaluation.gates.every((g) => g.passed)).toBe(true);
    expect(record.data.split.trainRows + record.data.split.holdoutRows).toBe(record.data.rowCount);
    expect(await env.store.head(record.data.profileKey)).not.toBeNull();

    const alias = await env.registry.getAlias('credit-risk', 'production');
    expect(alias).toMatchObject({ version: 1, sha256: record.artifact.sha256, previousVersion: null });
    const deployments = await env.registry.listDeployments('credit-risk');
    expect(deployments.map((d) => d.version)).toEqual([1]);
    expect((await env.registry.getDecision('credit-risk', 1))?.decision).toBe('auto');
  });

  it('serves the production version over HTTP, verifying its hash', async () => {
    serving = await startServing({ ...env.config, serving: { ...env.config.serving, port: 0, pollIntervalMs: 200 } }, testLogger, {
      port: 0,
      tokens: ['pipeline-auto-test-token-0001'],
    });
    const row = { age: 40, income: 52000, loan_amount: 12000, loan_term_months: 36, credit_score: 640, employment_years: 4, num_open_accounts: 5, debt_to_income: 0.35, home_ownership: 'RENT', purpose: 'car', region: 'north' };
    const res = await fetch(`${serving.url}/v1/models/credit-risk:predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer pipeline-auto-test-token-0001' },
      body: JSON.stringify({ instance: row }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { version: number; sha256: string; predictions: Array<{ label: number; probabilities: Record<string, number> }> };
    expect(body.version).toBe(1);
    expect(body.sha256).toBe((await env.registry.getVersion('credit-risk', 1)).artifact.sha256);
    const p = body.predictions[0]!;
    expect([0, 1]).toContain(p.label);
    expect(p.probabilities['0']! + p.probabilities['1']!).toBeCloseTo(1, 5);

    const unauthenticated = await fetch(`${serving.url}/v1/models/credit-risk:predict`, { method: 'POST', body: '{}' });
    expect(unauthenticated.status).toBe(401);
    const missingField = await fetch(`${serving.url}/v1/models/credit-risk:predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer pipeline-auto-test-token-0001' },
      body: JSON.stringify({ instance: { ...row, credit_score: undefined } }),
    });
    expect(missingField.status).toBe(400);
    expect(((await missingField.json()) as { error: string }).error).toContain('credit_score');
  });

  it('a second run is compared with production, deployed as version 2, and serving switches without restart', async () => {
    const handle = await startPipeline(env.client, env.config, pipeline);
    const end = await waitForRun(handle);
    expect(end.outcome).toBe(RunOutcome.Deployed);
    expect(end.result).toMatchObject({ version: 2, previousVersion: 1 });
    const record = await env.registry.getVersion('credit-risk', 2);
    expect(record.evaluation.production?.version).toBe(1);
    // Same data, same seed, same trainer: the same model bytes, a new version.
    expect(record.artifact.sha256).toBe((await env.registry.getVersion('credit-risk', 1)).artifact.sha256);
    await serving!.host.refresh();
    expect(serving!.host.get('credit-risk')?.version).toBe(2);
  });

  it('a model that fails a gate is neither registered nor deployed', async () => {
    const strict: LoadedPipeline = {
      ...pipeline,
      spec: { ...pipeline.spec, evaluation: { ...pipeline.spec.evaluation, gates: [{ metric: 'roc_auc', min: 0.999 }] } },
    };
    const end = await waitForRun(await startPipeline(env.client, env.config, strict));
    expect(end.outcome).toBe(RunOutcome.GateFailed);
    expect(end.failureType).toBe(ErrorType.GateFailed);
    expect(end.message).toContain('roc_auc >= 0.999');
    expect(await env.registry.listVersions('credit-risk')).toEqual([1, 2]);
    expect((await env.registry.getAlias('credit-risk', 'production'))?.version).toBe(2);
  });
});
