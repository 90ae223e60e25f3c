import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import { Registry } from '../registry/registry.js';
import { MinioArtifactStore } from '../store/minio-store.js';
import { ModelHost } from './model-host.js';
import { createServingApp } from './server.js';
import { servingTokens } from './tokens.js';

export interface RunningService {
  app: FastifyInstance;
  host: ModelHost;
  url: string;
  close(): Promise<void>;
}

/** Starts the prediction service: polls the registry and serves each model's production version. */
export async function startServing(config: Config, logger: Logger, opts: { port?: number; tokens?: string[] } = {}): Promise<RunningService> {
  const store = new MinioArtifactStore(config.s3);
  const host = new ModelHost(new Registry(store), store, logger);
  await host.refresh();
  const timer = setInterval(() => {
    host.refresh().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'registry poll failed; will retry'));
  }, config.serving.pollIntervalMs);
  timer.unref();
  const app = createServingApp({ host, logger, tokens: opts.tokens ?? servingTokens(config.home) });
  const url = await app.listen({ host: config.serving.host, port: opts.port ?? config.serving.port });
  return {
    app,
    host,
    url,
    close: async () => {
      clearInterval(timer);
      await app.close();
      await host.close();
    },
  };
}
