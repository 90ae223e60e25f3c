// Pure promotion-gate evaluation. No I/O: safe to use from workflow code.
import { isHigherBetter, isMetricName } from './metrics.js';
import type { MetricName } from './metrics.js';

export interface Gate {
  metric: MetricName;
  min?: number;
  max?: number;
}

export interface BeatProduction {
  metric: MetricName;
  minDelta: number;
}

export interface GateInput {
  metrics: Record<string, number | null>;
  gates: Gate[];
  beatProduction?: BeatProduction | undefined;
  productionMetrics?: Record<string, number | null> | null;
}

export interface GateResult {
  /** Human-readable, e.g. "roc_auc >= 0.7". */
  gate: string;
  metric: MetricName;
  /** The candidate's value; for beatProduction, its improvement over production. */
  actual: number | null;
  threshold: number;
  passed: boolean;
  reason?: string;
}

export interface GateReport {
  passed: boolean;
  results: GateResult[];
}

// Absorbs floating-point noise in differences such as 0.81 - 0.80 compared against 0.01.
const DELTA_EPSILON = 1e-12;

function metricValue(metrics: Record<string, number | null> | null | undefined, metric: string): number | null {
  const v = metrics?.[metric];
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

function assertMetric(metric: string): asserts metric is MetricName {
  if (!isMetricName(metric)) throw new RangeError(`unknown metric "${metric}" in gate`);
}

function boundResult(metric: MetricName, actual: number | null, op: '>=' | '<=', threshold: number): GateResult {
  const gate = `${metric} ${op} ${threshold}`;
  if (actual === null) {
    return { gate, metric, actual, threshold, passed: false, reason: `${metric} is not available for the candidate` };
  }
  const passed = op === '>=' ? actual >= threshold : actual <= threshold;
  return passed
    ? { gate, metric, actual, threshold, passed }
    : { gate, metric, actual, threshold, passed, reason: `${metric} = ${actual}, required ${op} ${threshold}` };
}

function beatProductionResult(input: GateInput, rule: BeatProduction): GateResult {
  const { metric, minDelta } = rule;
  assertMetric(metric);
  const higher = isHigherBetter(metric);
  const gate = `${metric} beats production by >= ${minDelta} (${higher ? 'higher' : 'lower'} is better)`;
  const base = { gate, metric, threshold: minDelta };
  if (input.productionMetrics === null || input.productionMetrics === undefined) {
    return { ...base, actual: null, passed: true, reason: 'no production model' };
  }
  const candidate = metricValue(input.metrics, metric);
  if (candidate === null) {
    return { ...base, actual: null, passed: false, reason: `${metric} is not available for the candidate` };
  }
  const production = metricValue(input.productionMetrics, metric);
  if (production === null) {
    return { ...base, actual: null, passed: true, reason: `production model has no ${metric} to compare against` };
  }
  const improvement = higher ? candidate - production : production - candidate;
  const passed = improvement >= minDelta - DELTA_EPSILON;
  const reason = `candidate ${metric} = ${candidate}, production = ${production}, improvement = ${improvement}`;
  return { ...base, actual: improvement, passed, reason };
}

/**
 * Evaluates absolute gates (one result per bound) and the optional beat-production rule.
 * A gate whose metric is missing or null fails. Without a production model the
 * beat-production rule passes with reason "no production model".
 */
export function evaluateGates(input: GateInput): GateReport {
  const results: GateResult[] = [];
  for (const g of input.gates) {
    assertMetric(g.metric);
    if (g.min === undefined && g.max === undefined) {
      throw new RangeError(`gate on ${g.metric} needs min or max`);
    }
    const actual = metricValue(input.metrics, g.metric);
    if (g.min !== undefined) results.push(boundResult(g.metric, actual, '>=', g.min));
    if (g.max !== undefined) results.push(boundResult(g.metric, actual, '<=', g.max));
  }
  if (input.beatProduction) results.push(beatProductionResult(input, input.beatProduction));
  return { passed: results.every((r) => r.passed), results };
}
