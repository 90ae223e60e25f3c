import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataError, openDataset, sqlString } from '../../src/data/load.js';
import { profileDataset } from '../../src/data/profile.js';
import type { DatasetProfile, NumericColumnProfile } from '../../src/data/types.js';
import { pipelineSpecSchema } from '../../src/spec/schema.js';
import type { PipelineSpec } from '../../src/spec/schema.js';

const fixture = (name: string): string => join(import.meta.dirname, '../fixtures/data', name);

// profile.csv:
// x,y,c,m
// 1,10.5,a,true
// 2,,b,1
// 3,20,a,false
// 4,30,,0
// ,40,a,true
// 5,NaN,c,
const spec: PipelineSpec = pipelineSpecSchema.parse({
  name: 'profiled',
  dataset: { source: 'profile.csv' },
  target: { column: 'm', task: 'classification' },
  schema: {
    columns: {
      x: { type: 'integer', nullable: true },
      y: { type: 'float', nullable: true },
      c: { type: 'categorical', nullable: true },
      m: { type: 'boolean', nullable: true },
    },
  },
  trainer: { kind: 'typescript', name: 'noop' },
});

async function profileOf(path: string, format: 'csv' | 'parquet'): Promise<DatasetProfile> {
  const ds = await openDataset(path, format);
  try {
    return await profileDataset(ds.connection, spec);
  } finally {
    ds.close();
  }
}

describe('profileDataset', () => {
  let profile: DatasetProfile;
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'conveyor-profile-'));
    profile = await profileOf(fixture('profile.csv'), 'csv');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('counts rows and columns', () => {
    expect(profile.rowCount).toBe(6);
    expect(profile.columnCount).toBe(4);
    expect(Object.keys(profile.columns)).toEqual(['x', 'y', 'c', 'm']);
  });

  it('profiles an integer column', () => {
    const x = profile.columns['x'] as NumericColumnProfile;
    expect(x).toMatchObject({ kind: 'numeric', declaredType: 'integer', count: 5, nulls: 1, nanOrInfinite: 0, min: 1, max: 5, mean: 3 });
    expect(x.nullFraction).toBeCloseTo(1 / 6, 12);
    expect(x.std).toBeCloseTo(Math.sqrt(2.5), 12); // sample std of 1..5
    expect(x.quantiles?.p50).toBe(3);
    expect(x.quantiles?.p25).toBe(2);
    expect(x.quantiles?.p01).toBeCloseTo(1.04, 12);
    expect(x.quantiles?.p99).toBeCloseTo(4.96, 12);
  });

  it('bins at the deciles, min and max included', () => {
    const { edges, counts } = (profile.columns['x'] as NumericColumnProfile).histogram;
    const expected = [1, 1.4, 1.8, 2.2, 2.6, 3, 3.4, 3.8, 4.2, 4.6, 5];
    expect(edges).toHaveLength(11);
    edges.forEach((e, i) => expect(e).toBeCloseTo(expected[i]!, 12));
    expect(counts).toEqual([1, 0, 1, 0, 0, 1, 0, 1, 0, 1]);
  });

  it('keeps NaN out of a float column statistics but counts it', () => {
    const y = profile.columns['y'] as NumericColumnProfile;
    expect(y).toMatchObject({ kind: 'numeric', declaredType: 'float', count: 5, nulls: 1, nanOrInfinite: 1, min: 10.5, max: 40, mean: 25.125 });
    expect(y.quantiles?.p50).toBe(25);
    expect(y.histogram.counts.reduce((a, b) => a + b, 0)).toBe(4);
    expect(JSON.parse(JSON.stringify(profile))).toEqual(profile); // nothing JSON would lose
  });

  it('profiles categorical and boolean columns by value counts', () => {
    expect(profile.columns['c']).toEqual({
      kind: 'categorical',
      declaredType: 'categorical',
      count: 5,
      nulls: 1,
      nullFraction: 1 / 6,
      distinct: 3,
      domain: [
        { value: 'a', count: 3, fraction: 0.6 },
        { value: 'b', count: 1, fraction: 0.2 },
        { value: 'c', count: 1, fraction: 0.2 },
      ],
    });
    expect(profile.columns['m']).toMatchObject({
      kind: 'categorical',
      declaredType: 'boolean',
      count: 5,
      nulls: 1,
      distinct: 2,
      domain: [
        { value: 'true', count: 3, fraction: 0.6 },
        { value: 'false', count: 2, fraction: 0.4 },
      ],
    });
  });

  it('gives a constant column one bin and an all-null column none', async () => {
    const path = join(dir, 'constant.csv');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(path, 'x,y,c,m\n7,,a,true\n7,,a,true\n');
    const p = await profileOf(path, 'csv');
    expect((p.columns['x'] as NumericColumnProfile).histogram).toEqual({ edges: [7, 7], counts: [2] });
    expect(p.columns['x']).toMatchObject({ std: 0, min: 7, max: 7 });
    expect(p.columns['y']).toMatchObject({ count: 0, nulls: 2, min: null, max: null, mean: null, std: null, quantiles: null, histogram: { edges: [], counts: [] } });
  });

  it('gives the same profile for the same data in Parquet', async () => {
    const csv = await openDataset(fixture('profile.csv'), 'csv');
    const path = join(dir, 'profile.parquet');
    try {
      await csv.connection.run(
        `COPY (SELECT TRY_CAST(x AS BIGINT) AS x, TRY_CAST(y AS DOUBLE) AS y, c, TRY_CAST(m AS BOOLEAN) AS m FROM dataset ORDER BY rowid)
         TO ${sqlString(path)} (FORMAT parquet)`,
      );
    } finally {
      csv.close();
    }
    expect(await profileOf(path, 'parquet')).toEqual(profile);
  });

  it('refuses to profile a table missing a schema column', async () => {
    const ds = await openDataset(fixture('missing-target.csv'), 'csv');
    try {
      const err = await profileDataset(ds.connection, spec).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DataError);
      expect((err as DataError).failures.map((f) => [f.rule, f.column])).toEqual([
        ['missing_column', 'x'],
        ['missing_column', 'y'],
        ['missing_column', 'c'],
        ['missing_column', 'm'],
      ]);
    } finally {
      ds.close();
    }
  });
});
