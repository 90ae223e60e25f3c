import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { featureColumns, featureKind } from '../../src/data/features.js';
import { DataError, openDataset } from '../../src/data/load.js';
import { holdoutScore, splitDataset } from '../../src/data/split.js';
import type { SplitResult } from '../../src/data/split.js';
import { pipelineSpecSchema } from '../../src/spec/schema.js';
import type { PipelineSpec, PipelineSpecInput } from '../../src/spec/schema.js';

function makeSpec(split: { holdoutFraction?: number; seed?: number } = {}, overrides: Partial<PipelineSpecInput> = {}): PipelineSpec {
  return pipelineSpecSchema.parse({
    name: 'split',
    dataset: { source: 'rows.csv' },
    target: { column: 'label', task: 'classification' },
    schema: {
      columns: {
        id: { type: 'integer' },
        label: { type: 'integer' },
        score: { type: 'float', nullable: true },
        colour: { type: 'categorical' },
        flag: { type: 'boolean' },
      },
    },
    split,
    trainer: { kind: 'typescript', name: 'noop' },
    ...overrides,
  });
}

let dir: string;
let rowsCsv: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'conveyor-split-'));
  const lines = ['id,label,score,colour,flag'];
  for (let i = 0; i < 1000; i++) {
    // messy-but-valid text, so the outputs show the cast to declared types
    const score = i % 10 === 0 ? '' : i % 10 === 1 ? `${i}e-1` : `${i}.5`;
    lines.push(`${i}.0,${i % 3 === 0 ? 1 : 0},${score},${['red', 'green', '"blue, dark"'][i % 3]},${i % 2 ? '1' : 'FALSE'}`);
  }
  rowsCsv = join(dir, 'rows.csv');
  await writeFile(rowsCsv, `${lines.join('\n')}\n`);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function split(spec: PipelineSpec, out: string, path = rowsCsv): Promise<SplitResult> {
  const ds = await openDataset(path, 'csv');
  try {
    return await splitDataset(ds.connection, spec, join(dir, out));
  } finally {
    ds.close();
  }
}

function csvRows(text: string): string[] {
  return text.trimEnd().split('\n').slice(1);
}

describe('featureColumns / featureKind', () => {
  it('defaults to every schema column but the target, in schema order', () => {
    expect(featureColumns(makeSpec())).toEqual(['id', 'score', 'colour', 'flag']);
    expect(featureColumns(makeSpec({}, { features: ['flag', 'score'] }))).toEqual(['score', 'flag']);
  });

  it('maps declared types to kinds', () => {
    expect(['integer', 'float', 'categorical', 'boolean'].map((t) => featureKind(t as 'integer'))).toEqual([
      'numeric',
      'numeric',
      'categorical',
      'categorical',
    ]);
  });
});

describe('splitDataset', () => {
  it('holds out roughly the fraction, and exactly the rows holdoutScore picks', async () => {
    const result = await split(makeSpec({ holdoutFraction: 0.2, seed: 7 }), 'a');
    expect(result.trainRows + result.holdoutRows).toBe(1000);
    expect(result.holdoutRows).toBeGreaterThanOrEqual(150);
    expect(result.holdoutRows).toBeLessThanOrEqual(250);
    const holdoutIds = csvRows(await readFile(result.holdoutPath, 'utf8')).map((line) => Number(line.split(',')[0]));
    const expected = Array.from({ length: 1000 }, (_, i) => i).filter((i) => holdoutScore(i, 7) < 0.2);
    expect(holdoutIds).toEqual(expected);
    expect(csvRows(await readFile(result.trainPath, 'utf8'))).toHaveLength(result.trainRows);
  });

  it('writes features then target in schema order, cast to declared types, nulls empty', async () => {
    const result = await split(makeSpec({ holdoutFraction: 0.5, seed: 1 }, { features: ['flag', 'colour', 'score'] }), 'b');
    const train = await readFile(result.trainPath, 'utf8');
    const holdout = await readFile(result.holdoutPath, 'utf8');
    expect(train.split('\n')[0]).toBe('label,score,colour,flag');
    const all = new Map(
      [...csvRows(train), ...csvRows(holdout)].map((line) => [line, true] as const),
    );
    // row 0: "0.0,1,,red,FALSE"; row 1: "1.0,0,1e-1,green,1"; row 2: "2.0,0,2.5,"blue, dark",FALSE"
    expect(all.has('1,,red,false')).toBe(true);
    expect(all.has('0,0.1,green,true')).toBe(true);
    expect(all.has('0,2.5,"blue, dark",false')).toBe(true);
  });

  it('is byte-identical for the same input, and changes with the seed', async () => {
    const spec = makeSpec({ holdoutFraction: 0.2, seed: 42 });
    const first = await split(spec, 'c1');
    const second = await split(spec, 'c2');
    expect(await readFile(second.trainPath)).toEqual(await readFile(first.trainPath));
    expect(await readFile(second.holdoutPath)).toEqual(await readFile(first.holdoutPath));
    const other = await split(makeSpec({ holdoutFraction: 0.2, seed: 43 }), 'c3');
    expect((await readFile(other.holdoutPath, 'utf8')) === (await readFile(first.holdoutPath, 'utf8'))).toBe(false);
  });

  it('refuses an empty split', async () => {
    // three rows and a seed under which none scores below 0.05
    const seed = Array.from({ length: 100 }, (_, s) => s).find((s) => [0, 1, 2].every((i) => holdoutScore(i, s) >= 0.05))!;
    const path = join(dir, 'tiny.csv');
    await writeFile(path, 'id,label,score,colour,flag\n1,0,1,red,true\n2,1,2,red,true\n3,0,3,red,true\n');
    const err = await split(makeSpec({ holdoutFraction: 0.05, seed }), 'd', path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect((err as DataError).failures).toMatchObject([{ rule: 'split_empty', details: { part: 'holdout', train: 3, holdout: 0 } }]);
  });

  it('refuses a classification holdout with a single class', async () => {
    const seed = 5;
    const lines = ['id,label,score,colour,flag'];
    for (let i = 0; i < 200; i++) lines.push(`${i},${holdoutScore(i, seed) < 0.2 ? 0 : i % 2},1,red,true`);
    const path = join(dir, 'one-class-holdout.csv');
    await writeFile(path, `${lines.join('\n')}\n`);
    const err = await split(makeSpec({ holdoutFraction: 0.2, seed }), 'e', path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect((err as DataError).failures).toMatchObject([{ rule: 'split_classes', column: 'label', details: { part: 'holdout', classes: 1 } }]);
    expect((err as DataError).message).toMatch(/holdout split has fewer than 2 classes of target label/);
  });

  it('allows a single-valued holdout for regression', async () => {
    const seed = 5;
    const lines = ['id,label,score,colour,flag'];
    for (let i = 0; i < 200; i++) lines.push(`${i},${holdoutScore(i, seed) < 0.2 ? 0 : i % 2},1,red,true`);
    const path = join(dir, 'regression.csv');
    await writeFile(path, `${lines.join('\n')}\n`);
    const spec = makeSpec({ holdoutFraction: 0.2, seed }, { target: { column: 'label', task: 'regression' } });
    const result = await split(spec, 'f', path);
    expect(result.holdoutRows).toBeGreaterThan(0);
  });
});
