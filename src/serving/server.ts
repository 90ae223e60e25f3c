import { randomBytes, randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Logger } from '../logger.js';
import { isValidName } from '../shared/names.js';
import { InputValidationError, type ClassLabel, type Prediction } from '../eval/onnx-model.js';
import type { ArtifactStore } from '../store/artifact-store.js';
import type { ObjectWriter } from '../store/threaded-writer.js';
import { keys } from '../store/keys.js';
import type { ModelHost, ServedModel, TrafficSplit } from './model-host.js';
import { ServingMetrics, UNKNOWN_MODEL_LABEL } from './metrics.js';
import { ServingTokens } from './tokens.js';
import { checkBatchRows, RequestBatcher, RunLane, type BatchAnswer, type BatchOutcome } from './batcher.js';
import { PredictionLog, type Arm, type PredictionLogOptions, type PredictionRequest } from './prediction-log.js';

type Row = Record<string, number | string | boolean | null>;

/** Header naming the key a request is routed by (sticky A/B and canary assignment); the body's "key" wins. */
export const ROUTING_KEY_HEADER = 'x-conveyor-routing-key';
/**
 * Shadow scoring's defaults: copies in flight at most (past it they are skipped), rows per
 * batch, and how long a batch waits for more copies. Batches are large because every batch is
 * a message that wakes the candidate's thread: each wake-up cost ~200 µs of CPU on the bench
 * machine (a 64-row call alone: 412 µs of CPU; with the thread kept busy: 213 µs).
 */
export const SHADOW_DEFAULTS = { maxInFlight: 1024, batchRows: 256, batchDelayMs: 10 } as const;
/** How long closing waits for shadow copies still being scored before the prediction log's last flush. */
const SHADOW_CLOSE_WAIT_MS = 10_000;

/**
 * Where a routing key falls in 0..9999: FNV-1a over rollout id and key, so one key
 * stays in one arm for a whole rollout and a new rollout reshuffles.
 */
export function bucket(rolloutId: string, key: string): number {
  let h = 0x811c9dc5;
  const s = `${rolloutId}:${key}`;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % 10_000;
}

let nowSecond = -1;
let nowPrefix = '';
/**
 * The current time as ISO 8601 (what `toISOString` gives), formatted once per second:
 * within a second only the milliseconds change.
 */
export function isoNow(ms: number = Date.now()): string {
  const second = Math.floor(ms / 1000);
  if (second !== nowSecond) {
    nowSecond = second;
    nowPrefix = new Date(second * 1000).toISOString().slice(0, 20);
  }
  const milli = ms - second * 1000;
  return `${nowPrefix}${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}Z`;
}

/** Missing and unknown features are refused against production's signature, before any arm runs. */
function checkSignature(served: ServedModel, rows: Row[]): void {
  for (const [index, row] of rows.entries()) {
    for (const name of served.inputNames) if (!(name in row)) throw new InputValidationError(name, index, 'missing feature');
    const extra = Object.keys(row).find((k) => !served.inputNames.has(k));
    if (extra) throw new InputValidationError(extra, index, 'unknown feature');
  }
}

const predictBody = z
  .object({
    /** Routing key for sticky assignment in A/B tests and canaries (e.g. a user id). */
    key: z.string().min(1).max(200).optional(),
    instances: z.array(z.record(z.string(), z.union([z.number(), z.string(), z.boolean(), z.null()]))).min(1).max(10_000).optional(),
    instance: z.record(z.string(), z.union([z.number(), z.string(), z.boolean(), z.null()])).optional(),
  })
  .strict()
  .refine((b) => (b.instances === undefined) !== (b.instance === undefined), { message: 'send exactly one of "instance" or "instances"' });

/** A JSON object as the body parser builds it (what zod's record accepts, and more strictly). */
function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

function isPlainRow(v: unknown): v is Row {
  if (!isPlainObject(v)) return false;
  for (const k in v) {
    const value = v[k];
    if (value !== null && typeof value !== 'number' && typeof value !== 'string' && typeof value !== 'boolean') return false;
  }
  return true;
}

/**
 * The common, valid predict body, checked without zod: what it accepts `predictBody` accepts
 * too, with the same data. Anything else (including every invalid body) is undefined, and goes
 * through `predictBody` for its answer and error message.
 */
function quickPredictBody(body: unknown): { key?: string; rows: Row[] } | undefined {
  if (!isPlainObject(body)) return undefined;
  for (const k in body) if (k !== 'key' && k !== 'instance' && k !== 'instances') return undefined;
  const { key, instance, instances } = body;
  if (key !== undefined && (typeof key !== 'string' || key.length < 1 || key.length > 200)) return undefined;
  if ((instance === undefined) === (instances === undefined)) return undefined;
  let rows: Row[];
  if (instance !== undefined) {
    if (!isPlainRow(instance)) return undefined;
    rows = [instance];
  } else {
    if (!Array.isArray(instances) || instances.length < 1 || instances.length > 10_000) return undefined;
    for (const row of instances) if (!isPlainRow(row)) return undefined;
    rows = instances as Row[];
  }
  return key === undefined ? { rows } : { key, rows };
}

const feedbackBody = z
  .object({
    labels: z
      .array(
        z
          .object({
            requestId: z.string().min(1).max(200),
            rowIndex: z.number().int().min(0).max(9_999).default(0),
            label: z.union([z.number(), z.string().max(1000)]),
          })
          .strict(),
      )
      .min(1)
      .max(10_000),
  })
  .strict();

export interface ServingOptions {
  host: ModelHost;
  logger: Logger;
  /** Bearer tokens accepted on /v1 routes and /metrics. */
  tokens: string[];
  bodyLimitBytes?: number;
  /**
   * Where the prediction log and feedback are written. Without a store nothing is
   * logged and the feedback endpoint answers 503.
   */
  store?: ArtifactStore;
  predictionLog?: Partial<PredictionLogOptions>;
  /**
   * Writes the prediction log's batches instead of `store` (the same bucket), e.g. a
   * `ThreadedObjectWriter`, so hashing and uploading them stays off the event loop. Closed
   * with the app, after the log's last flush.
   */
  predictionLogWriter?: ObjectWriter;
  /**
   * Dynamic batching: requests for the same version that arrive in the same turn of the
   * event loop are answered by one inference run of at most this many rows (default 64).
   * No request waits for another to arrive. 1 turns it off (see `RequestBatcher`).
   */
  maxBatchRows?: number;
  /** Shadow copies allowed in flight at once (waiting in a batch or being scored; default 1024); past it copies are skipped (and counted). */
  maxShadowInFlight?: number;
  /**
   * Shadow copies are scored in batches: a batch is run once it holds this many rows (or
   * a quarter of `maxShadowInFlight` copies), or `shadowBatchDelayMs` after its first copy.
   */
  shadowBatchRows?: number;
  shadowBatchDelayMs?: number;
  /** How long closing waits for shadow copies still being scored before the log's last flush (default 10 000 ms). */
  shadowCloseWaitMs?: number;
}

/** A copy of a request for a shadow candidate, from its queueing to its log rows. */
interface ShadowCopy {
  requestId: string;
  served: ServedModel;
  rolloutId: string | null;
  rows: Row[];
  /** Set once it is queued for a run: its hold on the candidate's session, and the batcher it is in. */
  release: (() => void) | undefined;
  batcher: RequestBatcher | undefined;
}

export interface Serving {
  app: FastifyInstance;
  metrics: ServingMetrics;
  /** Undefined when no store was given. Closed (flushed) by `app.close()`. */
  predictionLog: PredictionLog | undefined;
}

function zodError(error: z.ZodError): string {
  const issue = error.issues[0];
  return `${issue?.path.join('.') || 'body'}: ${issue?.message}`;
}

type LogMethod = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/**
 * `req.log`: the child logger with the request id, created only when something is logged.
 * Fastify would otherwise build a pino child for every request, and the serving logger
 * (level warn) logs almost none.
 */
class LazyRequestLogger {
  private real: FastifyBaseLogger | undefined;

  constructor(
    private readonly parent: FastifyBaseLogger,
    private readonly bindings: Record<string, unknown>,
    private readonly options: Record<string, unknown>,
  ) {}

  private get logger(): FastifyBaseLogger {
    return (this.real ??= this.parent.child(this.bindings, this.options));
  }

  private log(method: LogMethod, args: unknown[]): void {
    // A level the parent does not log is a no-op; no child is needed for it.
    if (this.real === undefined && this.options.level === undefined && !(this.parent as { isLevelEnabled?: (l: string) => boolean }).isLevelEnabled?.(method)) return;
    (this.logger[method] as (...a: unknown[]) => void)(...args);
  }

  get level(): string {
    return this.real?.level ?? (this.options.level as string | undefined) ?? this.parent.level;
  }
  set level(level: string) {
    this.logger.level = level;
  }
  fatal(...args: unknown[]): void {
    this.log('fatal', args);
  }
  error(...args: unknown[]): void {
    this.log('error', args);
  }
  warn(...args: unknown[]): void {
    this.log('warn', args);
  }
  info(...args: unknown[]): void {
    this.log('info', args);
  }
  debug(...args: unknown[]): void {
    this.log('debug', args);
  }
  trace(...args: unknown[]): void {
    this.log('trace', args);
  }
  silent(): void {}
  child(bindings: Record<string, unknown>, options?: Record<string, unknown>): FastifyBaseLogger {
    return this.logger.child(bindings, options);
  }
}

/** An answer: each row's output as JSON text (see `outputsJson`) and the inference time. */
interface Answer {
  predictions: string[];
  latencyMs: number;
}

/**
 * Fastify's per-request lines ("incoming request", "request completed") are info level and
 * the serving logger logs from warn: they would never be printed, so they are not built.
 * Errors, and requests that complete with one, are logged as fastify logs them.
 */
class ServingLogController extends LogController {
  override incomingRequest(): void {}
  override requestCompleted(...args: Parameters<LogController['requestCompleted']>): void {
    if (args[0]) super.requestCompleted(...args);
  }
}

/** A finite number as JSON.stringify writes it; NaN and ±Infinity as null, as it does too. */
function num(v: number): string {
  return Number.isFinite(v) ? String(v) : 'null';
}

/** A class's key and the column of its probability, in the order an object built from the classes lists them. */
interface ClassKey {
  text: string;
  column: number;
}

const classKeyCache = new WeakMap<readonly ClassLabel[], ClassKey[]>();

/** Whether a property name is an array index, which JavaScript objects list first, ascending. */
const isIndex = (name: string): boolean => /^(0|[1-9]\d*)$/.test(name) && Number(name) < 2 ** 32 - 1;

/**
 * The `probabilities` keys of a model's classes as `{[class]: p}` would list them: array-index
 * names first in ascending order, then the others in order; a repeated name once, at its
 * first place, with the last column's value (what assigning them in order gives).
 */
function classKeys(classes: readonly ClassLabel[]): ClassKey[] {
  let keys = classKeyCache.get(classes);
  if (keys === undefined) {
    const byName = new Map<string, number>();
    classes.forEach((c, column) => byName.set(String(c), column));
    const names = [...byName.keys()];
    const ordered = [...names.filter(isIndex).sort((x, y) => Number(x) - Number(y)), ...names.filter((n) => !isIndex(n))];
    keys = ordered.map((name) => ({ text: `${JSON.stringify(name)}:`, column: byName.get(name)! }));
    classKeyCache.set(classes, keys);
  }
  return keys;
}

/**
 * Rows start..end of a prediction as the JSON callers and the prediction log see, one text
 * per row, built once and used by both: exactly what `JSON.stringify` gives for
 * `{label, probabilities: {<class>: p}}` (classification) or `{value}` (regression).
 */
export function outputsJson(prediction: Prediction, start: number, end: number): string[] {
  const out = new Array<string>(end - start);
  if (prediction.task !== 'classification') {
    for (let i = start; i < end; i++) out[i - start] = `{"value":${num(prediction.values[i]!)}}`;
    return out;
  }
  const { classes, probabilities, labels } = prediction;
  const keys = classKeys(classes);
  const k = classes.length;
  for (let i = start; i < end; i++) {
    const label = labels[i];
    // No label (a model that gave fewer than rows): the key is left out, as JSON.stringify does.
    let text = label === undefined ? '{"probabilities":{' : `{"label":${typeof label === 'number' ? num(label) : JSON.stringify(label)},"probabilities":{`;
    for (let j = 0; j < keys.length; j++) text += `${j === 0 ? '' : ','}${keys[j]!.text}${num(probabilities[i * k + keys[j]!.column]!)}`;
    out[i - start] = `${text}}}`;
  }
  return out;
}

export function createServingApp(opts: ServingOptions): FastifyInstance {
  return buildServing(opts).app;
}

export function buildServing(opts: ServingOptions): Serving {
  // Settings are checked before anything is built: a bad one must not surface as failed requests.
  const maxBatchRows = checkBatchRows(opts.maxBatchRows ?? 64, 'maxBatchRows');
  const shadowBatchRows = checkBatchRows(opts.shadowBatchRows ?? SHADOW_DEFAULTS.batchRows, 'shadowBatchRows');
  const maxShadowInFlight = opts.maxShadowInFlight ?? SHADOW_DEFAULTS.maxInFlight;
  if (!Number.isSafeInteger(maxShadowInFlight) || maxShadowInFlight < 1) throw new RangeError(`maxShadowInFlight must be a positive integer, got ${maxShadowInFlight}`);
  const shadowCloseWaitMs = opts.shadowCloseWaitMs ?? SHADOW_CLOSE_WAIT_MS;
  if (!Number.isFinite(shadowCloseWaitMs) || shadowCloseWaitMs < 0) throw new RangeError(`shadowCloseWaitMs must be 0 or more, got ${shadowCloseWaitMs}`);
  const shadowBatchDelayMs = opts.shadowBatchDelayMs ?? SHADOW_DEFAULTS.batchDelayMs;
  if (!Number.isFinite(shadowBatchDelayMs) || shadowBatchDelayMs < 0 || shadowBatchDelayMs > 60_000) throw new RangeError(`shadowBatchDelayMs must be from 0 to 60000, got ${shadowBatchDelayMs}`);
  const tokens = new ServingTokens(opts.tokens);
  const app = Fastify({
    loggerInstance: opts.logger.child({ component: 'serving' }, { level: 'warn' }) as FastifyBaseLogger,
    bodyLimit: opts.bodyLimitBytes ?? 5 * 1024 * 1024,
    genReqId: () => randomUUID(),
    logController: new ServingLogController(),
    childLoggerFactory: (logger, bindings, options) => new LazyRequestLogger(logger, bindings, options as Record<string, unknown>) as unknown as FastifyBaseLogger,
  });
  let predictionLog: PredictionLog | undefined;
  let shadowInFlight = 0;
  /** Shadow batchers with copies not yet scored (see `settleShadow`). */
  const shadowBusy = new Set<RequestBatcher>();
  const metrics = new ServingMetrics(() => predictionLog?.pending ?? 0);
  /** Set once closing has settled the shadow copies: a copy scored later is counted as skipped, not logged. */
  let shadowClosed = false;
  const writer = opts.store ? opts.predictionLogWriter : undefined;
  if (opts.store) {
    predictionLog = new PredictionLog(writer ?? opts.store, opts.logger.child({ component: 'prediction-log' }), opts.predictionLog, (n) => metrics.logDropped.inc(n));
  }
  // Runs after in-flight requests have finished, so their rows (and their shadow copies') are
  // in the last batch. Without a log, settling still runs waiting copies now, so the
  // candidate's session is not held until a batch timer fires.
  app.addHook('onClose', async () => {
    await settleShadow();
    shadowClosed = true;
    await predictionLog?.close();
    await writer?.close();
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => (opts.host.ready ? { status: 'ready', models: opts.host.list() } : reply.code(503).send({ status: 'loading' })));

  // Authentication is decided by the matched route, not the raw URL: the router decodes
  // the path ("/%761/models" matches "/v1/models"), so a prefix test on req.url is bypassable.
  // Only the routes declared public skip it, and unmatched requests are 404s before any handler.
  // /metrics is authenticated too: its labels name the models being served.
  const PUBLIC_ROUTES = new Set(['/healthz', '/readyz']);
  // A callback hook, not an async one: no promise per request on the hot path.
  app.addHook('onRequest', (req, reply, done) => {
    const route = req.routeOptions.url;
    if ((route !== undefined && PUBLIC_ROUTES.has(route)) || tokens.accepts(req.headers.authorization)) return done();
    void reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'missing or invalid bearer token' });
  });

  app.get('/metrics', async (_req, reply) => reply.header('content-type', metrics.registry.contentType).send(await metrics.registry.metrics()));

  app.get('/v1/models', async () => ({ models: opts.host.list() }));

  // Google-style custom methods: /v1/models/<name>:predict and <name>:feedback. The router sees one segment.
  app.post<{ Params: { target: string } }>('/v1/models/:target', async (req, reply) => {
    const [name = '', method] = req.params.target.split(':');
    if (method === 'predict') return predict(name, req, reply);
    if (method === 'feedback') return feedback(name, req, reply);
    return reply.code(404).send({ error: `unknown method "${method ?? ''}"; use POST /v1/models/<name>:predict or <name>:feedback` });
  });

  /** A candidate may need a feature production does not: that is the candidate's failure, not the caller's. */
  function checkCandidateInputs(served: ServedModel, rows: Row[]): void {
    const missing = served.loaded.metadata.inputs.find((i) => !(i.name in rows[0]!));
    if (missing) throw new Error(`${served.model}@${served.version} needs feature "${missing.name}", which production's signature does not have`);
  }

  /**
   * Shadow copies are batched per candidate session, for longer than served requests (up to
   * `shadowBatchDelayMs`): they are off the caller's path, and every batch saves a message to
   * the candidate's thread and a run. Latency logged per copy is its run's time, not the wait
   * for the batch to fill; spreading the run over the batch would hide a candidate with a fixed
   * cost per run (a slow model would look fast). The rollout's latency bound needs both a ratio
   * and an absolute excess (default +5 ms), so the small overhead of a batch never trips it.
   */
  const shadowBatchCopies = Math.max(1, Math.floor(maxShadowInFlight / 4));

  /** In-process sessions all run on the event loop: their runs share one clock (see `BatcherOptions.lane`). */
  const lane = new RunLane();
  /**
   * One batcher per session and use: "served" for the requests it answers (production,
   * canary, challenger), "shadow" for copies. A promoted shadow candidate keeps its session,
   * so a session can have both, one after the other.
   */
  const batchers = { served: new WeakMap<ServedModel, RequestBatcher>(), shadow: new WeakMap<ServedModel, RequestBatcher>() };
  function batcherOf(served: ServedModel, use: 'served' | 'shadow'): RequestBatcher {
    let batcher = batchers[use].get(served);
    if (batcher === undefined) {
      const labels = { model: served.model, version: String(served.version), arm: use };
      const onRun = (requests: number): void => metrics.batchRequests.observe(labels, requests);
      batcher = new RequestBatcher(
        served.loaded,
        use === 'shadow' ? { maxRows: shadowBatchRows, maxRequests: shadowBatchCopies, delayMs: shadowBatchDelayMs, onRun } : { maxRows: maxBatchRows, lane, onRun },
      );
      batchers[use].set(served, batcher);
    }
    return batcher;
  }

  /** An answer from a batch outcome: each row's JSON, and the run's time. */
  function answerOf(outcome: BatchAnswer): Answer {
    // Microseconds are the clock's useful precision; fewer digits to write in the answer and the log.
    return { predictions: outputsJson(outcome.prediction, outcome.start, outcome.end), latencyMs: Math.round(outcome.runMs * 1000) / 1000 };
  }

  /** Runs a session on rows already checked against its signature (production's, or `checkCandidateInputs`), and shapes its answers. */
  async function infer(served: ServedModel, rows: Row[]): Promise<Answer> {
    const outcome = await batcherOf(served, 'served').predict(rows);
    if ('error' in outcome) throw outcome.error;
    return answerOf(outcome);
  }

  function logRows(requestId: string, served: ServedModel, arm: Arm, rolloutId: string | null, rows: Row[], answer: Answer | { error: string; latencyMs: number }): void {
    if (!predictionLog) return;
    const request: PredictionRequest = {
      requestId,
      time: isoNow(),
      model: served.model,
      version: served.version,
      sha256: served.sha256,
      arm,
      rolloutId,
      latencyMs: answer.latencyMs,
    };
    if ('error' in answer) {
      request.error = answer.error;
      predictionLog.appendRequest(request, rows, null);
    } else predictionLog.appendRequest(request, rows, answer.predictions);
  }

  /**
   * Queues a copy of the request for the shadow candidate, scored after the caller has its
   * answer; never throws, never blocks. The copy holds the candidate's session until it is
   * scored, so a refresh cannot release the candidate under it.
   */
  function shadowScore(requestId: string, split: TrafficSplit, rows: Row[]): void {
    const served = split.candidate;
    if (shadowInFlight >= maxShadowInFlight) {
      metrics.shadowSkipped.inc({ model: served.model });
      return;
    }
    const copy: ShadowCopy = { requestId, served, rolloutId: split.rolloutId, rows, release: undefined, batcher: undefined };
    try {
      // A copy the candidate cannot take at all fails on its own, without a run.
      checkCandidateInputs(served, rows);
    } catch (error) {
      shadowScored({ error, runMs: 0 }, copy);
      return;
    }
    // No promise or closure per copy: a hold on the session, and one callback for all copies.
    shadowInFlight++;
    copy.release = opts.host.hold(served);
    const batcher = (copy.batcher = batcherOf(served, 'shadow'));
    shadowBusy.add(batcher);
    batcher.enqueue(rows, shadowScored, copy);
  }

  /** A shadow copy has its outcome: its hold and place in flight are given back, and it is recorded. */
  function shadowScored(outcome: BatchOutcome, copy: ShadowCopy): void {
    if (copy.batcher) {
      shadowInFlight--;
      copy.release?.();
      if (copy.batcher.pending === 0) shadowBusy.delete(copy.batcher);
    }
    if (shadowClosed) {
      // Scored after closing gave up on it: the log has had its last flush.
      metrics.shadowSkipped.inc({ model: copy.served.model });
      return;
    }
    try {
      recordShadow(copy, outcome);
    } catch (err) {
      // Never let a copy's bookkeeping fail the request, the batch it came back in, or the process.
      opts.logger.warn({ err: (err as Error).message, model: copy.served.model, version: copy.served.version }, 'could not record a shadow copy');
    }
  }

  /**
   * Closing: scores the shadow copies still waiting for their batch now, and waits (up to
   * `shadowCloseWaitMs`) until every copy is logged, so the prediction log's last flush has them.
   */
  async function settleShadow(): Promise<void> {
    if (shadowBusy.size === 0) return;
    const busy = [...shadowBusy];
    for (const batcher of busy) batcher.flush();
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = await Promise.race([
      Promise.all(busy.map((b) => b.settled())).then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), shadowCloseWaitMs))),
    ]);
    clearTimeout(timer);
    if (gaveUp) opts.logger.warn({ copies: shadowInFlight, waitedMs: shadowCloseWaitMs }, 'closing with shadow copies not yet scored; they are not logged (counted as skipped when they finish)');
  }

  /** A shadow copy's outcome: counted and logged, or skipped when the candidate's thread died. */
  function recordShadow({ requestId, served, rolloutId, rows }: ShadowCopy, outcome: BatchOutcome): void {
    if (!('error' in outcome)) {
      const answer = answerOf(outcome);
      metrics.answered(metrics.seriesOf(served.model, served.version, 'shadow'), rows.length, answer.latencyMs / 1000);
      logRows(requestId, served, 'shadow', rolloutId, rows, answer);
    } else if (served.loaded.failure?.()) {
      // The candidate's thread died (the host loads it again): not an answer of the
      // candidate's. The copy is skipped and counted, not held against it.
      metrics.shadowSkipped.inc({ model: served.model });
    } else {
      metrics.inferenceFailures.inc({ model: served.model, version: String(served.version), arm: 'shadow' });
      logRows(requestId, served, 'shadow', rolloutId, rows, { error: (outcome.error as Error).message, latencyMs: outcome.runMs });
    }
  }

  /** A refused prediction request (not a closure per request: this is the hot path's function). */
  function refuse(reply: FastifyReply, modelLabel: string, code: 400 | 404, body: object): FastifyReply {
    metrics.errors.inc({ model: modelLabel, reason: code === 400 ? 'bad_request' : 'not_found' });
    return reply.code(code).send(body);
  }

  async function predict(name: string, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    // Only a model being served becomes a label value: callers cannot mint new series.
    const route = opts.host.route(name);
    const modelLabel = route ? name : UNKNOWN_MODEL_LABEL;
    if (!isValidName(name)) return refuse(reply, modelLabel, 400, { error: `invalid model name "${name}"` });
    let body = quickPredictBody(req.body);
    if (!body) {
      const parsed = predictBody.safeParse(req.body);
      if (!parsed.success) return refuse(reply, modelLabel, 400, { error: zodError(parsed.error) });
      body = { key: parsed.data.key, rows: parsed.data.instances ?? [parsed.data.instance!] };
    }
    if (!route) return refuse(reply, modelLabel, 404, { error: `model "${name}" has no production version being served` });
    const { rows } = body;
    const requestStarted = performance.now();
    const { split } = route;
    const routingKey = body.key ?? (typeof req.headers[ROUTING_KEY_HEADER] === 'string' ? req.headers[ROUTING_KEY_HEADER] : undefined);

    // The request's own signature check is production's: that is the contract callers know.
    try {
      checkSignature(route.production, rows);
    } catch (err) {
      if (err instanceof InputValidationError) return refuse(reply, modelLabel, 400, { error: err.message, field: err.field });
      throw err;
    }
    // Production is held for the whole request, so a refresh cannot release it while a
    // candidate is tried first and production is then needed as the fallback.
    const answered = await opts.host.useSession(route.production, async (production) => {
      let candidateFailure: { arm: Arm; error: string; latencyMs: number } | undefined;
      if (split && split.mode !== 'shadow' && bucket(split.rolloutId ?? '', routingKey ?? req.id) < split.percent * 100) {
        const arm: Arm = split.mode === 'canary' ? 'canary' : 'challenger';
        const started = performance.now();
        try {
          return { served: split.candidate, arm, answer: await opts.host.useSession(split.candidate, (served) => {
            checkCandidateInputs(served, rows);
            return infer(served, rows);
          }) };
        } catch (err) {
          // The candidate failed: the caller still gets production's answer; the failure is
          // what the rollout's analysis counts (unless production refuses the input too).
          candidateFailure = { arm, error: (err as Error).message, latencyMs: performance.now() - started };
        }
      }
      try {
        const answer = await infer(production, rows);
        if (candidateFailure && split) {
          metrics.inferenceFailures.inc({ model: name, version: String(split.candidate.version), arm: candidateFailure.arm });
          logRows(req.id, split.candidate, candidateFailure.arm, split.rolloutId, rows, candidateFailure);
          req.log.warn({ err: candidateFailure.error, version: split.candidate.version, arm: candidateFailure.arm }, 'candidate failed; answered by production');
        }
        if (split?.mode === 'shadow') shadowScore(req.id, split, rows);
        return { served: production, arm: 'production' as Arm, answer };
      } catch (err) {
        if (err instanceof InputValidationError) return { invalid: err };
        metrics.errors.inc({ model: modelLabel, reason: 'internal' });
        metrics.inferenceFailures.inc({ model: name, version: String(production.version), arm: 'production' });
        logRows(req.id, production, 'production', split?.rolloutId ?? null, rows, { error: (err as Error).message, latencyMs: performance.now() - requestStarted });
        throw err;
      }
    });
    if ('invalid' in answered && answered.invalid) return refuse(reply, modelLabel, 400, { error: answered.invalid.message, field: answered.invalid.field });
    const { served, arm, answer } = answered;
    metrics.answered(metrics.seriesOf(served.model, served.version, arm), answer.predictions.length, (performance.now() - requestStarted) / 1000);
    logRows(req.id, served, arm, split?.rolloutId ?? null, rows, answer);
    // Written out here rather than by fastify's serializer: each row's JSON is already built (and logged).
    const rollout = split?.rolloutId && arm !== 'production' ? `,"rolloutId":${JSON.stringify(split.rolloutId)}` : '';
    return reply
      .header('content-type', 'application/json; charset=utf-8')
      .send(
        `{"requestId":${JSON.stringify(req.id)},"model":${JSON.stringify(served.model)},"version":${served.version},"arm":"${arm}","sha256":${JSON.stringify(served.sha256)}${rollout}` +
          `,"predictions":[${answer.predictions.join(',')}],"latencyMs":${num(answer.latencyMs)}}`,
      );
  }

  async function feedback(name: string, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    if (!isValidName(name)) return reply.code(400).send({ error: `invalid model name "${name}"` });
    const parsed = feedbackBody.safeParse(req.body);
    if (!parsed.success) return reply.code(400).send({ error: zodError(parsed.error) });
    if (!opts.host.get(name)) return reply.code(404).send({ error: `model "${name}" is not being served here` });
    if (!opts.store) return reply.code(503).send({ error: 'feedback storage is not configured' });
    const now = new Date();
    const receivedAt = now.toISOString();
    const body = parsed.data.labels.map((l) => JSON.stringify({ model: name, requestId: l.requestId, rowIndex: l.rowIndex, label: l.label, receivedAt })).join('\n') + '\n';
    const key = keys.feedbackBatch(name, now, randomBytes(6).toString('hex'));
    try {
      await opts.store.put(key, body, { ifAbsent: true, contentType: 'application/x-ndjson' });
    } catch (err) {
      // Labels are not buffered: the client keeps them and retries.
      req.log.warn({ err: (err as Error).message, key }, 'could not store feedback');
      return reply.code(503).send({ error: 'could not store feedback now; retry later' });
    }
    return reply.code(202).send({ accepted: parsed.data.labels.length });
  }

  return { app, metrics, predictionLog };
}
