import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { ErrorType } from '../src/shared/errors.js';
import type { ModelArtifactRef, SplitRef } from '../src/shared/registry-types.js';
import type { PipelineSpec } from '../src/spec/schema.js';
import { keys } from '../src/store/keys.js';
import { PreconditionFailedError } from '../src/store/artifact-store.js';
import { featureColumns, featureKind } from '../src/data/features.js';
import { parseModelMetadata, sha256Hex, type ModelMetadata } from '../src/eval/onnx-model.js';
import { runCommandTrainer, TrainerExitError } from '../src/training/command-trainer.js';
import { METADATA_FILE, MODEL_FILE, type TrainerJob, type TrainerProgress } from '../src/training/types.js';
import type { ActivityDeps } from './deps.js';
import { activityLogger, withScratchDir } from './context.js';
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

/** How often a running trainer reports liveness even when it prints nothing. */
const LIVENESS_INTERVAL_MS = 5_000;

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
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
      return classified(() =>
        withScratchDir(deps.workDir, async (dir) => {
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

          let last: TrainerProgress = { message: 'starting' };
          const beat = (progress: TrainerProgress): void => {
            last = progress;
            ctx.heartbeat(progress);
          };
          const liveness = setInterval(() => ctx.heartbeat(last), LIVENESS_INTERVAL_MS);
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
                { argv, cwd: dir, env: { ...process.env, CONVEYOR_JOB_FILE: jobFile, PYTHONUNBUFFERED: '1' } },
                trainerCtx,
              );
            } else {
              const trainer = deps.tsTrainers?.[spec.trainer.name];
              if (!trainer) {
                throw outputError(
                  `TypeScript trainer "${spec.trainer.name}" is not registered on this worker (registered: ${Object.keys(deps.tsTrainers ?? {}).join(', ') || 'none'})`,
                );
              }
              entry = `typescript:${spec.trainer.name}`;
              described = trainer.describe(spec.trainer.params);
              await trainer.train(job, trainerCtx);
            }
          } catch (err) {
            if (err instanceof TrainerExitError) {
              // Retryable: a crash may be transient (OOM, a killed node). The retry policy bounds it.
              throw ApplicationFailure.create({ type: ErrorType.TrainerFailed, message: err.message, nonRetryable: false });
            }
            throw err;
          } finally {
            clearInterval(liveness);
          }

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

          const size = (await stat(modelPath)).size;
          const sha256 = await sha256File(modelPath);
          const key = keys.modelBlob(sha256);
          if (!(await deps.store.head(key))) {
            try {
              await deps.store.putStream(key, createReadStream(modelPath), size, { ifAbsent: true });
            } catch (err) {
              if (!(err instanceof PreconditionFailedError)) throw err;
            }
          }
          const metadataJson = JSON.stringify(metadata, null, 2);
          const metadataKey = keys.modelMetadata(sha256);
          await deps.store.put(metadataKey, metadataJson, { contentType: 'application/json' });
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
      );
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
