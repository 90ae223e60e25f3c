import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadWorkerPlugins } from '../../src/plugins.js';
import { startPipeline, waitForRun } from '../../src/runs.js';
import { ErrorType, RunOutcome } from '../../src/shared/errors.js';
import { loadPipelineFile, type LoadedPipeline } from '../../src/spec/load.js';
import { startTestEnv, type TestEnv } from '../helpers/stack.js';

describe('LightGBM example with a custom check registered as a worker plugin', () => {
  let env: TestEnv;
  let pipeline: LoadedPipeline;

  beforeAll(async () => {
    const plugins = await loadWorkerPlugins(['examples/credit-risk/plugins.ts']);
    env = await startTestEnv('lgbm', { customChecks: plugins.checks, tsTrainers: plugins.trainers });
    pipeline = await loadPipelineFile('examples/credit-risk/pipeline-lightgbm.ts');
  });
  afterAll(async () => env?.close());

  it('trains with LightGBM, evaluates the ONNX export and deploys it', async () => {
    const end = await waitForRun(await startPipeline(env.client, env.config, pipeline));
    expect(end.message).toBeUndefined();
    expect(end.outcome).toBe(RunOutcome.Deployed);
    const record = await env.registry.getVersion('credit-risk-lgbm', 1);
    expect(record.artifact.framework).toMatch(/^lightgbm/);
    expect(record.evaluation.metrics.roc_auc).toBeGreaterThan(0.7);
    expect(record.trainer.params).toMatchObject({ n_estimators: 200, num_leaves: 15 });
  });

  it('the custom check stops data that breaks it, naming the check', async () => {
    const lines = readFileSync(pipeline.spec.dataset.source, 'utf8').trimEnd().split('\n');
    const header = lines[0]!.split(',');
    const cells = lines[1]!.split(',');
    cells[header.indexOf('loan_amount')] = '99999999';
    const path = join(mkdtempSync(join(tmpdir(), 'conveyor-lgbm-')), 'bad-loan.csv');
    writeFileSync(path, [lines[0], cells.join(','), ...lines.slice(2)].join('\n') + '\n');
    const end = await waitForRun(await startPipeline(env.client, env.config, { ...pipeline, spec: { ...pipeline.spec, dataset: { source: path } } }));
    expect(end.outcome).toBe(RunOutcome.DataInvalid);
    expect(end.failureType).toBe(ErrorType.DataValidation);
    expect(end.message).toContain('exceed 5× the applicant');
    expect(await env.registry.listVersions('credit-risk-lgbm')).toEqual([1]);
  });
});
