import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { DuckDBConnection } from '@duckdb/node-api';
import type { PipelineSpec } from '../spec/schema.js';
import { cleanSql, featureColumns, parsedSql, textSql } from './features.js';
import { DATASET_TABLE, DataError, firstRow, quoteIdent, sqlString } from './load.js';
import type { ValidationFailure } from './types.js';

export interface SplitResult {
  trainPath: string;
  holdoutPath: string;
  trainRows: number;
  holdoutRows: number;
}

const M32 = 4294967296;

/**
 * Where row `index` (0-based file order) lands for `seed`: a number in [0, 1); the row is
 * holdout when it is below holdoutFraction. A murmur3 finaliser, written out so the split
 * does not depend on DuckDB's hash(), which may change between versions.
 */
export function holdoutScore(index: number, seed: number): number {
  const x = (Math.imul(index >>> 0, 0x9e3779b1) >>> 0) + seedMix(seed);
  return fmix32(x % M32) / M32;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

function seedMix(seed: number): number {
  return fmix32(Number(BigInt.asUintN(32, BigInt(seed))));
}

/** The same computation as holdoutScore, over the table's rowid (file order). */
function holdoutScoreSql(table: string, columns: string, seed: number): string {
  return `
    WITH h0 AS (SELECT rowid AS idx, ${columns}, ((rowid::HUGEINT % ${M32}) * ${0x9e3779b1} % ${M32} + ${seedMix(seed)}) % ${M32} AS h FROM ${quoteIdent(table)}),
         h1 AS (SELECT * REPLACE ((xor(h, h >> 16) * ${0x85ebca6b}) % ${M32} AS h) FROM h0),
         h2 AS (SELECT * REPLACE ((xor(h, h >> 13) * ${0xc2b2ae35}) % ${M32} AS h) FROM h1)
    SELECT * EXCLUDE (h), xor(h, h >> 16)::DOUBLE / ${M32} AS score FROM h2`;
}

/**
 * Writes train.csv and holdout.csv to outDir: features then target in schema order,
 * values cast to their declared types, nulls empty. Same data, seed and fraction give
 * byte-identical files.
 */
export async function splitDataset(
  conn: DuckDBConnection,
  spec: PipelineSpec,
  outDir: string,
  table: string = DATASET_TABLE,
): Promise<SplitResult> {
  const target = spec.target.column;
  const wanted = new Set([...featureColumns(spec), target]);
  const names = Object.keys(spec.schema.columns).filter((c) => wanted.has(c));
  // internal positional names (c0, c1, ...) cannot collide with idx/h/score/holdout
  const projection = names
    .map((name, i) => {
      const type = spec.schema.columns[name]!.type;
      const text = textSql(name);
      return `${cleanSql(text, parsedSql(text, type), type)} AS c${i}`;
    })
    .join(', ');
  const { holdoutFraction, seed } = spec.split;
  const temp = quoteIdent(`conveyor_split_${randomUUID().replaceAll('-', '')}`);

  await conn.run(
    `CREATE TEMP TABLE ${temp} AS SELECT score < ${Number(holdoutFraction)} AS holdout, * EXCLUDE (score) FROM (${holdoutScoreSql(table, projection, seed)})`,
  );
  try {
    const t = `c${names.indexOf(target)}`;
    const stats = await firstRow(
      conn,
      `SELECT count_if(holdout) AS holdout, count_if(NOT holdout) AS train,
         count(DISTINCT ${t}) FILTER (WHERE holdout) AS holdout_classes, count(DISTINCT ${t}) FILTER (WHERE NOT holdout) AS train_classes
       FROM ${temp}`,
    );
    const counts = { train: Number(stats['train']), holdout: Number(stats['holdout']) };
    const failures: ValidationFailure[] = [];
    for (const part of ['train', 'holdout'] as const) {
      if (counts[part] === 0) {
        failures.push({ rule: 'split_empty', message: `${part} split is empty (${counts.train + counts.holdout} rows, holdoutFraction ${holdoutFraction}, seed ${seed})`, details: { part, ...counts } });
      } else if (spec.target.task === 'classification' && Number(stats[`${part}_classes`]) < 2) {
        failures.push({
          rule: 'split_classes',
          column: target,
          message: `${part} split has fewer than 2 classes of target ${target}; change split.seed or holdoutFraction, or add data`,
          details: { part, classes: Number(stats[`${part}_classes`]), ...counts },
        });
      }
    }
    if (failures.length) throw new DataError(failures);

    await mkdir(outDir, { recursive: true });
    const result: SplitResult = {
      trainPath: join(outDir, 'train.csv'),
      holdoutPath: join(outDir, 'holdout.csv'),
      trainRows: counts.train,
      holdoutRows: counts.holdout,
    };
    const columns = names.map((name, i) => `c${i} AS ${quoteIdent(name)}`).join(', ');
    for (const [where, path] of [['NOT holdout', result.trainPath], ['holdout', result.holdoutPath]] as const) {
      await conn.run(`COPY (SELECT ${columns} FROM ${temp} WHERE ${where} ORDER BY idx) TO ${sqlString(path)} (FORMAT csv, HEADER true, DELIMITER ',')`);
    }
    return result;
  } finally {
    await conn.run(`DROP TABLE IF EXISTS ${temp}`);
  }
}
