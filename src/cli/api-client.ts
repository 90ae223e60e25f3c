import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { currentUser } from '../runs.js';
import type { AliasRecord, RolloutRecord, TrafficRecord } from '../shared/registry-types.js';
import type { RolloutStatus } from '../../workflows/rollout-messages.js';

/** The token the CLI presents: CONVEYOR_TOKEN, else the development token of the current user. */
export function cliToken(config: Config, env: NodeJS.ProcessEnv = process.env): string {
  if (env.CONVEYOR_TOKEN) return env.CONVEYOR_TOKEN.trim();
  const file = join(config.home, 'dev-tokens', currentUser());
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  throw new Error(`no API token: set CONVEYOR_TOKEN (or, in development, run "npx conveyor dev up" and set CONVEYOR_USER to one of the identities in ${join(config.home, 'dev-tokens')})`);
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Calls the governance API with the CLI's token; errors carry the server's message. */
export async function apiRequest<T>(config: Config, method: string, path: string, body?: unknown): Promise<T> {
  const token = cliToken(config);
  let res: Response;
  try {
    res = await fetch(`${config.api.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch (err) {
    throw new Error(`the governance API is not reachable at ${config.api.url} (${(err as Error).cause ? String((err as Error).cause) : (err as Error).message}); start it with "npx conveyor api"`);
  }
  const text = await res.text();
  const parsed = text ? (JSON.parse(text) as unknown) : undefined;
  if (!res.ok) {
    const message = (parsed as { error?: string; message?: string } | undefined)?.error ?? (parsed as { message?: string } | undefined)?.message ?? text;
    throw new ApiError(res.status, `${res.status}: ${message}`);
  }
  return parsed as T;
}

// ---------------------------------------------------------------- rollouts

export type RolloutAction = 'promote' | 'pause' | 'resume' | 'abort';

/** GET /v1/models/:model/rollout: the running rollout's status, else the latest finished one; and the traffic split. */
export interface RolloutView {
  model: string;
  running: boolean;
  status: RolloutStatus | null;
  last: RolloutRecord | null;
  traffic: TrafficRecord | null;
}

export interface RolloutActionResult {
  model: string;
  action: RolloutAction;
  by: string;
  status: RolloutStatus;
}

export interface RollbackResult {
  model: string;
  action: 'aborted_rollout' | 'alias_moved';
  from: number;
  to: number | null;
  by: string;
  message: string;
  status?: RolloutStatus;
  entry?: AliasRecord;
}

const modelPath = (model: string) => `/v1/models/${encodeURIComponent(model)}`;

export function getRollout(config: Config, model: string): Promise<RolloutView> {
  return apiRequest<RolloutView>(config, 'GET', `${modelPath(model)}/rollout`);
}

export function controlRollout(config: Config, model: string, action: RolloutAction, reason?: string): Promise<RolloutActionResult> {
  return apiRequest<RolloutActionResult>(config, 'POST', `${modelPath(model)}/rollout/${action}`, reason ? { reason } : {});
}

export function rollback(config: Config, model: string, opts: { toVersion?: number; reason?: string } = {}): Promise<RollbackResult> {
  return apiRequest<RollbackResult>(config, 'POST', `${modelPath(model)}/rollback`, {
    ...(opts.toVersion !== undefined ? { toVersion: opts.toVersion } : {}),
    ...(opts.reason ? { reason: opts.reason } : {}),
  });
}
