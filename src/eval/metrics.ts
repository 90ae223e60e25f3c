// Pure evaluation metrics. No I/O, no Node imports: safe to use from workflow code.

export const METRIC_DIRECTION = {
  accuracy: 'higher',
  precision: 'higher',
  recall: 'higher',
  f1: 'higher',
  roc_auc: 'higher',
  log_loss: 'lower',
  rmse: 'lower',
  mae: 'lower',
  r2: 'higher',
} as const;

export type MetricName = keyof typeof METRIC_DIRECTION;

export const METRICS_BY_TASK = {
  classification: ['accuracy', 'precision', 'recall', 'f1', 'roc_auc', 'log_loss'],
  regression: ['rmse', 'mae', 'r2'],
} as const satisfies Record<string, readonly MetricName[]>;

export type Label = number | string;

export function isMetricName(name: string): name is MetricName {
  return Object.prototype.hasOwnProperty.call(METRIC_DIRECTION, name);
}

export function isHigherBetter(metric: MetricName): boolean {
  return METRIC_DIRECTION[metric] === 'higher';
}

export interface ConfusionMatrix {
  labels: Label[];
  /** matrix[i][j] = rows whose true label is labels[i] and predicted label is labels[j]. */
  matrix: number[][];
}

export interface ClassificationMetrics {
  accuracy: number | null;
  precision: number | null;
  recall: number | null;
  f1: number | null;
  roc_auc: number | null;
  log_loss: number | null;
  confusion_matrix: ConfusionMatrix;
  support: number;
}

export interface RegressionMetrics {
  rmse: number | null;
  mae: number | null;
  r2: number | null;
  support: number;
}

const LOG_LOSS_EPS = 1e-15;

function finiteOrNull(v: number): number | null {
  return Number.isFinite(v) ? v : null;
}

function ratio(num: number, den: number): number | null {
  return den === 0 ? null : finiteOrNull(num / den);
}

function mean(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  return finiteOrNull(values.reduce((a, b) => a + b, 0) / values.length);
}

// Labels are matched by their string form so that 1 and "1" (e.g. JSON vs. tensor output) agree.
function classIndex(classes: readonly Label[]): Map<string, number> {
  const index = new Map<string, number>();
  classes.forEach((c, i) => {
    const key = String(c);
    if (index.has(key)) throw new RangeError(`duplicate class label ${JSON.stringify(c)}`);
    index.set(key, i);
  });
  return index;
}

function lookup(index: Map<string, number>, label: Label, what: string, row: number): number {
  const i = index.get(String(label));
  if (i === undefined) {
    throw new RangeError(`${what} label ${JSON.stringify(label)} at row ${row} is not one of the model classes`);
  }
  return i;
}

/**
 * ROC AUC from the Mann-Whitney U statistic, averaging ranks over tied scores.
 * Null when either class is absent or a score is not finite.
 */
export function rocAuc(isPositive: readonly boolean[], scores: ArrayLike<number>): number | null {
  const n = isPositive.length;
  let nPos = 0;
  for (const p of isPositive) if (p) nPos++;
  const nNeg = n - nPos;
  if (nPos === 0 || nNeg === 0) return null;
  for (let i = 0; i < n; i++) if (!Number.isFinite(scores[i]!)) return null;

  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a]! - scores[b]!);
  let rankSumPos = 0;
  for (let start = 0; start < n; ) {
    let end = start + 1;
    while (end < n && scores[order[end]!] === scores[order[start]!]) end++;
    const avgRank = (start + 1 + end) / 2; // ranks are 1-based: start+1 .. end
    for (let k = start; k < end; k++) if (isPositive[order[k]!]) rankSumPos += avgRank;
    start = end;
  }
  return finiteOrNull((rankSumPos - (nPos * (nPos + 1)) / 2) / (nPos * nNeg));
}

function argmaxRow(proba: ArrayLike<number>, row: number, k: number): number {
  let best = 0;
  for (let j = 1; j < k; j++) if (proba[row * k + j]! > proba[row * k + best]!) best = j;
  return best;
}

interface PerClass {
  precision: number | null;
  recall: number | null;
  f1: number | null;
}

function perClass(matrix: number[][], c: number): PerClass {
  const tp = matrix[c]![c]!;
  let fp = 0;
  let fn = 0;
  for (let i = 0; i < matrix.length; i++) {
    if (i === c) continue;
    fp += matrix[i]![c]!;
    fn += matrix[c]![i]!;
  }
  // 2TP/(2TP+FP+FN) is the harmonic mean of precision and recall when both exist, and 0 when TP=0.
  return { precision: ratio(tp, tp + fp), recall: ratio(tp, tp + fn), f1: ratio(2 * tp, 2 * tp + fp + fn) };
}

/**
 * Classification metrics from class probabilities (row-major [n, classes.length]).
 * Binary: precision/recall/f1/roc_auc for the positive class `classes[1]`.
 * Multiclass: macro averages over the classes that occur in yTrue or the predictions
 * (an undefined per-class value counts as 0, as scikit-learn's zero_division=0);
 * roc_auc is the macro one-vs-rest average over classes whose AUC is defined.
 * `predicted` defaults to the argmax of `proba`.
 */
export function classificationMetrics(
  yTrue: readonly Label[],
  proba: Float32Array | readonly number[],
  classes: readonly Label[],
  predicted?: readonly Label[],
): ClassificationMetrics {
  const n = yTrue.length;
  const k = classes.length;
  if (k < 2) throw new RangeError(`classification needs at least 2 classes, got ${k}`);
  if (proba.length !== n * k) {
    throw new RangeError(`proba has ${proba.length} values, expected ${n} rows x ${k} classes = ${n * k}`);
  }
  if (predicted !== undefined && predicted.length !== n) {
    throw new RangeError(`predicted has ${predicted.length} labels, expected ${n}`);
  }
  const index = classIndex(classes);
  const trueIdx = yTrue.map((y, i) => lookup(index, y, 'true', i));
  const predIdx = predicted
    ? predicted.map((p, i) => lookup(index, p, 'predicted', i))
    : trueIdx.map((_, i) => argmaxRow(proba, i, k));

  const matrix = classes.map(() => new Array<number>(k).fill(0));
  let correct = 0;
  let logLossSum = 0;
  for (let i = 0; i < n; i++) {
    const t = trueIdx[i]!;
    const p = predIdx[i]!;
    matrix[t]![p]!++;
    if (t === p) correct++;
    const prob = Math.min(Math.max(proba[i * k + t]!, LOG_LOSS_EPS), 1 - LOG_LOSS_EPS);
    logLossSum -= Math.log(prob);
  }

  let precision: number | null;
  let recall: number | null;
  let f1: number | null;
  let auc: number | null;
  const scoresFor = (c: number): number[] => trueIdx.map((_, i) => proba[i * k + c]!);
  if (k === 2) {
    ({ precision, recall, f1 } = perClass(matrix, 1));
    auc = rocAuc(trueIdx.map((t) => t === 1), scoresFor(1));
  } else {
    const present = new Set([...trueIdx, ...predIdx]);
    const stats = [...present].map((c) => perClass(matrix, c));
    precision = mean(stats.map((s) => s.precision ?? 0));
    recall = mean(stats.map((s) => s.recall ?? 0));
    f1 = mean(stats.map((s) => s.f1 ?? 0));
    const aucs = classes
      .map((_, c) => rocAuc(trueIdx.map((t) => t === c), scoresFor(c)))
      .filter((a): a is number => a !== null);
    auc = mean(aucs);
  }

  return {
    accuracy: ratio(correct, n),
    precision,
    recall,
    f1,
    roc_auc: auc,
    log_loss: n === 0 ? null : finiteOrNull(logLossSum / n),
    confusion_matrix: { labels: [...classes], matrix },
    support: n,
  };
}

/** RMSE, MAE and R² (null when yTrue has zero variance or there are no rows). */
export function regressionMetrics(yTrue: readonly number[], yPred: ArrayLike<number>): RegressionMetrics {
  const n = yTrue.length;
  if (yPred.length !== n) throw new RangeError(`yPred has ${yPred.length} values, expected ${n}`);
  if (n === 0) return { rmse: null, mae: null, r2: null, support: 0 };
  let sq = 0;
  let abs = 0;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const err = yTrue[i]! - yPred[i]!;
    sq += err * err;
    abs += Math.abs(err);
    sum += yTrue[i]!;
  }
  const yMean = sum / n;
  let ssTot = 0;
  for (const y of yTrue) ssTot += (y - yMean) * (y - yMean);
  return {
    rmse: finiteOrNull(Math.sqrt(sq / n)),
    mae: finiteOrNull(abs / n),
    r2: ssTot === 0 ? null : finiteOrNull(1 - sq / ssTot),
    support: n,
  };
}

export type SliceInput =
  | {
      task: 'classification';
      yTrue: readonly Label[];
      proba: Float32Array | readonly number[];
      classes: readonly Label[];
      predicted?: readonly Label[];
    }
  | { task: 'regression'; yTrue: readonly number[]; yPred: ArrayLike<number> };

export interface SliceResult<M> {
  /** Slice value as a string; null/undefined/'' become "__missing__". */
  value: string;
  support: number;
  metrics: M;
}

export interface SliceReport<M> {
  slices: SliceResult<M>[];
  /** Slices with fewer than minSupport rows; no metrics are computed for them. */
  skipped: Array<{ value: string; support: number }>;
}

export const MISSING_SLICE = '__missing__';
export const DEFAULT_MIN_SUPPORT = 30;

function sliceKey(v: unknown): string {
  return v === null || v === undefined || v === '' ? MISSING_SLICE : String(v);
}

/** Metrics per value of a slice column, ordered by support (desc) then value. */
export function sliceMetrics(
  sliceValues: readonly unknown[],
  input: Extract<SliceInput, { task: 'classification' }>,
  options?: { minSupport?: number },
): SliceReport<ClassificationMetrics>;
export function sliceMetrics(
  sliceValues: readonly unknown[],
  input: Extract<SliceInput, { task: 'regression' }>,
  options?: { minSupport?: number },
): SliceReport<RegressionMetrics>;
export function sliceMetrics(
  sliceValues: readonly unknown[],
  input: SliceInput,
  options: { minSupport?: number } = {},
): SliceReport<ClassificationMetrics | RegressionMetrics> {
  const minSupport = options.minSupport ?? DEFAULT_MIN_SUPPORT;
  if (sliceValues.length !== input.yTrue.length) {
    throw new RangeError(`slice column has ${sliceValues.length} values, expected ${input.yTrue.length}`);
  }
  const groups = new Map<string, number[]>();
  sliceValues.forEach((v, i) => {
    const key = sliceKey(v);
    const rows = groups.get(key);
    if (rows) rows.push(i);
    else groups.set(key, [i]);
  });
  const ordered = [...groups.entries()].sort(
    ([a, ra], [b, rb]) => rb.length - ra.length || (a < b ? -1 : a > b ? 1 : 0),
  );

  const report: SliceReport<ClassificationMetrics | RegressionMetrics> = { slices: [], skipped: [] };
  for (const [value, rows] of ordered) {
    if (rows.length < minSupport) {
      report.skipped.push({ value, support: rows.length });
      continue;
    }
    report.slices.push({ value, support: rows.length, metrics: metricsForRows(input, rows) });
  }
  return report;
}

function metricsForRows(input: SliceInput, rows: number[]): ClassificationMetrics | RegressionMetrics {
  if (input.task === 'regression') {
    return regressionMetrics(
      rows.map((i) => input.yTrue[i]!),
      rows.map((i) => input.yPred[i]!),
    );
  }
  const k = input.classes.length;
  const proba: number[] = [];
  for (const i of rows) for (let j = 0; j < k; j++) proba.push(input.proba[i * k + j]!);
  const predicted = input.predicted;
  return classificationMetrics(
    rows.map((i) => input.yTrue[i]!),
    proba,
    input.classes,
    predicted ? rows.map((i) => predicted[i]!) : undefined,
  );
}
