import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { ActivityDeps } from '../../activities/deps.js';
import { trainingActivities, type TrainInput, type TrainedModel } from '../../activities/training.js';
import { parseModelMetadata, sha256Hex } from '../../src/eval/onnx-model.js';
import { createLogger } from '../../src/logger.js';
import { Registry } from '../../src/registry/registry.js';
import { loadPipelineFile } from '../../src/spec/load.js';
import type { PipelineSpec, TrainerSpec } from '../../src/spec/schema.js';
import { keys } from '../../src/store/keys.js';
import { MemoryArtifactStore } from '../../src/store/memory-store.js';
import { METADATA_FILE, MODEL_FILE, type TrainerJob, type TypeScriptTrainer } from '../../src/training/types.js';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const FIXTURE_MODEL = here('../fixtures/models/credit-sklearn.onnx');
const FIXTURE_METADATA = here('../fixtures/models/credit-sklearn.metadata.json');
const FIXTURE_SHA = sha256Hex(readFileSync(FIXTURE_MODEL));
const FIXTURE_META = JSON.parse(readFileSync(FIXTURE_METADATA, 'utf8')) as Record<string, unknown> & { inputs: Array<{ name: string; type: string }> };
const TRAINERS = here('../fixtures/trainers/');
const EXAMPLE = here('../../examples/credit-risk/pipeline.ts');
const TRAIN_CSV = readFileSync(here('../../examples/credit-risk/data/credit-risk.csv'), 'utf8').split('\n').slice(0, 9).join('\n') + '\n';
const DATA_SHA = sha256Hex(Buffer.from(TRAIN_CSV));

let baseSpec: PipelineSpec;
let workDir: string;
let store: MemoryArtifactStore;
let deps: ActivityDeps;
let env: MockActivityEnvironment;
let heartbeats: unknown[];
const split = {
  seed: 7,
  holdoutFraction: 0.25,
  trainKey: keys.split(DATA_SHA, 7, 0.25, 'abc', 'train'),
  holdoutKey: keys.split(DATA_SHA, 7, 0.25, 'abc', 'holdout'),
  trainRows: 8,
  holdoutRows: 0,
};
/** Pids a test saw, killed afterwards whatever the outcome. */
const seenPids: number[] = [];

beforeAll(async () => {
  baseSpec = (await loadPipelineFile(EXAMPLE)).spec;
});

beforeEach(async () => {
  workDir = mkdtempSync(join(tmpdir(), 'conveyor-training-activity-'));
  store = new MemoryArtifactStore();
  await store.put(split.trainKey, TRAIN_CSV);
  deps = {
    store,
    registry: new Registry(store),
    logger: createLogger({ level: 'silent', pretty: false }),
    workDir,
    python: 'python3',
    openBucket: () => store,
    tsTrainers: {},
  };
  env = new MockActivityEnvironment({ activityType: 'trainModel' }, { logger: new DefaultLogger('ERROR') });
  heartbeats = [];
  env.on('heartbeat', (d: unknown) => heartbeats.push(d));
});

afterEach(() => {
  for (const pid of seenPids.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  rmSync(workDir, { recursive: true, force: true });
});


type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function input(trainer: DistributiveOmit<TrainerSpec, 'timeout' | 'heartbeatTimeout' | 'retries'>): TrainInput {
  const full = { timeout: '10m', heartbeatTimeout: '1m', retries: 0, ...trainer } as TrainerSpec;
  return { model: 'credit-risk', spec: { ...baseSpec, trainer: full }, split };
}

const train = (i: TrainInput): Promise<TrainedModel> => env.run(trainingActivities(deps).trainModel, i);

async function failure(i: TrainInput): Promise<unknown> {
  return train(i).then(
    () => {
      throw new Error('expected the activity to fail');
    },
    (e: unknown) => e,
  );
}

function expectAppFailure(err: unknown, type: string, nonRetryable: boolean): ApplicationFailure {
  expect(err).toBeInstanceOf(ApplicationFailure);
  const f = err as ApplicationFailure;
  expect(f.type).toBe(type);
  expect(f.nonRetryable).toBe(nonRetryable);
  return f;
}

/** A TypeScript trainer that copies the fixture model, optionally rewriting its metadata. */
function copyTrainer(seen: TrainerJob[], rewrite: (m: typeof FIXTURE_META) => unknown = (m) => m): TypeScriptTrainer {
  return {
    describe: (params) => ({ framework: 'fixture-copy 1.0', algorithm: `copy-${String(params.flavour)}` }),
    async train(job, ctx) {
      seen.push(job);
      ctx.heartbeat({ step: 1, total: 2, message: 'copying model' });
      await copyFile(FIXTURE_MODEL, join(job.outputDir, MODEL_FILE));
      await writeFile(join(job.outputDir, METADATA_FILE), JSON.stringify(rewrite(structuredClone(FIXTURE_META))));
      ctx.heartbeat({ step: 2, total: 2, message: 'done' });
    },
  };
}

function scratchIsEmpty(): boolean {
  const scratch = join(workDir, 'scratch');
  if (!existsSync(scratch)) return true;
  return readdirSync(scratch).every((d) => readdirSync(join(scratch, d)).length === 0);
}

describe('trainModel with a TypeScript trainer', () => {
  it('stores the model content-addressed and reports its ref', async () => {
    const jobs: TrainerJob[] = [];
    deps.tsTrainers = { 'copy-fixture': copyTrainer(jobs) };
    const ref = await train(input({ kind: 'typescript', name: 'copy-fixture', params: { flavour: 'plain' } }));

    expect(ref).toEqual({
      sha256: FIXTURE_SHA,
      key: keys.modelBlob(FIXTURE_SHA),
      size: readFileSync(FIXTURE_MODEL).length,
      metadataKey: expect.any(String),
      framework: 'fixture-copy 1.0',
      algorithm: 'copy-plain',
      params: FIXTURE_META.params,
      entry: 'typescript:copy-fixture',
      codeHashes: {},
    });
    expect(sha256Hex(await store.get(keys.modelBlob(FIXTURE_SHA)))).toBe(FIXTURE_SHA);
    // Metadata is content-addressed by its own bytes (the same model may come with other metadata).
    const storedMetadata = await store.get(ref.metadataKey);
    expect(ref.metadataKey).toBe(keys.modelMetadata(sha256Hex(storedMetadata)));
    expect(JSON.parse(storedMetadata.toString())).toEqual(parseModelMetadata(FIXTURE_META));
    expect(scratchIsEmpty()).toBe(true);

    // The trainer got the job the file contract describes.
    expect(jobs).toHaveLength(1);
    const job = jobs[0]!;
    expect(job).toMatchObject({ schemaVersion: 1, task: 'classification', target: 'default', seed: 7, params: { flavour: 'plain' } });
    expect(job.features.map((f) => f.name)).toEqual(FIXTURE_META.inputs.map((i) => i.name));
    expect(job.features.find((f) => f.name === 'age')?.type).toBe('numeric');
    expect(job.features.find((f) => f.name === 'region')?.type).toBe('categorical');
    expect(job.features.map((f) => f.name)).not.toContain('default');
  });

  it('hands the trainer the training split and emits its heartbeats', async () => {
    let seenCsv = '';
    deps.tsTrainers = {
      reader: {
        describe: () => ({ framework: 'f', algorithm: 'a' }),
        async train(job, ctx) {
          seenCsv = await readFile(job.trainPath, 'utf8');
          await copyTrainer([]).train(job, ctx);
        },
      },
    };
    await train(input({ kind: 'typescript', name: 'reader', params: {} }));
    expect(seenCsv).toBe(TRAIN_CSV);
    expect(heartbeats).toEqual([
      { message: 'preparing' }, // the activity reports liveness before the trainer starts
      { step: 1, total: 2, message: 'copying model' },
      { step: 2, total: 2, message: 'done' },
    ]);
  });

  it('refuses metadata whose inputs do not match the features, naming both lists', async () => {
    deps.tsTrainers = {
      'copy-fixture': copyTrainer([], (m) => ({ ...m, inputs: [...m.inputs.filter((i) => i.name !== 'region'), { name: 'zip_code', type: 'string' }] })),
    };
    const f = expectAppFailure(await failure(input({ kind: 'typescript', name: 'copy-fixture', params: {} })), 'TrainerOutputError', true);
    expect(f.message).toMatch(/^model inputs \[.*zip_code.*\] do not match the pipeline's features \[.*region.*\]$/);
    expect(f.message.split('do not match')[0]).not.toContain('region');
    expect(await store.list('models/')).toEqual([]);
    expect(scratchIsEmpty()).toBe(true);
  });

  it('refuses a model for the wrong task', async () => {
    deps.tsTrainers = { 'copy-fixture': copyTrainer([], (m) => ({ ...m, task: 'regression', outputs: { value: 'label' }, classes: undefined })) };
    const f = expectAppFailure(await failure(input({ kind: 'typescript', name: 'copy-fixture', params: {} })), 'TrainerOutputError', true);
    expect(f.message).toBe('trainer produced a regression model for a classification pipeline');
  });

  it('refuses invalid metadata', async () => {
    deps.tsTrainers = { 'copy-fixture': copyTrainer([], (m) => ({ ...m, classes: [1] })) };
    const f = expectAppFailure(await failure(input({ kind: 'typescript', name: 'copy-fixture', params: {} })), 'TrainerOutputError', true);
    expect(f.message).toMatch(/^trainer wrote an invalid metadata\.json: .*classes must list at least 2 classes/);
  });

  it('fails retryably when the trainer is not registered on this worker (another worker may have the plugin)', async () => {
    deps.tsTrainers = { other: copyTrainer([]) };
    const f = expectAppFailure(await failure(input({ kind: 'typescript', name: 'missing', params: {} })), 'WorkerConfigurationError', false);
    expect(f.message).toBe(
      'TypeScript trainer "missing" is not registered on this worker (registered: other); start workers with --plugin <file> that defines it',
    );
  });
});

describe('trainModel with a command trainer', () => {
  it('runs the command with the job file and stores its model, with code hashes', async () => {
    const dir = mkdtempSync(join(workDir, 'trainer-'));
    const script = join(dir, 'copy.mjs');
    writeFileSync(
      script,
      `import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
if (process.env.CONVEYOR_JOB_FILE !== process.argv[2]) process.exit(9);
console.log(JSON.stringify({ event: 'progress', step: 1, total: 1, message: 'rows=' + (readFileSync(job.trainPath, 'utf8').trim().split('\\n').length - 1) }));
copyFileSync(${JSON.stringify(FIXTURE_MODEL)}, join(job.outputDir, 'model.onnx'));
copyFileSync(${JSON.stringify(FIXTURE_METADATA)}, join(job.outputDir, 'metadata.json'));
`,
    );
    const ref = await train(input({ kind: 'command', command: [process.execPath, script], params: { C: 2 } }));
    expect(ref.sha256).toBe(FIXTURE_SHA);
    expect(ref.entry).toBe(`${process.execPath} ${script}`);
    expect(ref.codeHashes).toEqual({ [script]: sha256Hex(readFileSync(script)) });
    expect(ref.framework).toBe(FIXTURE_META.framework);
    expect(heartbeats).toContainEqual({ step: 1, total: 1, message: 'rows=8' });
    expect(await store.head(keys.modelBlob(FIXTURE_SHA))).not.toBeNull();
  });

  it('fails with a non-retryable TrainerOutputError when no model was written', async () => {
    const f = expectAppFailure(
      await failure(input({ kind: 'command', command: [process.execPath, join(TRAINERS, 'no-model.mjs')], params: {} })),
      'TrainerOutputError',
      true,
    );
    expect(f.message).toBe('trainer finished without writing model.onnx into its output directory');
    expect(heartbeats).toContainEqual({ step: 1, total: 1, message: 'done (but wrote nothing)' });
    expect(await store.list('models/')).toEqual([]);
  });

  it('fails with a retryable TrainerFailedError carrying stderr when the trainer exits non-zero', async () => {
    const f = expectAppFailure(
      await failure(input({ kind: 'command', command: [process.execPath, join(TRAINERS, 'fail.mjs')], params: {} })),
      'TrainerFailedError',
      false,
    );
    expect(f.message).toContain('trainer exited with code 3');
    expect(f.message).toContain('ValueError: boom: the trainer cannot converge');
    expect(heartbeats).toContainEqual({ step: 1, total: 2, message: 'loading' });
    expect(scratchIsEmpty()).toBe(true);
  });

  it('substitutes {python} with the configured interpreter', async () => {
    deps.python = process.execPath;
    const f = expectAppFailure(
      await failure(input({ kind: 'command', command: ['{python}', join(TRAINERS, 'fail.mjs')], params: {} })),
      'TrainerFailedError',
      false,
    );
    expect(f.message).toContain('exited with code 3');
  });

  it('kills the trainer and rejects with CancelledFailure when the activity is cancelled', async () => {
    const pidFile = join(workDir, 'trainer.pid');
    const script = join(workDir, 'forever.mjs');
    writeFileSync(
      script,
      `import { writeFileSync } from 'node:fs';
console.log(JSON.stringify({ event: 'progress', step: 1, total: 1000, message: 'epoch 1' }));
writeFileSync(${JSON.stringify(pidFile)}, process.pid + '\\n');
setInterval(() => {}, 1000);
`,
    );
    const outcome = train(input({ kind: 'command', command: [process.execPath, script], params: {} })).then(
      () => 'resolved' as const,
      (e: unknown) => e,
    );
    let pid = 0;
    for (let i = 0; i < 500 && !pid; i++) {
      if (existsSync(pidFile)) pid = Number(readFileSync(pidFile, 'utf8').trim()) || 0;
      if (!pid) await sleep(20);
    }
    expect(pid).toBeGreaterThan(0);
    seenPids.push(pid);
    expect(() => process.kill(pid, 0)).not.toThrow();

    env.cancel();
    const err = await outcome;
    expect(err).toBeInstanceOf(CancelledFailure);

    let gone = false;
    for (let i = 0; i < 300 && !gone; i++) {
      try {
        process.kill(pid, 0);
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        gone = stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z';
      } catch {
        gone = true;
      }
      if (!gone) await sleep(20);
    }
    expect(gone).toBe(true);
    expect(scratchIsEmpty()).toBe(true);
  });
});
