import { listValue } from '@duckdb/node-api';
import type { DuckDBConnection, DuckDBValue } from '@duckdb/node-api';
import type { ColumnSpec, Expectation, PipelineSpec } from '../spec/schema.js';
import { columnRelation, featureKind, parsedSql } from './features.js';
import { DATASET_TABLE, firstRow, tableShape } from './load.js';
import type { CustomCheck, ValidationFailure, ValidationReport } from './types.js';

export interface ValidateOptions {
  customChecks?: Record<string, CustomCheck>;
  /** Defaults to DATASET_TABLE. */
  table?: string;
}

type Row = Record<string, unknown>;

/** One aggregate in a column's single query, and how to read its result. */
interface Probe {
  sql: string;
  judge(result: Row, base: { rowCount: number; nulls: number }): ValidationFailure | null;
}

class Params {
  readonly values: DuckDBValue[] = [];
  add(value: DuckDBValue): string {
    this.values.push(value);
    return `$${this.values.length}`;
  }
}

const EXAMPLE_LIMIT = 3;

/** Reports every data problem it finds; throws only when DuckDB itself fails. */
export async function validateDataset(
  conn: DuckDBConnection,
  spec: PipelineSpec,
  opts: ValidateOptions = {},
): Promise<ValidationReport> {
  const table = opts.table ?? DATASET_TABLE;
  const failures: ValidationFailure[] = [];
  let checks = 0;
  const record = (f: ValidationFailure | null): void => {
    checks++;
    if (f) failures.push(f);
  };

  const { columns: present, rowCount } = await tableShape(conn, table);
  const target = spec.target.column;

  for (const column of Object.keys(spec.schema.columns)) {
    const missing = !present.includes(column);
    record(missing ? { rule: 'missing_column', column, message: `missing column ${column}${column === target ? ' (the target)' : ''}` } : null);
  }
  if (!spec.schema.allowExtraColumns) {
    const extra = present.filter((c) => !(c in spec.schema.columns));
    checks++;
    for (const column of extra) {
      failures.push({ rule: 'extra_column', column, message: `unexpected column ${column} (set schema.allowExtraColumns to allow it)` });
    }
  }

  for (const [column, colSpec] of Object.entries(spec.schema.columns)) {
    if (!present.includes(column)) continue;
    const expectations = spec.expectations.filter((e) => 'column' in e && e.column === column && e.rule !== 'custom');
    const params = new Params();
    const relation = columnRelation(table, column, colSpec.type);
    const probes = [...schemaProbes(column, colSpec, column === target, params)];
    if (column === target) probes.push(...targetProbes(column, colSpec, spec.target.task, record));
    for (const e of expectations) {
      const probe = expectationProbe(e, column, colSpec, relation, params);
      if ('sql' in probe) probes.push(probe);
      else record(probe.failure);
    }
    const aggregates = ['count_if(s IS NULL) AS nulls', ...probes.map((p, i) => `${p.sql} AS p${i}`)];
    const sql = `SELECT ${aggregates.join(', ')} FROM ${relation}`;
    const row = await firstRow(conn, sql, params.values);
    const base = { rowCount, nulls: num(row['nulls']) };
    probes.forEach((p, i) => record(p.judge((row[`p${i}`] ?? {}) as Row, base)));
  }

  for (const e of spec.expectations) {
    if (e.rule === 'row_count') record(rowCountFailure(e, rowCount));
    if (e.rule === 'custom' && (e.column === undefined || present.includes(e.column))) {
      record(await runCustom(e.check, e.column, opts.customChecks ?? {}, conn, table));
    }
  }

  return { passed: failures.length === 0, rowCount, failures, checks };
}

/** Counts rows matching cond, keeping the first few offending texts (or 1-based row numbers). */
function counted(cond: string, example = 's'): string {
  return `struct_pack(n := count_if(${cond}), ex := min_by(${example}, rid, 10) FILTER (WHERE ${cond}))`;
}

function violation(
  rule: string,
  column: string,
  r: Row,
  describe: (n: number, ex: string) => string,
  extra?: Record<string, unknown>,
  examplesKey: 'examples' | 'rows' = 'examples',
): ValidationFailure | null {
  const count = num(r['n']);
  if (count === 0) return null;
  const found = ((r['ex'] as unknown[] | null) ?? []).map((x) => (typeof x === 'bigint' ? Number(x) : x));
  const examples = [...new Set(found)].slice(0, EXAMPLE_LIMIT);
  const shown = examples.map((x) => (examplesKey === 'rows' ? String(x) : JSON.stringify(x))).join(', ');
  const exText = examples.length ? ` (${examplesKey === 'rows' ? 'rows' : 'e.g.'} ${shown})` : '';
  return { rule, column, message: describe(count, exText), details: { count, [examplesKey]: examples, ...extra } };
}

/** Row numbers are 1-based data rows (the header not counted). */
function nullProbe(column: string, rule: string, what: string): Probe {
  return {
    sql: counted('s IS NULL', 'rid + 1'),
    judge: (r, b) => violation(rule, column, r, (n, ex) => `${n} of ${b.rowCount} rows are null but ${what}${ex}`, undefined, 'rows'),
  };
}

function schemaProbes(column: string, col: ColumnSpec, isTarget: boolean, params: Params): Probe[] {
  const probes: Probe[] = [];
  const numeric = featureKind(col.type) === 'numeric';
  if (col.type !== 'categorical') {
    probes.push({
      sql: counted('s IS NOT NULL AND NOT ok'),
      judge: (r) => violation('type', column, r, (n, ex) => `${are(n)} not valid ${col.type}${ex}`, { expected: col.type }),
    });
  }
  if (numeric) {
    probes.push({
      sql: counted('ok AND NOT isfinite(p)'),
      judge: (r) => violation('finite', column, r, (n, ex) => `${are(n)} NaN or infinite${ex}`),
    });
  }
  if (!col.nullable || isTarget) probes.push(nullProbe(column, 'not_null', isTarget ? 'the target cannot be null' : 'the column is not nullable'));
  if (numeric && (col.min !== undefined || col.max !== undefined)) {
    probes.push(rangeProbe('range', column, col.min, col.max, params));
  }
  if (col.values) probes.push(setProbe('domain', column, col, col.values, params));
  return probes;
}

function rangeProbe(rule: string, column: string, min: number | undefined, max: number | undefined, params: Params): Probe {
  const below = min === undefined ? 'false' : `v < ${params.add(min)}::DOUBLE`;
  const above = max === undefined ? 'false' : `v > ${params.add(max)}::DOUBLE`;
  return {
    sql: `struct_pack(n := count_if(${below} OR ${above}), below := count_if(${below}), above := count_if(${above}), ex := min_by(s, rid, 10) FILTER (WHERE ${below} OR ${above}))`,
    judge: (r) =>
      violation(rule, column, r, (n, ex) => `${are(n)} outside [${min ?? '-inf'}, ${max ?? 'inf'}]${ex}`, {
        below: num(r['below']),
        above: num(r['above']),
        min,
        max,
      }),
  };
}

function setProbe(rule: string, column: string, col: ColumnSpec, values: string[], params: Params): Probe {
  // allowed values are read the way the column is, so "1" matches 1.0 in a float column
  const allowed = `[${parsedSql('x', col.type)} FOR x IN ${params.add(listValue(values))}::VARCHAR[]]`;
  return {
    sql: counted(`v IS NOT NULL AND NOT list_contains(${allowed}, v)`),
    judge: (r) => violation(rule, column, r, (n, ex) => `${are(n)} not in the allowed set${ex}`, { allowed: values }),
  };
}

function targetProbes(column: string, col: ColumnSpec, task: PipelineSpec['target']['task'], record: (f: ValidationFailure | null) => void): Probe[] {
  if (task === 'regression') {
    record(featureKind(col.type) === 'numeric' ? null : { rule: 'target_type', column, message: `a regression target must be numeric, not ${col.type}` });
    return [];
  }
  return [
    {
      sql: `struct_pack(classes := count(DISTINCT v), sole := CAST(min(v) AS VARCHAR))`,
      judge: (r) => {
        const classes = num(r['classes']);
        if (classes >= 2) return null;
        const message = classes === 0 ? 'target has no valid values' : `single-class target: only value ${String(r['sole'])} present`;
        return { rule: 'target_classes', column, message, details: { classes } };
      },
    },
  ];
}

function expectationProbe(e: Expectation, column: string, col: ColumnSpec, relation: string, params: Params): Probe | { failure: ValidationFailure | null } {
  const numeric = featureKind(col.type) === 'numeric';
  const needsNumeric = (): { failure: ValidationFailure } => ({
    failure: { rule: e.rule, column, message: `${e.rule} needs a numeric column, but ${column} is ${col.type}` },
  });
  switch (e.rule) {
    case 'not_null':
      return nullProbe(column, 'not_null', 'expectation not_null forbids nulls');
    case 'between':
      return numeric ? rangeProbe('between', column, e.min, e.max, params) : needsNumeric();
    case 'in_set':
      return setProbe('in_set', column, col, e.values, params);
    case 'unique':
      return {
        // the example subquery costs a second pass, but only for columns that expect uniqueness
        sql:
          `struct_pack(n := count(v) - count(DISTINCT v), ex := (SELECT min_by(CAST(v AS VARCHAR), first, 10) FROM ` +
          `(SELECT v, min(rid) AS first FROM ${relation} WHERE v IS NOT NULL GROUP BY v HAVING count(*) > 1)))`,
        judge: (r) => violation('unique', column, r, (n, ex) => `${n} ${n === 1 ? 'value repeats' : 'values repeat'} an earlier value${ex}`),
      };
    case 'max_null_fraction':
      return {
        sql: 'NULL',
        judge: (_r, b) => {
          const fraction = b.rowCount === 0 ? 0 : b.nulls / b.rowCount;
          if (fraction <= e.max) return null;
          return { rule: e.rule, column, message: `null fraction ${round(fraction)} exceeds ${e.max}`, details: { nulls: b.nulls, fraction, max: e.max } };
        },
      };
    case 'mean_between':
      if (!numeric) return needsNumeric();
      return {
        sql: 'struct_pack(mean := avg(v))',
        judge: (r) => {
          const mean = r['mean'] === null || r['mean'] === undefined ? null : Number(r['mean']);
          if (mean !== null && mean >= e.min && mean <= e.max) return null;
          const message = mean === null ? 'mean is undefined: no finite values' : `mean ${round(mean)} is outside [${e.min}, ${e.max}]`;
          return { rule: e.rule, column, message, details: { mean, min: e.min, max: e.max } };
        },
      };
    case 'row_count':
    case 'custom':
      return { failure: null }; // table-level, checked after the columns
  }
}

function rowCountFailure(e: Extract<Expectation, { rule: 'row_count' }>, rowCount: number): ValidationFailure | null {
  if ((e.min === undefined || rowCount >= e.min) && (e.max === undefined || rowCount <= e.max)) return null;
  return { rule: 'row_count', message: `row count ${rowCount} is outside [${e.min ?? 0}, ${e.max ?? 'inf'}]`, details: { rowCount, min: e.min, max: e.max } };
}

async function runCustom(
  name: string,
  column: string | undefined,
  checks: Record<string, CustomCheck>,
  connection: DuckDBConnection,
  table: string,
): Promise<ValidationFailure | null> {
  const failure = (message: string, extra?: Record<string, unknown>): ValidationFailure => ({
    rule: 'custom',
    ...(column === undefined ? {} : { column }),
    message,
    details: { check: name, ...extra },
  });
  const check = Object.hasOwn(checks, name) ? checks[name] : undefined;
  if (!check) return failure(`unknown custom check "${name}"`);
  try {
    const result = await check({ connection, table, ...(column === undefined ? {} : { column }) });
    return result.passed ? null : failure(`custom check "${name}" failed: ${result.message}`);
  } catch (err) {
    // a crashing check is as deterministic as a failing one; retrying would not help
    return failure(`custom check "${name}" threw: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function are(n: number): string {
  return n === 1 ? '1 value is' : `${n} values are`;
}

function num(value: unknown): number {
  return value === null || value === undefined ? 0 : Number(value);
}

function round(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}
