import type { DuckDBConnection } from '@duckdb/node-api';
import type { ColumnSpec, PipelineSpec } from '../spec/schema.js';
import { columnRelation, featureKind } from './features.js';
import { DATASET_TABLE, DataError, firstRow, tableShape } from './load.js';
import type { CategoricalColumnProfile, DatasetProfile, NumericColumnProfile, Quantiles } from './types.js';

const QUANTILES = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];
const DECILES = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
const DOMAIN_LIMIT = 200;

/** Profiles every schema column by its declared type; the table must hold them all. */
export async function profileDataset(conn: DuckDBConnection, spec: PipelineSpec, table: string = DATASET_TABLE): Promise<DatasetProfile> {
  const { columns: present, rowCount } = await tableShape(conn, table);
  const missing = Object.keys(spec.schema.columns).filter((c) => !present.includes(c));
  if (missing.length) throw new DataError(missing.map((column) => ({ rule: 'missing_column', column, message: `missing column ${column}` })));

  const columns: DatasetProfile['columns'] = {};
  for (const [name, col] of Object.entries(spec.schema.columns)) {
    const relation = columnRelation(table, name, col.type);
    columns[name] =
      featureKind(col.type) === 'numeric' ? await numericProfile(conn, relation, col, rowCount) : await categoricalProfile(conn, relation, col, rowCount);
  }
  return { rowCount, columnCount: Object.keys(columns).length, columns };
}

async function numericProfile(conn: DuckDBConnection, relation: string, col: ColumnSpec, rowCount: number): Promise<NumericColumnProfile> {
  const r = await firstRow(
    conn,
    `SELECT count(s) AS count, count_if(ok AND NOT isfinite(p)) AS nonfinite, min(v)::DOUBLE AS min, max(v)::DOUBLE AS max,
       avg(v) AS mean, stddev_samp(v) AS std, quantile_cont(v::DOUBLE, [${QUANTILES.join(', ')}]) AS q, quantile_cont(v::DOUBLE, [${DECILES.join(', ')}]) AS d
     FROM ${relation}`,
  );
  const count = Number(r['count']);
  const min = orNull(r['min']);
  const max = orNull(r['max']);
  // quantile_cont interpolation leaves noise such as 7.000000000000001 for a constant column
  const tidy = (x: number): number => Math.min(max!, Math.max(min!, Number(x.toPrecision(15))));
  const q = (r['q'] as number[] | null)?.map(tidy);
  const quantiles: Quantiles | null = q
    ? { p01: q[0]!, p05: q[1]!, p25: q[2]!, p50: q[3]!, p75: q[4]!, p95: q[5]!, p99: q[6]! }
    : null;
  const deciles = (r['d'] as number[] | null)?.map(tidy) ?? [];
  return {
    kind: 'numeric',
    ...counts(col, count, rowCount),
    nanOrInfinite: Number(r['nonfinite']),
    min,
    max,
    mean: orNull(r['mean']),
    std: orNull(r['std']),
    quantiles,
    histogram: await histogram(conn, relation, deciles),
  };
}

async function histogram(conn: DuckDBConnection, relation: string, deciles: number[]): Promise<{ edges: number[]; counts: number[] }> {
  if (deciles.length === 0) return { edges: [], counts: [] };
  const unique = [...new Set(deciles)];
  const edges = unique.length === 1 ? [unique[0]!, unique[0]!] : unique;
  const last = edges.length - 2;
  // bin i counts edges[i] <= v < edges[i+1]; the last bin also takes v = max
  const bins = edges.slice(0, -1).map((_, i) => `count_if(v >= $${i + 1}::DOUBLE AND v ${i === last ? '<=' : '<'} $${i + 2}::DOUBLE) AS b${i}`);
  const r = await firstRow(conn, `SELECT ${bins.join(', ')} FROM ${relation}`, edges);
  return { edges, counts: bins.map((_, i) => Number(r[`b${i}`])) };
}

async function categoricalProfile(conn: DuckDBConnection, relation: string, col: ColumnSpec, rowCount: number): Promise<CategoricalColumnProfile> {
  // booleans are grouped by value, so "1" and "true" count as one
  const key = col.type === 'boolean' ? 'CAST(v AS VARCHAR)' : 's';
  const totals = await firstRow(conn, `SELECT count(s) AS count, count(DISTINCT ${key}) AS distinct_values FROM ${relation}`);
  const count = Number(totals['count']);
  const top = await conn.runAndReadAll(
    `SELECT ${key} AS value, count(*) AS n FROM ${relation} WHERE ${key} IS NOT NULL GROUP BY ALL ORDER BY n DESC, value LIMIT ${DOMAIN_LIMIT}`,
  );
  return {
    kind: 'categorical',
    ...counts(col, count, rowCount),
    distinct: Number(totals['distinct_values']),
    domain: top.getRowObjectsJS().map((t) => ({ value: String(t['value']), count: Number(t['n']), fraction: Number(t['n']) / count })),
  };
}

/** The fields every column profile shares; count is the non-null values. */
function counts(col: ColumnSpec, count: number, rowCount: number): Pick<NumericColumnProfile, 'declaredType' | 'count' | 'nulls' | 'nullFraction'> {
  const nulls = rowCount - count;
  return { declaredType: col.type, count, nulls, nullFraction: rowCount === 0 ? 0 : nulls / rowCount };
}

function orNull(value: unknown): number | null {
  return value === null || value === undefined || !Number.isFinite(Number(value)) ? null : Number(value);
}
