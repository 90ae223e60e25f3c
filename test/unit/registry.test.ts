import { createHash } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import { AliasConflictError, VersionArchivedError, Registry, VersionNotFoundError } from '../../src/registry/registry.js';
import type { AliasRecord, DecisionRecord, ModelVersionRecord } from '../../src/shared/registry-types.js';
import { PreconditionFailedError, type PutOptions } from '../../src/store/artifact-store.js';
import { keys } from '../../src/store/keys.js';
import { MemoryArtifactStore } from '../../src/store/memory-store.js';

const MODEL = 'credit-risk';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

type Draft = Omit<ModelVersionRecord, 'version' | 'createdAt'>;

function draft(workflowId: string, runId: string, model = MODEL): Draft {
  const modelSha = sha(`model-${workflowId}-${runId}`);
  const dataSha = sha('data');
  return {
    schemaVersion: 1,
    model,
    task: 'classification',
    target: 'default',
    features: ['age', 'income'],
    artifact: {
      sha256: modelSha,
      key: keys.modelBlob(modelSha),
      size: 100,
      metadataKey: keys.modelMetadata(sha(`metadata-${workflowId}-${runId}`)),
      framework: 'test',
      algorithm: 'test',
    },
    data: {
      sha256: dataSha,
      key: keys.dataset(dataSha),
      source: '/data/x.csv',
      format: 'csv',
      size: 10,
      profileKey: keys.profile(dataSha, sha('schema')),
      rowCount: 10,
      split: { seed: 1, holdoutFraction: 0.2, trainKey: 'train', holdoutKey: 'holdout', trainRows: 8, holdoutRows: 2 },
    },
    trainer: { kind: 'command', entry: 'python train.py', params: {}, codeHashes: {} },
    code: { specHash: sha('spec'), gitCommit: null, gitDirty: false, pipelineFile: null },
    evaluation: { reportKey: 'report', metrics: { roc_auc: 0.8 }, gates: [], production: null },
    run: { workflowId, runId, submittedBy: 'test' },
  };
}

/**
 * Records writes and lost conditional writes (to prove a race really happened), and can
 * make writes under one prefix fail, to simulate a crash at that write.
 */
class RecordingStore extends MemoryArtifactStore {
  failUnder: string | null = null;
  writes: string[] = [];
  conflicts: string[] = [];
  override async put(key: string, body: Buffer | string, opts?: PutOptions): Promise<{ etag: string }> {
    if (this.failUnder && key.startsWith(this.failUnder)) throw new Error(`simulated crash writing ${key}`);
    try {
      const result = await super.put(key, body, opts);
      this.writes.push(key);
      return result;
    } catch (err) {
      if (err instanceof PreconditionFailedError) this.conflicts.push(key);
      throw err;
    }
  }
}

let store: RecordingStore;
let registry: Registry;

beforeEach(() => {
  store = new RecordingStore();
  registry = new Registry(store);
});

/** A claim object as a registration attempt writes it. */
interface Claim {
  runId: string;
  claimedAt: string;
}

async function readClaim(workflowId: string): Promise<Claim | null> {
  const found = await store.getWithEtag(keys.runClaim(MODEL, workflowId));
  return found ? (JSON.parse(found.body.toString('utf8')) as Claim) : null;
}

describe('registerVersion', () => {
  it('allocates 1, 2, 3 and writes record, run index and run claim', async () => {
    const now = new Date('2025-01-02T03:04:05.000Z');
    const records = [];
    for (const wf of ['wf-a', 'wf-b', 'wf-c']) records.push(await registry.registerVersion(draft(wf, `run-${wf}`), { now }));
    expect(records.map((r) => r.version)).toEqual([1, 2, 3]);
    expect(records[0]!.createdAt).toBe('2025-01-02T03:04:05.000Z');
    expect(await registry.listVersions(MODEL)).toEqual([1, 2, 3]);
    expect(await registry.getVersion(MODEL, 2)).toEqual(records[1]);
    expect(JSON.parse((await store.get(keys.runIndex(MODEL, 'wf-b'))).toString())).toEqual({ version: 2, runId: 'run-wf-b' });
    expect(await readClaim('wf-b')).toMatchObject({ runId: 'run-wf-b' });
    expect(await registry.listModels()).toEqual([MODEL]);
  });

  it('defaults createdAt to the current time', async () => {
    const before = Date.now();
    const record = await registry.registerVersion(draft('wf-1', 'run-1'));
    expect(Date.parse(record.createdAt)).toBeGreaterThanOrEqual(before);
    expect(Date.parse(record.createdAt)).toBeLessThanOrEqual(Date.now());
  });

  it('numbers models independently', async () => {
    await registry.registerVersion(draft('wf-1', 'r1'));
    const other = await registry.registerVersion(draft('wf-2', 'r2', 'fraud'));
    expect(other.version).toBe(1);
    expect(await registry.listModels()).toEqual([MODEL, 'fraud'].sort());
  });

  it('gives 20 concurrent registrations of one model 20 distinct consecutive versions', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => registry.registerVersion(draft(`wf-${i}`, `run-${i}`))));
    const versions = results.map((r) => r.version).sort((a, b) => a - b);
    expect(versions).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(await registry.listVersions(MODEL)).toEqual(versions);
    // each stored record belongs to the run that was told it owns that version
    for (const r of results) {
      expect((await registry.getVersion(MODEL, r.version)).run).toEqual(r.run);
    }
  });

  it('returns the existing record when the same run registers again (retry-safe)', async () => {
    const first = await registry.registerVersion(draft('wf-1', 'run-1'), { now: new Date('2025-01-01T00:00:00Z') });
    await registry.registerVersion(draft('wf-2', 'run-2'));
    const again = await registry.registerVersion(draft('wf-1', 'run-1'), { now: new Date('2025-06-01T00:00:00Z') });
    expect(again).toEqual(first);
    expect(await registry.listVersions(MODEL)).toEqual([1, 2]);
  });

  it('is retry-safe when the run index was never written (crash between the two writes)', async () => {
    await registry.registerVersion(draft('wf-0', 'run-0'));
    // A crashed attempt claimed the run and wrote version 2, but not the run index.
    const orphan: ModelVersionRecord = { ...draft('wf-1', 'run-1'), version: 2, createdAt: '2025-01-01T00:00:00.000Z' };
    await store.put(keys.runClaim(MODEL, 'wf-1'), JSON.stringify({ runId: 'run-1', claimedAt: new Date().toISOString() }));
    await store.put(keys.version(MODEL, 2), JSON.stringify(orphan));
    expect(await store.head(keys.runIndex(MODEL, 'wf-1'))).toBeNull();

    const retried = await registry.registerVersion(draft('wf-1', 'run-1'));
    expect(retried).toEqual(orphan);
    expect(await registry.listVersions(MODEL)).toEqual([1, 2]);
    expect(await registry.findVersionByRun(MODEL, 'wf-1', 'run-1')).toEqual(orphan);
  });

  it('registers a new version for a new run of the same workflow id, taking over the old run\'s claim', async () => {
    const first = await registry.registerVersion(draft('wf-1', 'run-1'));
    expect(await readClaim('wf-1')).toMatchObject({ runId: 'run-1' });
    // The claim of run-1 is fresh, but belongs to another run: run-2 does not wait for it.
    const second = await registry.registerVersion(draft('wf-1', 'run-2'), { waitMs: 60_000 });
    expect([first.version, second.version]).toEqual([1, 2]);
    expect(await readClaim('wf-1')).toMatchObject({ runId: 'run-2' });
    expect(await registry.findVersionByRun(MODEL, 'wf-1', 'run-1')).toEqual(first);
    expect(await registry.findVersionByRun(MODEL, 'wf-1', 'run-2')).toEqual(second);
    expect(await registry.findVersionByRun(MODEL, 'wf-1', 'run-3')).toBeNull();
  });

  it('gives two concurrent attempts of the same run exactly one version: the loser waits for the winner', async () => {
    const [a, b] = await Promise.all([
      registry.registerVersion(draft('wf-1', 'run-1'), { waitMs: 5_000 }),
      registry.registerVersion(draft('wf-1', 'run-1'), { waitMs: 5_000 }),
    ]);
    // the second attempt really found the first one's claim (and so waited instead of allocating)
    expect(store.conflicts).toEqual([keys.runClaim(MODEL, 'wf-1')]);
    expect(a).toEqual(b);
    expect(a.version).toBe(1);
    expect(await registry.listVersions(MODEL)).toEqual([1]);
    expect(await registry.findVersionByRun(MODEL, 'wf-1', 'run-1')).toEqual(a);
  });

  it('gives 5 concurrent attempts of one run one version while other runs still get their own', async () => {
    const attempts = Array.from({ length: 5 }, () => registry.registerVersion(draft('wf-same', 'run-same'), { waitMs: 5_000 }));
    const others = Array.from({ length: 3 }, (_, i) => registry.registerVersion(draft(`wf-${i}`, `run-${i}`), { waitMs: 5_000 }));
    const [same, rest] = await Promise.all([Promise.all(attempts), Promise.all(others)]);
    expect(new Set(same.map((r) => r.version)).size).toBe(1);
    for (const r of same) expect(r).toEqual(same[0]);
    const versions = [same[0]!.version, ...rest.map((r) => r.version)].sort((x, y) => x - y);
    expect(versions).toEqual([1, 2, 3, 4]);
    expect(await registry.listVersions(MODEL)).toEqual([1, 2, 3, 4]);
    expect(store.conflicts).toContain(keys.runClaim(MODEL, 'wf-same')); // attempts really met each other's claim
    const owners = await Promise.all([1, 2, 3, 4].map(async (v) => (await registry.getVersion(MODEL, v)).run.runId));
    expect(owners.filter((r) => r === 'run-same')).toHaveLength(1);
  });

  it('takes over a stale claim of the same run (its holder died) instead of waiting', async () => {
    const stale: Claim = { runId: 'run-1', claimedAt: '2020-01-01T00:00:00.000Z' };
    await store.put(keys.runClaim(MODEL, 'wf-1'), JSON.stringify(stale), { ifAbsent: true });
    const started = Date.now();
    // A wait would time out and throw: waitMs is far shorter than the test timeout but long enough to notice.
    const record = await registry.registerVersion(draft('wf-1', 'run-1'), { waitMs: 10_000 });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(record.version).toBe(1);
    expect(record.run).toMatchObject({ workflowId: 'wf-1', runId: 'run-1' });
    const claim = await readClaim('wf-1');
    expect(claim?.runId).toBe('run-1');
    expect(Date.parse(claim!.claimedAt)).toBeGreaterThanOrEqual(started);
    expect(await registry.listVersions(MODEL)).toEqual([1]);
  });

  it('honours leaseMs when deciding a claim is stale', async () => {
    const claimedAt = new Date(Date.now() - 2_000).toISOString();
    await store.put(keys.runClaim(MODEL, 'wf-1'), JSON.stringify({ runId: 'run-1', claimedAt }), { ifAbsent: true });
    const record = await registry.registerVersion(draft('wf-1', 'run-1'), { leaseMs: 1_000, waitMs: 10_000 });
    expect(record.version).toBe(1);
    expect((await readClaim('wf-1'))?.claimedAt).not.toBe(claimedAt);
  });

  it('fails retryably, writing nothing, when a fresh claim of the same run never produces a version', async () => {
    // Another attempt of run-1 holds the claim and is still (apparently) working.
    const fresh: Claim = { runId: 'run-1', claimedAt: new Date().toISOString() };
    await store.put(keys.runClaim(MODEL, 'wf-1'), JSON.stringify(fresh), { ifAbsent: true });
    await expect(registry.registerVersion(draft('wf-1', 'run-1'), { waitMs: 300 })).rejects.toThrow(
      `another attempt of run wf-1 is registering ${MODEL}; will check again`,
    );
    expect(await registry.listVersions(MODEL)).toEqual([]);
    expect(await readClaim('wf-1')).toEqual(fresh);
  });

  it('does not write a version once the caller says the attempt is no longer valid', async () => {
    await expect(registry.registerVersion(draft('wf-1', 'run-1'), { stillValid: () => false })).rejects.toThrow(/cancelled before writing/);
    expect(await registry.listVersions(MODEL)).toEqual([]);
    expect(await store.head(keys.runIndex(MODEL, 'wf-1'))).toBeNull();
  });

  it('refuses an invalid model name before writing anything', async () => {
    await expect(registry.registerVersion(draft('wf-1', 'run-1', '../evil'))).rejects.toThrow(/invalid model "\.\.\/evil"/);
    expect(await store.list('')).toEqual([]);
  });

  it('getVersion of a missing version throws VersionNotFoundError', async () => {
    await expect(registry.getVersion(MODEL, 9)).rejects.toBeInstanceOf(VersionNotFoundError);
  });
});

describe('moveAlias (append-only log, compare-and-swap)', () => {
  const run = (id: string) => ({ workflowId: `wf-${id}`, runId: `run-${id}` });
  const logKeys = (alias = 'production'): Promise<string[]> => store.list(keys.aliasPrefix(MODEL, alias));

  beforeEach(async () => {
    for (let i = 1; i <= 12; i++) await registry.registerVersion(draft(`wf-${i}`, `run-${i}`));
  });

  it('refuses to point an alias at an archived version, writing nothing', async () => {
    await store.put(keys.versionMeta(MODEL, 2), JSON.stringify({ archived: true, archivedBy: 'dana', archiveReason: 'leaky feature' }));
    await expect(registry.moveAlias({ model: MODEL, alias: 'staging', version: 2, expectedVersion: null, run: run('2') })).rejects.toBeInstanceOf(VersionArchivedError);
    expect(await logKeys('staging')).toEqual([]);
  });

  it('creates the alias with expectedVersion null as entry 1 of its log', async () => {
    const now = new Date('2025-03-01T00:00:00.000Z');
    const moved = await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1'), now });
    const v1 = await registry.getVersion(MODEL, 1);
    expect(moved).toEqual({
      model: MODEL,
      alias: 'production',
      seq: 1,
      version: 1,
      sha256: v1.artifact.sha256,
      strategy: 'direct',
      updatedAt: now.toISOString(),
      deployedAt: now.toISOString(),
      previousVersion: null,
      run: run('1'),
    } satisfies AliasRecord);
    expect(await logKeys()).toEqual([keys.aliasEntry(MODEL, 'production', 1)]);
    expect(JSON.parse((await store.get(keys.aliasEntry(MODEL, 'production', 1))).toString())).toEqual(moved);
    expect(await registry.getAlias(MODEL, 'production')).toEqual(moved);
    expect(await registry.getAlias(MODEL, 'staging')).toBeNull();
  });

  it('records the strategy given', async () => {
    const moved = await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1'), strategy: 'canary' });
    expect(moved.strategy).toBe('canary');
    expect((await registry.getAlias(MODEL, 'production'))?.strategy).toBe('canary');
  });

  it('appends one entry per move, with increasing seq and a previousVersion chain', async () => {
    const at = (d: number) => new Date(Date.UTC(2025, 0, d));
    const a = await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('a'), now: at(1) });
    const b = await registry.moveAlias({ model: MODEL, alias: 'production', version: 2, expectedVersion: 1, run: run('b'), now: at(2) });
    const c = await registry.moveAlias({ model: MODEL, alias: 'production', version: 3, expectedVersion: 2, run: run('c'), now: at(3) });
    // a rollback is a move like any other: the log keeps growing
    const d = await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: 3, run: run('d'), now: at(4), strategy: 'rollback' });
    const entries = [a, b, c, d];
    expect(entries.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
    expect(entries.map((e) => e.version)).toEqual([1, 2, 3, 1]);
    expect(entries.map((e) => e.previousVersion)).toEqual([null, 1, 2, 3]);
    expect(entries.map((e) => e.deployedAt)).toEqual(entries.map((e) => e.updatedAt));
    expect(await logKeys()).toEqual([1, 2, 3, 4].map((n) => keys.aliasEntry(MODEL, 'production', n)));
    expect(await registry.getAlias(MODEL, 'production')).toEqual(d);
    expect(await registry.listDeployments(MODEL, 'production')).toEqual(entries);
  });

  it('refuses expectedVersion null when the alias already exists', async () => {
    await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1') });
    await expect(
      registry.moveAlias({ model: MODEL, alias: 'production', version: 2, expectedVersion: null, run: run('2') }),
    ).rejects.toBeInstanceOf(AliasConflictError);
    expect((await registry.getAlias(MODEL, 'production'))?.version).toBe(1);
    expect(await logKeys()).toHaveLength(1);
  });

  it('refuses a stale expectedVersion and leaves the log unchanged', async () => {
    await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1') });
    const current = await registry.moveAlias({ model: MODEL, alias: 'production', version: 2, expectedVersion: 1, run: run('2') });
    expect(current.previousVersion).toBe(1);
    const before = await logKeys();

    const stale = registry.moveAlias({ model: MODEL, alias: 'production', version: 3, expectedVersion: 1, run: run('3') });
    await expect(stale).rejects.toBeInstanceOf(AliasConflictError);
    await expect(stale).rejects.toThrow('expected version 1, found 2');

    expect(await logKeys()).toEqual(before);
    expect(await registry.getAlias(MODEL, 'production')).toEqual(current);
  });

  it('returns the existing entry when the same run retries the same move', async () => {
    await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1') });
    const first = await registry.moveAlias({
      model: MODEL,
      alias: 'production',
      version: 2,
      expectedVersion: 1,
      run: run('2'),
      now: new Date('2025-03-01T00:00:00.000Z'),
    });
    const before = await logKeys();
    // the retried activity still says expectedVersion 1, which is now stale
    const retried = await registry.moveAlias({
      model: MODEL,
      alias: 'production',
      version: 2,
      expectedVersion: 1,
      run: run('2'),
      now: new Date('2025-03-02T00:00:00.000Z'),
    });
    expect(retried).toEqual(first);
    expect(await logKeys()).toEqual(before);
    expect(await registry.listDeployments(MODEL, 'production')).toHaveLength(2);
  });

  it('does not move the alias back when a late retry arrives after a newer move', async () => {
    await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1') });
    const mine = await registry.moveAlias({ model: MODEL, alias: 'production', version: 2, expectedVersion: 1, run: run('2') });
    const newer = await registry.moveAlias({ model: MODEL, alias: 'production', version: 3, expectedVersion: 2, run: run('3') });
    const retried = await registry.moveAlias({ model: MODEL, alias: 'production', version: 2, expectedVersion: 1, run: run('2') });
    expect(retried).toEqual(mine);
    expect(await registry.getAlias(MODEL, 'production')).toEqual(newer);
    expect(await logKeys()).toHaveLength(3);
  });

  it('lets exactly one of 10 concurrent moves from the same expected version win, adding exactly one entry', async () => {
    const first = await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1') });
    const outcomes = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        registry.moveAlias({ model: MODEL, alias: 'production', version: i + 2, expectedVersion: 1, run: run(String(i + 2)) }),
      ),
    );
    const won = outcomes.filter((o): o is PromiseFulfilledResult<AliasRecord> => o.status === 'fulfilled');
    const lost = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(9);
    for (const o of lost) expect(o.reason).toBeInstanceOf(AliasConflictError);
    const winner = won[0]!.value;
    expect(winner).toMatchObject({ seq: 2, previousVersion: 1 });
    // the race reached the store: losers lost the if-absent create of entry 2, not only a read-time check
    expect(store.conflicts).toContain(keys.aliasEntry(MODEL, 'production', 2));
    expect(await registry.getAlias(MODEL, 'production')).toEqual(winner);
    expect(await logKeys()).toEqual([keys.aliasEntry(MODEL, 'production', 1), keys.aliasEntry(MODEL, 'production', 2)]);
    expect(await registry.listDeployments(MODEL, 'production')).toEqual([first, winner]);
  });

  it('lets exactly one of 10 concurrent creations win', async () => {
    const outcomes = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        registry.moveAlias({ model: MODEL, alias: 'staging', version: i + 1, expectedVersion: null, run: run(String(i + 1)) }),
      ),
    );
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    expect(outcomes.filter((o) => o.status === 'rejected' && o.reason instanceof AliasConflictError)).toHaveLength(9);
    expect(await logKeys('staging')).toEqual([keys.aliasEntry(MODEL, 'staging', 1)]);
  });

  it('keeps the logs of different aliases apart', async () => {
    await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1') });
    const staged = await registry.moveAlias({ model: MODEL, alias: 'staging', version: 2, expectedVersion: null, run: run('2') });
    expect(staged).toMatchObject({ seq: 1, previousVersion: null });
    expect((await registry.getAlias(MODEL, 'production'))?.version).toBe(1);
    expect((await registry.getAlias(MODEL, 'staging'))?.version).toBe(2);
  });

  it('refuses a move to a version that does not exist', async () => {
    await expect(
      registry.moveAlias({ model: MODEL, alias: 'production', version: 99, expectedVersion: null, run: run('x') }),
    ).rejects.toBeInstanceOf(VersionNotFoundError);
    expect(await registry.getAlias(MODEL, 'production')).toBeNull();
    expect(await store.list(keys.aliasesPrefix(MODEL))).toEqual([]);
  });

  it('refuses an invalid alias name', async () => {
    await expect(
      registry.moveAlias({ model: MODEL, alias: '../versions', version: 1, expectedVersion: null, run: run('x') }),
    ).rejects.toThrow(/invalid alias/);
    expect(await store.list(keys.aliasesPrefix(MODEL))).toEqual([]);
  });
});

describe('recordDecision', () => {
  const decision = (over: Partial<DecisionRecord> = {}): DecisionRecord => ({
    model: MODEL,
    version: 1,
    sha256: sha('m'),
    decision: 'approved',
    by: ['ana'],
    comment: null,
    decidedAt: '2025-01-01T00:00:00.000Z',
    run: { workflowId: 'wf-1', runId: 'run-1' },
    ...over,
  });

  it('records the first decision', async () => {
    expect(await registry.recordDecision(decision())).toEqual(decision());
    expect(await registry.getDecision(MODEL, 1)).toEqual(decision());
    expect(await registry.getDecision(MODEL, 2)).toBeNull();
  });

  it('refuses a second, different decision and keeps the first', async () => {
    await registry.recordDecision(decision());
    await expect(registry.recordDecision(decision({ decision: 'rejected', by: ['bob'] }))).rejects.toThrow(
      `${MODEL}@1 was already approved at 2025-01-01T00:00:00.000Z`,
    );
    await expect(registry.recordDecision(decision({ run: { workflowId: 'wf-2', runId: 'run-2' } }))).rejects.toThrow(/already approved/);
    expect(await registry.getDecision(MODEL, 1)).toEqual(decision());
  });

  it('returns the existing decision for an identical retry', async () => {
    await registry.recordDecision(decision());
    const retried = await registry.recordDecision(decision({ decidedAt: '2025-01-01T00:05:00.000Z' }));
    expect(retried).toEqual(decision());
  });
});

describe('listDeployments (the alias logs)', () => {
  const run = (id: string) => ({ workflowId: `wf-${id}`, runId: `run-${id}` });
  const at = (iso: string) => new Date(iso);

  beforeEach(async () => {
    for (let i = 1; i <= 3; i++) await registry.registerVersion(draft(`wf-${i}`, `run-${i}`));
  });

  it('lists every entry of every alias by time, not by key; or one alias\'s log', async () => {
    // key order (production before staging) differs from time order
    const s1 = await registry.moveAlias({ model: MODEL, alias: 'staging', version: 1, expectedVersion: null, run: run('a'), now: at('2025-01-01T00:00:00.000Z') });
    const p1 = await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('b'), now: at('2025-01-02T00:00:00.000Z'), strategy: 'replace' });
    const s2 = await registry.moveAlias({ model: MODEL, alias: 'staging', version: 3, expectedVersion: 1, run: run('c'), now: at('2025-01-03T00:00:00.000Z') });
    const p2 = await registry.moveAlias({ model: MODEL, alias: 'production', version: 3, expectedVersion: 1, run: run('d'), now: at('2025-01-04T00:00:00.000Z'), strategy: 'replace' });
    const p3 = await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: 3, run: run('e'), now: at('2025-01-05T00:00:00.000Z'), strategy: 'rollback' });

    expect(await registry.listDeployments(MODEL)).toEqual([s1, p1, s2, p2, p3]);
    expect(await registry.listDeployments(MODEL, 'production')).toEqual([p1, p2, p3]);
    expect(await registry.listDeployments(MODEL, 'staging')).toEqual([s1, s2]);
    expect(await registry.listDeployments(MODEL, 'canary')).toEqual([]);
    expect(await registry.listDeployments('other-model')).toEqual([]);
    expect((await registry.listDeployments(MODEL, 'production')).map((d) => [d.version, d.strategy, d.previousVersion])).toEqual([
      [1, 'replace', null],
      [3, 'replace', 1],
      [1, 'rollback', 3],
    ]);
  });

  it('records the deployment in the same single write as the move', async () => {
    const failing = new RecordingStore();
    const reg = new Registry(failing);
    await reg.registerVersion(draft('wf-1', 'run-1'));
    failing.writes = [];
    const moved = await reg.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1'), strategy: 'replace' });
    // exactly one object written: the log entry, which is both the alias and the deployment record
    expect(failing.writes).toEqual([keys.aliasEntry(MODEL, 'production', 1)]);
    expect(await reg.getAlias(MODEL, 'production')).toEqual(moved);
    expect(await reg.listDeployments(MODEL)).toEqual([moved]);
  });

  it('leaves neither a move nor a deployment behind when that write fails', async () => {
    const failing = new RecordingStore();
    const reg = new Registry(failing);
    await reg.registerVersion(draft('wf-1', 'run-1'));
    await reg.registerVersion(draft('wf-2', 'run-2'));
    const first = await reg.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1') });
    failing.failUnder = keys.aliasesPrefix(MODEL);
    await expect(reg.moveAlias({ model: MODEL, alias: 'production', version: 2, expectedVersion: 1, run: run('2') })).rejects.toThrow(/simulated crash/);
    expect(await reg.getAlias(MODEL, 'production')).toEqual(first);
    expect(await reg.listDeployments(MODEL)).toEqual([first]);
    // the retry after the crash applies the move once
    failing.failUnder = null;
    const retried = await reg.moveAlias({ model: MODEL, alias: 'production', version: 2, expectedVersion: 1, run: run('2') });
    expect(retried).toMatchObject({ seq: 2, version: 2, previousVersion: 1 });
    expect(await reg.listDeployments(MODEL)).toEqual([first, retried]);
  });
});
