import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decide, startPipeline, waitForRun } from '../../src/runs.js';
import { RunOutcome } from '../../src/shared/errors.js';
import { approveUpdate, rejectUpdate } from '../../workflows/messages.js';
import { startTestEnv, type TestEnv } from '../helpers/stack.js';
import { examplePipeline, refusal, waitForStatus } from '../helpers/pipelines.js';
import type { LoadedPipeline } from '../../src/spec/load.js';
import { parsePipelineSpec } from '../../src/spec/define.js';
import { resolve } from 'node:path';


describe('manual approval (real Temporal + MinIO)', () => {
  let env: TestEnv;
  let manual: LoadedPipeline;

  beforeAll(async () => {
    env = await startTestEnv('approval');
    manual = await examplePipeline((s) => ({ ...s, approval: { mode: 'manual', reviewers: ['bob', 'carol', 'alice'], timeout: '10m' } }));
  });
  afterAll(async () => env?.close());

  it('refuses invalid decisions before they reach history, then deploys on approval', async () => {
    const handle = await startPipeline(env.client, env.config, manual, { submittedBy: 'alice' });
    const status = await waitForStatus(handle, (s) => s.awaitingApproval !== undefined);
    const { version, sha256 } = status.awaitingApproval!;
    expect(version).toBe(1);
    const base = { model: 'credit-risk', version, sha256 };

    expect(await refusal(handle.executeUpdate(approveUpdate, { args: [{ ...base, reviewer: 'mallory' }] }))).toContain('may not decide');
    expect(await refusal(handle.executeUpdate(approveUpdate, { args: [{ ...base, reviewer: 'alice' }] }))).toContain('four-eyes');
    expect(await refusal(handle.executeUpdate(approveUpdate, { args: [{ ...base, version: 2, reviewer: 'bob' }] }))).toContain('credit-risk@1');
    expect(await refusal(handle.executeUpdate(approveUpdate, { args: [{ ...base, sha256: '0'.repeat(64), reviewer: 'bob' }] }))).toContain('does not match');
    expect(await refusal(handle.executeUpdate(rejectUpdate, { args: [{ ...base, reviewer: 'bob' }] }))).toContain('needs a comment');

    // Nothing deployed while waiting.
    expect(await env.registry.getAlias('credit-risk', 'production')).toBeNull();

    const first = await decide(handle, 'approve', { ...base, reviewer: 'bob', comment: 'metrics look right' });
    expect(first).toMatchObject({ decision: 'approved', reviewer: 'bob', version: 1 });
    // The same decision again (same update id) returns the first result.
    const again = await decide(handle, 'approve', { ...base, reviewer: 'bob' });
    expect(again.decidedAt).toBe(first.decidedAt);

    const end = await waitForRun(handle);
    expect(end.outcome).toBe(RunOutcome.Deployed);
    // A conflicting decision after the run is decided is refused.
    await expect(decide(handle, 'reject', { ...base, reviewer: 'carol', comment: 'too late' })).rejects.toThrow();

    // Refused updates left no trace in history: exactly one accepted update.
    const history = await handle.fetchHistory();
    const accepted = (history.events ?? []).filter((e) => e.workflowExecutionUpdateAcceptedEventAttributes);
    expect(accepted).toHaveLength(1);

    const decision = await env.registry.getDecision('credit-risk', 1);
    expect(decision).toMatchObject({ decision: 'approved', by: ['bob'], comment: 'bob: metrics look right' });
    expect((await env.registry.getAlias('credit-risk', 'production'))?.version).toBe(1);
  });

  it('a rejection ends the run as rejected and leaves production unchanged', async () => {
    const handle = await startPipeline(env.client, env.config, manual, { submittedBy: 'alice' });
    const status = await waitForStatus(handle, (s) => s.awaitingApproval !== undefined);
    const { version, sha256 } = status.awaitingApproval!;
    expect(version).toBe(2);
    await decide(handle, 'reject', { model: 'credit-risk', version, sha256, reviewer: 'carol', comment: 'holdout too small' });
    const end = await waitForRun(handle);
    expect(end.outcome).toBe(RunOutcome.Rejected);
    expect(end.message).toContain('holdout too small');
    expect((await env.registry.getAlias('credit-risk', 'production'))?.version).toBe(1);
    expect(await env.registry.getDecision('credit-risk', 2)).toMatchObject({ decision: 'rejected', by: ['carol'] });
    expect((await env.registry.listDeployments('credit-risk')).map((d) => d.version)).toEqual([1]);
  });

  it('a decision sent while the run is still training is refused: nothing awaits one', async () => {
    const slow = await examplePipeline((s) => ({
      ...s,
      approval: { mode: 'manual', reviewers: ['bob'], timeout: '10m' },
      trainer: { kind: 'command', command: ['{python}', resolve('test/fixtures/trainers/slow_train.py')], params: { algorithm: 'logistic_regression', sleepSeconds: 3 } },
    }));
    const handle = await startPipeline(env.client, env.config, slow, { submittedBy: 'alice' });
    await waitForStatus(handle, (s) => s.stage === 'train');
    const message = await refusal(handle.executeUpdate(approveUpdate, { args: [{ model: 'credit-risk', version: 3, sha256: '0'.repeat(64), reviewer: 'bob' }] }));
    expect(message).toContain('no decision is awaited');
    expect(message).toContain('"train"');
    await handle.terminate('test done');
  });

  it('no decision before the timeout ends the run as expired, nothing deployed', async () => {
    const short = { ...manual, spec: parsePipelineSpec({ ...manual.spec, approval: { mode: 'manual', reviewers: ['bob'], timeout: '2s' } }) };
    const end = await waitForRun(await startPipeline(env.client, env.config, short, { submittedBy: 'alice' }));
    expect(end.outcome).toBe(RunOutcome.Expired);
    expect((await env.registry.getAlias('credit-risk', 'production'))?.version).toBe(1);
    expect((await env.registry.getDecision('credit-risk', 3))?.decision).toBe('expired');
  });
});
