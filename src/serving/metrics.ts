import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export type PredictionErrorReason = 'bad_request' | 'not_found' | 'internal';

/** Label used for requests naming a model that is not being served, so callers cannot mint label values. */
export const UNKNOWN_MODEL_LABEL = '_unknown';

/**
 * Prometheus metrics of one serving app, on a registry of its own (not prom-client's
 * global default), so several apps can live in one process.
 */
export class ServingMetrics {
  readonly registry = new Registry();
  /** Prediction rows answered. */
  readonly predictions: Counter<'model' | 'version' | 'arm'>;
  readonly errors: Counter<'model' | 'reason'>;
  /** Time to answer a prediction request (validation and inference), per request. */
  readonly latency: Histogram<'model' | 'version' | 'arm'>;
  readonly logDropped: Counter;
  /** Inference that threw, per arm (a failed canary or challenger request is answered by production). */
  readonly inferenceFailures: Counter<'model' | 'version' | 'arm'>;
  /** Shadow copies not scored because too many were in flight. */
  readonly shadowSkipped: Counter<'model'>;
  readonly logPending: Gauge;

  constructor(pendingRows: () => number = () => 0) {
    const registers = [this.registry];
    this.predictions = new Counter({ name: 'conveyor_predictions_total', help: 'Prediction rows answered', labelNames: ['model', 'version', 'arm'], registers });
    this.errors = new Counter({
      name: 'conveyor_prediction_errors_total',
      help: `Prediction requests refused or failed (model="${UNKNOWN_MODEL_LABEL}" when the name is not being served)`,
      labelNames: ['model', 'reason'],
      registers,
    });
    this.latency = new Histogram({
      name: 'conveyor_prediction_latency_seconds',
      help: 'Time to answer a prediction request (validation and inference)',
      labelNames: ['model', 'version', 'arm'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.inferenceFailures = new Counter({
      name: 'conveyor_inference_failures_total',
      help: 'Inference runs that failed, per model, version and arm (failed canary/challenger requests are answered by production)',
      labelNames: ['model', 'version', 'arm'],
      registers,
    });
    this.shadowSkipped = new Counter({ name: 'conveyor_shadow_skipped_total', help: 'Shadow copies not scored because too many were in flight', labelNames: ['model'], registers });
    this.logDropped = new Counter({ name: 'conveyor_prediction_log_dropped_total', help: 'Prediction log rows dropped because the buffer was full', registers });
    this.logPending = new Gauge({
      name: 'conveyor_prediction_log_pending',
      help: 'Prediction log rows in memory, not yet written to the store',
      registers,
      collect() {
        this.set(pendingRows());
      },
    });
  }
}
