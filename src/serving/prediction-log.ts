import { randomBytes } from 'node:crypto';
import type { Logger } from '../logger.js';
import { PreconditionFailedError, type ArtifactStore } from '../store/artifact-store.js';
import { keys } from '../store/keys.js';

export type PredictionOutput = { label: number | string; probabilities: Record<string, number> } | { value: number };

/**
 * Which route answered: `production` (the alias), `canary` (a canary's share),
 * `challenger` (an A/B test's B arm) or `shadow` (scored on a copy of a production
 * request; never returned to the caller).
 */
export const ARMS = ['production', 'canary', 'challenger', 'shadow'] as const;
export type Arm = (typeof ARMS)[number];

/** One answered prediction row, as written (one JSON object per line) under predictions/. */
export interface PredictionRecord {
  requestId: string;
  rowIndex: number;
  /** When the request was answered, ISO 8601 UTC. */
  time: string;
  model: string;
  version: number;
  sha256: string;
  arm: Arm;
  /** The rollout that routed this row, when one was running. */
  rolloutId?: string;
  features: Record<string, unknown>;
  /** Null when inference failed; `error` then says why. */
  output: PredictionOutput | null;
  error?: string;
  /** Inference latency of the request the row came in (shared by its rows). */
  latencyMs: number;
}

export interface PredictionLogOptions {
  /** Cut and write a batch once this many rows are buffered. */
  flushRows: number;
  /** Write whatever is buffered (and retry failed batches) this often. */
  flushIntervalMs: number;
  /** Rows held in memory (buffered + waiting for retry); past this the oldest are dropped. */
  maxBufferedRows: number;
}

export const PREDICTION_LOG_DEFAULTS: PredictionLogOptions = { flushRows: 500, flushIntervalMs: 2000, maxBufferedRows: 100_000 };

interface Batch {
  /** Chosen once, so a retry of a write whose answer was lost is a no-op (create-if-absent). */
  key: string;
  rows: PredictionRecord[];
}

/**
 * Buffers prediction rows in memory and writes them to the store in batches, off the
 * request path: `append` never waits and never throws. A batch that cannot be written
 * is kept and retried on the next flush; memory is bounded by `maxBufferedRows`, past
 * which the oldest rows are dropped and counted.
 */
export class PredictionLog {
  readonly options: PredictionLogOptions;
  private buffer: PredictionRecord[] = [];
  private batches: Batch[] = [];
  private batchedRows = 0;
  private writing: Batch | undefined;
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;
  private retryAfter = 0;
  private readonly timer: NodeJS.Timeout;
  /** Rows dropped because the buffer was full. */
  dropped = 0;
  /** Rows written to the store. */
  written = 0;

  constructor(
    private readonly store: ArtifactStore,
    private readonly logger: Logger,
    options: Partial<PredictionLogOptions> = {},
    private readonly onDropped: (rows: number) => void = () => {},
  ) {
    this.options = { ...PREDICTION_LOG_DEFAULTS, ...options };
    const { flushRows, flushIntervalMs, maxBufferedRows } = this.options;
    for (const [name, value] of Object.entries({ flushRows, flushIntervalMs, maxBufferedRows })) {
      if (!Number.isSafeInteger(value) || value < 1) throw new Error(`prediction log: ${name} must be a positive integer, got ${value}`);
    }
    this.timer = setInterval(() => void this.flush(), flushIntervalMs);
    this.timer.unref();
  }

  /** Rows in memory, not yet written. */
  get pending(): number {
    return this.buffer.length + this.batchedRows;
  }

  append(rows: readonly PredictionRecord[]): void {
    for (const row of rows) this.buffer.push(row);
    this.enforceBound();
    // After a failed write, size-triggered flushes wait for the timer rather than hammer a store that is down.
    if (this.buffer.length >= this.options.flushRows && Date.now() >= this.retryAfter) void this.flush();
  }

  /** Writes everything appended so far (and retries earlier failures). Never rejects. */
  flush(): Promise<void> {
    if (this.queued) return this.queued;
    if (!this.running) return this.start();
    this.queued = this.running.then(() => {
      this.queued = undefined;
      return this.start();
    });
    return this.queued;
  }

  /** Stops the timer and writes what remains. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
    if (this.pending > 0) this.logger.error({ rows: this.pending }, 'prediction log closed with rows that could not be written');
  }

  private start(): Promise<void> {
    this.running = this.writeAll()
      .catch((err: unknown) => this.logger.error({ err: (err as Error).message }, 'prediction log flush failed unexpectedly'))
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  private async writeAll(): Promise<void> {
    this.cutBatches();
    while (this.batches.length > 0) {
      const batch = this.batches[0]!;
      this.writing = batch;
      const body = batch.rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
      try {
        await this.store.put(batch.key, body, { ifAbsent: true, contentType: 'application/x-ndjson' });
      } catch (err) {
        // The key is this batch's own: if it exists, an earlier attempt landed and only its answer was lost.
        if (!(err instanceof PreconditionFailedError)) {
          this.writing = undefined;
          this.retryAfter = Date.now() + this.options.flushIntervalMs;
          this.logger.warn({ err: (err as Error).message, key: batch.key, pending: this.pending, dropped: this.dropped }, 'could not write prediction log batch; will retry');
          return;
        }
      }
      this.writing = undefined;
      const at = this.batches.indexOf(batch);
      if (at >= 0) this.batches.splice(at, 1);
      this.batchedRows -= batch.rows.length;
      this.written += batch.rows.length;
    }
    this.retryAfter = 0;
  }

  /** Moves the buffer into batches: one per model and UTC hour, at most `flushRows` rows each. */
  private cutBatches(): void {
    if (this.buffer.length === 0) return;
    const rows = this.buffer;
    this.buffer = [];
    const groups = new Map<string, PredictionRecord[]>();
    for (const row of rows) {
      const group = `${row.model}\n${row.time.slice(0, 13)}`;
      let list = groups.get(group);
      if (!list) groups.set(group, (list = []));
      list.push(row);
    }
    for (const list of groups.values()) {
      for (let i = 0; i < list.length; i += this.options.flushRows) {
        const chunk = list.slice(i, i + this.options.flushRows);
        const first = chunk[0]!;
        this.batches.push({ key: keys.predictionBatch(first.model, new Date(first.time), randomBytes(6).toString('hex')), rows: chunk });
        this.batchedRows += chunk.length;
      }
    }
  }

  /** Drops the oldest rows beyond the bound: failed batches first, then the buffer; never the batch being written. */
  private enforceBound(): void {
    let excess = this.pending - this.options.maxBufferedRows;
    if (excess <= 0) return;
    let dropped = 0;
    for (const batch of [...this.batches]) {
      if (excess <= 0) break;
      if (batch === this.writing) continue;
      const n = Math.min(excess, batch.rows.length);
      batch.rows.splice(0, n);
      this.batchedRows -= n;
      excess -= n;
      dropped += n;
      if (batch.rows.length === 0) this.batches.splice(this.batches.indexOf(batch), 1);
    }
    if (excess > 0) {
      const n = Math.min(excess, this.buffer.length);
      this.buffer.splice(0, n);
      dropped += n;
    }
    if (dropped > 0) {
      if (this.dropped === 0) this.logger.warn({ maxBufferedRows: this.options.maxBufferedRows }, 'prediction log buffer full; dropping the oldest rows');
      this.dropped += dropped;
      this.onDropped(dropped);
    }
  }
}
