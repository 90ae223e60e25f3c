import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { InvalidSpecError, definePipeline, parsePipelineSpec } from '../../src/spec/define.js';
import { canonicalJson, loadPipelineFile, resolveSpecPaths, specHash } from '../../src/spec/load.js';
import type { PipelineSpec, PipelineSpecInput } from '../../src/spec/schema.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const EXAMPLE = join(ROOT, 'examples/credit-risk/pipeline.ts');
const EXAMPLE_DIR = dirname(EXAMPLE);

/** A minimal valid spec; each case breaks exactly one field of a fresh copy. */
function base(): PipelineSpecInput {
  return {
    name: 'churn',
    dataset: { source: 'data/churn.csv' },
    target: { column: 'churned', task: 'classification' },
    schema: {
      columns: {
        tenure: { type: 'integer', min: 0 },
        spend: { type: 'float' },
        plan: { type: 'categorical', values: ['basic', 'pro'] },
        churned: { type: 'integer', values: ['0', '1'] },
      },
    },
    trainer: { kind: 'command', command: ['{python}', 'train.py'] },
  };
}

/** The issue lines of an invalid spec ("field.path: message"); fails the test when the spec is valid. */
function issuesOf(input: unknown): string[] {
  try {
    parsePipelineSpec(input);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidSpecError);
    return (err as InvalidSpecError).issues.split('\n');
  }
  throw new Error('expected the spec to be refused');
}

describe('parsePipelineSpec: defaults', () => {
  it('fills split, trainer, evaluation, approval and deployment defaults', () => {
    const spec = parsePipelineSpec(base());
    expect(spec.split).toEqual({ holdoutFraction: 0.2, seed: 42 });
    expect(spec.approval).toEqual({ mode: 'auto' });
    expect(spec.deployment).toEqual({ alias: 'production', strategy: 'direct', validation: { sampleRows: 50, tolerance: 1e-5, maxLatencyMs: 250 }, analysisInterval: '1m', bounds: { minRequests: 30, maxErrorRateIncrease: 0.02, maxLatencyP95Ratio: 1.5, minLatencyIncreaseMs: 5, maxPredictionShift: 0.1, predictionShiftPValue: 0.01 } });
    expect(spec.evaluation).toEqual({ gates: [], slices: [] });
    expect(spec.expectations).toEqual([]);
    expect(spec.schema.allowExtraColumns).toBe(false);
    expect(spec.schema.columns.spend).toEqual({ type: 'float', nullable: false });
    expect(spec.trainer).toEqual({
      kind: 'command',
      command: ['{python}', 'train.py'],
      params: {},
      timeout: '2h',
      heartbeatTimeout: '2m',
      retries: 2,
    });
  });

  it('fills partial sections field by field', () => {
    const spec = parsePipelineSpec({
      ...base(),
      split: { seed: 3 },
      approval: { mode: 'manual', reviewers: ['ana'] },
      deployment: { alias: 'staging' },
      evaluation: { beatProduction: { metric: 'f1' } },
    });
    expect(spec.split).toEqual({ holdoutFraction: 0.2, seed: 3 });
    expect(spec.approval).toEqual({ mode: 'manual', reviewers: ['ana'], groups: [], quorum: 1, remindBefore: [], timeout: '72h' });
    expect(spec.deployment).toEqual({ alias: 'staging', strategy: 'direct', validation: { sampleRows: 50, tolerance: 1e-5, maxLatencyMs: 250 }, analysisInterval: '1m', bounds: { minRequests: 30, maxErrorRateIncrease: 0.02, maxLatencyP95Ratio: 1.5, minLatencyIncreaseMs: 5, maxPredictionShift: 0.1, predictionShiftPValue: 0.01 } });
    expect(spec.evaluation.beatProduction).toEqual({ metric: 'f1', minDelta: 0 });
  });

  it('accepts a TypeScript trainer and a regression target with regression metrics', () => {
    const spec = parsePipelineSpec({
      ...base(),
      target: { column: 'spend', task: 'regression' },
      trainer: { kind: 'typescript', name: 'my-gbm' },
      evaluation: { primaryMetric: 'rmse', gates: [{ metric: 'r2', min: 0.5 }] },
    });
    expect(spec.trainer).toEqual({ kind: 'typescript', name: 'my-gbm', params: {}, timeout: '2h', heartbeatTimeout: '2m', retries: 2 });
    expect(spec.evaluation.gates).toEqual([{ metric: 'r2', min: 0.5 }]);
  });

  it('definePipeline marks the validated spec', () => {
    const def = definePipeline(base());
    expect(def.kind).toBe('conveyor.pipeline');
    expect(def.spec.split.seed).toBe(42);
    expect(() => definePipeline({ ...base(), name: 'Bad Name' })).toThrow(InvalidSpecError);
  });
});

describe('parsePipelineSpec: every invalid field is named by its path', () => {
  const cases: Array<{ what: string; patch: (s: PipelineSpecInput) => unknown; line: RegExp }> = [
    { what: 'name with uppercase and space', patch: (s) => ({ ...s, name: 'Credit Risk' }), line: /^name: must be 1-63 characters/ },
    { what: 'name with a slash', patch: (s) => ({ ...s, name: '../etc' }), line: /^name: must be 1-63 characters/ },
    { what: 'name too long', patch: (s) => ({ ...s, name: 'a'.repeat(64) }), line: /^name: / },
    { what: 'dataset extension', patch: (s) => ({ ...s, dataset: { source: 'data/churn.xlsx' } }), line: /^dataset\.source: must end in \.csv or \.parquet$/ },
    {
      what: 'target not in schema',
      patch: (s) => ({ ...s, target: { column: 'label', task: 'classification' } }),
      line: /^target\.column: "label" is not in schema\.columns$/,
    },
    { what: 'feature not in schema', patch: (s) => ({ ...s, features: ['tenure', 'ghost'] }), line: /^features\.1: "ghost" is not in schema\.columns$/ },
    { what: 'target as feature', patch: (s) => ({ ...s, features: ['churned', 'tenure'] }), line: /^features\.0: the target cannot be a feature$/ },
    {
      what: 'unknown metric',
      patch: (s) => ({ ...s, evaluation: { gates: [{ metric: 'auc', min: 0.7 }] } }),
      line: /^evaluation\.gates\.0\.metric: /,
    },
    {
      what: 'regression metric on classification (gate)',
      patch: (s) => ({ ...s, evaluation: { gates: [{ metric: 'roc_auc', min: 0.7 }, { metric: 'rmse', max: 3 }] } }),
      line: /^evaluation\.gates\.1\.metric: metric "rmse" does not apply to classification$/,
    },
    {
      what: 'regression metric on classification (primary metric)',
      patch: (s) => ({ ...s, evaluation: { primaryMetric: 'mae' } }),
      line: /^evaluation\.primaryMetric: metric "mae" does not apply to classification$/,
    },
    {
      what: 'classification metric on regression (beatProduction)',
      patch: (s) => ({ ...s, target: { column: 'spend', task: 'regression' }, evaluation: { beatProduction: { metric: 'f1' } } }),
      line: /^evaluation\.beatProduction\.metric: metric "f1" does not apply to regression$/,
    },
    {
      what: 'categorical regression target',
      patch: (s) => ({ ...s, target: { column: 'plan', task: 'regression' } }),
      line: /^target\.column: a regression target must be integer or float$/,
    },
    {
      what: 'gate without min or max',
      patch: (s) => ({ ...s, evaluation: { gates: [{ metric: 'roc_auc' }] } }),
      line: /^evaluation\.gates\.0\.min: a gate needs min or max$/,
    },
    { what: 'manual approval without reviewers', patch: (s) => ({ ...s, approval: { mode: 'manual' } }), line: /^approval\.reviewers: / },
    { what: 'manual approval with empty reviewers', patch: (s) => ({ ...s, approval: { mode: 'manual', reviewers: [] } }), line: /^approval\.reviewers: / },
    {
      what: 'bad duration "5 minutes"',
      patch: (s) => ({ ...s, trainer: { kind: 'command', command: ['x'], timeout: '5 minutes' } }),
      line: /^trainer\.timeout: must be a duration such as 30s, 15m, 2h or 3d$/,
    },
    {
      what: 'bad approval timeout',
      patch: (s) => ({ ...s, approval: { mode: 'manual', reviewers: ['ana'], timeout: '1.5h' } }),
      line: /^approval\.timeout: must be a duration/,
    },
    { what: 'unknown top-level key', patch: (s) => ({ ...s, sheduel: 'daily' }), line: /^\(spec\): .*"sheduel"/ },
    {
      what: 'unknown nested key',
      patch: (s) => ({ ...s, split: { holdoutFraction: 0.2, seeed: 1 } }),
      line: /^split: .*"seeed"/,
    },
    {
      what: 'expectation on unknown column',
      patch: (s) => ({ ...s, expectations: [{ rule: 'row_count', min: 1 }, { rule: 'not_null', column: 'nope' }] }),
      line: /^expectations\.1\.column: "nope" is not in schema\.columns$/,
    },
    {
      what: 'slice on unknown column',
      patch: (s) => ({ ...s, evaluation: { slices: ['country'] } }),
      line: /^evaluation\.slices\.0: "country" is not in schema\.columns$/,
    },
    {
      what: 'column min above max',
      patch: (s) => ({ ...s, schema: { columns: { ...s.schema.columns, tenure: { type: 'integer', min: 5, max: 1 } } } }),
      line: /^schema\.columns\.tenure\.min: min must not exceed max$/,
    },
    { what: 'holdout fraction of 1', patch: (s) => ({ ...s, split: { holdoutFraction: 1 } }), line: /^split\.holdoutFraction: / },
    {
      what: 'alias with a slash',
      patch: (s) => ({ ...s, deployment: { alias: 'prod/x' } }),
      line: /^deployment\.alias: must be 1-63 characters/,
    },
    {
      what: 'unknown trainer kind',
      patch: (s) => ({ ...s, trainer: { kind: 'docker', image: 'x' } }),
      line: /^trainer\.kind: /,
    },
  ];

  for (const c of cases) {
    it(c.what, () => {
      const lines = issuesOf(c.patch(base()));
      expect(lines.some((l) => c.line.test(l)), `issues were:\n${lines.join('\n')}`).toBe(true);
    });
  }

  it('reports every offending field at once, with the source in the message', () => {
    let error: InvalidSpecError | undefined;
    try {
      parsePipelineSpec({ ...base(), name: 'X', dataset: { source: 'a.txt' }, features: ['ghost'] }, 'my/pipeline.ts');
    } catch (err) {
      error = err as InvalidSpecError;
    }
    expect(error).toBeInstanceOf(InvalidSpecError);
    expect(error!.message).toMatch(/^invalid pipeline spec in my\/pipeline\.ts:\n/);
    expect(error!.issues.split('\n')).toEqual(expect.arrayContaining([expect.stringMatching(/^name: /), expect.stringMatching(/^dataset\.source: /)]));
  });
});

describe('loadPipelineFile: the credit-risk example', () => {
  it('loads, validates and resolves relative paths against the pipeline file', async () => {
    const loaded = await loadPipelineFile(EXAMPLE);
    expect(loaded.file).toBe(EXAMPLE);
    expect(loaded.spec.name).toBe('credit-risk');
    expect(loaded.spec.dataset.source).toBe(join(EXAMPLE_DIR, 'data/credit-risk.csv'));
    expect(isAbsolute(loaded.spec.dataset.source)).toBe(true);
    const { trainer } = loaded.spec;
    expect(trainer.kind).toBe('command');
    if (trainer.kind !== 'command') return;
    expect(trainer.command).toEqual(['{python}', join(EXAMPLE_DIR, 'trainers/train_sklearn.py')]);
    expect(loaded.spec.split).toEqual({ holdoutFraction: 0.25, seed: 7 });
    expect(loaded.code.specHash).toBe(specHash(loaded.spec));
    expect(loaded.code.pipelineFile).toBe(EXAMPLE);
  });

  it('gives the same spec from any working directory (relative path argument)', async () => {
    const a = await loadPipelineFile(EXAMPLE);
    const b = await loadPipelineFile('examples/credit-risk/../credit-risk/pipeline.ts');
    expect(resolve('examples/credit-risk/pipeline.ts')).toBe(EXAMPLE); // vitest runs from the project root
    expect(b.spec).toEqual(a.spec);
    expect(specHash(b.spec)).toBe(specHash(a.spec));
  });
});

describe('resolveSpecPaths', () => {
  const spec = (source: string, command: string[]): PipelineSpec =>
    parsePipelineSpec({ ...base(), dataset: { source }, trainer: { kind: 'command', command } });

  it('resolves existing relative files and leaves flags, placeholders, absolute and missing paths alone', () => {
    const out = resolveSpecPaths(spec('./data/credit-risk.csv', ['{python}', './trainers/train_sklearn.py', '--fast', 'python3', '/opt/x.py', 'missing.py']), EXAMPLE_DIR);
    expect(out.dataset.source).toBe(join(EXAMPLE_DIR, 'data/credit-risk.csv'));
    expect(out.trainer.kind === 'command' && out.trainer.command).toEqual([
      '{python}',
      join(EXAMPLE_DIR, 'trainers/train_sklearn.py'),
      '--fast',
      'python3',
      '/opt/x.py',
      'missing.py',
    ]);
  });

  it('keeps s3:// and absolute dataset sources', () => {
    expect(resolveSpecPaths(spec('s3://bucket/data/x.csv', ['t']), EXAMPLE_DIR).dataset.source).toBe('s3://bucket/data/x.csv');
    expect(resolveSpecPaths(spec('/data/x.parquet', ['t']), EXAMPLE_DIR).dataset.source).toBe('/data/x.parquet');
  });

  it('does not touch TypeScript trainers', () => {
    const s = parsePipelineSpec({ ...base(), trainer: { kind: 'typescript', name: 'gbm' } });
    expect(resolveSpecPaths(s, EXAMPLE_DIR).trainer).toEqual(s.trainer);
  });
});

describe('loadPipelineFile: refused files', () => {
  // Inside the package (git-ignored .conveyor/), so `import 'conveyor'` resolves through the package's self-reference.
  mkdirSync(join(ROOT, '.conveyor'), { recursive: true });
  const dir = mkdtempSync(join(ROOT, '.conveyor', 'spec-test-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const write = (name: string, text: string): string => {
    const file = join(dir, name);
    writeFileSync(file, text);
    return file;
  };

  it('rejects an invalid definePipeline with InvalidSpecError naming the file and the field', async () => {
    const file = write(
      'bad-target.ts',
      `import { definePipeline } from 'conveyor';
export default definePipeline({
  name: 'bad-target',
  dataset: { source: './d.csv' },
  target: { column: 'label', task: 'classification' },
  schema: { columns: { x: { type: 'float' } } },
  trainer: { kind: 'command', command: ['true'] },
});
`,
    );
    const err = await loadPipelineFile(file).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InvalidSpecError);
    const message = (err as Error).message;
    expect(message).toContain(`in ${file}`);
    expect(message).toMatch(/^target\.column: "label" is not in schema\.columns$/m);
  });

  it('rejects an invalid plain-object default export the same way', async () => {
    const file = write('plain.ts', `export default { name: 'plain', dataset: { source: 'x.json' } };\n`);
    await expect(loadPipelineFile(file)).rejects.toThrow(InvalidSpecError);
    await expect(loadPipelineFile(file)).rejects.toThrow(/dataset\.source: must end in \.csv or \.parquet/);
    await expect(loadPipelineFile(file)).rejects.toThrow(file);
  });

  it('refuses a file without a default export with a clear message', async () => {
    const file = write('no-default.ts', `export const spec = { name: 'x' };\n`);
    const err = await loadPipelineFile(file).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InvalidSpecError);
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toContain('no default export; write `export default definePipeline({...})`');
  });

  it('refuses a missing file', async () => {
    await expect(loadPipelineFile(join(dir, 'nope.ts'))).rejects.toThrow(/file not found: .*nope\.ts/);
  });

  it('passes other import errors through unchanged', async () => {
    const file = write('throws.ts', `throw new RangeError('boom in pipeline file');\nexport default {};\n`);
    await expect(loadPipelineFile(file)).rejects.toThrow('boom in pipeline file');
    await expect(loadPipelineFile(file)).rejects.not.toBeInstanceOf(InvalidSpecError);
  });
});

describe('canonicalJson and specHash', () => {
  /** Deep copy with every object's keys in reverse order. */
  function reversed(value: unknown): unknown {
    if (Array.isArray(value)) return value.map(reversed);
    if (value && typeof value === 'object') {
      return Object.fromEntries(Object.entries(value as Record<string, unknown>).reverse().map(([k, v]) => [k, reversed(v)]));
    }
    return value;
  }

  it('sorts keys at every depth, keeps array order and drops undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: undefined } })).toBe('{"a":{"d":[3,{"y":2,"z":1}]},"b":1}');
    expect(canonicalJson([2, 1])).toBe('[2,1]');
    expect(canonicalJson('x')).toBe('"x"');
    expect(canonicalJson(null)).toBe('null');
  });

  it('is stable under key reordering', async () => {
    const { spec } = await loadPipelineFile(EXAMPLE);
    const shuffled = reversed(spec) as PipelineSpec;
    expect(JSON.stringify(shuffled)).not.toBe(JSON.stringify(spec));
    expect(canonicalJson(shuffled)).toBe(canonicalJson(spec));
    expect(specHash(shuffled)).toBe(specHash(spec));
    expect(specHash(spec)).toMatch(/^[0-9a-f]{64}$/);
  });

  it('changes when a trainer param changes', async () => {
    const { spec } = await loadPipelineFile(EXAMPLE);
    const changed: PipelineSpec = { ...spec, trainer: { ...spec.trainer, params: { ...spec.trainer.params, C: 0.5 } } };
    expect(specHash(changed)).not.toBe(specHash(spec));
    const reverted: PipelineSpec = { ...changed, trainer: { ...changed.trainer, params: { ...changed.trainer.params, C: 1.0 } } };
    expect(specHash(reverted)).toBe(specHash(spec));
  });
});

/** The smallest valid spec, for the policy and deployment cases. */
const tiny = {
  name: 'm',
  dataset: { source: '/d.csv' },
  target: { column: 'y', task: 'classification' as const },
  schema: { columns: { x: { type: 'float' as const }, y: { type: 'integer' as const } } },
  trainer: { kind: 'command' as const, command: ['t'] },
};

describe('manual approval policy', () => {
  it('needs reviewers or groups', () => {
    expect(() => parsePipelineSpec({ ...tiny, approval: { mode: 'manual' } })).toThrow(/approval\.reviewers: manual approval needs reviewers or groups/);
  });
  it('refuses a quorum larger than the people who could approve', () => {
    expect(() => parsePipelineSpec({ ...tiny, approval: { mode: 'manual', reviewers: ['a', 'b'], quorum: 3 } })).toThrow(/approval\.quorum: quorum 3 exceeds the 2 reviewers/);
  });
  it('accepts a group quorum, reminders and escalation', () => {
    const spec = parsePipelineSpec({ ...tiny, approval: { mode: 'manual', groups: ['risk'], quorum: 2, remindBefore: ['1h'], escalation: { after: '2h', groups: ['leads'] } } });
    expect(spec.approval).toMatchObject({ quorum: 2, remindBefore: ['1h'], escalation: { after: '2h', groups: ['leads'], reviewers: [] } });
  });
  it('refuses a webhook that is not a URL', () => {
    expect(() => parsePipelineSpec({ ...tiny, notifications: { webhooks: [{ url: 'not a url' }] } })).toThrow(/notifications\.webhooks\.0\.url/);
  });
});

describe('deployment strategies', () => {
  it('fills the chosen strategy settings and leaves the others out', () => {
    const canary = parsePipelineSpec({ ...tiny, deployment: { strategy: 'canary' } }).deployment;
    expect(canary.canary).toEqual({ steps: [5, 25, 50, 100], bake: '10m' });
    expect(canary.shadow).toBeUndefined();
    expect(parsePipelineSpec({ ...tiny, deployment: { strategy: 'shadow' } }).deployment.shadow).toEqual({ duration: '1h', decisionTimeout: '7d' });
    expect(parsePipelineSpec({ ...tiny, deployment: { strategy: 'ab', ab: { split: 20 } } }).deployment.ab).toEqual({ split: 20, decisionTimeout: '14d' });
  });
  it('refuses canary steps that do not increase or do not end at 100', () => {
    expect(() => parsePipelineSpec({ ...tiny, deployment: { strategy: 'canary', canary: { steps: [10, 5, 100] } } })).toThrow(/deployment\.canary\.steps: steps must increase/);
    expect(() => parsePipelineSpec({ ...tiny, deployment: { strategy: 'canary', canary: { steps: [10, 50] } } })).toThrow(/deployment\.canary\.steps: the last step must be 100/);
  });
  it('refuses settings for a strategy that is not chosen', () => {
    expect(() => parsePipelineSpec({ ...tiny, deployment: { strategy: 'direct', canary: { bake: '1m' } } })).toThrow(/deployment\.canary: "canary" settings given but strategy is "direct"/);
  });
  it('refuses an unknown strategy, a split of 100 and a misspelled bound', () => {
    expect(() => parsePipelineSpec({ ...tiny, deployment: { strategy: 'blue-green' } })).toThrow(/deployment\.strategy/);
    expect(() => parsePipelineSpec({ ...tiny, deployment: { strategy: 'ab', ab: { split: 100 } } })).toThrow(/deployment\.ab\.split/);
    expect(() => parsePipelineSpec({ ...tiny, deployment: { bounds: { minRequest: 3 } } })).toThrow(/deployment\.bounds/);
  });
});
