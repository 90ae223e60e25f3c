import { createHash } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import type { DatasetProfile } from '../../src/data/types.js';
import { formatHistory, metricsByVersion, productionTimeline, versionAt } from '../../src/registry/history.js';
import { buildLineage, formatLineage } from '../../src/registry/lineage.js';
import { buildModelCard, escapeCell, loadEvaluationReport } from '../../src/registry/model-card.js';
import { Registry, VersionNotFoundError } from '../../src/registry/registry.js';
import {
  ArchiveRefusedError,
  InvalidVersionMetaError,
  MAX_TAGS,
  VersionMetaStore,
  metaKey,
} from '../../src/registry/version-meta.js';
import type { GateResult, ModelVersionRecord } from '../../src/shared/registry-types.js';
import { PreconditionFailedError, type PutOptions } from '../../src/store/artifact-store.js';
import { keys } from '../../src/store/keys.js';
import { MemoryArtifactStore } from '../../src/store/memory-store.js';

const MODEL = 'credit-risk';
const sha = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');
const json = (v: unknown): string => JSON.stringify(v, null, 2);

/** Counts lost compare-and-swap races, to prove the concurrency test really raced. */
class CountingStore extends MemoryArtifactStore {
  conflicts = 0;
  override async put(key: string, body: Buffer | string, opts?: PutOptions): Promise<{ etag: string }> {
    try {
      return await super.put(key, body, opts);
    } catch (err) {
      if (err instanceof PreconditionFailedError) this.conflicts++;
      throw err;
    }
  }
}

const DATA_BYTES = Buffer.from('age,income,region,default\n34,52000,north,0\n51,38000,south,1\n');
const DATA_SHA = sha(DATA_BYTES);
/** Hash of the declared schema the profile was computed under. */
const SCHEMA_HASH = sha(json({ age: 'integer', income: 'float', region: 'categorical', default: 'integer' }));

const PROFILE: DatasetProfile = {
  rowCount: 1000,
  columnCount: 4,
  columns: {
    age: {
      kind: 'numeric',
      declaredType: 'integer',
      count: 998,
      nulls: 2,
      nullFraction: 0.002,
      nanOrInfinite: 0,
      min: 18,
      max: 90,
      mean: 41.2,
      std: 12.1,
      quantiles: null,
      histogram: { edges: [18, 90], counts: [998] },
    },
    income: {
      kind: 'numeric',
      declaredType: 'float',
      count: 1000,
      nulls: 0,
      nullFraction: 0,
      nanOrInfinite: 0,
      min: 1200.5,
      max: 250000,
      mean: 61000,
      std: 20000,
      quantiles: null,
      histogram: { edges: [1200.5, 250000], counts: [1000] },
    },
    region: {
      kind: 'categorical',
      declaredType: 'categorical',
      count: 990,
      nulls: 10,
      nullFraction: 0.01,
      distinct: 4,
      domain: [{ value: 'north', count: 500, fraction: 0.505 }],
    },
    default: {
      kind: 'categorical',
      declaredType: 'integer',
      count: 1000,
      nulls: 0,
      nullFraction: 0,
      distinct: 2,
      domain: [
        { value: '0', count: 800, fraction: 0.8 },
        { value: '1', count: 200, fraction: 0.2 },
      ],
    },
  },
};

interface VersionSpec {
  n: number;
  metrics: { accuracy: number; precision: number; recall: number; f1: number; roc_auc: number; log_loss: number };
  production: { version: number; metrics: Record<string, number | null> } | null;
  description?: string;
}

const V1: VersionSpec['metrics'] = { accuracy: 0.84, precision: 0.7, recall: 0.55, f1: 0.616, roc_auc: 0.81, log_loss: 0.41 };
const V2: VersionSpec['metrics'] = { accuracy: 0.87, precision: 0.74, recall: 0.61, f1: 0.6688, roc_auc: 0.8625, log_loss: 0.37 };
const V3: VersionSpec['metrics'] = { accuracy: 0.79, precision: 0.6, recall: 0.5, f1: 0.5455, roc_auc: 0.78, log_loss: 0.5 };

function gatesFor(m: VersionSpec['metrics'], production: VersionSpec['production']): GateResult[] {
  const gates: GateResult[] = [{ gate: 'roc_auc >= 0.8', metric: 'roc_auc', actual: m.roc_auc, threshold: 0.8, passed: m.roc_auc >= 0.8 }];
  if (m.roc_auc < 0.8) gates[0]!.reason = `roc_auc = ${m.roc_auc}, required >= 0.8`;
  if (production) {
    const delta = m.roc_auc - (production.metrics.roc_auc ?? 0);
    gates.push({
      gate: 'roc_auc beats production by >= 0.01 (higher is better)',
      metric: 'roc_auc',
      actual: delta,
      threshold: 0.01,
      passed: delta >= 0.01,
    });
  }
  return gates;
}

/** Writes the model blob, metadata and evaluation report, then registers the version. */
async function register(store: MemoryArtifactStore, registry: Registry, spec: VersionSpec, createdAt: string): Promise<ModelVersionRecord> {
  const blob = Buffer.from(`onnx-bytes-of-version-${spec.n}`);
  const modelSha = sha(blob);
  await store.put(keys.modelBlob(modelSha), blob);
  const metadataJson = json({ framework: 'sklearn', algorithm: 'gradient_boosting', n: spec.n });
  const metadataKey = keys.modelMetadata(sha(metadataJson));
  await store.put(metadataKey, metadataJson);
  const workflowId = `credit-risk-train-${spec.n}`;
  const reportKey = keys.runReport(MODEL, workflowId, `run-${spec.n}`, 'evaluation');
  const gates = gatesFor(spec.metrics, spec.production);
  await store.put(
    reportKey,
    json({
      model: MODEL,
      holdoutKey: `splits/${DATA_SHA}/holdout.csv`,
      holdoutRows: 200,
      metrics: {
        ...spec.metrics,
        confusion_matrix: { labels: [0, 1], matrix: [[150, 10], [16, 24]] },
        support: 200,
      },
      slices: {
        region: {
          slices: [
            { value: 'north', support: 101, metrics: { accuracy: 0.9, roc_auc: 0.88, f1: 0.7, support: 101, confusion_matrix: { labels: [0, 1], matrix: [[80, 5], [5, 11]] } } },
            { value: 'south', support: 87, metrics: { accuracy: 0.83, roc_auc: 0.84, f1: 0.62, support: 87 } },
          ],
          skipped: [{ value: 'west', support: 12 }],
        },
      },
      production: spec.production ? { version: spec.production.version, sha256: 'x', metrics: spec.production.metrics } : null,
      gates,
      passed: gates.every((g) => g.passed),
    }),
  );
  return registry.registerVersion(
    {
      schemaVersion: 1,
      model: MODEL,
      task: 'classification',
      target: 'default',
      features: ['age', 'income', 'region'],
      artifact: { sha256: modelSha, key: keys.modelBlob(modelSha), size: blob.length, metadataKey, framework: 'sklearn', algorithm: 'gradient_boosting' },
      data: {
        sha256: DATA_SHA,
        key: keys.dataset(DATA_SHA),
        source: 's3://lake/credit/applications.csv',
        format: 'csv',
        size: DATA_BYTES.length,
        profileKey: keys.profile(DATA_SHA, SCHEMA_HASH),
        rowCount: 1000,
        split: {
          seed: 42,
          holdoutFraction: 0.2,
          trainKey: `splits/${DATA_SHA}/train.csv`,
          holdoutKey: `splits/${DATA_SHA}/holdout.csv`,
          trainRows: 800,
          holdoutRows: 200,
        },
      },
      trainer: {
        kind: 'command',
        entry: 'python trainers/gbm.py',
        params: { n_estimators: 100 + spec.n * 50, learning_rate: 0.1 },
        codeHashes: { 'trainers/gbm.py': sha(`trainer-${spec.n}`) },
      },
      code: { specHash: sha(`spec-${spec.n}`), gitCommit: `abcdef${spec.n}0123456789`, gitDirty: spec.n === 3, pipelineFile: 'pipelines/credit-risk.ts' },
      evaluation: { reportKey, metrics: spec.metrics, gates, production: spec.production },
      run: { workflowId, runId: `run-${spec.n}`, submittedBy: spec.n === 1 ? 'ci' : 'alice' },
      ...(spec.description ? { description: spec.description } : {}),
    },
    { now: new Date(createdAt) },
  );
}

/** One deployment: the alias move with its strategy is the deployment record. */
async function deploy(registry: Registry, version: number, expected: number | null, workflowId: string, at: string): Promise<void> {
  const run = { workflowId, runId: `${workflowId}-run` };
  await registry.moveAlias({ model: MODEL, alias: 'production', version, expectedVersion: expected, run, strategy: 'replace', now: new Date(at) });
}

const DESCRIPTION = 'Scores retail loan applications | not for business loans';

let store: CountingStore;
let registry: Registry;
let records: ModelVersionRecord[];

beforeEach(async () => {
  store = new CountingStore();
  registry = new Registry(store);
  await store.put(keys.dataset(DATA_SHA), DATA_BYTES);
  await store.put(keys.profile(DATA_SHA, SCHEMA_HASH), json(PROFILE));
  records = [];
  records.push(await register(store, registry, { n: 1, metrics: V1, production: null }, '2025-01-01T09:00:00.000Z'));
  records.push(
    await register(store, registry, { n: 2, metrics: V2, production: { version: 1, metrics: V1 }, description: DESCRIPTION }, '2025-02-01T09:00:00.000Z'),
  );
  records.push(await register(store, registry, { n: 3, metrics: V3, production: { version: 2, metrics: V2 } }, '2025-03-01T09:00:00.000Z'));

  const decided = (n: number) => ({ model: MODEL, version: n, sha256: records[n - 1]!.artifact.sha256, run: { workflowId: records[n - 1]!.run.workflowId, runId: records[n - 1]!.run.runId } });
  await registry.recordDecision({ ...decided(1), decision: 'auto', by: [], comment: null, decidedAt: '2025-01-01T10:00:00.000Z' });
  await registry.recordDecision({ ...decided(2), decision: 'approved', by: ['bob', 'carol'], comment: 'lift on south region confirmed', decidedAt: '2025-02-01T15:30:00.000Z' });
  await registry.recordDecision({ ...decided(3), decision: 'rejected', by: ['bob'], comment: 'worse than production', decidedAt: '2025-03-01T12:00:00.000Z' });

  // v1 → v2 → rollback to v1 → v2 again.
  await deploy(registry, 1, null, 'credit-risk-train-1', '2025-01-02T00:00:00.000Z');
  await deploy(registry, 2, 1, 'credit-risk-train-2', '2025-02-02T00:00:00.000Z');
  await deploy(registry, 1, 2, 'rollback-credit-risk-1', '2025-02-10T08:00:00.000Z');
  await deploy(registry, 2, 1, 'redeploy-credit-risk-2', '2025-02-20T08:00:00.000Z');
});

describe('buildLineage', () => {
  it('assembles the complete chain of a deployed version', async () => {
    const l = await buildLineage(registry, store, MODEL, 2);
    const r = records[1]!;
    expect(l).toMatchObject({ schemaVersion: 1, model: MODEL, version: 2, createdAt: '2025-02-01T09:00:00.000Z', task: 'classification', target: 'default' });
    expect(l.description).toBe(DESCRIPTION);
    expect(l.artifact.sha256).toBe(r.artifact.sha256);
    expect(l.dataset).toMatchObject({
      sha256: DATA_SHA,
      source: 's3://lake/credit/applications.csv',
      format: 'csv',
      size: DATA_BYTES.length,
      rowCount: 1000,
      profileKey: keys.profile(DATA_SHA, SCHEMA_HASH),
    });
    expect(l.dataset.profile).toEqual({
      rowCount: 1000,
      columnCount: 4,
      columns: [
        { name: 'age', kind: 'numeric', declaredType: 'integer', nulls: 2, nullFraction: 0.002, min: 18, max: 90, distinct: null },
        { name: 'income', kind: 'numeric', declaredType: 'float', nulls: 0, nullFraction: 0, min: 1200.5, max: 250000, distinct: null },
        { name: 'region', kind: 'categorical', declaredType: 'categorical', nulls: 10, nullFraction: 0.01, min: null, max: null, distinct: 4 },
        { name: 'default', kind: 'categorical', declaredType: 'integer', nulls: 0, nullFraction: 0, min: null, max: null, distinct: 2 },
      ],
    });
    expect(l.split).toEqual(r.data.split);
    expect(l.run).toEqual({
      workflowId: 'credit-risk-train-2',
      runId: 'run-2',
      submittedBy: 'alice',
      trigger: null,
      specHash: sha('spec-2'),
      gitCommit: 'abcdef20123456789',
      gitDirty: false,
      pipelineFile: 'pipelines/credit-risk.ts',
    });
    expect(l.trainer).toEqual({
      kind: 'command',
      entry: 'python trainers/gbm.py',
      params: { n_estimators: 200, learning_rate: 0.1 },
      codeHashes: { 'trainers/gbm.py': sha('trainer-2') },
      framework: 'sklearn',
      algorithm: 'gradient_boosting',
    });
    expect(l.evaluation.metrics).toEqual(V2);
    expect(l.evaluation.gates.map((g) => [g.gate, g.passed])).toEqual([
      ['roc_auc >= 0.8', true],
      ['roc_auc beats production by >= 0.01 (higher is better)', true],
    ]);
    expect(l.evaluation.passed).toBe(true);
    expect(l.evaluation.production).toEqual({ version: 1, metrics: V1 });
    expect(l.evaluation.reportKey).toBe(keys.runReport(MODEL, 'credit-risk-train-2', 'run-2', 'evaluation'));
    expect(l.decision).toEqual({
      decision: 'approved',
      by: ['bob', 'carol'],
      comment: 'lift on south region confirmed',
      decidedAt: '2025-02-01T15:30:00.000Z',
      run: { workflowId: 'credit-risk-train-2', runId: 'run-2' },
    });
    expect(l.deployments).toEqual([
      {
        alias: 'production',
        strategy: 'replace',
        deployedAt: '2025-02-02T00:00:00.000Z',
        run: { workflowId: 'credit-risk-train-2', runId: 'credit-risk-train-2-run' },
        previousVersion: 1,
        sha256: r.artifact.sha256,
      },
      {
        alias: 'production',
        strategy: 'replace',
        deployedAt: '2025-02-20T08:00:00.000Z',
        run: { workflowId: 'redeploy-credit-risk-2', runId: 'redeploy-credit-risk-2-run' },
        previousVersion: 1,
        sha256: r.artifact.sha256,
      },
    ]);
    expect(l.inProduction).toBe(true);
    expect(l.meta).toMatchObject({ tags: {}, description: null, archived: false });
    expect(l.warnings).toEqual([]);
    // Plain JSON: survives a round trip unchanged.
    expect(JSON.parse(JSON.stringify(l))).toEqual(l);

    const text = formatLineage(l);
    const order = ['credit-risk@2', '\ndataset', '\nrun', '\ntrainer', '\nmetrics & gates', '\napprovals', '\ndeployments'].map((s) => text.indexOf(s));
    expect(order.every((i) => i >= 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    expect(text).toContain('approved by bob, carol at 2025-02-01T15:30:00.000Z');
    expect(text).toContain('roc_auc 0.8100→0.8625 (+0.0525)');
    expect(text).toContain('region categorical nulls=10 distinct=4');
  });

  it('includes meta and degrades to a warning when the profile is missing', async () => {
    const meta = new VersionMetaStore(store, registry);
    await meta.setTags(MODEL, 3, { owner: 'risk-team' }, 'alice');
    await meta.archive(MODEL, 3, 'alice', 'rejected candidate');
    const other = new MemoryArtifactStore();
    const otherRegistry = new Registry(other);
    // Same records, but without the profile object.
    for (const key of await store.list('registry/')) await other.put(key, await store.get(key));
    const l = await buildLineage(otherRegistry, other, MODEL, 3);
    expect(l.dataset.profile).toBeNull();
    expect(l.warnings).toEqual([expect.stringContaining(keys.profile(DATA_SHA, SCHEMA_HASH))]);
    expect(l.meta).toMatchObject({ tags: { owner: 'risk-team' }, archived: true, archivedBy: 'alice', archiveReason: 'rejected candidate' });
    expect(l.decision?.decision).toBe('rejected');
    expect(l.deployments).toEqual([]);
    expect(l.inProduction).toBe(false);
    expect(formatLineage(l)).toContain('never deployed');
  });

  it('rejects an unknown version', async () => {
    await expect(buildLineage(registry, store, MODEL, 9)).rejects.toBeInstanceOf(VersionNotFoundError);
  });
});

describe('production history', () => {
  it('builds ordered intervals from the alias log', async () => {
    const timeline = await productionTimeline(registry, MODEL);
    expect(timeline.map(({ version, from, to, previousVersion, deployedBy }) => ({ version, from, to, previousVersion, by: deployedBy.workflowId }))).toEqual([
      { version: 1, from: '2025-01-02T00:00:00.000Z', to: '2025-02-02T00:00:00.000Z', previousVersion: null, by: 'credit-risk-train-1' },
      { version: 2, from: '2025-02-02T00:00:00.000Z', to: '2025-02-10T08:00:00.000Z', previousVersion: 1, by: 'credit-risk-train-2' },
      { version: 1, from: '2025-02-10T08:00:00.000Z', to: '2025-02-20T08:00:00.000Z', previousVersion: 2, by: 'rollback-credit-risk-1' },
      { version: 2, from: '2025-02-20T08:00:00.000Z', to: null, previousVersion: 1, by: 'redeploy-credit-risk-2' },
    ]);
    expect(timeline[0]!.sha256).toBe(records[0]!.artifact.sha256);
    expect(timeline[0]!.strategy).toBe('replace');
  });

  it('answers which version was in production at any moment', async () => {
    const timeline = await productionTimeline(registry, MODEL);
    expect(versionAt(timeline, '2024-12-31T23:59:59.999Z')).toBeNull();
    expect(versionAt(timeline, '2025-01-01T23:59:59.999Z')).toBeNull();
    expect(versionAt(timeline, '2025-01-02T00:00:00.000Z')).toBe(1);
    expect(versionAt(timeline, '2025-01-20T12:00:00.000Z')).toBe(1);
    expect(versionAt(timeline, '2025-02-01T23:59:59.999Z')).toBe(1);
    expect(versionAt(timeline, '2025-02-02T00:00:00.000Z')).toBe(2);
    expect(versionAt(timeline, '2025-02-15T00:00:00.000Z')).toBe(1);
    expect(versionAt(timeline, '2025-02-20T09:00:00+01:00')).toBe(2); // 08:00Z, other offset
    expect(versionAt(timeline, '2030-01-01T00:00:00.000Z')).toBe(2);
    expect(versionAt([], '2025-02-15T00:00:00.000Z')).toBeNull();
    expect(() => versionAt(timeline, 'yesterday')).toThrow(RangeError);
  });

  it('is exactly the alias log: every move is in it, and its last interval is where the alias points', async () => {
    expect(await productionTimeline(registry, MODEL, 'staging')).toEqual([]);
    // A move without an explicit strategy is still a deployment: there is no separate record to lose.
    await registry.moveAlias({
      model: MODEL,
      alias: 'production',
      version: 3,
      expectedVersion: 2,
      run: { workflowId: 'manual-3', runId: 'm3' },
      now: new Date('2025-03-10T00:00:00.000Z'),
    });
    // Moves of another alias do not enter production's timeline.
    await registry.moveAlias({
      model: MODEL,
      alias: 'staging',
      version: 1,
      expectedVersion: null,
      run: { workflowId: 'stage-1', runId: 's1' },
      now: new Date('2025-03-05T00:00:00.000Z'),
    });
    const timeline = await productionTimeline(registry, MODEL);
    const log = await registry.listDeployments(MODEL, 'production');
    expect(log.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(timeline).toEqual(
      log.map((e, i) => ({
        version: e.version,
        sha256: e.sha256,
        from: e.deployedAt,
        to: log[i + 1]?.deployedAt ?? null,
        deployedBy: e.run,
        previousVersion: e.previousVersion,
        strategy: e.strategy,
      })),
    );
    expect(timeline.at(-2)!.to).toBe('2025-03-10T00:00:00.000Z');
    expect(timeline.at(-1)).toEqual({
      version: 3,
      sha256: records[2]!.artifact.sha256,
      from: '2025-03-10T00:00:00.000Z',
      to: null,
      deployedBy: { workflowId: 'manual-3', runId: 'm3' },
      previousVersion: 2,
      strategy: 'direct',
    });
    const current = await registry.getAlias(MODEL, 'production');
    expect({ version: timeline.at(-1)!.version, from: timeline.at(-1)!.from }).toEqual({ version: current!.version, from: current!.deployedAt });
    expect(versionAt(timeline, '2025-03-11T00:00:00.000Z')).toBe(3);
    expect(await productionTimeline(registry, MODEL, 'staging')).toMatchObject([{ version: 1, from: '2025-03-05T00:00:00.000Z', to: null }]);
    await expect(productionTimeline(registry, MODEL, '../x')).rejects.toThrow(/invalid alias/);
  });

  it('orders by position in the log even when a writer\'s clock was behind', async () => {
    // The 4th move's writer had a clock 10 days slow: the log order (seq), not the timestamp, says it came last.
    await registry.moveAlias({
      model: MODEL,
      alias: 'production',
      version: 3,
      expectedVersion: 2,
      run: { workflowId: 'skewed-3', runId: 'k3' },
      now: new Date('2025-02-12T00:00:00.000Z'),
    });
    const timeline = await productionTimeline(registry, MODEL);
    expect(timeline.map((iv) => iv.version)).toEqual([1, 2, 1, 2, 3]);
    expect(timeline.at(-1)).toMatchObject({ version: 3, previousVersion: 2, to: null });
  });

  it('lists the metrics of every version and formats the history', async () => {
    const metrics = await metricsByVersion(registry, MODEL);
    expect(metrics).toEqual([
      { version: 1, createdAt: '2025-01-01T09:00:00.000Z', metrics: V1 },
      { version: 2, createdAt: '2025-02-01T09:00:00.000Z', metrics: V2 },
      { version: 3, createdAt: '2025-03-01T09:00:00.000Z', metrics: V3 },
    ]);
    const timeline = await productionTimeline(registry, MODEL);
    const text = formatHistory({ model: MODEL, timeline, metrics, metricNames: ['roc_auc', 'f1'], now: new Date('2025-02-21T08:00:00.000Z') });
    expect(text).toContain('credit-risk@production history');
    expect(text).toContain('v1    2025-01-02T00:00:00.000Z → 2025-02-02T00:00:00.000Z  (31d 0h)  first, by credit-risk-train-1');
    expect(text).toContain('2025-02-20T08:00:00.000Z → now  (1d 0h)  after v1, by redeploy-credit-risk-2');
    expect(text).toMatch(/\*v2 +2025-02-01 09:00:00 +0\.8625 +0\.6688/);
    expect(text).toMatch(/ v3 +2025-03-01 09:00:00 +0\.7800 +0\.5455/);
    expect(await metricsByVersion(registry, 'unknown-model')).toEqual([]);
  });
});

describe('model card', () => {
  it('renders metrics, confusion matrix, slices, approvals and deployments', async () => {
    const meta = new VersionMetaStore(store, registry);
    await meta.setTags(MODEL, 2, { owner: 'risk-team', ticket: 'RISK-12|b' }, 'alice');
    await meta.setDescription(MODEL, 2, 'Retrained after the Q1 data refresh.\nSee RISK-12.', 'alice');
    const lineage = await buildLineage(registry, store, MODEL, 2);
    const report = await loadEvaluationReport(store, lineage.evaluation.reportKey);
    expect(report).not.toBeNull();
    const { json: card, markdown } = buildModelCard(lineage, report);

    // Metrics table, with the production comparison.
    expect(markdown).toContain('| Metric | Value | Production (v1) | Δ |');
    expect(markdown).toContain('| accuracy | 0.8700 | 0.8400 | +0.0300 ▲ |');
    expect(markdown).toContain('| roc_auc | 0.8625 | 0.8100 | +0.0525 ▲ |');
    expect(markdown).toContain('| log_loss | 0.3700 | 0.4100 | -0.0400 ▲ |');
    expect(markdown).not.toMatch(/\| support \|/);
    // Confusion matrix.
    expect(markdown).toContain('### Confusion matrix');
    expect(markdown).toContain('| true \\\\ predicted | 0 | 1 |');
    expect(markdown).toContain('| 0 | 150 | 10 |');
    expect(markdown).toContain('| 1 | 16 | 24 |');
    // Slices.
    expect(markdown).toContain('| Column | Value | Support | accuracy | f1 | roc_auc |');
    expect(markdown).toContain('| region | north | 101 | 0.9000 | 0.7000 | 0.8800 |');
    expect(markdown).toContain('| region | south | 87 | 0.8300 | 0.6200 | 0.8400 |');
    expect(markdown).toContain('region=west (12 rows)');
    // Data profile, gates, approvals, deployments, tags.
    expect(markdown).toContain('| age | numeric | integer | 2 | 18 | 90 |  |');
    expect(markdown).toContain('| income | numeric | float | 0 | 1200.5 | 250000 |  |');
    expect(markdown).toContain('| region | categorical | categorical | 10 |  |  | 4 |');
    expect(markdown).toContain('| roc_auc >= 0.8 | 0.8625 | 0.8 | passed |');
    expect(markdown).toContain('- **approved** by bob, carol on 2025-02-01T15:30:00.000Z: “lift on south region confirmed” (run credit-risk-train-2)');
    expect(markdown).toContain('| 2025-02-20T08:00:00.000Z | production | replace | v1 | redeploy-credit-risk-2 / redeploy-credit-risk-2-run |');
    expect(markdown).toContain('| owner | risk-team |');
    // Escaping inside table cells.
    expect(markdown).toContain('| Intended use | Scores retail loan applications \\| not for business loans |');
    expect(markdown).toContain('| ticket | RISK-12\\|b |');
    expect(markdown).toContain('| Notes | Retrained after the Q1 data refresh.<br>See RISK-12. |');
    for (const line of markdown.split('\n').filter((x) => x.startsWith('|'))) {
      // Every table row has the same number of unescaped separators as its header would.
      expect(line.endsWith('|')).toBe(true);
    }

    expect(card).toMatchObject({ model: MODEL, version: 2, intendedUse: DESCRIPTION, gatesPassed: true, inProduction: true });
    expect(card.evaluation.confusionMatrix).toEqual({ labels: [0, 1], matrix: [[150, 10], [16, 24]] });
    expect(card.evaluation.slices).toHaveLength(2);
    expect(card.evaluation.production?.comparison.find((c) => c.metric === 'log_loss')).toMatchObject({ better: true });
    expect(JSON.parse(JSON.stringify(card))).toEqual(card);
  });

  it('works without an evaluation report', async () => {
    const lineage = await buildLineage(registry, store, MODEL, 1);
    const { json: card, markdown } = buildModelCard(lineage, null);
    expect(card.evaluation.reportAvailable).toBe(false);
    expect(card.evaluation.confusionMatrix).toBeNull();
    expect(markdown).toContain('| roc_auc | 0.8100 |');
    expect(markdown).toContain('No production model to compare against.');
    expect(markdown).toContain('- **auto** automatically (no approval required)');
    expect(markdown).not.toContain('### Slices');
    expect(await loadEvaluationReport(store, 'runs/none/none/evaluation.json')).toBeNull();
  });

  it('escapes pipes, backslashes and newlines in cells', () => {
    expect(escapeCell('a | b')).toBe('a \\| b');
    expect(escapeCell('a\\|b')).toBe('a\\\\\\|b');
    expect(escapeCell('one\r\ntwo\nthree')).toBe('one<br>two<br>three');
    expect(escapeCell(null)).toBe('');
  });
});

describe('VersionMetaStore', () => {
  let meta: VersionMetaStore;
  const at = new Date('2025-04-01T12:00:00.000Z');
  beforeEach(() => {
    meta = new VersionMetaStore(store, registry, { now: () => at });
  });

  it('keeps every tag of 10 concurrent setTags calls (compare-and-swap)', async () => {
    store.conflicts = 0;
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => meta.setTags(MODEL, 2, { [`tag-${i}`]: `value-${i}` }, `user-${i}`)));
    expect(results).toHaveLength(10);
    expect(store.conflicts).toBeGreaterThan(0); // the writers really raced
    const stored = await meta.get(MODEL, 2);
    expect(stored.tags).toEqual(Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`tag-${i}`, `value-${i}`])));
    expect(stored.history).toHaveLength(10);
    expect(new Set(stored.history.map((h) => h.by))).toEqual(new Set(Array.from({ length: 10 }, (_, i) => `user-${i}`)));
    expect(stored.history.every((h) => h.action === 'set-tags' && h.at === at.toISOString())).toBe(true);
  });

  it('merges, removes, describes and records history; no-ops do not write', async () => {
    await meta.setTags(MODEL, 1, { owner: 'risk', stage: 'exp' }, 'alice');
    await meta.setTags(MODEL, 1, { stage: 'prod' }, 'bob');
    const unchanged = await meta.setTags(MODEL, 1, { stage: 'prod' }, 'bob');
    expect(unchanged.history).toHaveLength(2);
    await meta.removeTags(MODEL, 1, ['owner', 'absent'], 'carol');
    await meta.setDescription(MODEL, 1, 'first model', 'dave');
    const m = await meta.get(MODEL, 1);
    expect(m.tags).toEqual({ stage: 'prod' });
    expect(m.description).toBe('first model');
    expect(m.updatedAt).toBe(at.toISOString());
    expect(m.history.map((h) => [h.action, h.by])).toEqual([
      ['set-tags', 'alice'],
      ['set-tags', 'bob'],
      ['remove-tags', 'carol'],
      ['set-description', 'dave'],
    ]);
    expect(m.history[1]).toEqual({ action: 'set-tags', tags: { stage: 'prod' }, at: at.toISOString(), by: 'bob' });
    expect(m.history[2]).toMatchObject({ keys: ['owner'] });
    expect(await store.head(metaKey(MODEL, 1))).not.toBeNull();
    expect(metaKey(MODEL, 1)).toBe('registry/credit-risk/meta/000001.json');
  });

  it('validates tags, actors and versions', async () => {
    await expect(meta.setTags(MODEL, 1, { 'bad key': 'x' }, 'alice')).rejects.toBeInstanceOf(InvalidVersionMetaError);
    await expect(meta.setTags(MODEL, 1, { __proto__x: 'x' }, 'alice')).rejects.toBeInstanceOf(InvalidVersionMetaError);
    await expect(meta.setTags(MODEL, 1, { ok: 'line\nbreak' }, 'alice')).rejects.toBeInstanceOf(InvalidVersionMetaError);
    await expect(meta.setTags(MODEL, 1, { ok: 'x'.repeat(257) }, 'alice')).rejects.toBeInstanceOf(InvalidVersionMetaError);
    await expect(meta.setTags(MODEL, 1, { ok: 'x' }, '  ')).rejects.toBeInstanceOf(InvalidVersionMetaError);
    await expect(meta.setTags(MODEL, 9, { ok: 'x' }, 'alice')).rejects.toBeInstanceOf(VersionNotFoundError);
    await expect(meta.get('../evil', 1)).rejects.toThrow(/invalid model/);
    const many = Object.fromEntries(Array.from({ length: MAX_TAGS }, (_, i) => [`t${i}`, 'v']));
    await meta.setTags(MODEL, 1, many, 'alice');
    await expect(meta.setTags(MODEL, 1, { one_more: 'v' }, 'alice')).rejects.toThrow(/at most 50/);
    expect(Object.keys((await meta.get(MODEL, 1)).tags)).toHaveLength(MAX_TAGS);
  });

  it('refuses to archive the production version and archives another', async () => {
    await expect(meta.archive(MODEL, 2, 'alice', 'cleanup')).rejects.toBeInstanceOf(ArchiveRefusedError);
    expect(await store.head(metaKey(MODEL, 2))).toBeNull();
    expect((await meta.get(MODEL, 2)).archived).toBe(false);

    const archived = await meta.archive(MODEL, 3, 'alice', 'rejected candidate');
    expect(archived).toMatchObject({ archived: true, archivedBy: 'alice', archivedAt: at.toISOString(), archiveReason: 'rejected candidate' });
    expect((await meta.archive(MODEL, 3, 'bob', 'again')).archivedBy).toBe('alice'); // idempotent
    await expect(meta.archive(MODEL, 1, 'alice', '')).rejects.toBeInstanceOf(InvalidVersionMetaError);

    const restored = await meta.unarchive(MODEL, 3, 'bob');
    expect(restored).toMatchObject({ archived: false, archivedBy: null, archivedAt: null, archiveReason: null });
    expect(restored.history.map((h) => h.action)).toEqual(['archive', 'unarchive']);
    expect((await meta.list(MODEL)).map((m) => m.version)).toEqual([3]);
  });

  it('never touches the version record or the artifact', async () => {
    const before = await Promise.all(records.map((r) => store.get(keys.version(MODEL, r.version)).then((b) => Buffer.from(b))));
    const blobBefore = Buffer.from(await store.get(records[0]!.artifact.key));
    await meta.setTags(MODEL, 1, { a: '1' }, 'alice');
    await meta.setDescription(MODEL, 1, 'd', 'alice');
    await meta.archive(MODEL, 1, 'alice', 'old');
    await meta.unarchive(MODEL, 1, 'alice');
    await meta.removeTags(MODEL, 1, ['a'], 'alice');
    await meta.archive(MODEL, 3, 'alice', 'rejected');
    await expect(meta.archive(MODEL, 2, 'alice', 'nope')).rejects.toBeInstanceOf(ArchiveRefusedError);
    const after = await Promise.all(records.map((r) => store.get(keys.version(MODEL, r.version))));
    after.forEach((b, i) => expect(b.equals(before[i]!)).toBe(true));
    expect((await store.get(records[0]!.artifact.key)).equals(blobBefore)).toBe(true);
    expect(await registry.listVersions(MODEL)).toEqual([1, 2, 3]);
    expect(await registry.listModels()).toEqual([MODEL]);
    expect((await registry.getVersion(MODEL, 1)).description).toBeUndefined();
  });
});
