import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { InferenceSession } from 'onnxruntime-node';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  ArtifactIntegrityError,
  buildColumns,
  columnBuffers,
  InputValidationError,
  ModelSignatureError,
  loadModel,
  parseModelMetadata,
  sha256Hex,
} from '../../src/eval/onnx-model.js';
import type { LoadedModel, ModelMetadata, Prediction } from '../../src/eval/onnx-model.js';
import { loadModelOnThread } from '../../src/eval/threaded-model.js';
import { creditRows, FIXTURE_METADATA_BYTES, FIXTURE_MODEL_BYTES, FIXTURE_MODEL_SHA } from '../helpers/fixture-model.js';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/models/tiny/${name}`, import.meta.url));
const classifierBytes = new Uint8Array(readFileSync(fixture('tiny-classifier.onnx')));
const regressorBytes = new Uint8Array(readFileSync(fixture('tiny-regressor.onnx')));
const classifierMeta = parseModelMetadata(JSON.parse(readFileSync(fixture('tiny-classifier.metadata.json'), 'utf8')));
const regressorMeta = parseModelMetadata(JSON.parse(readFileSync(fixture('tiny-regressor.metadata.json'), 'utf8')));

// The reference rows used by make_tiny.py; "z" is a category unseen in training.
const refRows = [
  { x: -2, c: 'a' },
  { x: 0, c: 'b' },
  { x: 1.5, c: 'c' },
  { x: 3.25, c: 'z' },
  { x: -0.5, c: null },
];
// Printed by test/fixtures/models/tiny/make_tiny.py (onnxruntime 1.32 Python on the same .onnx files).
const refLabels = [0, 1, 1, 1, 0];
const refProbabilities = [
  [0.988456130027771, 0.011543869972229004],
  [0.4690743386745453, 0.5309256315231323],
  [0.008074522018432617, 0.9919254779815674],
  [0.002657264471054077, 0.9973427057266235],
  [0.5989040732383728, 0.4010959267616272],
];
const refValues = [-7.75586462020874, 1.2483162879943848, 7.734577655792236, 10.650617599487305, -0.5901718139648438];

function asClassification(p: Prediction) {
  if (p.task !== 'classification') throw new Error('expected a classification prediction');
  return p;
}
function asRegression(p: Prediction) {
  if (p.task !== 'regression') throw new Error('expected a regression prediction');
  return p;
}

const opened: LoadedModel[] = [];
async function open(bytes: Uint8Array, meta: ModelMetadata): Promise<LoadedModel> {
  const model = await loadModel(bytes, sha256Hex(bytes), meta);
  opened.push(model);
  return model;
}

afterEach(async () => {
  vi.restoreAllMocks();
  await Promise.all(opened.splice(0).map((m) => m.release()));
});

describe('sha256Hex', () => {
  it('hashes known input', () => {
    // Standard SHA-256 test vector for "abc".
    expect(sha256Hex(new TextEncoder().encode('abc'))).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
  });
});

describe('loadModel', () => {
  it('refuses a hash mismatch before creating a session', async () => {
    const create = vi.spyOn(InferenceSession, 'create');
    const wrong = '0'.repeat(64);
    const err = await loadModel(classifierBytes, wrong, classifierMeta).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ArtifactIntegrityError);
    expect((err as Error).message).toContain(wrong);
    expect((err as Error).message).toContain(sha256Hex(classifierBytes));
    expect(create).not.toHaveBeenCalled();
  });

  it('accepts an upper-case expected hash', async () => {
    // Also proves the spy in the mismatch test observes session creation.
    const create = vi.spyOn(InferenceSession, 'create');
    const model = await loadModel(classifierBytes, sha256Hex(classifierBytes).toUpperCase(), classifierMeta);
    opened.push(model);
    expect(model.sha256).toBe(sha256Hex(classifierBytes));
    expect(create).toHaveBeenCalledTimes(1);
  });

  it('names missing and extra inputs when the metadata does not match the model', async () => {
    const meta: ModelMetadata = { ...classifierMeta, inputs: [{ name: 'x', type: 'float' }, { name: 'age', type: 'float' }] };
    const err = await loadModel(classifierBytes, sha256Hex(classifierBytes), meta).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelSignatureError);
    expect((err as Error).message).toMatch(/in metadata but not in model: age/);
    expect((err as Error).message).toMatch(/in model but not in metadata: c/);
  });

  it('rejects an input declared with the wrong type or an unknown output', async () => {
    const wrongType: ModelMetadata = { ...classifierMeta, inputs: [{ name: 'x', type: 'float' }, { name: 'c', type: 'float' }] };
    await expect(loadModel(classifierBytes, sha256Hex(classifierBytes), wrongType)).rejects.toThrow(
      /input "c" is string, metadata says float/,
    );
    const wrongOutput: ModelMetadata = { ...classifierMeta, outputs: { label: 'label', probabilities: 'proba' } };
    await expect(loadModel(classifierBytes, sha256Hex(classifierBytes), wrongOutput)).rejects.toThrow(
      /no output "proba"/,
    );
  });
});

describe('LoadedModel.predict', () => {
  it('matches the Python onnxruntime classifier output', async () => {
    const model = await open(classifierBytes, classifierMeta);
    const p = asClassification(await model.predict(refRows));
    expect(p.labels).toEqual(refLabels);
    expect(p.classes).toEqual([0, 1]);
    expect(p.probabilities).toBeInstanceOf(Float32Array);
    expect(p.probabilities).toHaveLength(refRows.length * 2);
    refProbabilities.flat().forEach((v, i) => expect(Math.abs(p.probabilities[i]! - v)).toBeLessThan(1e-5));
  });

  it('matches the Python onnxruntime regressor output', async () => {
    const model = await open(regressorBytes, regressorMeta);
    const p = asRegression(await model.predict(refRows));
    expect(p.values).toBeInstanceOf(Float64Array);
    expect(p.values).toHaveLength(refValues.length);
    refValues.forEach((v, i) => expect(Math.abs(p.values[i]! - v)).toBeLessThan(1e-5));
  });

  it('coerces numeric strings and categorical numbers, and maps missing values', async () => {
    const model = await open(regressorBytes, regressorMeta);
    const p = asRegression(await model.predict([{ x: ' 1.5 ', c: 'c' }, { x: 1.5, c: 7 }, { x: -0.5 }]));
    expect(Math.abs(p.values[0]! - refValues[2]!)).toBeLessThan(1e-5);
    // 7 is an unseen category (like "z"): only x contributes beyond the intercept.
    expect(Number.isFinite(p.values[1])).toBe(true);
    // A missing categorical becomes "__missing__", same as the null in refRows[4].
    expect(Math.abs(p.values[2]! - refValues[4]!)).toBeLessThan(1e-5);

    const nan = asRegression(await model.predict([{ x: null, c: 'a' }, { x: '', c: 'a' }]));
    expect(Number.isNaN(nan.values[0])).toBe(true);
    expect(Number.isNaN(nan.values[1])).toBe(true);
  });

  it('names the field and row of a value of the wrong kind', async () => {
    const model = await open(classifierBytes, classifierMeta);
    const rows = [{ x: 1, c: 'a' }, { x: 2, c: 'b' }, { x: 'abc', c: 'a' }];
    const err = await model.predict(rows).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputValidationError);
    expect(err).toMatchObject({ field: 'x', rowIndex: 2 });
    expect((err as Error).message).toMatch(/row 2, field "x".*"abc"/);
    await expect(model.predict([{ x: 1, c: { nested: true } }])).rejects.toThrow(/row 0, field "c"/);
    await expect(model.predict([{ x: true, c: 'a' }])).rejects.toThrow(/field "x": expected a number, got boolean/);
  });

  it('gives identical results batched and unbatched', async () => {
    const model = await open(classifierBytes, classifierMeta);
    const cats = ['a', 'b', 'c', 'z', null];
    const rows = Array.from({ length: 53 }, (_, i) => ({ x: (i - 26) / 7, c: cats[i % cats.length] }));
    const whole = asClassification(await model.predict(rows));
    for (const batchSize of [1, 7, 53, 1000]) {
      const batched = asClassification(await model.predict(rows, { batchSize }));
      expect(batched.labels).toEqual(whole.labels);
      expect(Array.from(batched.probabilities)).toEqual(Array.from(whole.probabilities));
    }
    const reg = await open(regressorBytes, regressorMeta);
    const a = asRegression(await reg.predict(rows));
    const b = asRegression(await reg.predict(rows, { batchSize: 5 }));
    expect(Array.from(b.values)).toEqual(Array.from(a.values));
  });

  it('handles empty input and rejects a bad batch size', async () => {
    const model = await open(classifierBytes, classifierMeta);
    const p = asClassification(await model.predict([]));
    expect(p.labels).toEqual([]);
    expect(p.probabilities).toHaveLength(0);
    await expect(model.predict(refRows, { batchSize: 0 })).rejects.toThrow(/batchSize/);
  });

  it('derives labels from probabilities when the model has no label output', async () => {
    const meta: ModelMetadata = { ...classifierMeta, outputs: { probabilities: 'probabilities' } };
    const model = await open(classifierBytes, meta);
    expect(asClassification(await model.predict(refRows)).labels).toEqual(refLabels);
  });

  it('refuses to predict after release', async () => {
    const model = await loadModel(classifierBytes, sha256Hex(classifierBytes), classifierMeta);
    await model.release();
    await model.release();
    await expect(model.predict(refRows)).rejects.toThrow(/released/);
  });
});

describe('a model on a thread of its own (rows sent as columns)', () => {
  it('answers exactly as the same model in process, for the classifier and the regressor', async () => {
    const cats = ['a', 'b', 'c', 'z', null];
    const rows = Array.from({ length: 37 }, (_, i) => ({ x: (i - 18) / 5, c: cats[i % cats.length] }));
    for (const [bytes, meta] of [[classifierBytes, classifierMeta], [regressorBytes, regressorMeta]] as const) {
      const local = await open(bytes, meta);
      const threaded = await loadModelOnThread(bytes, sha256Hex(bytes), meta);
      opened.push(threaded);
      for (const batch of [rows, rows.slice(0, 1), refRows]) expect(await threaded.predict(batch)).toEqual(await local.predict(batch));
    }
  });

  it('checks values before anything is sent: the error names the field and row, with its type', async () => {
    const threaded = await loadModelOnThread(classifierBytes, sha256Hex(classifierBytes), classifierMeta);
    opened.push(threaded);
    const err = await threaded.predict([{ x: 1, c: 'a' }, { x: 'abc', c: 'a' }]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputValidationError);
    expect(err).toMatchObject({ field: 'x', rowIndex: 1 });
    // The thread is still answering.
    expect(asClassification(await threaded.predict(refRows)).labels).toEqual(refLabels);
  });

  it('a model of several float inputs: their columns share one buffer (one transfer), and each row gets its own answer', async () => {
    const meta = parseModelMetadata(JSON.parse(FIXTURE_METADATA_BYTES.toString('utf8')));
    const rows = creditRows(64);
    const columns = buildColumns(rows, meta);
    const floats = meta.inputs.filter((i) => i.type === 'float').map((i) => columns[i.name] as Float32Array);
    expect(floats.length).toBeGreaterThan(5);
    expect(new Set(floats.map((c) => c.buffer)).size).toBe(1);
    expect(columnBuffers(columns)).toEqual([floats[0]!.buffer]);
    // Each view is its own input's values, in row order (not another input's, not offset).
    for (const input of meta.inputs) {
      if (input.type === 'float') expect(Array.from(columns[input.name] as Float32Array)).toEqual(rows.map((r) => Math.fround(Number(r[input.name] ?? NaN))));
      else expect(columns[input.name]).toEqual(rows.map((r) => String(r[input.name])));
    }

    const inProcess = await loadModel(FIXTURE_MODEL_BYTES, FIXTURE_MODEL_SHA, meta);
    const threaded = await loadModelOnThread(FIXTURE_MODEL_BYTES, FIXTURE_MODEL_SHA, meta);
    opened.push(inProcess, threaded);
    const batch = asClassification(await threaded.predict(rows));
    for (let i = 0; i < rows.length; i++) {
      const alone = asClassification(await inProcess.predict([rows[i]!]));
      expect(batch.labels[i]).toBe(alone.labels[0]);
      for (let j = 0; j < 2; j++) expect(Math.abs(batch.probabilities[i * 2 + j]! - alone.probabilities[j]!)).toBeLessThan(1e-6);
    }
  });

  it('predictColumns refuses a column whose length is not the row count, naming it', async () => {
    const model = await loadModel(classifierBytes, sha256Hex(classifierBytes), classifierMeta);
    opened.push(model);
    const columns = buildColumns(refRows, classifierMeta);
    expect(asClassification(await model.predictColumns(columns, refRows.length)).labels).toEqual(refLabels);
    await expect(model.predictColumns({ ...columns, c: ['a'] }, refRows.length)).rejects.toThrow(/input column "c" has 1 values, expected 5/);
    await expect(model.predictColumns({ x: columns.x! }, refRows.length)).rejects.toThrow(/input column "c" has no values, expected 5/);
  });
});

describe('modelMetadataSchema / parseModelMetadata', () => {
  it('names the offending fields', () => {
    expect(() => parseModelMetadata({ ...classifierMeta, task: 'ranking' })).toThrow(/task: task must be/);
    expect(() =>
      parseModelMetadata({ ...classifierMeta, inputs: [{ name: 'x', type: 'int' }] }),
    ).toThrow(/inputs\.0\.type: inputs\[\]\.type must be "float" or "string"/);
    expect(() => parseModelMetadata({ ...classifierMeta, classes: undefined })).toThrow(/classes: classes must list/);
    expect(() => parseModelMetadata({ ...regressorMeta, outputs: {} })).toThrow(/outputs\.value is required/);
    expect(() => parseModelMetadata({ ...classifierMeta, framework: 3 })).toThrow(/framework: framework must be a string/);
    expect(() =>
      parseModelMetadata({ ...classifierMeta, inputs: [{ name: 'x', type: 'float' }, { name: 'x', type: 'float' }] }),
    ).toThrow(/duplicate name "x"/);
  });

  it('accepts the fixture metadata', () => {
    expect(classifierMeta).toMatchObject({ task: 'classification', classes: [0, 1] });
    expect(regressorMeta).toMatchObject({ task: 'regression', outputs: { value: 'variable' } });
  });
});
