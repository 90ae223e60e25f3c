import { existsSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import type { Client } from '@temporalio/client';
import { loadTokenStore, type TokenStore } from '../auth/tokens.js';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import { Registry } from '../registry/registry.js';
import { MinioArtifactStore } from '../store/minio-store.js';
import { connectClient } from '../temporal/client.js';
import { createApiApp } from './app.js';
import { loadApiPolicy, type ApiPolicy } from './policy.js';

export const API_HOST_ENV = 'CONVEYOR_API_HOST';
export const API_PORT_ENV = 'CONVEYOR_API_PORT';
export const API_POLICY_ENV = 'CONVEYOR_API_POLICY';
export const API_TOKENS_FILE_ENV = 'CONVEYOR_TOKENS_FILE';
export const DEFAULT_API_HOST = '127.0.0.1';
export const DEFAULT_API_PORT = 8090;

export interface RunningApi {
  app: FastifyInstance;
  url: string;
  close(): Promise<void>;
}

export interface StartApiOptions {
  port?: number;
  host?: string;
  /** Default: the hashed tokens file (config.api.tokensFile, when it exists or is set explicitly) plus CONVEYOR_API_TOKENS. */
  tokens?: TokenStore;
  /** Default: the file named by config.api.policyFile; null forces development mode (no policy). */
  policy?: ApiPolicy | null;
  /** Default: a new connection from config (closed by close()). */
  client?: Client;
  env?: NodeJS.ProcessEnv;
}

function checkPort(port: number): number {
  if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new Error(`invalid API port ${String(port)}: use 0-65535 (${API_PORT_ENV})`);
  return port;
}

/** Starts the governance API; refuses to start without any token (nothing could call it). */
export async function startApi(config: Config, logger: Logger, opts: StartApiOptions = {}): Promise<RunningApi> {
  const env = opts.env ?? process.env;
  const tokensFile = config.api.tokensFile;
  const tokens =
    opts.tokens ?? loadTokenStore({ ...(env[API_TOKENS_FILE_ENV] || existsSync(tokensFile) ? { file: tokensFile } : {}), env });
  if (tokens.size === 0) {
    throw new Error(`the API has no tokens: create ${tokensFile} (conveyor dev up does) or set CONVEYOR_API_TOKENS`);
  }
  const policy = opts.policy === null ? undefined : (opts.policy ?? (config.api.policyFile ? loadApiPolicy(config.api.policyFile) : undefined));
  if (!policy) logger.warn('no API policy (CONVEYOR_API_POLICY): every authenticated identity may read, operate and decide every model, and no production rule applies');

  const store = new MinioArtifactStore(config.s3);
  const client = opts.client ?? (await connectClient(config));
  const app = createApiApp({ client, config, registry: new Registry(store), store, tokens, logger, ...(policy ? { authz: policy } : {}) });
  try {
    const url = await app.listen({ host: opts.host ?? config.api.host, port: checkPort(opts.port ?? config.api.port) });
    logger.info({ url, identities: tokens.size, policy: policy ? 'file' : 'open' }, 'governance API listening');
    return {
      app,
      url,
      close: async () => {
        await app.close();
        if (!opts.client) await client.connection.close();
      },
    };
  } catch (err) {
    await app.close();
    if (!opts.client) await client.connection.close();
    throw err;
  }
}
