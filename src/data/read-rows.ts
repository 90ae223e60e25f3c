import { DuckDBInstance } from '@duckdb/node-api';
import type { PipelineSpec } from '../spec/schema.js';
import { featureKind } from './features.js';
import { quoteIdent, sqlString } from './load.js';

export type Row = Record<string, number | string | null>;

/**
 * Reads a split CSV written by splitDataset into JS rows: numeric columns as
 * numbers, categorical and boolean ones as strings, empty cells as null.
 */
export async function readSplitRows(path: string, spec: PipelineSpec, columns: string[]): Promise<Row[]> {
  const types = columns.map((name) => {
    const type = spec.schema.columns[name]?.type;
    return `${sqlString(name)}: ${type !== undefined && featureKind(type) === 'numeric' ? "'DOUBLE'" : "'VARCHAR'"}`;
  });
  const instance = await DuckDBInstance.create(':memory:');
  const connection = await instance.connect();
  try {
    const projection = columns.map(quoteIdent).join(', ');
    const reader = await connection.runAndReadAll(
      `SELECT ${projection} FROM read_csv(${sqlString(path)}, header = true, columns = {${types.join(', ')}}, auto_detect = false)`,
    );
    return reader.getRowObjectsJS() as Row[];
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}
