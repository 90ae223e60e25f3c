import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPipeline, waitForRun } from '../../src/runs.js';
import { ErrorType, RunOutcome } from '../../src/shared/errors.js';
import type { LoadedPipeline } from '../../src/spec/load.js';
import type { PipelineSpec } from '../../src/spec/schema.js';
import { startTestEnv, type TestEnv } from '../helpers/stack.js';
import { examplePipeline } from '../helpers/pipelines.js';

const csv = readFileSync('examples/credit-risk/data/credit-risk.csv', 'utf8').trimEnd().split('\n');
const header = csv[0]!.split(',');
const col = (name: string): number => header.indexOf(name);

function mutate(rows: string[], fn: (cells: string[], i: number) => string[]): string {
  return [rows[0], ...rows.slice(1).map((r, i) => fn(r.split(','), i).join(','))].join('\n') + '\n';
}

/** Bad datasets derived from the good one, so only the named defect differs. */
const BAD: Record<string, { content: string; rule: string; column?: string }> = {
  'does not parse': { content: [...csv.slice(0, 50), '41,52000,"unterminated,36,700', ...csv.slice(50)].join('\n') + '\n', rule: 'parse' },
  'missing target column': {
    content: csv.map((r) => r.split(',').filter((_, i) => i !== col('default')).join(',')).join('\n') + '\n',
    rule: 'missing_column',
    column: 'default',
  },
  'column of the wrong type': { content: mutate(csv, (c, i) => (i === 10 ? c.map((v, j) => (j === col('credit_score') ? 'high' : v)) : c)), rule: 'type', column: 'credit_score' },
  'NaN and Infinity in a feature': {
    content: mutate(csv, (c, i) => (i === 3 ? c.map((v, j) => (j === col('income') ? 'NaN' : v)) : i === 4 ? c.map((v, j) => (j === col('income') ? 'Infinity' : v)) : c)),
    rule: 'finite',
    column: 'income',
  },
  'an empty file': { content: '', rule: 'row_count' },
  'a single-class target': { content: mutate(csv, (c) => c.map((v, j) => (j === col('default') ? '0' : v))), rule: 'target_classes', column: 'default' },
};

describe('bad input stops the run, registers nothing, leaves production unchanged', () => {
  let env: TestEnv;
  let good: LoadedPipeline;
  const dir = mkdtempSync(join(tmpdir(), 'conveyor-bad-'));
  const withData = (path: string) => ({ ...good, spec: { ...good.spec, dataset: { source: path } } });
  const withTrainer = (trainer: PipelineSpec['trainer']) => ({ ...good, spec: { ...good.spec, trainer } });

  beforeAll(async () => {
    env = await startTestEnv('badinput');
    good = await examplePipeline();
    const end = await waitForRun(await startPipeline(env.client, env.config, good));
    expect(end.outcome).toBe(RunOutcome.Deployed);
  });
  afterAll(async () => env?.close());

  async function expectNothingChanged(): Promise<void> {
    expect(await env.registry.listVersions('credit-risk')).toEqual([1]);
    expect((await env.registry.getAlias('credit-risk', 'production'))?.version).toBe(1);
    expect(await env.registry.listDeployments('credit-risk')).toHaveLength(1);
  }

  for (const [name, bad] of Object.entries(BAD)) {
    it(`${name}: data_invalid naming rule "${bad.rule}"${bad.column ? ` on ${bad.column}` : ''}`, async () => {
      const path = join(dir, `${name.replace(/\W+/g, '-')}.csv`);
      writeFileSync(path, bad.content);
      const end = await waitForRun(await startPipeline(env.client, env.config, withData(path)));
      expect(end.outcome).toBe(RunOutcome.DataInvalid);
      expect(end.failureType).toBe(ErrorType.DataValidation);
      if (bad.column) expect(end.message).toContain(bad.column);
      await expectNothingChanged();
    });
  }

  it('a trainer that exits non-zero is retried per policy, then the run fails with its stderr tail', async () => {
    const handle = await startPipeline(
      env.client,
      env.config,
      withTrainer({ kind: 'command', command: [process.execPath, resolve('test/fixtures/trainers/fail.mjs')], params: {}, timeout: '1m', heartbeatTimeout: '30s', retries: 1 }),
    );
    const end = await waitForRun(handle);
    expect(end.outcome).toBe(RunOutcome.Failed);
    expect(end.failureType).toBe(ErrorType.TrainerFailed);
    expect(end.message).toContain('exited with code 3');
    expect(end.message).toContain('boom: the trainer cannot converge');
    const history = await handle.fetchHistory();
    const attempts = (history.events ?? []).flatMap((e) => (e.activityTaskStartedEventAttributes ? [e.activityTaskStartedEventAttributes.attempt] : []));
    // validate: ingest, validate, split; then training twice (retries: 1) — the started event records the last attempt.
    expect(Math.max(...attempts.map(Number))).toBe(2);
    await expectNothingChanged();
  });

  it('a trainer that writes no model fails at once (not retried)', async () => {
    const handle = await startPipeline(
      env.client,
      env.config,
      withTrainer({ kind: 'command', command: [process.execPath, resolve('test/fixtures/trainers/no-model.mjs')], params: {}, timeout: '1m', heartbeatTimeout: '30s', retries: 3 }),
    );
    const end = await waitForRun(handle);
    expect(end.failureType).toBe(ErrorType.TrainerOutput);
    expect(end.message).toContain('model.onnx');
    const history = await handle.fetchHistory();
    const attempts = (history.events ?? []).flatMap((e) => (e.activityTaskStartedEventAttributes ? [Number(e.activityTaskStartedEventAttributes.attempt)] : []));
    expect(Math.max(...attempts)).toBe(1);
    await expectNothingChanged();
  });
});
