import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chiSquare, chiSquarePValue, jsDivergence, ksPValue, ksStatistic, permutationPValue, psi } from '../../src/monitoring/divergence.js';
import { driftThresholdsSchema, measureDrift, type DriftReport } from '../../src/monitoring/drift.js';
import { OTHER_CATEGORY, buildReferenceProfile, tableRelation, type FeatureInput, type ReferenceProfile } from '../../src/monitoring/reference.js';

const FEATURES: FeatureInput[] = [
  { name: 'x', kind: 'numeric' },
  { name: 'y', kind: 'numeric' },
  { name: 'k', kind: 'numeric' },
  { name: 'c', kind: 'categorical' },
  { name: 'b', kind: 'categorical' },
];

/**
 * Rows i = 0..n-1 of a deterministic table; `perm` reorders the rows so a "current" table
 * with the same columns has exactly the reference's distribution. Overrides replace a
 * column's SQL expression (over i).
 */
function tableSql(name: string, n: number, overrides: Record<string, string> = {}): string {
  const cols: Record<string, string> = {
    x: '(i % 100)::DOUBLE',
    y: '((i * 37) % 50)::DOUBLE / 5',
    k: '(i % 7)::INTEGER',
    c: "['a', 'b', 'b', 'c', 'c', 'c'][(i % 6) + 1]",
    b: '(i % 4 = 0)',
    p: '((i * 13) % 10)::DOUBLE / 10',
    ts: "TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_minutes(i::BIGINT)",
    ...overrides,
  };
  return `CREATE OR REPLACE TABLE ${name} AS SELECT ${Object.entries(cols)
    .map(([c, e]) => `${e} AS ${c}`)
    .join(', ')} FROM (SELECT (r * 7919) % ${n} AS i FROM range(${n}) t(r))`;
}

describe('drift measures', () => {
  let instance: DuckDBInstance;
  let conn: DuckDBConnection;
  let reference: ReferenceProfile;

  const measure = async (overrides: Record<string, string>, n = 2000, thresholds = {}): Promise<DriftReport> => {
    await conn.run(tableSql('cur', n, overrides));
    return measureDrift(conn, tableRelation('cur'), reference, thresholds);
  };
  const breached = (report: DriftReport): string[] => report.breaches.map((b) => `${b.feature}.${b.measure}`).sort();

  beforeAll(async () => {
    instance = await DuckDBInstance.create(':memory:');
    conn = await instance.connect();
    await conn.run(tableSql('ref', 4000));
    reference = await buildReferenceProfile(conn, tableRelation('ref'), FEATURES, { prediction: { column: 'p', kind: 'numeric' } });
  });
  afterAll(() => {
    conn.closeSync();
    instance.closeSync();
  });

  it('profiles the reference as plain JSON', () => {
    expect(JSON.parse(JSON.stringify(reference))).toEqual(reference);
    expect(reference.rowCount).toBe(4000);
    const x = reference.features['x']!;
    if (x.kind !== 'numeric') throw new Error('x should be numeric');
    expect(x.min).toBe(0);
    expect(x.max).toBe(99);
    expect(x.counts.reduce((a, b) => a + b, 0)).toBe(4000);
    expect(x.counts).toHaveLength(x.boundaries.length + 1);
    expect(x.boundaries.length).toBeGreaterThanOrEqual(8);
    for (const p of x.proportions) expect(p).toBeCloseTo(0.1, 1);
    expect(x.cdf.values.at(-1)).toBe(1);
    const c = reference.features['c']!;
    if (c.kind !== 'categorical') throw new Error('c should be categorical');
    expect(c.categories).toEqual(['c', 'b', 'a']);
    expect(c.proportions[0]).toBeCloseTo(0.5, 2);
    expect(c.proportions.at(-1)).toBe(0); // OTHER_CATEGORY
    const b = reference.features['b']!;
    expect(b.kind === 'categorical' && b.categories).toEqual(['false', 'true']);
    expect(reference.prediction?.column).toBe('p');
  });

  it('keeps the top K categories and folds the rest into the other bin', async () => {
    const small = await buildReferenceProfile(conn, tableRelation('ref'), [{ name: 'c', kind: 'categorical' }], { topK: 1 });
    const c = small.features['c']!;
    expect(c.kind === 'categorical' && c.categories).toEqual(['c']);
    expect(c.kind === 'categorical' && c.otherValues).toEqual(['a', 'b']);
    expect(c.proportions[1]).toBeCloseTo(0.5, 2);
    expect(OTHER_CATEGORY).toBe('__other__');
  });

  it('finds no drift when the window has the reference distribution', async () => {
    const report = await measure({});
    expect(report.verdict).toBe('ok');
    expect(report.breaches).toEqual([]);
    expect(report.sampleSize).toBe(2000);
    for (const name of ['x', 'y', 'k']) {
      expect(report.features[name]!.measures.psi).toBeLessThan(0.01);
      expect(report.features[name]!.measures.ks).toBeLessThan(0.01);
    }
    expect(report.features['c']!.measures.js).toBeLessThan(0.01);
    expect(report.features['c']!.measures.chi2PValue).toBeGreaterThan(0.5);
    expect(report.prediction?.measures.psi).toBeLessThan(0.01);
  });

  it('names a shifted numeric feature, and only that one', async () => {
    const report = await measure({ x: '(i % 100)::DOUBLE + 30' });
    expect(report.verdict).toBe('drift');
    expect(new Set(report.breaches.map((b) => b.feature))).toEqual(new Set(['x']));
    expect(breached(report)).toEqual(['x.ks', 'x.outOfRange', 'x.psi']);
    const x = report.features['x']!.measures;
    expect(x.psi).toBeGreaterThan(0.2);
    expect(x.ks).toBeCloseTo(0.3, 2);
    expect(x.outOfRange).toBeCloseTo(0.3, 2);
  });

  it('flags unseen categories apart from the distribution measures', async () => {
    const report = await measure({ c: "CASE WHEN i % 10 = 0 THEN 'new' ELSE ['a', 'b', 'b', 'c', 'c', 'c'][(i % 6) + 1] END" });
    const c = report.features['c']!;
    expect(c.measures.unseen).toBeCloseTo(0.1, 2);
    expect(c.unseenExamples).toEqual([{ value: 'new', count: 200 }]);
    expect(breached(report)).toContain('c.unseen');
    // the remaining 90% keep the reference proportions (i % 10 = 0 hits the categories evenly)
    expect(c.measures.js).toBeLessThan(0.01);
  });

  it('flags a feature that went constant', async () => {
    const report = await measure({ k: '3', b: 'true' });
    expect(breached(report)).toEqual(['b.chi2PValue', 'b.constant', 'b.js', 'k.constant', 'k.ks', 'k.psi']);
    expect(report.features['k']!.measures.constant).toBe(true);
    expect(report.features['x']!.measures.constant).toBe(false);
  });

  it('flags a rising null rate', async () => {
    const report = await measure({ y: 'CASE WHEN i % 5 = 0 THEN NULL ELSE ((i * 37) % 50)::DOUBLE / 5 END' });
    expect(report.features['y']!.measures.nullRate).toBeCloseTo(0.2, 5);
    expect(report.features['y']!.measures.referenceNullRate).toBe(0);
    expect(breached(report)).toEqual(['y.nullRateIncrease']);
  });

  it('counts unparseable text as missing and NaN as out of range', async () => {
    await conn.run(tableSql('cur', 2000, { x: "CASE WHEN i % 10 = 0 THEN 'oops' WHEN i % 10 = 1 THEN 'NaN' ELSE CAST(i % 100 AS VARCHAR) END" }));
    const report = await measureDrift(conn, tableRelation('cur'), reference);
    const x = report.features['x']!;
    expect(x.measures.nullRate).toBeCloseTo(0.1, 5);
    expect(x.measures.outOfRange).toBeCloseTo(200 / 1800, 5);
    expect(x.count).toBe(1600);
  });

  it('gives no verdict below minSamples', async () => {
    const report = await measure({ x: '(i % 100)::DOUBLE + 30' }, 150);
    expect(report.verdict).toBe('insufficient_data');
    expect(report.breaches).toEqual([]);
    expect((await measure({ x: '(i % 100)::DOUBLE + 30' }, 300, { minSamples: 250 })).verdict).toBe('drift');
  });

  it('applies per-feature and global threshold overrides', async () => {
    const shifted = { x: '(i % 100)::DOUBLE + 30' };
    const perFeature = await measure(shifted, 2000, { features: { x: { psi: 100, ks: null } } });
    expect(breached(perFeature)).toEqual(['x.outOfRange']);
    const global = await measure(shifted, 2000, { defaults: { outOfRange: 0.5 }, features: { x: { psi: null } } });
    expect(breached(global)).toEqual(['x.ks']);
    expect(() => driftThresholdsSchema.parse({ defaults: { psi: -1 } })).toThrow();
    await expect(measure({}, 2000, { features: { nope: { psi: 1 } } })).rejects.toThrow(/nope/);
  });

  it('measures prediction drift with its own thresholds', async () => {
    const report = await measure({ p: '0.9' });
    expect(breached(report)).toEqual(['p.constant', 'p.ks', 'p.psi']);
    const relaxed = await measure({ p: '0.9' }, 2000, { prediction: { psi: null, ks: null, constant: false } });
    expect(relaxed.verdict).toBe('ok');
  });

  it('restricts the window by time', async () => {
    await conn.run(tableSql('cur', 2000));
    // minutes 0..999 of 2026-01-01 keep half the rows
    const report = await measureDrift(conn, tableRelation('cur'), reference, {}, { window: { column: 'ts', start: '2026-01-01T00:00:00Z', end: new Date(Date.UTC(2026, 0, 1, 0, 0) + 1000 * 60_000) } });
    expect(report.sampleSize).toBe(1000);
  });

  it('names the feature when a column is missing', async () => {
    await conn.run('CREATE OR REPLACE TABLE thin AS SELECT 1.0 AS x');
    await expect(measureDrift(conn, tableRelation('thin'), reference)).rejects.toThrow(/feature "y"/);
  });
});

describe('divergence functions', () => {
  it('psi matches a hand computation', () => {
    // (0.6 - 0.5) ln(0.6/0.5) + (0.4 - 0.5) ln(0.4/0.5)
    expect(psi([50, 50], [60, 40])).toBeCloseTo(0.1 * Math.log(1.2) + 0.1 * Math.log(1.25), 12);
    expect(psi([1, 1], [1, 1])).toBe(0);
  });

  it('js divergence matches a hand computation', () => {
    // M = (0.75, 0.25): 0.5 * (0.5 log2(2/3) + 0.5 log2 2) + 0.5 * log2(4/3)
    expect(jsDivergence([1, 1], [1, 0])).toBeCloseTo(0.311278, 6);
    expect(jsDivergence([1, 0], [0, 1])).toBe(1);
  });

  it('chi-square p-values match the tables', () => {
    expect(chiSquarePValue(3.841459, 1)).toBeCloseTo(0.05, 6);
    expect(chiSquarePValue(5.991465, 2)).toBeCloseTo(0.05, 6);
    expect(chiSquarePValue(18.307038, 10)).toBeCloseTo(0.05, 6);
    expect(chiSquarePValue(6.634897, 1)).toBeCloseTo(0.01, 6);
    // closed forms: df = 2 gives e^(-x/2), df = 4 gives e^(-x/2) (1 + x/2)
    expect(chiSquarePValue(10, 2)).toBeCloseTo(Math.exp(-5), 10);
    expect(chiSquarePValue(100, 4) / (51 * Math.exp(-50))).toBeCloseTo(1, 8);
    expect(chiSquarePValue(0.5, 4)).toBeCloseTo(Math.exp(-0.25) * 1.25, 10);
    expect(chiSquarePValue(0, 3)).toBe(1);
  });

  it('chi-square gives its smallest expected cell count: valid only when it is 5 or more', () => {
    const valid = (a: number[], b: number[]): boolean => chiSquare(a, b).minExpected >= 5;
    expect(valid([40, 40, 40], [40, 40, 40])).toBe(true);
    expect(chiSquare([40, 40, 40], [40, 40, 40]).minExpected).toBe(40);
    // 30 and 30 over ten bins: 1.5 expected per cell.
    expect(valid([3, 3, 3, 3, 3, 3, 3, 3, 3, 3], [6, 0, 3, 3, 3, 3, 3, 3, 0, 6])).toBe(false);
    expect(chiSquare([3, 3, 3, 3, 3, 3, 3, 3, 3, 3], [6, 0, 3, 3, 3, 3, 3, 3, 0, 6]).minExpected).toBeCloseTo(1.5, 12);
    // A 10 % arm: a bin of 20 pooled rows expects 1.8 of it.
    expect(valid([0, 300, 10], [30, 0, 10])).toBe(false);
    // Bins empty in both do not count.
    expect(valid([50, 0, 50], [50, 0, 50])).toBe(true);
    // An empty sample has no expected counts at all.
    expect(() => chiSquare([0, 0], [5, 5])).toThrow(/counts in both/);
  });

  it('permutation p-values: exact for sparse bins and very unequal arms, seeded', () => {
    // A 10 % arm that always predicts the class production never does: no random split does that.
    expect(permutationPValue([0, 300], [30, 0], jsDivergence)).toBe(1 / 1000);
    // A class production never predicts, 9 of 30 candidate rows: Fisher's exact test gives about 0.002.
    expect(permutationPValue([0, 30], [9, 21], jsDivergence)).toBeLessThan(0.01);
    // Neighbouring tenths swapped in pairs: within chance although the divergence is 0.12.
    const swapped = permutationPValue([3, 3, 3, 3, 3, 3, 3, 3, 3, 3], [6, 0, 3, 3, 3, 3, 3, 3, 0, 6], jsDivergence);
    expect(swapped).toBeGreaterThan(0.05);
    expect(permutationPValue([3, 3, 3, 3, 3, 3, 3, 3, 3, 3], [6, 0, 3, 3, 3, 3, 3, 3, 0, 6], jsDivergence)).toBe(swapped);
    // Identical samples: every split is at least as far apart.
    expect(permutationPValue([5, 5, 5], [5, 5, 5], jsDivergence)).toBe(1);
    // A dense table agrees with chi-square on the verdict.
    expect(chiSquare([60, 40], [40, 60]).pValue).toBeLessThan(0.01);
    expect(permutationPValue([60, 40], [40, 60], jsDivergence)).toBeLessThan(0.02);
    expect(permutationPValue([0, 0], [1, 2], jsDivergence)).toBe(1);
  });

  it('chi-square homogeneity matches a hand computation', () => {
    // table [[10, 20], [20, 10]]: every expected cell is 15, so chi2 = 4 * 25 / 15
    const r = chiSquare([10, 20], [20, 10]);
    expect(r.statistic).toBeCloseTo(20 / 3, 10);
    expect(r.df).toBe(1);
    expect(r.pValue).toBeCloseTo(0.009823, 5);
    expect(chiSquare([10, 0, 5], [4, 0, 2]).df).toBe(1);
  });

  it('ks statistic and p-value match a hand computation', () => {
    expect(ksStatistic([0.1, 0.5, 1], [0.2, 0.3, 1])).toBeCloseTo(0.2, 12);
    // Kolmogorov's Q(1.3581) = 0.05; with n = m = 2e8 the correction terms vanish
    expect(ksPValue(1.3581 / Math.sqrt(1e8), 2e8, 2e8)).toBeCloseTo(0.05, 4);
    expect(ksPValue(0, 10, 10)).toBe(1);
  });
});
