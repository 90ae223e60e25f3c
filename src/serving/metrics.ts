import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export type PredictionErrorReason = 'bad_request' | 'not_found' | 'internal';

/** Label used for requests naming a model that is not being served, so callers cannot mint label values. */
export const UNKNOWN_MODEL_LABEL = '_unknown';

type AnswerLabels = { model: string; version: string; arm: string };
type HistogramValue = { labels: Record<string, string | number>; value: number; metricName: string };

/** One (model, version, arm): its rows and latency, counted in plain numbers on the request path. */
export interface AnswerSeries {
  readonly labels: AnswerLabels;
  /** Rows answered since the last scrape (moved into the prom-client counter then). */
  rows: number;
  /** Requests per latency bucket (the last is +Inf), not cumulative. */
  readonly buckets: Float64Array;
  sum: number;
  count: number;
}

/**
 * `conveyor_prediction_latency_seconds` as prom-client's registry reads a metric (`get()`),
 * counted without prom-client's per-call label hashing and validation: a request adds to the
 * series its route already holds. Same exposition as a prom-client Histogram.
 */
class LatencyHistogram {
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly upperBounds: readonly number[],
    private readonly series: () => Iterable<AnswerSeries>,
  ) {}

  get(): Promise<{ name: string; help: string; type: 'histogram'; values: HistogramValue[]; aggregator: 'sum' }> {
    const values: HistogramValue[] = [];
    for (const s of this.series()) {
      if (s.count === 0) continue;
      let cumulative = 0;
      this.upperBounds.forEach((le, i) => {
        cumulative += s.buckets[i]!;
        values.push({ labels: { le, ...s.labels }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { le: '+Inf', ...s.labels }, value: s.count, metricName: `${this.name}_bucket` });
      values.push({ labels: { ...s.labels }, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...s.labels }, value: s.count, metricName: `${this.name}_count` });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator });
  }
}

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/**
 * Prometheus metrics of one serving app, on a registry of its own (not prom-client's
 * global default), so several apps can live in one process.
 */
export class ServingMetrics {
  readonly registry = new Registry();
  /** Prediction rows answered (counted through `answered`, moved in at each scrape). */
  readonly predictions: Counter<'model' | 'version' | 'arm'>;
  readonly errors: Counter<'model' | 'reason'>;
  readonly logDropped: Counter;
  /** Inference that threw, per arm (a failed canary or challenger request is answered by production). */
  readonly inferenceFailures: Counter<'model' | 'version' | 'arm'>;
  /** Shadow copies not scored because too many were in flight. */
  readonly shadowSkipped: Counter<'model'>;
  readonly logPending: Gauge;
  /** Requests answered per inference run (dynamic batching), per model, version and arm ("served" or "shadow"): observed once per run. */
  readonly batchRequests: Histogram<'model' | 'version' | 'arm'>;
  private readonly series = new Map<string, AnswerSeries>();

  constructor(pendingRows: () => number = () => 0) {
    const registers = [this.registry];
    const all = this.series;
    this.predictions = new Counter({
      name: 'conveyor_predictions_total',
      help: 'Prediction rows answered',
      labelNames: ['model', 'version', 'arm'],
      registers,
      collect() {
        for (const s of all.values()) {
          if (s.rows === 0) continue;
          this.inc(s.labels, s.rows);
          s.rows = 0;
        }
      },
    });
    this.errors = new Counter({
      name: 'conveyor_prediction_errors_total',
      help: `Prediction requests refused or failed (model="${UNKNOWN_MODEL_LABEL}" when the name is not being served)`,
      labelNames: ['model', 'reason'],
      registers,
    });
    // Registered like prom-client's own metrics; the registry only calls get().
    this.registry.registerMetric(
      new LatencyHistogram('conveyor_prediction_latency_seconds', 'Time to answer a prediction request (validation and inference)', LATENCY_BUCKETS, () => all.values()) as never,
    );
    this.inferenceFailures = new Counter({
      name: 'conveyor_inference_failures_total',
      help: 'Inference runs that failed, per model, version and arm (failed canary/challenger requests are answered by production)',
      labelNames: ['model', 'version', 'arm'],
      registers,
    });
    this.shadowSkipped = new Counter({ name: 'conveyor_shadow_skipped_total', help: 'Shadow copies not scored because too many were in flight', labelNames: ['model'], registers });
    this.logDropped = new Counter({ name: 'conveyor_prediction_log_dropped_total', help: 'Prediction log rows dropped because the buffer was full', registers });
    this.batchRequests = new Histogram({
      name: 'conveyor_inference_batch_requests',
      help: 'Requests answered by one inference run (dynamic batching); arm is "served" (production, canary, challenger) or "shadow"',
      labelNames: ['model', 'version', 'arm'],
      buckets: [1, 2, 4, 8, 16, 32, 64],
      registers,
    });
    this.logPending = new Gauge({
      name: 'conveyor_prediction_log_pending',
      help: 'Prediction log rows in memory, not yet written to the store',
      registers,
      collect() {
        this.set(pendingRows());
      },
    });
  }

  /** The series of a model version's arm; keep it (per route) and pass it to `answered`. */
  seriesOf(model: string, version: number, arm: string): AnswerSeries {
    const key = `${model}\n${version}\n${arm}`;
    let s = this.series.get(key);
    if (s === undefined) {
      s = { labels: { model, version: String(version), arm }, rows: 0, buckets: new Float64Array(LATENCY_BUCKETS.length + 1), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    return s;
  }

  /** A request answered: its rows, and how long it took. */
  answered(series: AnswerSeries, rows: number, seconds: number): void {
    series.rows += rows;
    let i = 0;
    while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]!) i++;
    series.buckets[i]!++;
    series.sum += seconds;
    series.count++;
  }
}
