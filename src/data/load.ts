import { open, stat } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { DuckDBInstance } from '@duckdb/node-api';
import type { DuckDBConnection } from '@duckdb/node-api';
import { ErrorType } from '../shared/errors.js';
import type { ValidationFailure } from './types.js';

/** Name of the table openDataset creates; rowid follows the file's row order. */
export const DATASET_TABLE = 'dataset';

/** Bad data (not infrastructure): never worth retrying. */
export class DataError extends Error {
  readonly type = ErrorType.DataValidation;
  constructor(readonly failures: ValidationFailure[]) {
    super(failures.map((f) => (f.column === undefined ? f.message : `${f.column}: ${f.message}`)).join('; '));
    this.name = 'DataError';
  }
}

export interface Dataset {
  instance: DuckDBInstance;
  connection: DuckDBConnection;
  /** Always DATASET_TABLE. */
  table: string;
  /** Column names in file order. */
  columns: string[];
  rowCount: number;
  /** Releases the connection and the in-memory database; safe to call twice. */
  close(): void;
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function sqlString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

export async function openDataset(path: string, format: 'csv' | 'parquet'): Promise<Dataset> {
  if ((await stat(path)).size === 0) throw emptyError();
  const source = format === 'csv' ? await csvSource(path) : `read_parquet(${sqlString(path)})`;

  const instance = await DuckDBInstance.create(':memory:');
  let connection: DuckDBConnection | undefined;
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    connection?.closeSync();
    instance.closeSync();
  };
  try {
    connection = await instance.connect();
    try {
      await connection.run(`CREATE TABLE ${DATASET_TABLE} AS SELECT * FROM ${source}`);
    } catch (err) {
      // DuckDB's "Possible fixes" advise relaxing the parser, which is not the user's remedy
      const text = errorText(err).split(/\n\s*Possible fixes:/)[0]!.trim();
      throw new DataError([{ rule: 'parse', message: `cannot read ${format} file: ${text}`, details: { path } }]);
    }
    const { columns, rowCount } = await tableShape(connection, DATASET_TABLE);
    if (rowCount === 0) throw emptyError();
    // such a column would shadow DuckDB's rowid, which carries the file order
    const shadowing = columns.find((c) => c.toLowerCase() === 'rowid');
    if (shadowing !== undefined) {
      throw new DataError([{ rule: 'parse', column: shadowing, message: `column name "${shadowing}" is reserved; rename the column` }]);
    }
    return { instance, connection, table: DATASET_TABLE, columns, rowCount, close };
  } catch (err) {
    close();
    throw err;
  }
}

/** First row of a query's result as a JS object; {} when there is none. */
export async function firstRow(
  conn: DuckDBConnection,
  sql: string,
  params: Parameters<DuckDBConnection['run']>[1] = [],
): Promise<Record<string, unknown>> {
  return (await conn.runAndReadAll(sql, params)).getRowObjectsJS()[0] ?? {};
}

/** A table's column names (in order) and row count. */
export async function tableShape(conn: DuckDBConnection, table: string): Promise<{ columns: string[]; rowCount: number }> {
  const columns = (await conn.runAndReadAll(`SELECT * FROM ${quoteIdent(table)} LIMIT 0`)).columnNames();
  const rowCount = Number((await firstRow(conn, `SELECT count(*) AS n FROM ${quoteIdent(table)}`))['n'] ?? 0);
  return { columns, rowCount };
}

function emptyError(): DataError {
  return new DataError([{ rule: 'row_count', message: 'dataset is empty' }]);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Sniffing is off: the header is read here and every column declared VARCHAR, so
 * DuckDB cannot guess a dialect that hides a malformed file, and types are judged
 * per column by validation instead of failing inside the reader.
 */
async function csvSource(path: string): Promise<string> {
  const header = await readCsvHeader(path);
  if (header === null) throw emptyError();
  const seen = new Set<string>();
  for (const name of header) {
    const key = name.toLowerCase(); // DuckDB identifiers are case-insensitive
    if (seen.has(key)) throw new DataError([{ rule: 'parse', message: `duplicate column name "${name}" in the CSV header` }]);
    seen.add(key);
  }
  const columns = header.map((name) => `${sqlString(name)}: 'VARCHAR'`).join(', ');
  return (
    `read_csv(${sqlString(path)}, header = true, auto_detect = false, columns = {${columns}}, ` +
    `delim = ',', quote = '"', escape = '"', strict_mode = true, null_padding = false, ignore_errors = false)`
  );
}

const MAX_HEADER_BYTES = 16 * 1024 * 1024;

/** First CSV record's fields, or null if the file holds no header. */
async function readCsvHeader(path: string): Promise<string[] | null> {
  const file = await open(path, 'r');
  try {
    const decoder = new StringDecoder('utf8');
    const chunk = Buffer.alloc(64 * 1024);
    let text = '';
    for (let position = 0; position <= MAX_HEADER_BYTES; ) {
      const { bytesRead } = await file.read(chunk, 0, chunk.length, position);
      position += bytesRead;
      text += bytesRead === 0 ? decoder.end() : decoder.write(chunk.subarray(0, bytesRead));
      const parsed = parseFirstRecord(text, bytesRead === 0);
      if (parsed !== undefined) return parsed;
    }
    throw new DataError([{ rule: 'parse', message: 'CSV header is longer than 16 MiB' }]);
  } finally {
    await file.close();
  }
}

/** undefined = need more input; null = no header at all. */
function parseFirstRecord(input: string, eof: boolean): string[] | null | undefined {
  const text = input.startsWith('\uFEFF') ? input.slice(1) : input;
  const fields: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch !== '"') {
        field += ch;
      } else if (i + 1 === text.length && !eof) {
        return undefined; // cannot tell a closing quote from an escaped one yet
      } else if (text[i + 1] === '"') {
        field += '"';
        i++;
      } else {
        quoted = false;
      }
    } else if (ch === '"') {
      quoted = true;
    } else if (ch === ',') {
      fields.push(field);
      field = '';
    } else if (ch === '\n' || ch === '\r') {
      return finish(fields, field);
    } else {
      field += ch;
    }
  }
  if (!eof) return undefined;
  if (quoted) throw new DataError([{ rule: 'parse', message: 'CSV header has an unterminated quote' }]);
  return finish(fields, field);
}

function finish(fields: string[], last: string): string[] | null {
  if (fields.length === 0 && last.trim() === '') return null;
  // DuckDB's own naming for blank header cells, so such columns still load (and count as extra)
  return [...fields, last].map((name, i) => (name === '' ? `column${i}` : name));
}
