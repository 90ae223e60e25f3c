import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ArtifactStore } from '../../src/store/artifact-store.js';
import type { Registry } from '../../src/registry/registry.js';
import type { ModelVersionRecord } from '../../src/shared/registry-types.js';
import { sha256Hex } from '../../src/eval/onnx-model.js';
import { keys } from '../../src/store/keys.js';
import { COLUMNS, generateCreditRisk } from '../../examples/credit-risk/generate.js';
import { loadModel, parseModelMetadata } from '../../src/eval/onnx-model.js';
import type { EvaluationSample } from '../../activities/evaluation.js';

/** The credit-risk fixture model's inputs: the generator's columns less the target. */
export const FIXTURE_FEATURES = COLUMNS.filter((c) => c !== 'default');

/**
 * A complete version record for a model artifact stored by a test (no pipeline run):
 * the artifact fields are the test's, the lineage fields plausible constants.
 */
export function fixtureVersionDraft(input: {
  model: string;
  artifact: { sha256: string; key: string; size: number; metadataKey: string };
  run: string;
}): Omit<ModelVersionRecord, 'version' | 'createdAt'> {
  const dataSha = sha256Hex(Buffer.from('data'));
  return {
    schemaVersion: 1,
    model: input.model,
    task: 'classification',
    target: 'default',
    features: [...FIXTURE_FEATURES],
    artifact: { ...input.artifact, framework: 'scikit-learn', algorithm: 'logistic_regression' },
    data: {
      sha256: dataSha,
      key: keys.dataset(dataSha),
      source: 'credit-risk.csv',
      format: 'csv',
      size: 1,
      profileKey: keys.profile(dataSha, sha256Hex(Buffer.from('schema'))),
      rowCount: 4000,
      split: { seed: 7, holdoutFraction: 0.25, trainKey: 't', holdoutKey: 'h', trainRows: 3000, holdoutRows: 1000 },
    },
    trainer: { kind: 'command', entry: 'train_sklearn.py', params: {}, codeHashes: {} },
    code: { specHash: dataSha, gitCommit: null, gitDirty: false, pipelineFile: null },
    evaluation: { reportKey: 'r', metrics: {}, gates: [], production: null },
    run: { workflowId: `wf-${input.run}`, runId: `run-${input.run}`, submittedBy: 'test' },
  };
}

const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/models/${name}`, import.meta.url));
/** The credit-risk scikit-learn fixture model (test/fixtures/models), its metadata and hash. */
export const FIXTURE_MODEL_BYTES = readFileSync(fixture('credit-sklearn.onnx'));
export const FIXTURE_METADATA_BYTES = readFileSync(fixture('credit-sklearn.metadata.json'));
export const FIXTURE_MODEL_SHA = sha256Hex(FIXTURE_MODEL_BYTES);

/** The deliberately bad fixture models (test/fixtures/models/bad/README.md); their metadata is credit-sklearn's. */
export const BAD_MODELS = {
  /** Fails at inference whenever a row has age > 100; the same answers as credit-sklearn otherwise. */
  erroring: readFileSync(fixture('bad/credit-erroring.onnx')),
  /** The same answers as credit-sklearn, each run ~30 ms slower. */
  slow: readFileSync(fixture('bad/credit-slow.onnx')),
};

/** Feature rows from the example's generator (seeded), without the target. */
export function creditRows(n: number, seed = 11): Array<Record<string, string | number | null>> {
  return generateCreditRisk({ rows: n, seed }).map((row) => Object.fromEntries(FIXTURE_FEATURES.map((f) => [f, row[f] ?? null])));
}

/**
 * Stores model bytes (default: the credit-sklearn fixture) and registers them as the
 * next version of `model`, with an evaluation report holding the sample answers that
 * pre-deployment validation compares against, as a pipeline run would.
 */
export async function registerFixtureVersion(store: ArtifactStore, registry: Registry, model: string, run: string, bytes: Buffer = FIXTURE_MODEL_BYTES): Promise<ModelVersionRecord> {
  const sha = sha256Hex(bytes);
  const metadataKey = keys.modelMetadata(sha256Hex(FIXTURE_METADATA_BYTES));
  await store.put(keys.modelBlob(sha), bytes);
  await store.put(metadataKey, FIXTURE_METADATA_BYTES);
  const rows = creditRows(50);
  const loaded = await loadModel(bytes, sha, parseModelMetadata(JSON.parse(FIXTURE_METADATA_BYTES.toString('utf8'))));
  const prediction = await loaded.predict(rows).finally(() => loaded.release());
  if (prediction.task !== 'classification') throw new Error('fixture models are classifiers');
  const sample: EvaluationSample = { features: [...FIXTURE_FEATURES], rows, outputs: Array.from(prediction.probabilities), classes: [...prediction.classes] };
  const reportKey = keys.runReport(model, `wf-${run}`, `run-${run}`, 'evaluation-1');
  await store.put(reportKey, JSON.stringify({ model, sample }), { contentType: 'application/json' });
  const draft = fixtureVersionDraft({ model, artifact: { sha256: sha, key: keys.modelBlob(sha), size: bytes.length, metadataKey }, run });
  return registry.registerVersion({ ...draft, evaluation: { ...draft.evaluation, reportKey } });
}

/** Stores the fixture model, registers it as version 1 of `model` and points `production` at it. */
export async function deployFixtureModel(store: ArtifactStore, registry: Registry, model: string): Promise<void> {
  const metadataKey = keys.modelMetadata(sha256Hex(FIXTURE_METADATA_BYTES));
  await store.put(keys.modelBlob(FIXTURE_MODEL_SHA), FIXTURE_MODEL_BYTES);
  await store.put(metadataKey, FIXTURE_METADATA_BYTES);
  await registry.registerVersion(
    fixtureVersionDraft({ model, artifact: { sha256: FIXTURE_MODEL_SHA, key: keys.modelBlob(FIXTURE_MODEL_SHA), size: FIXTURE_MODEL_BYTES.length, metadataKey }, run: '1' }),
  );
  await registry.moveAlias({ model, alias: 'production', version: 1, expectedVersion: null, run: { workflowId: 'wf-p1', runId: 'run-p1' } });
}
