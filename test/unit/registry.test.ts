import { createHash } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import { AliasConflictError, Registry, VersionNotFoundError } from '../../src/registry/registry.js';
import type { DecisionRecord, DeploymentRecord, ModelVersionRecord } from '../../src/shared/registry-types.js';
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
      metadataKey: keys.modelMetadata(modelSha),
      framework: 'test',
      algorithm: 'test',
    },
    data: {
      sha256: dataSha,
      key: keys.dataset(dataSha),
      source: '/data/x.csv',
      format: 'csv',
      size: 10,
      profileKey: keys.profile(dataSha),
      rowCount: 10,
      split: { seed: 1, holdoutFraction: 0.2, trainKey: 'train', holdoutKey: 'holdout', trainRows: 8, holdoutRows: 2 },
    },
    trainer: { kind: 'command', entry: 'python train.py', params: {}, codeHashes: {} },
    code: { specHash: sha('spec'), gitCommit: null, gitDirty: false, pipelineFile: null },
    evaluation: { reportKey: 'report', metrics: { roc_auc: 0.8 }, gates: [], production: null },
    run: { workflowId, runId, submittedBy: 'test' },
  };
}

let store: MemoryArtifactStore;
let registry: Registry;

beforeEach(() => {
  store = new MemoryArtifactStore();
  registry = new Registry(store);
});

describe('registerVersion', () => {
  it('allocates 1, 2, 3 and writes record and run index', async () => {
    const now = new Date('2025-01-02T03:04:05.000Z');
    const records = [];
    for (const wf of ['wf-a', 'wf-b', 'wf-c']) records.push(await registry.registerVersion(draft(wf, `run-${wf}`), now));
    expect(records.map((r) => r.version)).toEqual([1, 2, 3]);
    expect(records[0]!.createdAt).toBe('2025-01-02T03:04:05.000Z');
    expect(await registry.listVersions(MODEL)).toEqual([1, 2, 3]);
    expect(await registry.getVersion(MODEL, 2)).toEqual(records[1]);
    expect(JSON.parse((await store.get(keys.runIndex(MODEL, 'wf-b'))).toString())).toEqual({ version: 2, runId: 'run-wf-b' });
    expect(await registry.listModels()).toEqual([MODEL]);
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
    const first = await registry.registerVersion(draft('wf-1', 'run-1'), new Date('2025-01-01T00:00:00Z'));
    await registry.registerVersion(draft('wf-2', 'run-2'));
    const again = await registry.registerVersion(draft('wf-1', 'run-1'), new Date('2025-06-01T00:00:00Z'));
    expect(again).toEqual(first);
    expect(await registry.listVersions(MODEL)).toEqual([1, 2]);
  });

  it('is retry-safe when the run index was never written (crash between the two writes)', async () => {
    await registry.registerVersion(draft('wf-0', 'run-0'));
    // A crashed attempt wrote version 2 but not the run index.
    const orphan: ModelVersionRecord = { ...draft('wf-1', 'run-1'), version: 2, createdAt: '2025-01-01T00:00:00.000Z' };
    await store.put(keys.version(MODEL, 2), JSON.stringify(orphan));
    expect(await store.head(keys.runIndex(MODEL, 'wf-1'))).toBeNull();

    const retried = await registry.registerVersion(draft('wf-1', 'run-1'));
    expect(retried).toEqual(orphan);
    expect(await registry.listVersions(MODEL)).toEqual([1, 2]);
    expect(await registry.findVersionByRun(MODEL, 'wf-1', 'run-1')).toEqual(orphan);
  });

  it('registers a new version for a new run of the same workflow id', async () => {
    const first = await registry.registerVersion(draft('wf-1', 'run-1'));
    const second = await registry.registerVersion(draft('wf-1', 'run-2'));
    expect([first.version, second.version]).toEqual([1, 2]);
    expect(await registry.findVersionByRun(MODEL, 'wf-1', 'run-1')).toEqual(first);
    expect(await registry.findVersionByRun(MODEL, 'wf-1', 'run-2')).toEqual(second);
    expect(await registry.findVersionByRun(MODEL, 'wf-1', 'run-3')).toBeNull();
  });

  it('refuses an invalid model name before writing anything', async () => {
    await expect(registry.registerVersion(draft('wf-1', 'run-1', '../evil'))).rejects.toThrow(/invalid model "\.\.\/evil"/);
    expect(await store.list('')).toEqual([]);
  });

  it('getVersion of a missing version throws VersionNotFoundError', async () => {
    await expect(registry.getVersion(MODEL, 9)).rejects.toBeInstanceOf(VersionNotFoundError);
  });
});

describe('moveAlias (compare-and-swap)', () => {
  const run = (id: string) => ({ workflowId: `wf-${id}`, runId: `run-${id}` });

  beforeEach(async () => {
    for (let i = 1; i <= 12; i++) await registry.registerVersion(draft(`wf-${i}`, `run-${i}`));
  });

  it('creates the alias with expectedVersion null', async () => {
    const now = new Date('2025-03-01T00:00:00.000Z');
    const moved = await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1'), now });
    const v1 = await registry.getVersion(MODEL, 1);
    expect(moved).toEqual({
      model: MODEL,
      alias: 'production',
      version: 1,
      sha256: v1.artifact.sha256,
      updatedAt: now.toISOString(),
      previousVersion: null,
      run: run('1'),
    });
    expect(await registry.getAlias(MODEL, 'production')).toEqual(moved);
  });

  it('refuses expectedVersion null when the alias already exists', async () => {
    await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1') });
    await expect(
      registry.moveAlias({ model: MODEL, alias: 'production', version: 2, expectedVersion: null, run: run('2') }),
    ).rejects.toBeInstanceOf(AliasConflictError);
    expect((await registry.getAlias(MODEL, 'production'))?.version).toBe(1);
  });

  it('refuses a stale expectedVersion and leaves the alias unchanged', async () => {
    await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1') });
    const current = await registry.moveAlias({ model: MODEL, alias: 'production', version: 2, expectedVersion: 1, run: run('2') });
    expect(current.previousVersion).toBe(1);
    const before = await store.getWithEtag(keys.alias(MODEL, 'production'));

    const stale = registry.moveAlias({ model: MODEL, alias: 'production', version: 3, expectedVersion: 1, run: run('3') });
    await expect(stale).rejects.toBeInstanceOf(AliasConflictError);
    await expect(stale).rejects.toThrow('expected version 1, found 2');

    const after = await store.getWithEtag(keys.alias(MODEL, 'production'));
    expect(after?.etag).toBe(before?.etag);
    expect(await registry.getAlias(MODEL, 'production')).toEqual(current);
  });

  it('treats re-applying the same move by the same run as a no-op', async () => {
    await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1') });
    const first = await registry.moveAlias({
      model: MODEL,
      alias: 'production',
      version: 2,
      expectedVersion: 1,
      run: run('2'),
      now: new Date('2025-03-01T00:00:00.000Z'),
    });
    const etag = (await store.head(keys.alias(MODEL, 'production')))?.etag;
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
    expect((await store.head(keys.alias(MODEL, 'production')))?.etag).toBe(etag);
  });

  it('lets exactly one of 10 concurrent moves from the same expected version win', async () => {
    await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: run('1') });
    const outcomes = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        registry.moveAlias({ model: MODEL, alias: 'production', version: i + 2, expectedVersion: 1, run: run(String(i + 2)) }),
      ),
    );
    const won = outcomes.filter((o) => o.status === 'fulfilled');
    const lost = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(9);
    for (const o of lost) expect(o.reason).toBeInstanceOf(AliasConflictError);
    const winner = (won[0] as PromiseFulfilledResult<Awaited<ReturnType<Registry['moveAlias']>>>).value;
    expect(winner.previousVersion).toBe(1);
    expect(await registry.getAlias(MODEL, 'production')).toEqual(winner);
  });

  it('lets exactly one of 10 concurrent creations win', async () => {
    const outcomes = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        registry.moveAlias({ model: MODEL, alias: 'staging', version: i + 1, expectedVersion: null, run: run(String(i + 1)) }),
      ),
    );
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    expect(outcomes.filter((o) => o.status === 'rejected' && o.reason instanceof AliasConflictError)).toHaveLength(9);
  });

  it('refuses a move to a version that does not exist', async () => {
    await expect(
      registry.moveAlias({ model: MODEL, alias: 'production', version: 99, expectedVersion: null, run: run('x') }),
    ).rejects.toBeInstanceOf(VersionNotFoundError);
    expect(await registry.getAlias(MODEL, 'production')).toBeNull();
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

describe('listDeployments', () => {
  const deployment = (version: number, deployedAt: string, workflowId: string): DeploymentRecord => ({
    model: MODEL,
    version,
    sha256: sha(`m${version}`),
    alias: 'production',
    strategy: 'direct',
    previousVersion: null,
    deployedAt,
    run: { workflowId, runId: `run-${workflowId}` },
  });

  it('orders deployments by time, not by version or key', async () => {
    // a rollback to version 1 after version 3: key order (by version) differs from time order
    await registry.recordDeployment(deployment(3, '2025-01-03T00:00:00.000Z', 'wf-c'));
    await registry.recordDeployment(deployment(1, '2025-01-04T00:00:00.000Z', 'wf-d'));
    await registry.recordDeployment(deployment(2, '2025-01-02T00:00:00.000Z', 'wf-b'));
    await registry.recordDeployment(deployment(1, '2025-01-01T00:00:00.000Z', 'wf-a'));
    const list = await registry.listDeployments(MODEL);
    expect(list.map((d) => [d.version, d.run.workflowId])).toEqual([
      [1, 'wf-a'],
      [2, 'wf-b'],
      [3, 'wf-c'],
      [1, 'wf-d'],
    ]);
    expect(await registry.listDeployments('other-model')).toEqual([]);
  });
});
