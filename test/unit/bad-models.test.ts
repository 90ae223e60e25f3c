import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, parseModelMetadata, sha256Hex } from '../../src/eval/onnx-model.js';
import type { LoadedModel, Prediction } from '../../src/eval/onnx-model.js';

// The deliberately bad variants of credit-sklearn in test/fixtures/models/bad (see its README).
const path = (rel: string) => fileURLToPath(new URL(rel, import.meta.url));

async function open(name: string): Promise<LoadedModel> {
  const bytes = new Uint8Array(readFileSync(path(`../fixtures/models/${name}.onnx`)));
  const metadata = parseModelMetadata(JSON.parse(readFileSync(path(`../fixtures/models/${name}.metadata.json`), 'utf8')));
  return loadModel(bytes, sha256Hex(bytes), metadata);
}

// The first 50 data rows of the credit-risk CSV, as strings: predict() parses numbers and
// treats "" as missing (NaN / ""), and ignores the extra `default` column.
function csvRows(count: number): Array<Record<string, string>> {
  const [header, ...lines] = readFileSync(path('../../examples/credit-risk/data/credit-risk.csv'), 'utf8').trim().split('\n');
  const names = header!.split(',');
  return lines.slice(0, count).map((line) => {
    const values = line.split(',');
    return Object.fromEntries(names.map((n, i) => [n, values[i] ?? '']));
  });
}

function asClassification(p: Prediction) {
  if (p.task !== 'classification') throw new Error('expected a classification prediction');
  return { labels: p.labels, probabilities: Array.from(p.probabilities) };
}

const rows = csvRows(50);
const warmUp = {
  age: 0, income: 0, loan_amount: 0, loan_term_months: 0, credit_score: 0, employment_years: 0,
  num_open_accounts: 0, debt_to_income: 0, home_ownership: '', purpose: '', region: '',
};

let reference: LoadedModel;
let erroring: LoadedModel;
let slow: LoadedModel;

beforeAll(async () => {
  [reference, erroring, slow] = await Promise.all([
    open('credit-sklearn'),
    open('bad/credit-erroring'),
    open('bad/credit-slow'),
  ]);
});

afterAll(async () => {
  await Promise.all([reference, erroring, slow].filter(Boolean).map((m) => m.release()));
});

describe('bad fixture models', () => {
  it('keep the credit-sklearn inputs and outputs', () => {
    for (const model of [erroring, slow]) {
      expect(model.metadata.inputs).toEqual(reference.metadata.inputs);
      expect(model.metadata.outputs).toEqual(reference.metadata.outputs);
      expect(model.metadata.classes).toEqual(reference.metadata.classes);
    }
  });

  it('credit-erroring predicts like credit-sklearn while no age is over 100', async () => {
    expect(rows).toHaveLength(50);
    expect(rows.every((r) => Number(r.age) <= 100)).toBe(true);
    const want = asClassification(await reference.predict(rows));
    expect(asClassification(await erroring.predict(rows))).toEqual(want);
    // Batch size 1 can differ from the whole batch in the last float bit (also for credit-sklearn).
    expect(asClassification(await erroring.predict(rows, { batchSize: 1 }))).toEqual(
      asClassification(await reference.predict(rows, { batchSize: 1 })),
    );
    expect(asClassification(await erroring.predict([warmUp]))).toEqual(asClassification(await reference.predict([warmUp])));
    // The limit is strict, and a missing age is fine.
    const edge = [{ ...rows[0], age: 100 }, { ...rows[1], age: '' }];
    expect(asClassification(await erroring.predict(edge))).toEqual(asClassification(await reference.predict(edge)));
  });

  it('credit-erroring fails at run time when a row has age > 100, and recovers afterwards', async () => {
    await expect(erroring.predict([{ ...rows[0], age: 150 }])).rejects.toThrow(/Gather/);
    // One bad row fails its whole batch.
    await expect(erroring.predict([...rows.slice(0, 10), { ...rows[10], age: 150 }])).rejects.toThrow(/Gather/);
    await expect(erroring.predict([{ ...rows[0], age: 100.5 }])).rejects.toThrow(/Gather/);
    // The session stays usable for good rows.
    expect(asClassification(await erroring.predict(rows))).toEqual(asClassification(await reference.predict(rows)));
  });

  it('credit-slow predicts like credit-sklearn', async () => {
    const want = asClassification(await reference.predict(rows));
    expect(asClassification(await slow.predict(rows))).toEqual(want);
    expect(asClassification(await slow.predict(rows.slice(0, 3), { batchSize: 1 }))).toEqual(
      asClassification(await reference.predict(rows.slice(0, 3), { batchSize: 1 })),
    );
    expect(asClassification(await slow.predict([warmUp]))).toEqual(asClassification(await reference.predict([warmUp])));
    // Unlike credit-erroring, it accepts out-of-range ages.
    const old = [{ ...rows[0], age: 150 }];
    expect(asClassification(await slow.predict(old))).toEqual(asClassification(await reference.predict(old)));
  });
});
