import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  MIN_TOKEN_LENGTH,
  TokenStore,
  TokenStoreError,
  bearerToken,
  createDevTokens,
  hashToken,
  loadTokenStore,
} from '../../src/auth/tokens.js';

const ALICE = 'alice-token-0123456789abcdefXYZ';
const BOB = 'bob-token-0123456789abcdefXYZ_~';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'conveyor-auth-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function writeJson(name: string, value: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
  return file;
}

function loadError(fn: () => unknown): TokenStoreError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TokenStoreError);
    return err as TokenStoreError;
  }
  throw new Error('expected a TokenStoreError');
}

describe('hashed tokens file', () => {
  it('authenticates a token whose sha256 is listed', () => {
    const file = writeJson('tokens.json', {
      tokens: [
        { sha256: hashToken(ALICE), identity: 'alice', groups: ['risk-reviewers', 'admin'] },
        { sha256: hashToken(BOB), identity: 'bob', groups: [] },
      ],
    });
    const store = loadTokenStore({ file, env: {} });
    expect(store.size).toBe(2);
    expect(store.authenticate(ALICE)).toEqual({ identity: 'alice', groups: ['risk-reviewers', 'admin'] });
    expect(store.authenticate(BOB)).toEqual({ identity: 'bob', groups: [] });
  });

  it('returns null for a wrong, missing, short or huge token', () => {
    const file = writeJson('tokens.json', { tokens: [{ sha256: hashToken(ALICE), identity: 'alice', groups: [] }] });
    const store = loadTokenStore({ file, env: {} });
    expect(store.authenticate(`${ALICE}x`)).toBeNull();
    expect(store.authenticate(ALICE.toUpperCase())).toBeNull();
    expect(store.authenticate(undefined)).toBeNull();
    expect(store.authenticate('')).toBeNull();
    expect(store.authenticate(ALICE.slice(0, MIN_TOKEN_LENGTH - 1))).toBeNull();
    expect(store.authenticate('a'.repeat(100_000))).toBeNull();
    // The stored hash itself is not a credential.
    expect(store.authenticate(hashToken(ALICE))).toBeNull();
  });

  it('does not let callers change the stored groups', () => {
    const store = loadTokenStore({ env: { CONVEYOR_API_TOKENS: `${ALICE}=alice:admin` } });
    store.authenticate(ALICE)!.groups.push('root');
    expect(store.authenticate(ALICE)!.groups).toEqual(['admin']);
  });

  it.each([
    ['a bad hash', { tokens: [{ sha256: 'abc', identity: 'alice', groups: [] }] }, 'tokens.0.sha256:'],
    ['an invalid identity', { tokens: [{ sha256: hashToken(ALICE), identity: 'Alice!', groups: [] }] }, 'tokens.0.identity:'],
    ['an invalid group', { tokens: [{ sha256: hashToken(ALICE), identity: 'alice', groups: ['ok', '../x'] }] }, 'tokens.0.groups.1:'],
    ['a misspelt field', { tokens: [{ sha256: hashToken(ALICE), identity: 'alice', group: [] }] }, 'tokens.0:'],
    ['no tokens array', { token: [] }, 'tokens:'],
  ])('refuses a file with %s, naming the field', (_label, content, field) => {
    const file = writeJson('tokens.json', content);
    const err = loadError(() => loadTokenStore({ file, env: {} }));
    expect(err.message).toContain(file);
    expect(err.message).toContain(field);
  });

  it('refuses a file that is not JSON, or missing', () => {
    const file = writeJson('tokens.json', '{"tokens": [');
    expect(loadError(() => loadTokenStore({ file, env: {} })).message).toMatch(/not valid JSON/);
    expect(loadError(() => loadTokenStore({ file: join(dir, 'nope.json'), env: {} })).message).toMatch(/not found/);
  });
});

describe('CONVEYOR_API_TOKENS', () => {
  it('parses identities, groups and empty groups', () => {
    const store = loadTokenStore({ env: { CONVEYOR_API_TOKENS: ` ${ALICE}=alice:risk-reviewers|admin , ${BOB}=bob:,` } });
    expect(store.size).toBe(2);
    expect(store.authenticate(ALICE)).toEqual({ identity: 'alice', groups: ['risk-reviewers', 'admin'] });
    expect(store.authenticate(BOB)).toEqual({ identity: 'bob', groups: [] });
  });

  it('accepts an entry without a colon as having no groups, and an empty variable as no tokens', () => {
    expect(loadTokenStore({ env: { CONVEYOR_API_TOKENS: `${ALICE}=alice` } }).authenticate(ALICE)).toEqual({ identity: 'alice', groups: [] });
    expect(loadTokenStore({ env: { CONVEYOR_API_TOKENS: '' } }).size).toBe(0);
    expect(loadTokenStore({ env: {} }).size).toBe(0);
  });

  it('combines with the file', () => {
    const file = writeJson('tokens.json', { tokens: [{ sha256: hashToken(ALICE), identity: 'alice', groups: [] }] });
    const store = loadTokenStore({ file, env: { CONVEYOR_API_TOKENS: `${BOB}=bob:admin` } });
    expect(store.size).toBe(2);
    expect(store.authenticate(BOB)?.identity).toBe('bob');
  });

  it('refuses a token shorter than the minimum', () => {
    const short = 'short-token-1234';
    const err = loadError(() => loadTokenStore({ env: { CONVEYOR_API_TOKENS: `${ALICE}=alice:,${short}=bob:` } }));
    expect(err.message).toMatch(new RegExp(`entry 2: token is shorter than ${MIN_TOKEN_LENGTH} characters`));
  });

  it.each([
    ['missing "="', `${ALICE}`, /entry 1: expected token=identity/],
    ['a bad identity', `${ALICE}=Alice:admin`, /entry 1: identity must be/],
    ['a bad group', `${ALICE}=alice:admin|Bad Group`, /entry 1: groups\.1 must be/],
    ['a token with a space', `${ALICE} x=alice:`, /entry 1: token may contain only/],
  ])('refuses %s', (_label, value, message) => {
    expect(loadError(() => loadTokenStore({ env: { CONVEYOR_API_TOKENS: value } })).message).toMatch(message);
  });

  it('refuses a duplicate token, within the variable or across file and variable', () => {
    const err = loadError(() => loadTokenStore({ env: { CONVEYOR_API_TOKENS: `${ALICE}=alice:,${ALICE}=bob:` } }));
    expect(err.message).toMatch(/duplicate token: CONVEYOR_API_TOKENS entry 1 and CONVEYOR_API_TOKENS entry 2/);
    const file = writeJson('tokens.json', { tokens: [{ sha256: hashToken(ALICE), identity: 'alice', groups: [] }] });
    expect(loadError(() => loadTokenStore({ file, env: { CONVEYOR_API_TOKENS: `${ALICE}=alice:` } })).message).toMatch(/duplicate token/);
  });

  it('never puts a token in an error message', () => {
    const secret = 'Zq9-super-secret-value-that-must-not-leak';
    const bad = [
      `${secret}`,
      `${secret}=Alice:`,
      `${secret}=alice:Admin`,
      `${secret}=alice:,${secret}=bob:`,
      `${secret} =alice:`,
      `alice=${secret}:admin`,
      `${secret.slice(0, 10)}=alice:`,
    ];
    for (const value of bad) {
      const err = loadError(() => loadTokenStore({ env: { CONVEYOR_API_TOKENS: value } }));
      expect(err.message).not.toContain(secret.slice(0, 10));
      expect(String(err.stack)).not.toContain(secret.slice(0, 10));
    }
  });
});

describe('TokenStore', () => {
  it('refuses duplicate hashes and malformed ones', () => {
    const sha256 = hashToken(ALICE);
    expect(() => new TokenStore([{ sha256, identity: 'a', groups: [] }, { sha256, identity: 'b', groups: [] }])).toThrow(/duplicate token: entry 0 and entry 1/);
    expect(() => new TokenStore([{ sha256: sha256.toUpperCase(), identity: 'a', groups: [] }])).toThrow(TokenStoreError);
  });
});

describe('createDevTokens', () => {
  const people = [
    { identity: 'alice', groups: ['risk-reviewers', 'admin'] },
    { identity: 'bob', groups: [] },
  ];

  it('writes hashed tokens.json and one plain token file per person, all mode 0600', () => {
    const tokens = createDevTokens(dir, people);
    expect(Object.keys(tokens).sort()).toEqual(['alice', 'bob']);
    for (const [identity, token] of Object.entries(tokens)) {
      expect(token.length).toBeGreaterThanOrEqual(MIN_TOKEN_LENGTH);
      const file = join(dir, 'dev-tokens', identity);
      expect(readFileSync(file, 'utf8')).toBe(token);
      expect(statSync(file).mode & 0o777).toBe(0o600);
    }
    const tokensFile = join(dir, 'tokens.json');
    expect(statSync(tokensFile).mode & 0o777).toBe(0o600);
    const text = readFileSync(tokensFile, 'utf8');
    expect(text).not.toContain(tokens.alice);
    expect(text).not.toContain(tokens.bob);

    const store = loadTokenStore({ file: tokensFile, env: {} });
    expect(store.authenticate(tokens.alice)).toEqual({ identity: 'alice', groups: ['risk-reviewers', 'admin'] });
    expect(store.authenticate(tokens.bob)).toEqual({ identity: 'bob', groups: [] });
  });

  it('is idempotent: a second call keeps the tokens and the file', () => {
    const first = createDevTokens(dir, people);
    const before = readFileSync(join(dir, 'tokens.json'), 'utf8');
    const mtime = statSync(join(dir, 'tokens.json')).mtimeMs;
    const second = createDevTokens(dir, people);
    expect(second).toEqual(first);
    expect(readFileSync(join(dir, 'tokens.json'), 'utf8')).toBe(before);
    expect(statSync(join(dir, 'tokens.json')).mtimeMs).toBe(mtime);
  });

  it('adds new people, updates groups, and drops the hash of a deleted dev token', () => {
    const first = createDevTokens(dir, people);
    rmSync(join(dir, 'dev-tokens', 'bob'));
    const second = createDevTokens(dir, [{ identity: 'alice', groups: ['admin'] }, people[1]!, { identity: 'carol', groups: ['ops'] }]);
    expect(second.alice).toBe(first.alice);
    expect(second.bob).not.toBe(first.bob);
    const store = loadTokenStore({ file: join(dir, 'tokens.json'), env: {} });
    expect(store.size).toBe(3);
    expect(store.authenticate(first.alice)?.groups).toEqual(['admin']);
    expect(store.authenticate(first.bob)).toBeNull();
    expect(store.authenticate(second.carol)?.identity).toBe('carol');
  });

  it('keeps entries for identities it was not asked about', () => {
    writeJson('tokens.json', { tokens: [{ sha256: hashToken(ALICE), identity: 'ops-bot', groups: ['deployers'] }] });
    createDevTokens(dir, people);
    const store = loadTokenStore({ file: join(dir, 'tokens.json'), env: {} });
    expect(store.size).toBe(3);
    expect(store.authenticate(ALICE)?.identity).toBe('ops-bot');
  });

  it('refuses invalid or repeated identities', () => {
    expect(() => createDevTokens(dir, [{ identity: '../etc', groups: [] }])).toThrow(TokenStoreError);
    expect(() => createDevTokens(dir, [people[0]!, people[0]!])).toThrow(/listed twice/);
  });
});

describe('bearerToken', () => {
  it.each([
    [`Bearer ${ALICE}`, ALICE],
    [`bearer ${ALICE}`, ALICE],
    [`Bearer   ${ALICE}  `, ALICE],
    [undefined, undefined],
    ['', undefined],
    ['Bearer', undefined],
    ['Bearer ', undefined],
    [`Basic ${ALICE}`, undefined],
    [`Bearer ${ALICE} extra`, undefined],
    [`Bearer${ALICE}`, undefined],
  ])('%j → %j', (header, expected) => {
    expect(bearerToken(header)).toBe(expected);
  });
});
