import { setImmediate as nextTurn } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { InputValidationError, loadModel, parseModelMetadata, type LoadedModel, type Prediction } from '../../src/eval/onnx-model.js';
import { RequestBatcher, RunLane, type BatchOutcome } from '../../src/serving/batcher.js';
import { maxBatchRowsFromEnv, parseMaxBatchRows } from '../../src/serving/service.js';
import { creditRows, FIXTURE_METADATA_BYTES, FIXTURE_MODEL_BYTES, FIXTURE_MODEL_SHA } from '../helpers/fixture-model.js';

type Row = Record<string, unknown>;

/** A model whose answer for a row is the row's `x` (regression), recording the rows of each call; a row with `bad` fails its call. */
class RecordingModel {
  readonly calls: number[][] = [];
  throwSync = false;
  predict(rows: Row[]): Promise<Prediction> {
    if (this.throwSync) throw new Error('thrown before any promise');
    this.calls.push(rows.map((r) => r.x as number));
    if (rows.some((r) => r.bad)) return Promise.reject(new Error(`bad row ${rows.find((r) => r.bad)!.x}`));
    // A value the model refuses, as buildColumns refuses it: naming its row.
    const invalid = rows.findIndex((r) => r.invalid);
    if (invalid >= 0) return Promise.reject(new InputValidationError('x', invalid, 'not a number'));
    return Promise.resolve({ task: 'regression', values: Float64Array.from(rows, (r) => r.x as number) });
  }
}

const rowsOf = (...xs: number[]): Row[] => xs.map((x) => ({ x }));

/** The values an outcome answered for its request, or its error's message. */
function valuesOf(outcome: BatchOutcome): number[] | string {
  if ('error' in outcome) return (outcome.error as Error).message;
  const p = outcome.prediction;
  if (p.task !== 'regression') throw new Error('expected regression');
  return Array.from(p.values.subarray(outcome.start, outcome.end));
}

describe('RequestBatcher', () => {
  it('runs the requests of one turn of the event loop as one call, in order, and gives each its own rows', async () => {
    const model = new RecordingModel();
    const runs: Array<[number, number]> = [];
    const batcher = new RequestBatcher(model, { maxRows: 64, onRun: (requests, rows) => runs.push([requests, rows]) });
    const outcomes = await Promise.all([batcher.predict(rowsOf(1)), batcher.predict(rowsOf(2, 3)), batcher.predict(rowsOf(4))]);
    expect(model.calls).toEqual([[1, 2, 3, 4]]);
    expect(outcomes.map(valuesOf)).toEqual([[1], [2, 3], [4]]);
    expect(runs).toEqual([[3, 4]]);
    // One run answered all three: each reports that run's time.
    expect(new Set(outcomes.map((o) => o.runMs)).size).toBe(1);
  });

  it('does not run inside predict(): the caller finishes its turn first', async () => {
    const model = new RecordingModel();
    const batcher = new RequestBatcher(model, { maxRows: 2 });
    const pending = batcher.predict(rowsOf(1, 2)); // fills a batch by itself
    expect(model.calls).toEqual([]);
    expect(valuesOf(await pending)).toEqual([1, 2]);
    expect(model.calls).toEqual([[1, 2]]);
  });

  it('a lone request, and requests in different turns, run alone', async () => {
    const model = new RecordingModel();
    const batcher = new RequestBatcher(model, { maxRows: 64 });
    expect(valuesOf(await batcher.predict(rowsOf(7)))).toEqual([7]);
    const first = batcher.predict(rowsOf(8));
    await nextTurn();
    const second = batcher.predict(rowsOf(9));
    expect([valuesOf(await first), valuesOf(await second)]).toEqual([[8], [9]]);
    expect(model.calls).toEqual([[7], [8], [9]]);
  });

  it('keeps each run within maxRows (a request never split) and runs an oversized request alone', async () => {
    const model = new RecordingModel();
    const batcher = new RequestBatcher(model, { maxRows: 8 });
    const outcomes = await Promise.all([
      batcher.predict(rowsOf(1, 2, 3)),
      batcher.predict(rowsOf(4, 5, 6)),
      batcher.predict(rowsOf(7, 8, 9)), // would make 9 rows: the first two run without it
      batcher.predict(rowsOf(10, 11, 12, 13, 14)), // 8 rows with the previous: full
      batcher.predict(rowsOf(...Array.from({ length: 10 }, (_, i) => 100 + i))), // over maxRows
      batcher.predict(rowsOf(15)),
    ]);
    expect(model.calls.map((c) => c.length).sort((a, b) => a - b)).toEqual([1, 6, 8, 10]);
    expect(model.calls).toContainEqual([1, 2, 3, 4, 5, 6]);
    expect(model.calls).toContainEqual([7, 8, 9, 10, 11, 12, 13, 14]);
    expect(outcomes.map(valuesOf)).toEqual([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12, 13, 14], Array.from({ length: 10 }, (_, i) => 100 + i), [15]]);
  });

  it('maxRows 1 turns batching off: one call per request, started at once', async () => {
    const model = new RecordingModel();
    const batcher = new RequestBatcher(model, { maxRows: 1 });
    const pending = [1, 2, 3].map((x) => batcher.predict(rowsOf(x)));
    expect(model.calls).toEqual([[1], [2], [3]]);
    const outcomes = await Promise.all(pending);
    expect(outcomes.map(valuesOf)).toEqual([[1], [2], [3]]);
  });

  it('maxRequests seals a batch by its number of requests', async () => {
    const model = new RecordingModel();
    const batcher = new RequestBatcher(model, { maxRows: 64, maxRequests: 2 });
    await Promise.all([1, 2, 3, 4, 5].map((x) => batcher.predict(rowsOf(x))));
    expect(model.calls).toEqual([[1, 2], [3, 4], [5]]);
  });

  describe('with delayMs', () => {
    afterEach(() => void vi.useRealTimers());

    it('waits delayMs after the first request for more, across turns of the event loop', async () => {
      vi.useFakeTimers();
      const model = new RecordingModel();
      const batcher = new RequestBatcher(model, { maxRows: 64, delayMs: 10 });
      const a = batcher.predict(rowsOf(1));
      await vi.advanceTimersByTimeAsync(4);
      const b = batcher.predict(rowsOf(2));
      await vi.advanceTimersByTimeAsync(4);
      expect(model.calls).toEqual([]);
      await vi.advanceTimersByTimeAsync(2);
      expect(model.calls).toEqual([[1, 2]]);
      expect([valuesOf(await a), valuesOf(await b)]).toEqual([[1], [2]]);
      // A request after the run starts a new batch and its own delay.
      const c = batcher.predict(rowsOf(3));
      await vi.advanceTimersByTimeAsync(9);
      expect(model.calls).toHaveLength(1);
      await vi.advanceTimersByTimeAsync(1);
      expect(valuesOf(await c)).toEqual([3]);
      expect(model.calls).toEqual([[1, 2], [3]]);
    });

    it('flush() runs the waiting batch without waiting out its delay; settled() resolves once every request has its answer', async () => {
      const model = new RecordingModel();
      const batcher = new RequestBatcher(model, { maxRows: 64, delayMs: 60_000 });
      await batcher.settled(); // nothing taken yet: at once
      const answers: BatchOutcome[] = [];
      const contexts: string[] = [];
      // One callback for every request: each gets its own context back.
      const done = (o: BatchOutcome, context: string): void => {
        answers.push(o);
        contexts.push(context);
      };
      batcher.enqueue(rowsOf(1), done, 'first');
      batcher.enqueue(rowsOf(2, 3), done, 'second');
      expect(batcher.pending).toBe(2);
      let settled = false;
      const allSettled = batcher.settled().then(() => (settled = true));
      await nextTurn();
      expect(model.calls).toEqual([]);
      expect(settled).toBe(false);
      batcher.flush();
      await allSettled;
      expect(model.calls).toEqual([[1, 2, 3]]);
      expect(answers.map(valuesOf)).toEqual([[1], [2, 3]]);
      expect(contexts).toEqual(['first', 'second']);
      expect(batcher.pending).toBe(0);
      batcher.flush(); // nothing waiting: no run
      await nextTurn();
      expect(model.calls).toHaveLength(1);
    });

    it('pending counts requests until their answer, failed ones too', async () => {
      const model = new RecordingModel();
      const batcher = new RequestBatcher(model, { maxRows: 64 });
      const outcomes = Promise.all([batcher.predict(rowsOf(1)), batcher.predict([{ x: 2, bad: true }])]);
      expect(batcher.pending).toBe(2);
      expect((await outcomes).map(valuesOf)).toEqual([[1], 'bad row 2']);
      expect(batcher.pending).toBe(0);
    });
  });

  it('a value the model refuses fails only the request that sent it, at the cost of one extra run', async () => {
    const model = new RecordingModel();
    const batcher = new RequestBatcher(model, { maxRows: 64 });
    const outcomes = await Promise.all([batcher.predict(rowsOf(1, 2)), batcher.predict([{ x: 3 }, { x: 4, invalid: true }]), batcher.predict(rowsOf(5)), batcher.predict(rowsOf(6))]);
    expect(model.calls).toEqual([[1, 2, 3, 4, 5, 6], [3, 4], [1, 2, 5, 6]]);
    expect(outcomes.map(valuesOf)).toEqual([[1, 2], 'row 1, field "x": not a number', [5], [6]]);
    const refused = outcomes[1]!;
    expect('error' in refused && refused.error).toBeInstanceOf(InputValidationError);
  });

  it('batchers sharing a lane: a run queued behind another model\'s run on the same thread is not charged for it', async () => {
    // As onnxruntime runs a session: queued in setImmediate, then holding the thread.
    const model = (busyMs: number): Pick<LoadedModel, 'predict'> => ({
      predict: async (rows) => {
        await new Promise((r) => setImmediate(r));
        const until = performance.now() + busyMs;
        while (performance.now() < until) {
          // holds the thread, as a synchronous native run does
        }
        return { task: 'regression', values: Float64Array.from(rows, (r) => r.x as number) };
      },
    });
    const measure = async (lane: RunLane | undefined): Promise<{ slow: number; fast: number }> => {
      const slow = new RequestBatcher(model(30), { maxRows: 64, ...(lane ? { lane } : {}) });
      const fast = new RequestBatcher(model(0), { maxRows: 64, ...(lane ? { lane } : {}) });
      const [s, f] = await Promise.all([slow.predict(rowsOf(1)), fast.predict(rowsOf(2))]);
      expect([valuesOf(s!), valuesOf(f!)]).toEqual([[1], [2]]);
      return { slow: s!.runMs, fast: f!.runMs };
    };
    // Without a lane the fast run is timed across the slow one that held the thread before it.
    const apart = await measure(undefined);
    expect(apart.fast).toBeGreaterThanOrEqual(apart.slow / 2);
    const shared = await measure(new RunLane());
    expect(shared.fast).toBeLessThan(shared.slow / 2);
  });

  it('sealing a batch that waits on a timer leaves the process timers and immediates working', async () => {
    const model = new RecordingModel();
    const delayed = new RequestBatcher(model, { maxRows: 64, maxRequests: 2, delayMs: 5 });
    // The second request seals the first batch, cancelling its timer; the third waits on a new one.
    const outcomes = Promise.all([1, 2, 3].map((x) => delayed.predict(rowsOf(x))));
    await nextTurn();
    const other = new RecordingModel();
    const sameTurn = new RequestBatcher(other, { maxRows: 64 });
    expect(valuesOf(await sameTurn.predict(rowsOf(9)))).toEqual([9]);
    expect((await outcomes).map(valuesOf)).toEqual([[1], [2], [3]]);
    expect(model.calls).toEqual([[1, 2], [3]]);
  });

  it('a failed batch runs each request again alone: the failure is the request that caused it', async () => {
    const model = new RecordingModel();
    const runs: Array<[number, number]> = [];
    const batcher = new RequestBatcher(model, { maxRows: 64, onRun: (requests, rows) => runs.push([requests, rows]) });
    const outcomes = await Promise.all([batcher.predict(rowsOf(1)), batcher.predict([{ x: 2, bad: true }]), batcher.predict(rowsOf(3, 4))]);
    expect(outcomes.map(valuesOf)).toEqual([[1], 'bad row 2', [3, 4]]);
    expect(model.calls).toEqual([[1, 2, 3, 4], [1], [2], [3, 4]]);
    expect(runs).toEqual([[3, 4], [1, 1], [1, 1], [1, 2]]);
    // The failed request reports its own run, not the batch's.
    expect(outcomes.every((o) => Number.isFinite(o.runMs))).toBe(true);
    expect(new Set(outcomes.map((o) => o.runMs)).size).toBe(3);
  });

  it('an onRun that throws (it is metrics) does not fail the run', async () => {
    const model = new RecordingModel();
    const batcher = new RequestBatcher(model, {
      maxRows: 64,
      onRun: () => {
        throw new Error('metrics broke');
      },
    });
    const outcomes = await Promise.all([batcher.predict(rowsOf(1)), batcher.predict(rowsOf(2))]);
    expect(outcomes.map(valuesOf)).toEqual([[1], [2]]);
    const alone = new RequestBatcher(model, { maxRows: 1, onRun: () => { throw new Error('metrics broke'); } });
    expect(valuesOf(await alone.predict(rowsOf(3)))).toEqual([3]);
  });

  it('a model that throws synchronously gives each request an error outcome (nothing escapes to the timer)', async () => {
    const model = new RecordingModel();
    model.throwSync = true;
    const batcher = new RequestBatcher(model, { maxRows: 64 });
    const outcomes = await Promise.all([batcher.predict(rowsOf(1)), batcher.predict(rowsOf(2))]);
    expect(outcomes.map(valuesOf)).toEqual(['thrown before any promise', 'thrown before any promise']);
  });

  it('refuses options that make no sense, naming them', () => {
    const model = new RecordingModel();
    expect(() => new RequestBatcher(model, { maxRows: 0 })).toThrow(/maxRows must be an integer from 1 to 100000 \(1 turns dynamic batching off\), got 0/);
    expect(() => new RequestBatcher(model, { maxRows: 100_001 })).toThrow(/maxRows must be an integer from 1 to 100000/);
    expect(() => new RequestBatcher(model, { maxRows: 1.5 })).toThrow(/maxRows/);
    expect(() => new RequestBatcher(model, { maxRows: 8, maxRequests: 0 })).toThrow(/maxRequests must be a positive integer/);
    expect(() => new RequestBatcher(model, { maxRows: 8, delayMs: -1 })).toThrow(/delayMs must be a non-negative number/);
  });
});

describe('RequestBatcher over the real ONNX model', () => {
  let model: LoadedModel;
  const metadata = parseModelMetadata(JSON.parse(FIXTURE_METADATA_BYTES.toString('utf8')));
  const rows: Row[] = creditRows(48);

  beforeAll(async () => {
    model = await loadModel(FIXTURE_MODEL_BYTES, FIXTURE_MODEL_SHA, metadata);
  });
  afterAll(async () => model.release());

  it('answers each of 48 concurrent requests as the model answers that row alone (labels equal, probabilities within 1e-6)', async () => {
    const runs: number[] = [];
    const batcher = new RequestBatcher(model, { maxRows: 64, onRun: (requests) => runs.push(requests) });
    const outcomes = await Promise.all(rows.map((row) => batcher.predict([row])));
    expect(runs).toEqual([48]);
    for (const [i, outcome] of outcomes.entries()) {
      if ('error' in outcome) throw outcome.error;
      const alone = await model.predict([rows[i]!]);
      const batched = outcome.prediction;
      if (alone.task !== 'classification' || batched.task !== 'classification') throw new Error('expected classification');
      const k = alone.classes.length;
      expect(batched.labels[outcome.start]).toBe(alone.labels[0]);
      for (let j = 0; j < k; j++) expect(Math.abs(batched.probabilities[outcome.start * k + j]! - alone.probabilities[j]!)).toBeLessThan(1e-6);
    }
  });
});

describe('the max-batch-rows setting (serve --max-batch-rows, CONVEYOR_SERVE_MAX_BATCH_ROWS)', () => {
  it('takes an integer from 1 to 100000 and refuses anything else, naming where it came from', () => {
    expect(parseMaxBatchRows('32', '--max-batch-rows')).toBe(32);
    expect(parseMaxBatchRows(' 1 ', '--max-batch-rows')).toBe(1);
    for (const bad of ['0', '-4', '2.5', '1e3', 'abc', '', '100001']) {
      expect(() => parseMaxBatchRows(bad, '--max-batch-rows')).toThrow(new RegExp(`--max-batch-rows \\("${bad.replace('.', '\\.')}"\\) must be an integer from 1 to 100000`));
    }
    expect(maxBatchRowsFromEnv({})).toBeUndefined();
    expect(maxBatchRowsFromEnv({ CONVEYOR_SERVE_MAX_BATCH_ROWS: '8' })).toBe(8);
    expect(() => maxBatchRowsFromEnv({ CONVEYOR_SERVE_MAX_BATCH_ROWS: 'many' })).toThrow(/CONVEYOR_SERVE_MAX_BATCH_ROWS \("many"\) must be an integer/);
  });
});
