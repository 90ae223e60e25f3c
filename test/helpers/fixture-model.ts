import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ArtifactStore } from '../../src/store/artifact-store.js';
import type { Registry } from '../../src/registry/registry.js';
import type { ModelVersionRecord } from '../../src/shared/registry-types.js';
import { sha256Hex } from '../../src/eval/onnx-model.js';
import { keys } from '../../src/store/keys.js';
import { COLUMNS } from '../../examples/credit-risk/generate.js';

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
