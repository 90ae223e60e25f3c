import { performance } from 'node:perf_hooks';
import type { LoadedModel, Prediction } from '../eval/onnx-model.js';

type Row = Record<string, unknown>;

/**
 * One request's answers: rows `start`..`end` of the prediction of the run that answered it,
 * or the error of its run. `runMs` is how long that run took (the whole run: what this
 * request's answer cost the model, not the wait for the batch to fill).
 */
export type BatchOutcome = BatchAnswer | { error: unknown; runMs: number };
export interface BatchAnswer {
  prediction: Prediction;
  start: number;
  end: number;
  runMs: number;
}

export interface BatcherOptions {
  /** Rows per run at most (a request with more rows runs alone, in runs of the model's own batch size). 1 turns batching off. */
  maxRows: number;
  /** Requests per run at most (default: no limit but `maxRows`). */
  maxRequests?: number;
  /**
   * How long a batch waits for more requests after its first one, ms. 0: it takes what has
   * arrived in the same turn of the event loop (runs in `setImmediate`), so a lone request
   * waits for nothing.
   */
  delayMs?: number;
  /**
   * Batchers whose sessions share one thread (in-process sessions all run on the event loop)
   * share a lane, so a run queued behind another model's run is not charged for it:
   * onnxruntime queues each run in `setImmediate`, so without it production's time could
   * include a slow canary's run.
   */
  lane?: RunLane;
  /** Told of each run: how many requests and rows it answered at once. */
  onRun?: (requests: number, rows: number) => void;
}

/**
 * The clock of runs that share one thread (see `BatcherOptions.lane`). Runs on one thread
 * happen one after another, so a run that ended while ours was waiting had the thread then:
 * our run's own time starts at the later of our call and the last run's end before ours.
 */
export class RunLane {
  private lastEnd = 0;

  /** A run called at `start` has just ended: its own time, ms. */
  finish(start: number): number {
    const end = performance.now();
    const own = end - Math.max(start, this.lastEnd);
    this.lastEnd = end;
    return own;
  }
}

/** Rows one run may hold at most (a setting above it is refused: runs that large are not batching any more). */
export const MAX_BATCH_ROWS = 100_000;

/** Checks a rows-per-run setting (`name` is what the error calls it): an integer from 1 to MAX_BATCH_ROWS. */
export function checkBatchRows(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value < 1 || value > MAX_BATCH_ROWS) throw new RangeError(`${name} must be an integer from 1 to ${MAX_BATCH_ROWS} (1 turns dynamic batching off), got ${value}`);
  return value;
}

/** A failed run: the model's error, and how long the run took. */
class RunFailure {
  constructor(
    readonly error: unknown,
    readonly runMs: number,
  ) {}
}

interface Waiting {
  rows: Row[];
  done: (outcome: BatchOutcome, context: unknown) => void;
  /** Given back to `done` (so a caller queueing many requests needs no closure per request). */
  context: unknown;
}

/** The request whose rows include row `index` of the batch's concatenated rows. */
function ownerOf(batch: readonly Waiting[], index: number): Waiting | undefined {
  let start = 0;
  for (const w of batch) {
    if (index >= start && index < start + w.rows.length) return w;
    start += w.rows.length;
  }
  return undefined;
}

/**
 * Dynamic batching for one loaded model: requests that reach it together are run as one
 * inference over their concatenated rows, and each gets its own rows' answers back.
 *
 * One run costs a fixed part (feeds, session call, graph walk) and a small part per row: for
 * the credit-risk model, 62 µs for 1 row and 101 µs for 32 (bench/RESULTS.md, serving). Under
 * concurrent load that fixed part is paid once per batch instead of once per request; with
 * `delayMs` 0 no request waits for another to arrive, so a lone request is run as before.
 *
 * If a batched run fails, the failure is given to the request that caused it and the others
 * still get their answers: a value the model cannot take names its row, so that request runs
 * alone and the rest as a batch again; any other failure runs each request alone.
 *
 * A row's answer does not depend on the other rows in its batch, but the kernels ONNX Runtime
 * picks for a batch of 32 may round a probability differently (float32 rounding, ~1e-7) than for
 * a batch of 1; `maxRows: 1` gives answers that never depend on what else arrived.
 */
export class RequestBatcher {
  private waiting: Waiting[] = [];
  private rows = 0;
  /** Requests taken and not yet answered (waiting for their batch, or in a run). */
  private unanswered = 0;
  private onSettled: Array<() => void> = [];
  private timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  private readonly maxRequests: number;
  private readonly delayMs: number;

  constructor(
    private readonly model: Pick<LoadedModel, 'predict'>,
    private readonly opts: BatcherOptions,
  ) {
    checkBatchRows(opts.maxRows, 'maxRows');
    this.maxRequests = opts.maxRequests ?? Number.MAX_SAFE_INTEGER;
    if (!Number.isSafeInteger(this.maxRequests) || this.maxRequests < 1) throw new RangeError(`maxRequests must be a positive integer, got ${opts.maxRequests}`);
    this.delayMs = opts.delayMs ?? 0;
    if (!Number.isFinite(this.delayMs) || this.delayMs < 0) throw new RangeError(`delayMs must be a non-negative number, got ${opts.delayMs}`);
  }

  /**
   * Answers `rows` in the next batch. A batch runs in a later turn of the event loop, never
   * inside this call: when it is full (`maxRows`, `maxRequests`), else after `delayMs`. With
   * batching off (`maxRows` 1, no delay) the request's run starts inside this call.
   * Never rejects: a failed run is an outcome with its error.
   */
  predict(rows: Row[]): Promise<BatchOutcome> {
    return new Promise<BatchOutcome>((done) => this.enqueue(rows, done, undefined));
  }

  /**
   * `predict` with a callback instead of a promise, for callers that queue many requests at
   * once (shadow copies): `done(outcome, context)` is called once, and must not throw.
   */
  enqueue<C>(rows: Row[], done: (outcome: BatchOutcome, context: C) => void, context: C): void {
    this.unanswered++;
    const waiting: Waiting = { rows, done: done as Waiting['done'], context };
    // Batching off (one row per run, no delay): each request runs at once, as if there were no batcher.
    if (this.opts.maxRows === 1 && this.delayMs === 0) return this.runAlone(waiting);
    if (this.rows > 0 && this.rows + rows.length > this.opts.maxRows) this.seal();
    this.waiting.push(waiting);
    this.rows += rows.length;
    if (this.rows >= this.opts.maxRows || this.waiting.length >= this.maxRequests) this.seal();
    else if (this.timer === undefined) this.timer = this.delayMs === 0 ? setImmediate(this.onTimer) : setTimeout(this.onTimer, this.delayMs);
  }

  /** Requests taken and not yet answered. */
  get pending(): number {
    return this.unanswered;
  }

  /** Runs the waiting batch now instead of at the end of its delay (closing: nothing more is coming to fill it). */
  flush(): void {
    if (this.waiting.length > 0) this.seal();
  }

  /** Resolves once no request is pending, including ones taken after the call (at once if none is): for closing, when no more come. */
  settled(): Promise<void> {
    if (this.unanswered === 0) return Promise.resolve();
    return new Promise((resolve) => this.onSettled.push(resolve));
  }

  /** Gives a request its outcome. */
  private answer(w: Waiting, outcome: BatchOutcome): void {
    this.unanswered--;
    w.done(outcome, w.context);
    if (this.unanswered === 0 && this.onSettled.length > 0) {
      const waiting = this.onSettled;
      this.onSettled = [];
      for (const resolve of waiting) resolve();
    }
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.run(this.take());
  };

  /** Takes what is waiting as one batch and starts a new one. */
  private take(): Waiting[] {
    const batch = this.waiting;
    this.waiting = [];
    this.rows = 0;
    return batch;
  }

  /** The batch is full: it runs in the next turn of the event loop (after the caller's own work). */
  private seal(): void {
    if (this.timer !== undefined) {
      // Each with its own clear: clearImmediate on a Timeout (or the reverse) corrupts the other's queue.
      if (this.delayMs === 0) clearImmediate(this.timer as NodeJS.Immediate);
      else clearTimeout(this.timer as NodeJS.Timeout);
      this.timer = undefined;
    }
    const batch = this.take();
    setImmediate(() => this.run(batch));
  }

  private run(batch: Waiting[]): void {
    if (batch.length === 0) return;
    if (batch.length === 1) return this.runAlone(batch[0]!);
    let n = 0;
    for (const w of batch) n += w.rows.length;
    const rows = new Array<Row>(n);
    let i = 0;
    for (const w of batch) for (const row of w.rows) rows[i++] = row;
    this.reportRun(batch.length, n);
    this.timed(rows).then(
      ({ prediction, runMs }) => {
        let start = 0;
        for (const w of batch) {
          const end = start + w.rows.length;
          this.answer(w, { prediction, start, end, runMs });
          start = end;
        }
      },
      (failed: RunFailure) => {
        const { error } = failed;
        // Whose failure was it? A value the model refuses names its row (InputValidationError's
        // rowIndex): that request runs alone for its own error, the others as a batch again, so
        // one bad request costs one extra run, not one per request. Otherwise each runs alone.
        const row = (error as { rowIndex?: unknown } | null)?.rowIndex;
        const culprit = typeof row === 'number' ? ownerOf(batch, row) : undefined;
        if (culprit === undefined) {
          for (const w of batch) this.runAlone(w);
          return;
        }
        this.runAlone(culprit);
        this.run(batch.filter((w) => w !== culprit));
      },
    );
  }

  private runAlone(w: Waiting): void {
    const { rows } = w;
    this.reportRun(1, rows.length);
    this.timed(rows).then(
      ({ prediction, runMs }) => this.answer(w, { prediction, start: 0, end: rows.length, runMs }),
      (failed: RunFailure) => this.answer(w, { error: failed.error, runMs: failed.runMs }),
    );
  }

  /** Tells `onRun` of a run; what it throws (it is metrics) never stops the run. */
  private reportRun(requests: number, rows: number): void {
    try {
      this.opts.onRun?.(requests, rows);
    } catch {
      // Counting a run must not fail the requests in it.
    }
  }

  /**
   * The model's predict and its own time (less other runs on its lane); a failure rejects with
   * a `RunFailure` carrying its time. A synchronous throw is a rejection too (runs are started
   * from timers).
   */
  private async timed(rows: Row[]): Promise<{ prediction: Prediction; runMs: number }> {
    const started = performance.now();
    try {
      const prediction = await this.model.predict(rows);
      return { prediction, runMs: this.ownTime(started) };
    } catch (error) {
      throw new RunFailure(error, this.ownTime(started));
    }
  }

  /** A run's own time: since `started`, less other runs on its lane. */
  private ownTime(started: number): number {
    return this.opts.lane ? this.opts.lane.finish(started) : performance.now() - started;
  }
}
