import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { NAME_PATTERN } from '../shared/names.js';

/**
 * API tokens. The tokens file holds only sha256 hashes, so a leaked file does not
 * leak credentials; plain tokens come only from CONVEYOR_API_TOKENS (CI, containers)
 * or the per-person dev token files. No value that might be a token ever reaches an
 * error message.
 */
export interface Identity {
  identity: string;
  groups: string[];
}

/** One hashed token as stored in the tokens file. */
export interface TokenEntry extends Identity {
  sha256: string;
}

export const TOKENS_ENV = 'CONVEYOR_API_TOKENS';
export const MIN_TOKEN_LENGTH = 24;
/** Bounds the work an unauthenticated caller can make us do per request. */
export const MAX_TOKEN_LENGTH = 512;
/** RFC 6750 b64token without "=" padding, which also keeps the env format's "=", ":", "|", "," unambiguous. */
const TOKEN_PATTERN = /^[A-Za-z0-9._~+/-]+$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const NAME_RULE = 'must be 1-63 characters of a-z, 0-9, "-" or "_", starting with a letter or digit';

export class TokenStoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenStoreError';
  }
}

const name = z.string().regex(NAME_PATTERN, NAME_RULE);
const tokensFileSchema = z.strictObject({
  tokens: z.array(
    z.strictObject({
      sha256: z.string().regex(SHA256_HEX, 'must be the 64 lowercase hex characters of the token\'s sha256'),
      identity: name,
      groups: z.array(name).default([]),
    }),
  ),
});

/** Tokens are high-entropy random strings, so a fast hash is enough (no password stretching needed). */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

interface StoredToken extends Identity {
  hash: Buffer;
  source: string;
}

export class TokenStore {
  readonly #tokens: readonly StoredToken[];

  /** `source` labels an entry in duplicate errors (never the token itself). */
  constructor(entries: ReadonlyArray<TokenEntry & { source?: string }>) {
    const seen = new Map<string, string>();
    this.#tokens = entries.map((e, i) => {
      const source = e.source ?? `entry ${i}`;
      if (!SHA256_HEX.test(e.sha256)) throw new TokenStoreError(`${source}: sha256 must be 64 lowercase hex characters`);
      const previous = seen.get(e.sha256);
      if (previous !== undefined) throw new TokenStoreError(`duplicate token: ${previous} and ${source} are the same token`);
      seen.set(e.sha256, source);
      return { hash: Buffer.from(e.sha256, 'hex'), identity: e.identity, groups: [...new Set(e.groups)], source };
    });
  }

  get size(): number {
    return this.#tokens.length;
  }

  authenticate(presented: string | undefined): Identity | null {
    if (typeof presented !== 'string' || presented.length < MIN_TOKEN_LENGTH || presented.length > MAX_TOKEN_LENGTH) return null;
    const hash = createHash('sha256').update(presented, 'utf8').digest();
    let match: StoredToken | undefined;
    // No early exit: the time taken does not depend on which entry (if any) matched.
    for (const t of this.#tokens) if (timingSafeEqual(hash, t.hash)) match = t;
    return match ? { identity: match.identity, groups: [...match.groups] } : null;
  }
}

function checkToken(token: string, where: string): void {
  if (token.length < MIN_TOKEN_LENGTH) throw new TokenStoreError(`${where}: token is shorter than ${MIN_TOKEN_LENGTH} characters`);
  if (token.length > MAX_TOKEN_LENGTH) throw new TokenStoreError(`${where}: token is longer than ${MAX_TOKEN_LENGTH} characters`);
  if (!TOKEN_PATTERN.test(token)) throw new TokenStoreError(`${where}: token may contain only A-Z a-z 0-9 . _ ~ + / -`);
}

function checkNames(person: Identity, where: string): void {
  if (!NAME_PATTERN.test(person.identity)) throw new TokenStoreError(`${where}: identity ${NAME_RULE}`);
  person.groups.forEach((g, i) => {
    if (!NAME_PATTERN.test(g)) throw new TokenStoreError(`${where}: groups.${i} ${NAME_RULE}`);
  });
}

function readTokensFile(file: string): Array<TokenEntry & { source: string }> {
  if (!existsSync(file)) throw new TokenStoreError(`tokens file not found: ${file}`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    // V8's message quotes part of the input; say only what is wrong.
    throw new TokenStoreError(`invalid tokens file ${file}: not valid JSON`);
  }
  const parsed = tokensFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(file)'}: ${i.message}`);
    throw new TokenStoreError(`invalid tokens file ${file}:\n${issues.join('\n')}`);
  }
  return parsed.data.tokens.map((t, i) => ({ ...t, source: `${file} tokens.${i}` }));
}

/** `token=identity:group1|group2,token2=identity2:` — entries are referred to by position, never by value. */
function parseTokensEnv(raw: string): Array<TokenEntry & { source: string }> {
  const parts = raw.split(',').map((p) => p.trim());
  return parts.flatMap((part, i) => {
    if (part === '') return [];
    const where = `${TOKENS_ENV} entry ${i + 1}`;
    const eq = part.indexOf('=');
    if (eq < 0) throw new TokenStoreError(`${where}: expected token=identity:group1|group2`);
    const token = part.slice(0, eq);
    checkToken(token, where);
    const rest = part.slice(eq + 1);
    const colon = rest.indexOf(':');
    const person = {
      identity: colon < 0 ? rest : rest.slice(0, colon),
      groups: colon < 0 ? [] : rest.slice(colon + 1).split('|').filter((g) => g !== ''),
    };
    checkNames(person, where);
    return [{ ...person, sha256: hashToken(token), source: where }];
  });
}

/** Tokens from the hashed file and/or CONVEYOR_API_TOKENS; a token present twice (anywhere) is an error. */
export function loadTokenStore(opts: { file?: string; env?: NodeJS.ProcessEnv }): TokenStore {
  const env = opts.env ?? process.env;
  const entries = [...(opts.file ? readTokensFile(opts.file) : []), ...parseTokensEnv(env[TOKENS_ENV] ?? '')];
  return new TokenStore(entries);
}

/**
 * Development tokens: `<dir>/dev-tokens/<identity>` holds each plain token and
 * `<dir>/tokens.json` its hash (both mode 0600). Existing dev tokens are kept;
 * the dev token file is the source of truth for a listed identity, so stale
 * entries for that identity are dropped, and other identities' entries kept.
 * Returns identity → plain token.
 */
export function createDevTokens(dir: string, people: ReadonlyArray<Identity>): Record<string, string> {
  const names = new Set<string>();
  for (const p of people) {
    checkNames(p, `dev identity "${p.identity}"`);
    if (names.has(p.identity)) throw new TokenStoreError(`dev identity "${p.identity}" listed twice`);
    names.add(p.identity);
  }
  const tokenDir = join(dir, 'dev-tokens');
  mkdirSync(tokenDir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'tokens.json');
  const before = existsSync(file) ? readFileSync(file, 'utf8') : undefined;
  const kept: TokenEntry[] = before === undefined ? [] : readTokensFile(file).filter((e) => !names.has(e.identity)).map(({ source: _s, ...e }) => e);

  const tokens: Record<string, string> = {};
  const mine: TokenEntry[] = people.map((p) => {
    const path = join(tokenDir, p.identity);
    let token: string;
    if (existsSync(path)) {
      token = readFileSync(path, 'utf8').trim();
      checkToken(token, `dev token file ${path}`);
    } else {
      token = randomBytes(32).toString('base64url');
      // "wx": never overwrite, never write through a planted symlink.
      writeFileSync(path, token, { mode: 0o600, flag: 'wx' });
    }
    tokens[p.identity] = token;
    return { sha256: hashToken(token), identity: p.identity, groups: [...new Set(p.groups)] };
  });

  const all = [...kept, ...mine];
  new TokenStore(all); // refuses duplicates before anything is written
  const text = `${JSON.stringify({ tokens: all }, null, 2)}\n`;
  if (text !== before) {
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, file); // atomic: a reader never sees half a file
  }
  return tokens;
}

/** The token from `Authorization: Bearer <token>` (scheme case-insensitive), else undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? '');
  return m?.[1];
}
