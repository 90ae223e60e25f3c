import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DefaultLogger, NativeConnection, Worker, bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { createActivities, type ActivityDeps } from '../activities/index.js';
import { venvDir } from '../scripts/setup.mjs';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import { Registry } from './registry/registry.js';
import { MinioArtifactStore } from './store/minio-store.js';
import { installTemporalRuntime } from './temporal/runtime.js';
import type { TypeScriptTrainer } from './training/types.js';
import type { CustomCheck } from './data/types.js';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

export type WorkerRole = 'pipeline' | 'training';

export interface WorkerOptions {
  config: Config;
  logger: Logger;
  roles?: WorkerRole[];
  tsTrainers?: Record<string, TypeScriptTrainer>;
  customChecks?: Record<string, CustomCheck>;
  /** Pre-built bundle (tests bundle once per file). */
  workflowBundle?: WorkflowBundleWithSourceMap;
  maxConcurrentActivities?: number;
}

export interface RunningWorkers {
  workers: Worker[];
  run(): Promise<void>;
  shutdown(): void;
}

export function bundleWorkflows(): Promise<WorkflowBundleWithSourceMap> {
  return bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: new DefaultLogger('WARN') });
}

export function activityDeps(opts: Pick<WorkerOptions, 'config' | 'logger' | 'tsTrainers' | 'customChecks'>): ActivityDeps {
  const store = new MinioArtifactStore(opts.config.s3);
  const workDir = join(opts.config.home, 'worker');
  mkdirSync(workDir, { recursive: true });
  return {
    store,
    registry: new Registry(store),
    logger: opts.logger,
    workDir,
    python: opts.config.python ?? join(venvDir(), 'bin', 'python'),
    openBucket: (bucket) => new MinioArtifactStore({ ...opts.config.s3, bucket }),
    ...(opts.tsTrainers ? { tsTrainers: opts.tsTrainers } : {}),
    ...(opts.customChecks ? { customChecks: opts.customChecks } : {}),
  };
}

/** Creates the pipeline worker (workflows + light activities) and/or the training worker. */
export async function createWorkers(opts: WorkerOptions): Promise<RunningWorkers> {
  installTemporalRuntime(opts.logger);
  const roles = opts.roles ?? ['pipeline', 'training'];
  const deps = activityDeps(opts);
  await deps.store.ensureBucket();
  const activities = createActivities(deps);
  const connection = await NativeConnection.connect({ address: opts.config.temporal.address });
  const workers: Worker[] = [];
  const bundle = roles.includes('pipeline') ? (opts.workflowBundle ?? (await bundleWorkflows())) : undefined;
  if (roles.includes('pipeline')) {
    const { trainModel: _train, ...light } = activities;
    workers.push(
      await Worker.create({
        connection,
        namespace: opts.config.temporal.namespace,
        taskQueue: opts.config.taskQueues.pipeline,
        workflowBundle: bundle!,
        activities: light,
        maxConcurrentActivityTaskExecutions: opts.maxConcurrentActivities ?? 8,
      }),
    );
  }
  if (roles.includes('training')) {
    workers.push(
      await Worker.create({
        connection,
        namespace: opts.config.temporal.namespace,
        taskQueue: opts.config.taskQueues.training,
        activities: { trainModel: activities.trainModel },
        // Training is CPU-heavy: one at a time per core is the sane default.
        maxConcurrentActivityTaskExecutions: opts.maxConcurrentActivities ?? 2,
      }),
    );
  }
  return {
    workers,
    run: async () => {
      try {
        await Promise.all(workers.map((w) => w.run()));
      } finally {
        await connection.close();
      }
    },
    shutdown: () => workers.forEach((w) => w.shutdown()),
  };
}
