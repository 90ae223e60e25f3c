import { mkdirSync } from 'node:fs';
import { lstat, readdir, rm } from 'node:fs/promises';
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

/** In-flight activities get this long to finish after a shutdown request before they are cancelled. */
const SHUTDOWN_GRACE_TIME = '30s';

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
    webhooks: opts.config.webhooks,
    ...(opts.tsTrainers ? { tsTrainers: opts.tsTrainers } : {}),
    ...(opts.customChecks ? { customChecks: opts.customChecks } : {}),
  };
}

/** Scratch directories untouched for this long are left over from a crashed worker. */
export const STALE_SCRATCH_MS = 24 * 60 * 60 * 1000;

/** The newest mtime of `path` and everything beneath it (symlinks are not followed). */
async function newestMtime(path: string): Promise<number> {
  const stat = await lstat(path);
  let newest = stat.mtimeMs;
  if (stat.isDirectory()) {
    for (const entry of await readdir(path)) newest = Math.max(newest, await newestMtime(join(path, entry)).catch(() => Date.now()));
  }
  return newest;
}

/**
 * Removes per-run scratch directories (`<workDir>/scratch/<run>`) in which nothing changed for
 * `STALE_SCRATCH_MS`: activities remove their own scratch when they end, so these are left by a
 * worker that was killed. Judged by the newest mtime inside, so the scratch of a long activity
 * still writing (possibly another worker sharing this home) is kept. Best effort: never throws.
 */
export async function sweepStaleScratch(workDir: string, logger: Logger, now = Date.now()): Promise<string[]> {
  const root = join(workDir, 'scratch');
  const removed: string[] = [];
  let entries: string[];
  try {
    entries = await readdir(root);
  } catch {
    return removed;
  }
  for (const entry of entries) {
    const dir = join(root, entry);
    try {
      if (now - (await newestMtime(dir)) < STALE_SCRATCH_MS) continue;
      await rm(dir, { recursive: true, force: true });
      removed.push(dir);
      logger.debug({ dir }, 'removed stale scratch directory');
    } catch (err) {
      logger.debug({ dir, err }, 'could not sweep scratch directory');
    }
  }
  return removed;
}

/** Creates the pipeline worker (workflows + light activities) and/or the training worker. */
export async function createWorkers(opts: WorkerOptions): Promise<RunningWorkers> {
  installTemporalRuntime(opts.logger);
  const roles = opts.roles ?? ['pipeline', 'training'];
  const deps = activityDeps(opts);
  await sweepStaleScratch(deps.workDir, opts.logger);
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
        shutdownGraceTime: SHUTDOWN_GRACE_TIME,
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
        shutdownGraceTime: SHUTDOWN_GRACE_TIME,
      }),
    );
  }
  // Worker.shutdown() throws unless the worker is RUNNING (the SDK's own signal handler may
  // have stopped it already, or it failed), so only running ones are asked to stop.
  const shutdown = (): void => {
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
  };
  return {
    workers,
    run: async () => {
      // The workers share one connection: when one fails, stop the others and wait for all
      // of them before closing it, then report the first failure.
      let failure: { error: unknown } | undefined;
      const runs = workers.map((w) =>
        w.run().catch((error: unknown) => {
          if (!failure) {
            failure = { error };
            shutdown();
          }
          throw error;
        }),
      );
      await Promise.allSettled(runs);
      try {
        await connection.close();
      } catch (err) {
        if (!failure) throw err;
      }
      if (failure) throw failure.error;
    },
    shutdown,
  };
}
