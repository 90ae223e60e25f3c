import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPipeline, waitForRun } from '../../src/runs.js';
import { RunOutcome } from '../../src/shared/errors.js';
import { startServing, type RunningService } from '../../src/serving/service.js';
import { startTestEnv, testLogger, type TestEnv } from '../helpers/stack.js';
import { examplePipeline, waitForStatus } from '../helpers/pipelines.js';
import { rolloutStatusQuery, rolloutWorkflowId } from '../../workflows/rollout-messages.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { creditRows } from '../helpers/fixture-model.js';
import { Traffic } from '../helpers/traffic.js';

const TOKEN = 'pipeline-rollout-token-000000001';
const ROWS = creditRows(300, 41);

describe('a pipeline deploying through a canary (real Temporal, MinIO, Python trainer, serving)', () => {
  let env: TestEnv;
  let serving: RunningService;

  beforeAll(async () => {
    env = await startTestEnv('pipeline-rollout');
    serving = await startServing({ ...env.config, serving: { ...env.config.serving, port: 0, pollIntervalMs: 100 } }, testLogger, { port: 0, tokens: [TOKEN], predictionLog: { flushIntervalMs: 250 } });
  });
  afterAll(async () => {
    await serving?.close();
    await env?.close();
  });

  it('deploys the first version directly (nothing to compare with), then the second through canary steps', async () => {
    const pipeline = await examplePipeline((s) => ({
      ...s,
      // Latency is not under test here (rollout.test.ts rolls a slow candidate back): while the whole
      // suite shares 2 vCPUs, per-request p95 swings by several ms between arms of the same model.
      deployment: { strategy: 'canary', canary: { steps: [50, 100], bake: '3s' }, analysisInterval: '1s', bounds: { minRequests: 10, minLatencyIncreaseMs: 60_000 } },
    }));
    const first = await waitForRun(await startPipeline(env.client, env.config, pipeline, { submittedBy: 'alice' }));
    expect(first.message).toBeUndefined();
    expect(first.outcome).toBe(RunOutcome.Deployed);
    expect(await env.registry.getAlias('credit-risk', 'production')).toMatchObject({ version: 1, strategy: 'canary', previousVersion: null });
    expect((await env.registry.listRollouts('credit-risk'))[0]).toMatchObject({ version: 1, outcome: 'promoted', steps: [] });

    await serving.host.refresh();
    const load = new Traffic({ url: serving.url, token: TOKEN, model: 'credit-risk', row: (i) => ROWS[i % ROWS.length]!, concurrency: 2, pauseMs: 3 }).start();
    const handle = await startPipeline(env.client, env.config, pipeline, { submittedBy: 'alice' });
    const second = await waitForRun(handle);
    const answers = await load.stop();
    expect(second.message).toBeUndefined();
    expect(second.outcome).toBe(RunOutcome.Deployed);
    expect(second.result).toMatchObject({ version: 2, previousVersion: 1 });
    expect(answers.filter((a) => a.status !== 200)).toEqual([]);
    expect(answers.some((a) => a.arm === 'canary' && a.version === 2)).toBe(true);
    const rollouts = await env.registry.listRollouts('credit-risk');
    expect(rollouts[1]).toMatchObject({ version: 2, outcome: 'promoted', requestedBy: 'alice', steps: [{ step: 'canary-50', verdict: 'healthy' }, { step: 'canary-100', verdict: 'healthy' }] });
    expect(await env.registry.getAlias('credit-risk', 'production')).toMatchObject({ version: 2, strategy: 'canary', rolloutId: rollouts[1]!.rolloutId });
  });

  it('cancelling the run during its canary undoes the rollout and ends the run cancelled', async () => {
    const pipeline = await examplePipeline((s) => ({
      ...s,
      deployment: { strategy: 'canary', canary: { steps: [50, 100], bake: '1h' }, analysisInterval: '1h' },
    }));
    const handle = await startPipeline(env.client, env.config, pipeline, { submittedBy: 'alice' });
    await waitForStatus(handle, (s) => s.rollout !== undefined, 120_000);
    const rollout = env.client.workflow.getHandle(rolloutWorkflowId('credit-risk'));
    // Pre-deployment validation comes before the first step: up to 60 s on a loaded machine.
    for (let i = 0; i < 600 && (await rollout.query(rolloutStatusQuery)).steps.length === 0; i++) await sleep(100);
    expect(await env.registry.getTraffic('credit-risk')).toMatchObject({ mode: 'canary', percent: 50 });
    await handle.cancel();
    const end = await waitForRun(handle);
    expect(end.outcome).toBe(RunOutcome.Cancelled);
    expect(await rollout.result()).toMatchObject({ outcome: 'aborted', reason: 'rollout cancelled' });
    expect(await env.registry.getTraffic('credit-risk')).toMatchObject({ mode: 'none', step: 'cleared' });
    expect(await env.registry.getAlias('credit-risk', 'production')).toMatchObject({ version: 2 });
  });
});
