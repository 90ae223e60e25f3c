import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { DuckDBConnection } from '@duckdb/node-api';
import { firstRow, sqlString } from '../data/load.js';
import { ARMS } from '../serving/prediction-log.js';
import type { ArtifactStore } from '../store/artifact-store.js';
import { keys } from '../store/keys.js';

/** Name of the table openPredictionTable creates. */
export const PREDICTIONS_TABLE = 'predictions';

const HOUR_MS = 3_600_000;

/**
 * How far a batch's rows may precede its key stamp (the first row's time). Rows are
 * appended in roughly time order, but concurrent requests take their timestamps before
 * appending, so a later row can be a little earlier than the first; a batch is skipped
 * by key only when its stamp is at least this far past the window's end.
 */
export const DEFAULT_STAMP_SKEW_MS = 5 * 60_000;

export interface DownloadWindowOptions {
  stampSkewMs?: number;
  /** Parallel downloads. */
  concurrency?: number;
}

export interface DownloadedWindow {
  /** Local paths of the downloaded batches, in key order. */
  files: string[];
  /** Objects listed under the hour partitions overlapping the window. */
  objects: number;
  /** Listed objects not downloaded because their stamp is safely past the window's end. */
  skipped: number;
}

function checkWindow(from: Date, to: Date): void {
  for (const [name, value] of [['from', from], ['to', to]] as const) {
    if (!(value instanceof Date) || Number.isNaN(value.getTime())) throw new Error(`prediction window: "${name}" is not a valid Date`);
  }
  if (from.getTime() >= to.getTime()) {
    throw new Error(`prediction window is empty: from (${from.toISOString()}) must be before to (${to.toISOString()})`);
  }
}

/** The hour prefixes `predictions/<model>/<day>/<hh>/` whose hour overlaps [from, to). */
export function hourPrefixes(model: string, from: Date, to: Date): string[] {
  checkWindow(from, to);
  const base = keys.predictionsPrefix(model);
  const prefixes: string[] = [];
  for (let t = Math.floor(from.getTime() / HOUR_MS) * HOUR_MS; t < to.getTime(); t += HOUR_MS) {
    const iso = new Date(t).toISOString();
    prefixes.push(`${base}${iso.slice(0, 10)}/${iso.slice(11, 13)}/`);
  }
  return prefixes;
}

const STAMP = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?:\.(\d{1,3}))?Z-/;

/** The stamp in a batch key's file name (ISO 8601 basic format), in epoch ms; null when the name has none. */
export function batchStampMs(key: string): number | null {
  const name = key.slice(key.lastIndexOf('/') + 1);
  const m = STAMP.exec(name);
  if (!m) return null;
  const [, y, mo, d, h, mi, s, ms] = m;
  const t = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), Number((ms ?? '0').padEnd(3, '0')));
  return Number.isNaN(t) ? null : t;
}

/**
 * Downloads the prediction batches that can hold rows in [from, to) into `dir`. The log
 * writes each batch into the hour partition of its rows, so only overlapping hours are
 * listed. Batches stamped before `from` are kept: their later rows may fall inside.
 * Rows are not filtered here; query them by time.
 */
export async function downloadPredictionWindow(
  store: ArtifactStore,
  model: string,
  from: Date,
  to: Date,
  dir: string,
  options: DownloadWindowOptions = {},
): Promise<DownloadedWindow> {
  const skew = options.stampSkewMs ?? DEFAULT_STAMP_SKEW_MS;
  const concurrency = options.concurrency ?? 8;
  if (!Number.isFinite(skew) || skew < 0) throw new Error(`prediction window: stampSkewMs must be a non-negative number, got ${skew}`);
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) throw new Error(`prediction window: concurrency must be a positive integer, got ${concurrency}`);
  const prefixes = hourPrefixes(model, from, to);

  const listed = (await Promise.all(prefixes.map((p) => store.list(p)))).flat();
  const wanted = listed.filter((key) => {
    if (!key.endsWith('.jsonl')) return false;
    const stamp = batchStampMs(key);
    return stamp === null || stamp < to.getTime() + skew;
  });

  await mkdir(dir, { recursive: true });
  const base = keys.predictionsPrefix(model);
  // Day, hour and name together: unique per key, and flat so no directories are needed.
  const files = wanted.map((key) => join(dir, key.slice(base.length).replaceAll('/', '_')));
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < wanted.length) {
      const i = next++;
      await store.getToFile(wanted[i]!, files[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, wanted.length) }, worker));
  return { files, objects: listed.length, skipped: listed.length - wanted.length };
}

/** The raw JSON fields as read; everything loosely typed so one bad field cannot fail a file. */
const RAW_COLUMNS =
  `{requestId: 'VARCHAR', rowIndex: 'BIGINT', time: 'VARCHAR', model: 'VARCHAR', version: 'BIGINT', sha256: 'VARCHAR', ` +
  `arm: 'VARCHAR', rolloutId: 'VARCHAR', features: 'JSON', output: 'JSON', error: 'VARCHAR', latencyMs: 'DOUBLE'}`;

export interface PredictionTable {
  /** Rows loaded into the table. */
  rows: number;
  /** Lines skipped: unparseable JSON, or a missing/invalid requestId, rowIndex, time, version or arm. */
  invalidRows: number;
}

/**
 * (Re)creates the table `predictions` from downloaded JSON-lines batches, with a fixed
 * schema whatever the files hold, so an empty window (no files) is an empty table.
 * A row counts as failed when it has an `error` or no `output`.
 */
export async function openPredictionTable(conn: DuckDBConnection, files: readonly string[]): Promise<PredictionTable> {
  await conn.run(
    `CREATE OR REPLACE TABLE ${PREDICTIONS_TABLE} (
      requestId VARCHAR NOT NULL, rowIndex BIGINT NOT NULL, "time" TIMESTAMPTZ NOT NULL, model VARCHAR, version BIGINT NOT NULL,
      sha256 VARCHAR, arm VARCHAR NOT NULL, rolloutId VARCHAR, features JSON, output JSON, error VARCHAR, latencyMs DOUBLE)`,
  );
  if (files.length === 0) return { rows: 0, invalidRows: 0 };
  const source =
    `read_json([${files.map(sqlString).join(', ')}], format = 'newline_delimited', columns = ${RAW_COLUMNS}, ` +
    `ignore_errors = true, maximum_object_size = 67108864)`;
  await conn.run(`CREATE OR REPLACE TEMP TABLE raw_predictions AS SELECT *, TRY_CAST("time" AS TIMESTAMPTZ) AS parsed_time FROM ${source}`);
  try {
    await conn.run(
      `INSERT INTO ${PREDICTIONS_TABLE}
       SELECT requestId, rowIndex, parsed_time, model, version, sha256, arm, rolloutId, features, output, error, latencyMs
       FROM raw_predictions
       WHERE requestId IS NOT NULL AND rowIndex IS NOT NULL AND parsed_time IS NOT NULL AND version IS NOT NULL
         AND arm IN (${ARMS.map(sqlString).join(', ')})`,
    );
    const total = Number((await firstRow(conn, 'SELECT count(*) AS n FROM raw_predictions'))['n'] ?? 0);
    const rows = Number((await firstRow(conn, `SELECT count(*) AS n FROM ${PREDICTIONS_TABLE}`))['n'] ?? 0);
    // ignore_errors turns an unparseable line into an all-NULL row, but blank lines yield no row at all
    return { rows, invalidRows: total - rows };
  } finally {
    await conn.run('DROP TABLE IF EXISTS raw_predictions');
  }
}
