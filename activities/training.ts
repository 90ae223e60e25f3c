import { existsSync } from 'node:fs';
import { readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { ErrorType } from '../src/shared/errors.js';
import type { ModelArtifactRef, SplitRef } from '../src/shared/registry-types.js';
import type { PipelineSpec } from '../src/spec/schema.js';
import { keys } from '../src/store/keys.js';
import { PreconditionFailedError } from '../src/store/artifact-store.js';
import { featureColumns, featureKind } from '../src/data/features.js';
import { loadModel, parseModelMetadata, sha256Hex, type ModelMetadata } from '../src/eval/onnx-model.js';
import { runCommandTrainer, TrainerExitError } from '../src/training/command-trainer.js';
import { METADATA_FILE, MODEL_FILE, type TrainerJob, type TrainerProgress } from '../src/training/types.js';
import type { ActivityDeps } from './deps.js';
import { activityLogger, LIVENESS_INTERVAL_MS, withScratchDir } from './context.js';
import { classified } from './errors.js';

export interface TrainInput {
  model: string;
  spec: PipelineSpec;
  split: SplitRef;
}

export interface TrainedModel extends ModelArtifactRef {
  params: Record<string, unknown>;
  entry: string;
  codeHashes: Record<string, string>;
}

/** What a trainer process may see of the worker's environment: never its credentials. */
const TRAINER_ENV_ALLOW = /^(PATH|HOME|USER|LANG|LC_[A-Z]+|TZ|TMPDIR|PYTHON[A-Z_]*|OMP_[A-Z_]+|MKL_[A-Z_]+|OPENBLAS_[A-Z_]+|CUDA_[A-Z_]+|NVIDIA_[A-Z_]+|VIRTUAL_ENV)$/;

export function trainerEnv(env: NodeJS.ProcessEnv, extra: Record<string, string>): NodeJS.ProcessEnv {
  const allowed = Object.fromEntries(Object.entries(env).filter(([k]) => TRAINER_ENV_ALLOW.test(k)));
  return { ...allowed, ...extra };
}


function outputError(message: string): ApplicationFailure {
  return ApplicationFailure.create({ type: ErrorType.TrainerOutput, nonRetryable: true, message });
}

export function trainingActivities(deps: ActivityDeps) {
  return {
    /** Runs the trainer on the training split and stores its model content-addressed. */
    async trainModel(input: TrainInput): Promise<TrainedModel> {
      const log = activityLogger(deps.logger);
      const ctx = Context.current();
      const { spec } = input;
      let last: TrainerProgress = { message: 'preparing' };
      const liveness = setInterval(() => ctx.heartbeat(last), LIVENESS_INTERVAL_MS);
      return classified(() =>
        withScratchDir(deps.workDir, async (dir) => {
          ctx.heartbeat(last);
          const trainPath = join(dir, 'train.csv');
          await deps.store.getToFile(input.split.trainKey, trainPath);
          const outputDir = join(dir, 'out');
          await mkdir(outputDir, { recursive: true });
          const job: TrainerJob = {
            schemaVersion: 1,
            task: spec.target.task,
            target: spec.target.column,
            features: featureColumns(spec).map((name) => ({ name, type: featureKind(spec.schema.columns[name]!.type) })),
            trainPath,
            outputDir,
            params: spec.trainer.params,
            seed: spec.split.seed,
          };
          const jobFile = join(dir, 'job.json');
          await writeFile(jobFile, JSON.stringify(job, null, 2));

          last = { message: 'starting' };
          const beat = (progress: TrainerProgress): void => {
            last = progress;
            ctx.heartbeat(progress);
          };
          const trainerCtx = {
            heartbeat: beat,
            signal: ctx.cancellationSignal,
            log: (message: string, fields?: Record<string, unknown>) => log.info(fields ?? {}, message),
          };

          let entry: string;
          let codeHashes: Record<string, string> = {};
          let described: { framework: string; algorithm: string } | undefined;
          try {
            if (spec.trainer.kind === 'command') {
              const argv = spec.trainer.command.map((arg) => (arg === '{python}' ? deps.python : arg)).concat(jobFile);
              entry = spec.trainer.command.join(' ');
              codeHashes = await hashCodeFiles(spec.trainer.command);
              log.info({ argv }, 'starting command trainer');
              await runCommandTrainer(
                { argv, cwd: dir, env: trainerEnv(process.env, { CONVEYOR_JOB_FILE: jobFile, PYTHONUNBUFFERED: '1' }) },
                trainerCtx,
              );
            } else {
              const trainer = deps.tsTrainers?.[spec.trainer.name];
              if (!trainer) {
                // Another worker may have the plugin (a rolling deploy): retry rather than fail the run.
                throw ApplicationFailure.create({
                  type: ErrorType.WorkerConfiguration,
                  message: `TypeScript trainer "${spec.trainer.name}" is not registered on this worker (registered: ${Object.keys(deps.tsTrainers ?? {}).join(', ') || 'none'}); start workers with --plugin <file> that defines it`,
                });
              }
              entry = `typescript:${spec.trainer.name}`;
              described = trainer.describe(spec.trainer.params);
              await trainer.train(job, trainerCtx);
            }
          } catch (err) {
            if (err instanceof TrainerExitError) {
              // Exit code 2 is the contract's "bad params / bad job": the same job fails the same way.
              if (err.exitCode === 2) throw ApplicationFailure.create({ type: ErrorType.TrainerBadJob, message: err.message, nonRetryable: true });
              // Other exits may be transient (OOM, a killed node); the retry policy bounds them.
              throw ApplicationFailure.create({ type: ErrorType.TrainerFailed, message: err.message, nonRetryable: false });
            }
            throw err;
          }
          last = { message: 'checking and storing the model' };

          const modelPath = join(outputDir, MODEL_FILE);
          const metadataPath = join(outputDir, METADATA_FILE);
          if (!existsSync(modelPath)) throw outputError(`trainer finished without writing ${MODEL_FILE} into its output directory`);
          if (!existsSync(metadataPath)) throw outputError(`trainer finished without writing ${METADATA_FILE}`);
          let metadata: ModelMetadata;
          try {
            metadata = parseModelMetadata(JSON.parse(await readFile(metadataPath, 'utf8')));
          } catch (err) {
            throw outputError(`trainer wrote an invalid ${METADATA_FILE}: ${(err as Error).message}`);
          }
          const expected = job.features.map((f) => f.name).sort();
          const declared = metadata.inputs.map((i) => i.name).sort();
          if (JSON.stringify(expected) !== JSON.stringify(declared)) {
            throw outputError(`model inputs [${declared.join(', ')}] do not match the pipeline's features [${expected.join(', ')}]`);
          }
          if (metadata.task !== spec.target.task) throw outputError(`trainer produced a ${metadata.task} model for a ${spec.target.task} pipeline`);

          // Load it once in the serving runtime now: a model that onnxruntime-node cannot run, or
          // whose graph disagrees with its metadata, is the trainer's fault, not evaluation's.
          const modelBytes = await readFile(modelPath);
          const sha256 = sha256Hex(modelBytes);
          await (await loadModel(modelBytes, sha256, metadata)).release();
          const size = modelBytes.length;
          const key = keys.modelBlob(sha256);
          if (!(await deps.store.head(key))) {
            try {
              await deps.store.put(key, modelBytes, { ifAbsent: true });
            } catch (err) {
              if (!(err instanceof PreconditionFailedError)) throw err;
            }
          }
          const metadataJson = JSON.stringify(metadata, null, 2);
          const metadataKey = keys.modelMetadata(sha256Hex(Buffer.from(metadataJson)));
          try {
            await deps.store.put(metadataKey, metadataJson, { contentType: 'application/json', ifAbsent: true });
          } catch (err) {
            if (!(err instanceof PreconditionFailedError)) throw err;
          }
          log.info({ sha256, size, framework: metadata.framework, algorithm: metadata.algorithm }, 'model stored');
          return {
            sha256,
            key,
            size,
            metadataKey,
            framework: described?.framework ?? metadata.framework,
            algorithm: described?.algorithm ?? metadata.algorithm,
            params: metadata.params ?? spec.trainer.params,
            entry,
            codeHashes,
          };
        }),
      ).finally(() => clearInterval(liveness));
    },
  };
}

/** Hashes the files a trainer command names, so lineage records the exact trainer code. */
async function hashCodeFiles(command: string[]): Promise<Record<string, string>> {
  const hashes: Record<string, string> = {};
  for (const arg of command) {
    if (!isAbsolute(arg) || !existsSync(arg)) continue;
    const info = await stat(arg);
    if (info.isFile() && info.size < 50_000_000) hashes[arg] = sha256Hex(await readFile(arg));
  }
  return hashes;
}
