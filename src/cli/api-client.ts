import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { currentUser } from '../runs.js';

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
