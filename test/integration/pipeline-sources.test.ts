import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DuckDBInstance } from '@duckdb/node-api';
import { startPipeline, waitForRun } from '../../src/runs.js';
import { RunOutcome } from '../../src/shared/errors.js';
import { MinioArtifactStore } from '../../src/store/minio-store.js';
import { startTestEnv, type TestEnv } from '../helpers/stack.js';
import { examplePipeline } from '../helpers/pipelines.js';

const CSV = resolve('examples/credit-risk/data/credit-risk.csv');

describe('dataset sources: Parquet files and s3:// objects', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await startTestEnv('sources');
  });
  afterAll(async () => env?.close());

  it('a Parquet dataset runs through every stage', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'conveyor-parquet-')), 'credit.parquet');
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    await conn.run(`COPY (SELECT * FROM read_csv('${CSV}', header = true)) TO '${path}' (FORMAT parquet)`);
    conn.closeSync();
    db.closeSync();
    const pipeline = await examplePipeline((s) => ({ ...s, name: 'credit-parquet', dataset: { source: path } }));
    const end = await waitForRun(await startPipeline(env.client, env.config, pipeline));
    expect(end.message).toBeUndefined();
    expect(end.outcome).toBe(RunOutcome.Deployed);
    const record = await env.registry.getVersion('credit-parquet', 1);
    expect(record.data.format).toBe('parquet');
    expect(record.data.rowCount).toBe(4000);
  });

  it('an s3:// dataset in another bucket is copied in content-addressed; its hash is the data version', async () => {
    const source = new MinioArtifactStore({ ...env.config.s3, bucket: `${env.config.s3.bucket}-raw` });
    await source.ensureBucket();
    const { readFileSync } = await import('node:fs');
    const bytes = readFileSync(CSV);
    await source.put('incoming/2026-11/credit.csv', bytes);
    const pipeline = await examplePipeline((s) => ({ ...s, name: 'credit-s3', dataset: { source: `s3://${source.bucket}/incoming/2026-11/credit.csv` } }));
    const end = await waitForRun(await startPipeline(env.client, env.config, pipeline));
    expect(end.outcome).toBe(RunOutcome.Deployed);
    const record = await env.registry.getVersion('credit-s3', 1);
    const { createHash } = await import('node:crypto');
    expect(record.data.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect(record.data.source).toBe(`s3://${source.bucket}/incoming/2026-11/credit.csv`);
    expect(await env.store.head(record.data.key)).toMatchObject({ size: bytes.length });
  });

  it('a missing s3:// object fails the run without registering anything', async () => {
    const pipeline = await examplePipeline((s) => ({ ...s, name: 'credit-s3-missing', dataset: { source: `s3://${env.config.s3.bucket}/nope/missing.csv` } }));
    const end = await waitForRun(await startPipeline(env.client, env.config, pipeline));
    expect(end.outcome).toBe(RunOutcome.DataInvalid);
    expect(end.message).toContain('nope/missing.csv');
    expect(await env.registry.listVersions('credit-s3-missing')).toEqual([]);
  });
});
