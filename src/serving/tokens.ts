import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * API tokens for the serving endpoints: CONVEYOR_SERVE_TOKEN (comma-separated)
 * or, for development, a random token kept in <home>/serve-token (mode 600).
 */
export function servingTokens(home: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const fromEnv = (env.CONVEYOR_SERVE_TOKEN ?? '').split(',').map((t) => t.trim()).filter(Boolean);
  if (fromEnv.length) return fromEnv;
  const file = join(home, 'serve-token');
  if (!existsSync(file)) {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, randomBytes(24).toString('base64url'), { mode: 0o600 });
  }
  return [readFileSync(file, 'utf8').trim()];
}
