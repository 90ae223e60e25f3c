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

/** The fields one request's rows share (on one arm); see `PredictionRecord`. */
export interface PredictionRequest {
  requestId: string;
  time: string;
  model: string;
  version: number;
  sha256: string;
  arm: Arm;
  /** Written only when set (non-empty). */
  rolloutId: string | null;
  latencyMs: number;
  /** Set when inference failed: every row is then written with `output: null` and this error. */
  error?: string;
}

/**
 * A row buffered by `appendRequest`: it points at its request's shared fields and is only
 * turned into its JSON line when its batch is written, so the request path allocates one
 * small object per row and serializes nothing.
 */
class CompactRow {
  constructor(
    readonly request: PredictionRequest,
    readonly rowIndex: number,
    readonly features: Record<string, unknown>,
    readonly output: PredictionOutput | null,
  ) {}
}

type BufferedRow = PredictionRecord | CompactRow;

const heads = new WeakMap<PredictionRequest, string>();

/** A request's shared fields as the start of its rows' JSON lines, in `PredictionRecord`'s key order. */
function head(r: PredictionRequest): string {
  let h = heads.get(r);
  if (h === undefined) {
    h =
      `{"requestId":${JSON.stringify(r.requestId)},"time":${JSON.stringify(r.time)},"model":${JSON.stringify(r.model)},"version":${JSON.stringify(r.version)}` +
      `,"sha256":${JSON.stringify(r.sha256)},"arm":${JSON.stringify(r.arm)}${r.rolloutId ? `,"rolloutId":${JSON.stringify(r.rolloutId)}` : ''},"latencyMs":${JSON.stringify(r.latencyMs)},"rowIndex":`;
    heads.set(r, h);
  }
  return h;
}

/** One JSON line (without the newline); a compact row comes out exactly as its `PredictionRecord` would. */
function serialize(row: BufferedRow): string {
  if (!(row instanceof CompactRow)) return JSON.stringify(row);
  const r = row.request;
  const tail = r.error !== undefined ? `null,"error":${JSON.stringify(r.error)}}` : `${JSON.stringify(row.output)}}`;
  return `${head(r)}${JSON.stringify(row.rowIndex)},"features":${JSON.stringify(row.features)},"output":${tail}`;
}

const modelOf = (row: BufferedRow): string => (row instanceof CompactRow ? row.request.model : row.model);
const timeOf = (row: BufferedRow): string => (row instanceof CompactRow ? row.request.time : row.time);

/** Rows serialized between yields to the event loop while a batch's body is built. */
const SERIALIZE_CHUNK_ROWS = 64;

interface Batch {
  /** Chosen once, so a retry of a write whose answer was lost is a no-op (create-if-absent). */
  key: string;
  rows: BufferedRow[];
}

/**
 * Buffers prediction rows in memory and writes them to the store in batches, off the
 * request path: `append` never waits and never throws. A batch that cannot be written
 * is kept and retried on the next flush; memory is bounded by `maxBufferedRows`, past
 * which the oldest rows are dropped and counted.
 */
export class PredictionLog {
  readonly options: PredictionLogOptions;
  private buffer: BufferedRow[] = [];
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
    this.appended();
  }

  /**
   * Appends one request's rows: row i is written as a `PredictionRecord` with the request's
   * fields, `rowIndex` i, `features[i]` and `outputs[i]` (or `output: null` and the request's
   * `error`). The objects are kept by reference and must not be changed afterwards.
   */
  appendRequest(request: PredictionRequest, features: readonly Record<string, unknown>[], outputs: readonly PredictionOutput[] | null): void {
    for (let i = 0; i < features.length; i++) this.buffer.push(new CompactRow(request, i, features[i]!, outputs ? outputs[i]! : null));
    this.appended();
  }

  private appended(): void {
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
      const body = await this.serializeBatch(batch);
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

  /**
   * A batch's NDJSON body, built a chunk of rows at a time with the event loop let run in
   * between, so a flush does not hold requests up for the whole batch.
   */
  private async serializeBatch(batch: Batch): Promise<string> {
    let body = '';
    let i = 0;
    // Rows are only ever dropped from the front of a batch that is not being written, so this one is stable.
    while (i < batch.rows.length) {
      const end = Math.min(batch.rows.length, i + SERIALIZE_CHUNK_ROWS);
      for (; i < end; i++) body += serialize(batch.rows[i]!) + '\n';
      if (i < batch.rows.length) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return body;
  }

  /** Moves the buffer into batches: one per model and UTC hour, at most `flushRows` rows each. */
  private cutBatches(): void {
    if (this.buffer.length === 0) return;
    const rows = this.buffer;
    this.buffer = [];
    const groups = new Map<string, BufferedRow[]>();
    for (const row of rows) {
      const group = `${modelOf(row)}\n${timeOf(row).slice(0, 13)}`;
      let list = groups.get(group);
      if (!list) groups.set(group, (list = []));
      list.push(row);
    }
    for (const list of groups.values()) {
      for (let i = 0; i < list.length; i += this.options.flushRows) {
        const chunk = list.slice(i, i + this.options.flushRows);
        const first = chunk[0]!;
        this.batches.push({ key: keys.predictionBatch(modelOf(first), new Date(timeOf(first)), randomBytes(6).toString('hex')), rows: chunk });
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
