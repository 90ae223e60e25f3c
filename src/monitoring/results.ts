import type { ArtifactStore } from '../store/artifact-store.js';
import { keys } from '../store/keys.js';
import type { DriftReport } from './drift.js';

export const DECAY_KINDS = ['drift', 'quality', 'performance'] as const;
export type DecayKind = (typeof DECAY_KINDS)[number];

export interface MonitorBreach {
  kind: DecayKind;
  /** The feature (or "prediction") it concerns; absent for performance. */
  feature?: string;
  measure: string;
  value: number;
  threshold: number;
  message: string;
}

export interface PerformanceResult {
  metric: 'accuracy' | 'roc_auc' | 'rmse';
  /** Evaluation's value of the metric for this version. */
  baseline: number | null;
  /** On the labelled predictions of the performance window; null below minLabels. */
  value: number | null;
  labels: number;
  /** How much worse than the baseline (positive = worse), when judged. */
  drop: number | null;
  breached: boolean;
  /** Predictions considered: [from, windowEnd), from = windowEnd − labelDelay, labels received by computedAt. */
  from: string;
}

/** One monitor run over one window of one model version's served predictions. */
export interface MonitorResult {
  model: string;
  version: number;
  sha256: string;
  windowStart: string;
  windowEnd: string;
  computedAt: string;
  /** decay: a breach of a kind the spec's retrain.on lists, or any breach when judged; insufficient_data: too few rows, no verdict. */
  verdict: 'ok' | 'decay' | 'insufficient_data';
  /** Kinds of breach found (drift, quality, performance). */
  decayKinds: DecayKind[];
  sampleSize: number;
  drift: DriftReport | null;
  performance: PerformanceResult | null;
  breaches: MonitorBreach[];
  /** Human-readable why (no reference profile, too few rows, ...). */
  notes: string[];
  resultKey: string;
}

/** A model's monitor results, newest first (all versions unless one is named). */
export async function listMonitorResults(store: ArtifactStore, model: string, opts: { version?: number; limit?: number } = {}): Promise<MonitorResult[]> {
  const prefix = opts.version === undefined ? keys.monitorPrefix(model) : keys.monitorVersionPrefix(model, opts.version);
  const found = (await store.list(prefix)).filter((k) => k.endsWith('.json'));
  // Keys sort by version, then window end; order by window end across versions.
  const byEnd = found.map((k) => ({ k, end: k.slice(k.lastIndexOf('/') + 1) })).sort((a, b) => b.end.localeCompare(a.end));
  const limited = byEnd.slice(0, opts.limit ?? 100);
  return Promise.all(limited.map(async ({ k }) => JSON.parse((await store.get(k)).toString('utf8')) as MonitorResult));
}
