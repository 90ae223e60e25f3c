import type { DuckDBConnection } from '@duckdb/node-api';
import type { ColumnSpec } from '../spec/schema.js';

export type DeclaredType = ColumnSpec['type'];

export interface Quantiles {
  p01: number;
  p05: number;
  p25: number;
  p50: number;
  p75: number;
  p95: number;
  p99: number;
}

/**
 * Statistics over the finite values that parse as the declared type; nulls and
 * NaN/Infinity are counted but excluded. Stats are null when no such value exists.
 */
export interface NumericColumnProfile {
  kind: 'numeric';
  declaredType: DeclaredType;
  /** Non-null values (including non-finite and unparseable ones). */
  count: number;
  nulls: number;
  nullFraction: number;
  nanOrInfinite: number;
  min: number | null;
  max: number | null;
  mean: number | null;
  /** Sample standard deviation; null with fewer than 2 values. */
  std: number | null;
  quantiles: Quantiles | null;
  /**
   * Reference bins for PSI: edges are the unique deciles of the data, min and max included;
   * bin i is [edges[i], edges[i+1]) and the last bin is closed. A constant column gets
   * edges [v, v] and one bin; a column without finite values gets no bins.
   */
  histogram: { edges: number[]; counts: number[] };
}

export interface CategoricalColumnProfile {
  kind: 'categorical';
  declaredType: DeclaredType;
  /** Non-null values. */
  count: number;
  nulls: number;
  nullFraction: number;
  distinct: number;
  /** Top 200 values by count (ties by value); fraction is of the non-null values. Booleans appear as "true"/"false". */
  domain: Array<{ value: string; count: number; fraction: number }>;
}

export type ColumnProfile = NumericColumnProfile | CategoricalColumnProfile;

export interface DatasetProfile {
  rowCount: number;
  /** Number of profiled (schema) columns. */
  columnCount: number;
  columns: Record<string, ColumnProfile>;
}

export interface ValidationFailure {
  rule: string;
  column?: string;
  message: string;
  details?: Record<string, unknown>;
}

export interface ValidationReport {
  passed: boolean;
  rowCount: number;
  failures: ValidationFailure[];
  /** Number of checks evaluated (passing or not). */
  checks: number;
}

export interface CustomCheckContext {
  connection: DuckDBConnection;
  /** Table holding the data; quote it as an identifier. */
  table: string;
  column?: string;
}

export type CustomCheck = (ctx: CustomCheckContext) => Promise<{ passed: boolean; message: string }>;
