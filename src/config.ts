import { join, resolve } from 'node:path';
import { TASK_QUEUES } from './shared/constants.js';

/**
 * Conveyor's configuration, read once from the environment. Every setting has a
 * development default that matches `conveyor dev up`.
 */
export interface Config {
  temporal: { address: string; namespace: string };
  s3: { endPoint: string; port: number; useSSL: boolean; accessKey: string; secretKey: string; bucket: string; region: string };
  home: string;
  taskQueues: { pipeline: string; training: string };
  serving: { host: string; port: number; pollIntervalMs: number };
  python: string | undefined;
  logLevel: string;
  webhooks: { secret: string | undefined; allowHosts: string[]; allowPrivate: boolean };
  api: { host: string; port: number; tokensFile: string; policyFile: string | undefined; url: string };
}

export const CONFIG_ENV = {
  TEMPORAL_ADDRESS: 'Temporal frontend host:port (default 127.0.0.1:7233)',
  TEMPORAL_NAMESPACE: 'Temporal namespace (default "default")',
  CONVEYOR_S3_ENDPOINT: 'S3/MinIO endpoint URL (default http://127.0.0.1:9000)',
  CONVEYOR_S3_ACCESS_KEY: 'access key (default "conveyor")',
  CONVEYOR_S3_SECRET_KEY: 'secret key (default "conveyor-dev-secret")',
  CONVEYOR_S3_BUCKET: 'bucket for artifacts and the registry (default "conveyor")',
  CONVEYOR_S3_REGION: 'region (default us-east-1)',
  CONVEYOR_HOME: 'state directory for dev servers and scratch files (default ./.conveyor)',
  CONVEYOR_TASK_QUEUE: 'pipeline task queue (default conveyor-pipeline)',
  CONVEYOR_TRAINING_TASK_QUEUE: 'training task queue (default conveyor-training)',
  CONVEYOR_SERVE_HOST: 'serving bind address (default 127.0.0.1)',
  CONVEYOR_SERVE_PORT: 'serving port (default 8080)',
  CONVEYOR_SERVE_POLL_MS: 'how often serving checks the registry for a new version (default 2000)',
  CONVEYOR_SERVE_MAX_BATCH_ROWS: 'dynamic batching: rows one inference run may answer at once across concurrent requests (default 64; 1 turns it off)',
  CONVEYOR_PREDICTION_LOG_FLUSH_ROWS: 'prediction log: rows per batch (default 500)',
  CONVEYOR_PREDICTION_LOG_FLUSH_MS: 'prediction log: flush interval (default 2000)',
  CONVEYOR_PREDICTION_LOG_MAX_ROWS: 'prediction log: rows kept in memory while the store is down (default 100000)',
  CONVEYOR_PYTHON: 'interpreter substituted for "{python}" in trainer commands (default: the setup venv)',
  LOG_LEVEL: 'pino level (default info)',
  CONVEYOR_WEBHOOK_SECRET: 'HMAC-SHA256 key that signs webhooks (required to send any)',
  CONVEYOR_WEBHOOK_ALLOW_HOSTS: 'comma-separated hosts webhooks may go to (exact or *.example.com)',
  CONVEYOR_WEBHOOK_ALLOW_PRIVATE: '"true" to allow loopback/private addresses (tests, internal receivers)',
  CONVEYOR_API_HOST: 'governance API bind address (default 127.0.0.1)',
  CONVEYOR_API_PORT: 'governance API port (default 8090)',
  CONVEYOR_API_URL: 'where the CLI finds the governance API (default http://127.0.0.1:8090)',
  CONVEYOR_API_TOKENS: 'API tokens as token=identity:group1|group2,... (in addition to the tokens file)',
  CONVEYOR_TOKENS_FILE: 'hashed API tokens file (default <home>/tokens.json; dev up creates one)',
  CONVEYOR_API_POLICY: 'per-model read/operate groups for the API (JSON file; default: any authenticated identity)',
  CONVEYOR_TOKEN: 'the token the CLI sends to the API (default: <home>/dev-tokens/<CONVEYOR_USER or OS user>)',
} as const;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const endpoint = new URL(env.CONVEYOR_S3_ENDPOINT ?? 'http://127.0.0.1:9000');
  const useSSL = endpoint.protocol === 'https:';
  return {
    temporal: {
      address: env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
      namespace: env.TEMPORAL_NAMESPACE ?? 'default',
    },
    s3: {
      endPoint: endpoint.hostname,
      port: endpoint.port ? Number(endpoint.port) : useSSL ? 443 : 80,
      useSSL,
      accessKey: env.CONVEYOR_S3_ACCESS_KEY ?? 'conveyor',
      secretKey: env.CONVEYOR_S3_SECRET_KEY ?? 'conveyor-dev-secret',
      bucket: env.CONVEYOR_S3_BUCKET ?? 'conveyor',
      region: env.CONVEYOR_S3_REGION ?? 'us-east-1',
    },
    home: resolve(env.CONVEYOR_HOME ?? join(process.cwd(), '.conveyor')),
    taskQueues: {
      pipeline: env.CONVEYOR_TASK_QUEUE ?? TASK_QUEUES.pipeline,
      training: env.CONVEYOR_TRAINING_TASK_QUEUE ?? TASK_QUEUES.training,
    },
    serving: {
      host: env.CONVEYOR_SERVE_HOST ?? '127.0.0.1',
      port: Number(env.CONVEYOR_SERVE_PORT ?? 8080),
      pollIntervalMs: Number(env.CONVEYOR_SERVE_POLL_MS ?? 2000),
    },
    python: env.CONVEYOR_PYTHON,
    logLevel: env.LOG_LEVEL ?? 'info',
    webhooks: {
      secret: env.CONVEYOR_WEBHOOK_SECRET || undefined,
      allowHosts: (env.CONVEYOR_WEBHOOK_ALLOW_HOSTS ?? '').split(',').map((h) => h.trim()).filter(Boolean),
      allowPrivate: env.CONVEYOR_WEBHOOK_ALLOW_PRIVATE === 'true',
    },
    api: {
      host: env.CONVEYOR_API_HOST ?? '127.0.0.1',
      port: Number(env.CONVEYOR_API_PORT ?? 8090),
      tokensFile: resolve(env.CONVEYOR_TOKENS_FILE ?? join(resolve(env.CONVEYOR_HOME ?? join(process.cwd(), '.conveyor')), 'tokens.json')),
      policyFile: env.CONVEYOR_API_POLICY || undefined,
      url: env.CONVEYOR_API_URL ?? `http://127.0.0.1:${env.CONVEYOR_API_PORT ?? 8090}`,
    },
  };
}

export function s3EndpointUrl(config: Config): string {
  return `${config.s3.useSSL ? 'https' : 'http'}://${config.s3.endPoint}:${config.s3.port}`;
}
