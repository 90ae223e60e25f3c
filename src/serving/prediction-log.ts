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
  /**
   * The row's features as the caller sent them. Null on `shadow` rows: a shadow copy scores the
   * same row as production, whose row (same `requestId` and `rowIndex`) has them; not storing
   * them twice halves what shadow mode writes.
   */
  features: Record<string, unknown> | null;
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

/**
 * A write has a large fixed cost besides its bytes: ~1 ms of CPU for the request (signing,
 * HTTP, loopback TCP) against ~1.2 µs per 360-byte row (hashing, copying): measured 3.4 µs
 * of CPU per row at 500 rows per batch, 1.7 at 2000 and 1.6 at 8000.
 * A batch is written within `flushIntervalMs` however few rows it has.
 */
export const PREDICTION_LOG_DEFAULTS: PredictionLogOptions = { flushRows: 4000, flushIntervalMs: 2000, maxBufferedRows: 100_000 };

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

/** Initial size of a batch's byte buffer; it doubles as rows are added. */
const INITIAL_BATCH_BYTES = 16 * 1024;

/**
 * One batch of rows for one model and UTC hour, as NDJSON bytes. Rows are serialized when
 * they are appended and copied into `bytes` at once, so the request path keeps no objects
 * alive until the flush (serialized lines die young; parsed request bodies are not kept),
 * and a flush only uploads a slice of memory.
 */
class Batch {
  /** Chosen when the batch is sealed, so a retry of a write whose answer was lost is a no-op (create-if-absent). */
  key: string | undefined;
  bytes: Buffer = Buffer.allocUnsafe(INITIAL_BATCH_BYTES);
  used = 0;
  /** Byte offset where each row's line ends (after its newline). */
  ends: number[] = [];
  /** Rows dropped from the front (memory bound): the body starts after them. */
  firstRow = 0;

  constructor(
    readonly model: string,
    /** ISO time of the batch's first row: names its key (day and hour). */
    readonly firstTime: string,
  ) {}

  get rows(): number {
    return this.ends.length - this.firstRow;
  }

  /** Appends one JSON line (a newline is added). */
  push(line: string): void {
    // A UTF-16 code unit is at most 3 bytes of UTF-8.
    const need = this.used + line.length * 3 + 1;
    if (need > this.bytes.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, this.bytes.length * 2));
      this.bytes.copy(grown, 0, 0, this.used);
      this.bytes = grown;
    }
    this.used += this.bytes.write(line, this.used, 'utf8');
    this.bytes[this.used++] = 0x0a;
    this.ends.push(this.used);
  }

  /** Drops the oldest `n` rows; once they are most of the batch, their bytes are given back. */
  dropFront(n: number): void {
    this.firstRow += n;
    if (this.firstRow < 64 || this.firstRow * 2 < this.ends.length) return;
    // Copied, never changed in place: an earlier (failed) write may have been handed these bytes.
    const start = this.ends[this.firstRow - 1]!;
    const rest = this.used - start;
    const bytes = Buffer.allocUnsafe(Math.max(INITIAL_BATCH_BYTES, rest * 2));
    this.bytes.copy(bytes, 0, start, this.used);
    this.bytes = bytes;
    this.used = rest;
    this.ends = this.ends.slice(this.firstRow).map((end) => end - start);
    this.firstRow = 0;
  }

  /** The NDJSON body of the rows not dropped (a view of `bytes`, which a sealed batch never changes). */
  body(): Buffer {
    const start = this.firstRow === 0 ? 0 : this.ends[this.firstRow - 1]!;
    return this.bytes.subarray(start, this.used);
  }
}

interface RouteText {
  model: string;
  version: number;
  sha256: string;
  arm: string;
  rolloutId: string | null;
  text: string;
}

function sameRoute(route: RouteText, r: PredictionRequest): boolean {
  return route.model === r.model && route.version === r.version && route.sha256 === r.sha256 && route.arm === r.arm && route.rolloutId === r.rolloutId;
}

/** The fields a route's requests share (`"model":…` to `"arm":…` and `"rolloutId"`), as JSON text. */
function routeFields(r: PredictionRequest): string {
  return `"model":${JSON.stringify(r.model)},"version":${JSON.stringify(r.version)},"sha256":${JSON.stringify(r.sha256)},"arm":${JSON.stringify(r.arm)}${r.rolloutId ? `,"rolloutId":${JSON.stringify(r.rolloutId)}` : ''}`;
}

/**
 * Buffers prediction rows in memory and writes them to the store in batches, off the
 * request path: `append` never waits and never throws. A batch that cannot be written
 * is kept and retried on the next flush; memory is bounded by `maxBufferedRows`, past
 * which the oldest rows are dropped and counted.
 */
export class PredictionLog {
  readonly options: PredictionLogOptions;
  /** Batches still taking rows, by model and UTC hour. */
  private readonly open = new Map<string, Batch>();
  private openRows = 0;
  /** Sealed batches waiting to be written, oldest first. */
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
    /** Where batches are written: the artifact store, or a writer on another thread (`ThreadedObjectWriter`). */
    private readonly store: Pick<ArtifactStore, 'put'>,
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
    return this.openRows + this.batchedRows;
  }

  append(rows: readonly PredictionRecord[]): void {
    for (const row of rows) this.push(row.model, row.time, JSON.stringify(row));
    this.appended();
  }

  /**
   * Appends one request's rows: row i is written as a `PredictionRecord` with the request's
   * fields, `rowIndex` i, `features[i]` and the output whose JSON text is `outputs[i]` (or
   * `output: null` and the request's `error`). Shadow rows are written with `features: null`
   * (see `PredictionRecord.features`). Serialized now; nothing passed in is kept.
   */
  appendRequest(request: PredictionRequest, features: readonly Record<string, unknown>[], outputs: readonly string[] | null): void {
    const h = this.head(request);
    const shadow = request.arm === 'shadow';
    for (let i = 0; i < features.length; i++) {
      const output = outputs ? outputs[i]! : 'null';
      this.push(request.model, request.time, `${h},"rowIndex":${i},"features":${shadow ? 'null' : JSON.stringify(features[i])},"output":${output}}`);
    }
    this.appended();
  }

  /**
   * The route fields of the last two routes, reused while requests keep coming on them (the
   * usual case: one route, or production and its shadow copies taking turns).
   */
  private lastRoute: RouteText | undefined;
  private otherRoute: RouteText | undefined;

  /** A request's shared fields as the start of its rows' JSON objects (without the closing brace); `rolloutId` and `error` only when set. */
  private head(r: PredictionRequest): string {
    let route = this.lastRoute;
    if (route === undefined || !sameRoute(route, r)) {
      const other = this.otherRoute;
      this.otherRoute = route;
      route = this.lastRoute = other !== undefined && sameRoute(other, r) ? other : { model: r.model, version: r.version, sha256: r.sha256, arm: r.arm, rolloutId: r.rolloutId, text: routeFields(r) };
    }
    const error = r.error === undefined ? '' : `,"error":${JSON.stringify(r.error)}`;
    return `{"requestId":${JSON.stringify(r.requestId)},"time":${JSON.stringify(r.time)},${route.text},"latencyMs":${JSON.stringify(r.latencyMs)}${error}`;
  }

  private push(model: string, time: string, line: string): void {
    const group = `${model}\n${time.slice(0, 13)}`;
    let batch = this.open.get(group);
    if (batch === undefined) this.open.set(group, (batch = new Batch(model, time)));
    batch.push(line);
    this.openRows++;
    if (batch.rows >= this.options.flushRows) this.seal(group, batch);
  }

  private seal(group: string, batch: Batch): void {
    this.open.delete(group);
    this.openRows -= batch.rows;
    batch.key = keys.predictionBatch(batch.model, new Date(batch.firstTime), randomBytes(6).toString('hex'));
    this.batches.push(batch);
    this.batchedRows += batch.rows;
  }

  private appended(): void {
    this.enforceBound();
    // After a failed write, size-triggered flushes wait for the timer rather than hammer a store that is down.
    if (this.batches.length > 0 && this.running === undefined && Date.now() >= this.retryAfter) void this.flush();
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

  /**
   * Writes the batches there are when it starts (every open one sealed first), oldest first.
   * Batches sealed meanwhile wait for the next flush: under a steady stream of full batches
   * a flush still ends, so a timer flush gets to seal the small groups (other models, arms,
   * the previous hour) too.
   */
  private async writeAll(): Promise<void> {
    for (const [group, batch] of this.open) this.seal(group, batch);
    for (const batch of [...this.batches]) {
      // Emptied by the memory bound since.
      if (!this.batches.includes(batch)) continue;
      this.writing = batch;
      try {
        await this.store.put(batch.key!, batch.body(), { ifAbsent: true, contentType: 'application/x-ndjson' });
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
      this.batchedRows -= batch.rows;
      this.written += batch.rows;
    }
    this.retryAfter = 0;
  }

  /** Drops the oldest rows beyond the bound: failed batches first, then open ones; never the batch being written. */
  private enforceBound(): void {
    let excess = this.pending - this.options.maxBufferedRows;
    if (excess <= 0) return;
    let dropped = 0;
    for (const batch of [...this.batches]) {
      if (excess <= 0) break;
      if (batch === this.writing) continue;
      const n = Math.min(excess, batch.rows);
      batch.dropFront(n);
      this.batchedRows -= n;
      excess -= n;
      dropped += n;
      if (batch.rows === 0) this.batches.splice(this.batches.indexOf(batch), 1);
    }
    for (const [group, batch] of this.open) {
      if (excess <= 0) break;
      const n = Math.min(excess, batch.rows);
      batch.dropFront(n);
      this.openRows -= n;
      excess -= n;
      dropped += n;
      if (batch.rows === 0) this.open.delete(group);
    }
    if (dropped > 0) {
      if (this.dropped === 0) this.logger.warn({ maxBufferedRows: this.options.maxBufferedRows }, 'prediction log buffer full; dropping the oldest rows');
      this.dropped += dropped;
      this.onDropped(dropped);
    }
  }
}
