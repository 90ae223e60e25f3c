import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { inject } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import type { WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { loadConfig, type Config } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { Registry } from '../../src/registry/registry.js';
import { MinioArtifactStore } from '../../src/store/minio-store.js';
import { bundleWorkflows, createWorkers, type RunningWorkers, type WorkerOptions } from '../../src/worker.js';

/** Config pointing at the run's servers, with a bucket and task queues private to `name`. */
export function testConfig(name: string, extraEnv: NodeJS.ProcessEnv = {}): Config {
  const stack = inject('stack');
  const id = `${name}-${randomUUID().slice(0, 6)}`;
  const home = join(stack.dir, 'homes', id);
  mkdirSync(home, { recursive: true });
  const config = loadConfig({
    TEMPORAL_ADDRESS: stack.temporalAddress,
    CONVEYOR_S3_ENDPOINT: stack.s3Endpoint,
    CONVEYOR_S3_ACCESS_KEY: stack.accessKey,
    CONVEYOR_S3_SECRET_KEY: stack.secretKey,
    CONVEYOR_S3_BUCKET: id.toLowerCase().replace(/[^a-z0-9-]/g, '-'),
    CONVEYOR_HOME: home,
    CONVEYOR_TASK_QUEUE: `${id}-pipeline`,
    CONVEYOR_TRAINING_TASK_QUEUE: `${id}-training`,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    ...(process.env.CONVEYOR_PYTHON ? { CONVEYOR_PYTHON: process.env.CONVEYOR_PYTHON } : {}),
    ...extraEnv,
  });
  return config;
}

/** The variables a child process (a worker killed in a test) needs to reach the same servers. */
export function configEnv(config: Config): NodeJS.ProcessEnv {
  const stack = inject('stack');
  return {
    TEMPORAL_ADDRESS: stack.temporalAddress,
    CONVEYOR_S3_ENDPOINT: stack.s3Endpoint,
    CONVEYOR_S3_ACCESS_KEY: stack.accessKey,
    CONVEYOR_S3_SECRET_KEY: stack.secretKey,
    CONVEYOR_S3_BUCKET: config.s3.bucket,
    CONVEYOR_HOME: config.home,
    CONVEYOR_TASK_QUEUE: config.taskQueues.pipeline,
    CONVEYOR_TRAINING_TASK_QUEUE: config.taskQueues.training,
  };
}

export const testLogger = createLogger({ level: process.env.LOG_LEVEL ?? 'error', pretty: false });

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;
/** Bundled once per test file (process). */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  bundle ??= bundleWorkflows();
  return bundle;
}

export interface TestEnv {
  config: Config;
  client: Client;
  registry: Registry;
  store: MinioArtifactStore;
  workers: RunningWorkers;
  running: Promise<void>;
  close(): Promise<void>;
}

export async function startTestEnv(
  name: string,
  opts: Partial<Omit<WorkerOptions, 'config' | 'logger'>> = {},
  extraEnv: NodeJS.ProcessEnv = {},
): Promise<TestEnv> {
  const config = testConfig(name, extraEnv);
  const store = new MinioArtifactStore(config.s3);
  await store.ensureBucket();
  const workers = await createWorkers({ config, logger: testLogger, workflowBundle: await workflowBundle(), ...opts });
  const running = workers.run();
  const connection = await Connection.connect({ address: config.temporal.address });
  const client = new Client({ connection, namespace: config.temporal.namespace });
  return {
    config,
    client,
    registry: new Registry(store),
    store,
    workers,
    running,
    close: async () => {
      workers.shutdown();
      await running;
      await connection.close();
    },
  };
}
