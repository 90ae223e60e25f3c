import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extname, isAbsolute, join } from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import { ErrorType } from '../src/shared/errors.js';
import type { DatasetRef, SplitRef } from '../src/shared/registry-types.js';
import type { PipelineSpec } from '../src/spec/schema.js';
import { keys } from '../src/store/keys.js';
import { ObjectNotFoundError, PreconditionFailedError } from '../src/store/artifact-store.js';
import { openDataset } from '../src/data/load.js';
import { validateDataset as runValidation } from '../src/data/validate.js';
import { profileDataset } from '../src/data/profile.js';
import { splitDataset as runSplit } from '../src/data/split.js';
import { featureColumns, featureKind } from '../src/data/features.js';
import { DATASET_TABLE } from '../src/data/load.js';
import { buildReferenceProfile, tableRelation } from '../src/monitoring/reference.js';
import { canonicalJson } from '../src/spec/canonical.js';
import type { ActivityDeps } from './deps.js';
import { activityLogger, withHeartbeat, withScratchDir } from './context.js';
import { classified } from './errors.js';

export interface IngestInput {
  model: string;
  source: string;
}

export interface ValidateInput {
  model: string;
  dataset: DatasetRef;
  spec: PipelineSpec;
  workflowId: string;
  runId?: string;
}

export interface ValidationSummary {
  rowCount: number;
  profileKey: string;
  reportKey: string;
}

export interface SplitInput {
  model: string;
  dataset: DatasetRef;
  spec: PipelineSpec;
}

/** Copies `from` to `to` and hashes the bytes as they pass, so the hash is of exactly what was copied. */
async function copyHashing(from: NodeJS.ReadableStream, to: string): Promise<string> {
  const hash = createHash('sha256');
  const tap = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  await pipeline(from, tap, createWriteStream(to));
  return hash.digest('hex');
}

/** Identifies what a profile depends on besides the bytes: the declared schema. */
export function schemaHash(spec: PipelineSpec): string {
  return createHash('sha256')
    .update(canonicalJson({ columns: spec.schema.columns, target: spec.target, features: featureColumns(spec) }))
    .digest('hex');
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function parseS3(uri: string): { bucket: string; key: string } {
  const match = /^s3:\/\/([^/]+)\/(.+)$/.exec(uri);
  if (!match?.[1] || !match[2]) throw ApplicationFailure.nonRetryable(`invalid dataset URI "${uri}" (expected s3://bucket/key)`, ErrorType.DataValidation);
  return { bucket: match[1], key: match[2] };
}

export function dataActivities(deps: ActivityDeps) {
  const cacheDir = join(deps.workDir, 'cache', 'datasets');

  /** Returns a local path holding the dataset's exact bytes (verified by hash). */
  const cachePath = (sha256: string, format: string): string => join(cacheDir, `${sha256}.${format}`);

  async function materialize(dataset: DatasetRef): Promise<string> {
    await mkdir(cacheDir, { recursive: true });
    const path = cachePath(dataset.sha256, dataset.format);
    // Only verified bytes are ever renamed into the cache, so a hit needs no second hash.
    if (existsSync(path)) return path;
    const partial = `${path}.${randomUUID()}.download`;
    await deps.store.getToFile(dataset.key, partial);
    const actual = await sha256File(partial);
    if (actual !== dataset.sha256) {
      await rm(partial, { force: true });
      throw ApplicationFailure.nonRetryable(`stored dataset ${dataset.key} has hash ${actual}, expected ${dataset.sha256}`, ErrorType.ArtifactIntegrity);
    }
    await rename(partial, path);
    return path;
  }

  return {
    /** Stores the dataset content-addressed; its SHA-256 is the data version. */
    async ingestDataset(input: IngestInput): Promise<DatasetRef> {
      const log = activityLogger(deps.logger);
      return classified(() =>
        withHeartbeat(async () => {
          const format = extname(input.source).toLowerCase() === '.parquet' ? 'parquet' : 'csv';
          return withScratchDir(deps.workDir, async (dir) => {
            // Hash a private copy and upload that copy: a source rewritten meanwhile can never
            // put other bytes under this hash.
            const copy = join(dir, `source.${format}`);
            let sha256: string;
            if (input.source.startsWith('s3://')) {
              const { bucket, key } = parseS3(input.source);
              try {
                await deps.openBucket(bucket).getToFile(key, copy);
              } catch (err) {
                // "No such object" is an answer, not an outage: retrying cannot make it appear.
                if (err instanceof ObjectNotFoundError) {
                  throw ApplicationFailure.nonRetryable(`dataset object not found: ${input.source}`, ErrorType.DataValidation);
                }
                throw err;
              }
              sha256 = await sha256File(copy);
            } else {
              if (!isAbsolute(input.source) || !existsSync(input.source)) {
                throw ApplicationFailure.nonRetryable(`dataset file not found on this worker: ${input.source}`, ErrorType.DataValidation);
              }
              sha256 = await copyHashing(createReadStream(input.source), copy);
            }
            const size = (await stat(copy)).size;
            const ref: DatasetRef = { sha256, key: keys.dataset(sha256), source: input.source, format, size };
            if (!(await deps.store.head(ref.key))) {
              try {
                await deps.store.putStream(ref.key, createReadStream(copy), size, { ifAbsent: true });
              } catch (err) {
                if (!(err instanceof PreconditionFailedError)) throw err; // the same bytes, stored by another run
              }
            }
            try {
              await deps.store.put(keys.datasetInfo(sha256), JSON.stringify({ format, size, firstSource: input.source }), {
                contentType: 'application/json',
                ifAbsent: true,
              });
            } catch (err) {
              if (!(err instanceof PreconditionFailedError)) throw err;
            }
            // The copy was hashed as it was written: keep it, so validation on this worker need not download it.
            await mkdir(cacheDir, { recursive: true });
            if (!existsSync(cachePath(sha256, format))) await rename(copy, cachePath(sha256, format));
            log.info({ dataVersion: sha256, size, source: input.source }, 'dataset stored');
            return ref;
          });
        }),
      );
    },

    /** Profiles the data with DuckDB and checks schema and expectations; bad data stops the run. */
    async validateDataset(input: ValidateInput): Promise<ValidationSummary> {
      const log = activityLogger(deps.logger);
      return classified(() => withHeartbeat(async () => {
        const missing = input.spec.expectations.flatMap((e) => (e.rule === 'custom' && !deps.customChecks?.[e.check] ? [e.check] : []));
        if (missing.length) {
          throw ApplicationFailure.create({
            type: ErrorType.WorkerConfiguration,
            message: `custom check ${missing.map((m) => `"${m}"`).join(', ')} is not registered on this worker; start workers with --plugin <file> that defines it`,
          });
        }
        const path = await materialize(input.dataset);
        const reportKey = keys.runReport(input.model, input.workflowId, input.runId ?? 'run', 'validation');
        let dataset;
        try {
          dataset = await openDataset(path, input.dataset.format);
        } catch (err) {
          const failures = (err as { failures?: unknown }).failures;
          if (failures) await deps.store.put(reportKey, JSON.stringify({ passed: false, failures }, null, 2), { contentType: 'application/json' });
          throw err;
        }
        try {
          const report = await runValidation(dataset.connection, input.spec, { customChecks: deps.customChecks ?? {} });
          await deps.store.put(reportKey, JSON.stringify(report, null, 2), { contentType: 'application/json' });
          if (!report.passed) {
            const lines = report.failures.slice(0, 10).map((f) => `[${f.rule}${f.column ? ` ${f.column}` : ''}] ${f.message}`);
            log.warn({ failures: report.failures.length, reportKey }, 'data validation failed');
            throw ApplicationFailure.create({
              type: ErrorType.DataValidation,
              nonRetryable: true,
              message: `data validation failed (${report.failures.length} failures; report ${reportKey}):\n${lines.join('\n')}`,
              details: [report.failures],
            });
          }
          const profile = await profileDataset(dataset.connection, input.spec);
          const profileKey = keys.profile(input.dataset.sha256, schemaHash(input.spec));
          try {
            // Same bytes and same schema give the same profile; the first one written stays.
            await deps.store.put(profileKey, JSON.stringify(profile, null, 2), { contentType: 'application/json', ifAbsent: true });
          } catch (err) {
            if (!(err instanceof PreconditionFailedError)) throw err;
          }
          log.info({ rows: report.rowCount, checks: report.checks, profileKey }, 'data validated and profiled');
          return { rowCount: report.rowCount, profileKey, reportKey };
        } finally {
          dataset.close();
        }
      }));
    },

    /** Deterministic train/holdout split, stored content-addressed by data version and split settings. */
    async splitDataset(input: SplitInput): Promise<SplitRef> {
      const log = activityLogger(deps.logger);
      return classified(() => withHeartbeat(async () => {
        const { holdoutFraction, seed } = input.spec.split;
        const layout = createHash('sha256')
          .update(JSON.stringify({ features: featureColumns(input.spec), target: input.spec.target, columns: input.spec.schema.columns }))
          .digest('hex')
          .slice(0, 16);
        const trainKey = keys.split(input.dataset.sha256, seed, holdoutFraction, layout, 'train');
        const holdoutKey = keys.split(input.dataset.sha256, seed, holdoutFraction, layout, 'holdout');
        const countsKey = trainKey.replace(/train\.csv$/, 'counts.json');
        const referenceKey = trainKey.replace(/train\.csv$/, 'reference.json');
        /** The training split's reference profile, what drift monitoring compares served data with. */
        const writeReference = async (trainPath: string): Promise<void> => {
          const train = await openDataset(trainPath, 'csv');
          try {
            const features = featureColumns(input.spec).map((name) => {
              const column = input.spec.schema.columns[name]!;
              return { name, kind: featureKind(column.type), ...(column.min !== undefined ? { min: column.min } : {}), ...(column.max !== undefined ? { max: column.max } : {}) };
            });
            const reference = await buildReferenceProfile(train.connection, tableRelation(DATASET_TABLE), features);
            await deps.store.put(referenceKey, JSON.stringify(reference), { contentType: 'application/json' });
          } finally {
            train.close();
          }
        };
        const existing = await deps.store.getWithEtag(countsKey);
        if (existing) {
          const counts = JSON.parse(existing.body.toString('utf8')) as { trainRows: number; holdoutRows: number };
          // Splits made before monitoring existed have no reference yet.
          if (!(await deps.store.head(referenceKey))) {
            await withScratchDir(deps.workDir, async (dir) => {
              const trainPath = join(dir, 'train.csv');
              await deps.store.getToFile(trainKey, trainPath);
              await writeReference(trainPath);
            });
          }
          return { seed, holdoutFraction, trainKey, holdoutKey, ...counts, referenceKey };
        }
        const path = await materialize(input.dataset);
        return withScratchDir(deps.workDir, async (dir) => {
          const dataset = await openDataset(path, input.dataset.format);
          try {
            const split = await runSplit(dataset.connection, input.spec, dir);
            await deps.store.putStream(trainKey, createReadStream(split.trainPath), (await stat(split.trainPath)).size);
            await deps.store.putStream(holdoutKey, createReadStream(split.holdoutPath), (await stat(split.holdoutPath)).size);
            await writeReference(split.trainPath);
            // Written last: its presence means both splits are complete.
            await deps.store.put(countsKey, JSON.stringify({ trainRows: split.trainRows, holdoutRows: split.holdoutRows }), {
              contentType: 'application/json',
            });
            log.info({ trainRows: split.trainRows, holdoutRows: split.holdoutRows }, 'dataset split');
            return { seed, holdoutFraction, trainKey, holdoutKey, trainRows: split.trainRows, holdoutRows: split.holdoutRows, referenceKey };
          } finally {
            dataset.close();
          }
        });
      }));
    },

    materialize,
  };
}
