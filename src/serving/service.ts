import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import { Registry } from '../registry/registry.js';
import { MinioArtifactStore } from '../store/minio-store.js';
import { ThreadedObjectWriter } from '../store/threaded-writer.js';
import { ModelHost } from './model-host.js';
import type { ServingMetrics } from './metrics.js';
import type { PredictionLog, PredictionLogOptions } from './prediction-log.js';
import { checkBatchRows } from './batcher.js';
import { buildServing } from './server.js';
import { servingTokens } from './tokens.js';

export interface RunningService {
  app: FastifyInstance;
  host: ModelHost;
  metrics: ServingMetrics;
  predictionLog: PredictionLog | undefined;
  url: string;
  close(): Promise<void>;
}

/** Environment knobs of the prediction log (defaults: 500 rows, 2000 ms, 100 000 rows). */
export const PREDICTION_LOG_ENV = {
  CONVEYOR_PREDICTION_LOG_FLUSH_ROWS: 'write a prediction log batch once this many rows are buffered (default 500)',
  CONVEYOR_PREDICTION_LOG_FLUSH_MS: 'write buffered prediction rows, and retry failed batches, this often (default 2000)',
  CONVEYOR_PREDICTION_LOG_MAX_ROWS: 'rows the prediction log keeps in memory while the store is unreachable; past it the oldest are dropped (default 100000)',
} as const;

export function predictionLogOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): Partial<PredictionLogOptions> {
  const read = (name: keyof typeof PREDICTION_LOG_ENV): number | undefined => {
    const raw = env[name];
    if (raw === undefined || raw === '') return undefined;
    const value = Number(raw);
    if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
    return value;
  };
  const options: Partial<PredictionLogOptions> = {};
  const flushRows = read('CONVEYOR_PREDICTION_LOG_FLUSH_ROWS');
  const flushIntervalMs = read('CONVEYOR_PREDICTION_LOG_FLUSH_MS');
  const maxBufferedRows = read('CONVEYOR_PREDICTION_LOG_MAX_ROWS');
  if (flushRows !== undefined) options.flushRows = flushRows;
  if (flushIntervalMs !== undefined) options.flushIntervalMs = flushIntervalMs;
  if (maxBufferedRows !== undefined) options.maxBufferedRows = maxBufferedRows;
  return options;
}

/** `CONVEYOR_SERVE_MAX_BATCH_ROWS`, if set: the rows one inference run may answer across concurrent requests. */
export function maxBatchRowsFromEnv(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const raw = env.CONVEYOR_SERVE_MAX_BATCH_ROWS;
  if (raw === undefined || raw === '') return undefined;
  return parseMaxBatchRows(raw, 'CONVEYOR_SERVE_MAX_BATCH_ROWS');
}

/** A max-batch-rows setting (`source` names where it came from, for the error). */
export function parseMaxBatchRows(raw: string, source: string): number {
  return checkBatchRows(/^\s*\d+\s*$/.test(raw) ? Number(raw) : NaN, `${source} ("${raw}")`);
}

/** Starts the prediction service: polls the registry and serves each model's production version. */
export async function startServing(
  config: Config,
  logger: Logger,
  opts: { port?: number; tokens?: string[]; predictionLog?: Partial<PredictionLogOptions>; maxBatchRows?: number } = {},
): Promise<RunningService> {
  // Settings are checked before anything starts.
  const maxBatchRows = opts.maxBatchRows ?? maxBatchRowsFromEnv();
  const predictionLog = { ...predictionLogOptionsFromEnv(), ...opts.predictionLog };
  const store = new MinioArtifactStore(config.s3);
  const host = new ModelHost(new Registry(store), store, logger);
  await host.refresh();
  const timer = setInterval(() => {
    host.poll().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'registry poll failed; will retry'));
  }, config.serving.pollIntervalMs);
  timer.unref();
  // The prediction log's batches are hashed and uploaded on a thread of their own, started
  // (and known to work) before any request is taken.
  const predictionLogWriter = new ThreadedObjectWriter(config.s3);
  let serving: ReturnType<typeof buildServing> | undefined;
  let url: string;
  try {
    await predictionLogWriter.ready();
    serving = buildServing({
      host,
      logger,
      tokens: opts.tokens ?? servingTokens(config.home),
      store,
      predictionLogWriter,
      predictionLog,
      ...(maxBatchRows === undefined ? {} : { maxBatchRows }),
    });
    url = await serving.app.listen({ host: config.serving.host, port: opts.port ?? config.serving.port });
  } catch (err) {
    // Nothing started here may outlive a failed start (a bad token, a port in use).
    clearInterval(timer);
    if (serving) await serving.app.close();
    await predictionLogWriter.close();
    await host.close();
    throw err;
  }
  const { app, metrics } = serving;
  return {
    app,
    host,
    metrics,
    predictionLog: serving.predictionLog,
    url,
    close: async () => {
      clearInterval(timer);
      // Waits for in-flight requests, then flushes the prediction log.
      await app.close();
      await host.close();
    },
  };
}
