import type { PipelineSpec } from '../spec/schema.js';
import { quoteIdent } from './load.js';
import type { DeclaredType } from './types.js';

export type FeatureKind = 'numeric' | 'categorical';

/** spec.features (or every schema column but the target), in schema order. */
export function featureColumns(spec: PipelineSpec): string[] {
  const chosen = spec.features === undefined ? undefined : new Set(spec.features);
  return Object.keys(spec.schema.columns).filter((c) =>
    chosen === undefined ? c !== spec.target.column : chosen.has(c),
  );
}

export function featureKind(type: DeclaredType): FeatureKind {
  return type === 'integer' || type === 'float' ? 'numeric' : 'categorical';
}

/*
 * How a declared type reads a column, as SQL. Every column is seen through its text
 * (CSV columns are VARCHAR; Parquet ones are cast), so CSV and Parquet get the same rules.
 *   text   : the value as text, NULL when NULL or blank
 *   parsed : DOUBLE for numeric types (NaN/Infinity included), BOOLEAN, or the text
 *   valid  : true when text is NULL or parses as the declared type
 *   clean  : the value as the declared SQL type; NULL when null, invalid or not finite
 */

export function textSql(column: string): string {
  const q = quoteIdent(column);
  return `CASE WHEN trim(CAST(${q} AS VARCHAR)) <> '' THEN CAST(${q} AS VARCHAR) END`;
}

export function parsedSql(text: string, type: DeclaredType): string {
  switch (type) {
    case 'integer':
    case 'float':
      return `TRY_CAST(${text} AS DOUBLE)`;
    case 'boolean':
      return `CASE lower(trim(${text})) WHEN 'true' THEN true WHEN '1' THEN true WHEN 'false' THEN false WHEN '0' THEN false END`;
    case 'categorical':
      return text;
  }
}

function validSql(text: string, parsed: string, type: DeclaredType): string {
  if (type === 'categorical') return 'true';
  // DuckDB rounds '1.5' to 2 when casting text to BIGINT, so integrality is checked on the double
  const integral =
    type === 'integer' ? ` AND (NOT isfinite(${parsed}) OR (${parsed} = trunc(${parsed}) AND TRY_CAST(${parsed} AS BIGINT) IS NOT NULL))` : '';
  return `(${text} IS NULL OR (${parsed} IS NOT NULL${integral}))`;
}

export function cleanSql(text: string, parsed: string, type: DeclaredType): string {
  const valid = validSql(text, parsed, type);
  switch (type) {
    case 'integer':
      return `CASE WHEN ${valid} AND isfinite(${parsed}) THEN CAST(${parsed} AS BIGINT) END`;
    case 'float':
      return `CASE WHEN ${valid} AND isfinite(${parsed}) THEN ${parsed} END`;
    case 'boolean':
    case 'categorical':
      return parsed;
  }
}

/**
 * One column of `table` as a relation (rid, s, p, ok, v) = (rowid, text, parsed, valid, clean),
 * so per-column aggregates can refer to short names.
 */
export function columnRelation(table: string, column: string, type: DeclaredType): string {
  return (
    `(SELECT rid, s, p, ${validSql('s', 'p', type)} AS ok, ${cleanSql('s', 'p', type)} AS v FROM ` +
    `(SELECT rid, s, ${parsedSql('s', type)} AS p FROM ` +
    `(SELECT rowid AS rid, ${textSql(column)} AS s FROM ${quoteIdent(table)})))`
  );
}
