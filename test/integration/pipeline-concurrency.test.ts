import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPipeline, waitForRun } from '../../src/runs.js';
import { RunOutcome } from '../../src/shared/errors.js';
import { startTestEnv, type TestEnv } from '../helpers/stack.js';
import { examplePipeline } from '../helpers/pipelines.js';

const RUNS = 8;

describe('concurrent runs of one model (real Temporal + MinIO)', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await startTestEnv('concurrency');
  });
  afterAll(async () => env?.close());

  it(`${RUNS} runs finishing together get ${RUNS} distinct versions and every promotion is serialized`, async () => {
    const pipeline = await examplePipeline();
    const handles = await Promise.all(Array.from({ length: RUNS }, () => startPipeline(env.client, env.config, pipeline)));
    const ends = await Promise.all(handles.map((h) => waitForRun(h)));
    expect(ends.map((e) => e.outcome)).toEqual(Array(RUNS).fill(RunOutcome.Deployed));

    const versions = ends.map((e) => e.result!.version).sort((a, b) => a - b);
    expect(versions).toEqual(Array.from({ length: RUNS }, (_, i) => i + 1));
    expect(await env.registry.listVersions('credit-risk')).toEqual(versions);

    // Each version record belongs to exactly one run.
    const runIds = await Promise.all(versions.map(async (v) => (await env.registry.getVersion('credit-risk', v)).run.runId));
    expect(new Set(runIds).size).toBe(RUNS);

    // No lost update: every promotion replaced exactly the version before it.
    const deployments = await env.registry.listDeployments('credit-risk');
    expect(deployments).toHaveLength(RUNS);
    const chain = deployments.map((d) => d.previousVersion);
    expect(chain[0]).toBeNull();
    for (let i = 1; i < deployments.length; i++) expect(chain[i]).toBe(deployments[i - 1]!.version);
    expect((await env.registry.getAlias('credit-risk', 'production'))?.version).toBe(deployments.at(-1)!.version);
  });
});
