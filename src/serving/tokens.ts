import { randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { MAX_TOKEN_LENGTH, MIN_TOKEN_LENGTH, bearerToken } from '../auth/tokens.js';

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

/**
 * The bearer tokens serving accepts. Serving is given its tokens in plain text (from the
 * environment or the dev token file), so a presented token is compared with each of them
 * in constant time (`timingSafeEqual`, every token tried, no early exit) rather than
 * hashed first: the same guarantee as the governance API's hashed store at a tenth of the
 * cost per request. Only a token's length can be told apart by timing, and every token is
 * at least 24 random characters.
 */
export class ServingTokens {
  readonly #tokens: readonly Buffer[];

  constructor(tokens: readonly string[]) {
    if (tokens.length === 0) throw new Error('serving needs at least one API token (CONVEYOR_SERVE_TOKEN)');
    tokens.forEach((t, i) => {
      if (t.length < MIN_TOKEN_LENGTH) throw new Error(`serving token ${i + 1} is shorter than ${MIN_TOKEN_LENGTH} characters`);
      if (t.length > MAX_TOKEN_LENGTH) throw new Error(`serving token ${i + 1} is longer than ${MAX_TOKEN_LENGTH} characters`);
    });
    this.#tokens = tokens.map((t) => Buffer.from(t, 'utf8'));
  }

  /** Whether an Authorization header carries one of the tokens. */
  accepts(authorization: string | undefined): boolean {
    const token = bearerToken(authorization);
    if (token === undefined || token.length < MIN_TOKEN_LENGTH || token.length > MAX_TOKEN_LENGTH) return false;
    const presented = Buffer.from(token, 'utf8');
    let match = false;
    for (const t of this.#tokens) if (t.length === presented.length && timingSafeEqual(t, presented)) match = true;
    return match;
  }
}
