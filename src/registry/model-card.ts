import { METRICS_BY_TASK, METRIC_DIRECTION, isMetricName } from '../eval/metrics.js';
import type { ArtifactStore } from '../store/artifact-store.js';
import { ObjectNotFoundError } from '../store/artifact-store.js';
import { formatBytes, formatNumber, formatValue, type Lineage } from './lineage.js';

/**
 * The evaluation report object written by the evaluate activity at
 * `record.evaluation.reportKey`. Read defensively: every part may be missing.
 */
export interface StoredEvaluationReport {
  model?: string;
  holdoutKey?: string;
  holdoutRows?: number;
  /** Scalar metrics plus, for classification, `confusion_matrix` and `support`. */
  metrics?: Record<string, unknown>;
  /** Per slice column: metrics per value (≥ min support) and skipped small slices. */
  slices?: Record<
    string,
    {
      slices?: Array<{ value: string; support: number; metrics: Record<string, unknown> }>;
      skipped?: Array<{ value: string; support: number }>;
    }
  >;
  production?: { version: number; sha256?: string; metrics: Record<string, number | null> } | null;
  gates?: unknown[];
  passed?: boolean;
}

export interface ModelCardSlice {
  column: string;
  value: string;
  support: number;
  metrics: Record<string, number | null>;
}

export interface ModelCardComparison {
  metric: string;
  candidate: number | null;
  production: number | null;
  /** candidate − production. */
  delta: number | null;
  /** Whether the candidate is better, per the metric's direction; null when unknown. */
  better: boolean | null;
}

export interface ModelCardJson {
  schemaVersion: 1;
  model: string;
  version: number;
  createdAt: string;
  task: Lineage['task'];
  target: string;
  features: string[];
  intendedUse: string | null;
  notes: string | null;
  artifact: Lineage['artifact'] & { framework: string; algorithm: string };
  data: Lineage['dataset'] & { split: Lineage['split'] };
  training: Lineage['trainer'] & { run: Lineage['run'] };
  evaluation: {
    reportKey: string;
    reportAvailable: boolean;
    holdoutRows: number | null;
    metrics: Record<string, number | null>;
    confusionMatrix: { labels: Array<string | number>; matrix: number[][] } | null;
    slices: ModelCardSlice[];
    skippedSlices: Array<{ column: string; value: string; support: number }>;
    production: { version: number; comparison: ModelCardComparison[] } | null;
  };
  gates: Lineage['evaluation']['gates'];
  gatesPassed: boolean;
  approval: Lineage['decision'];
  deployments: Lineage['deployments'];
  inProduction: boolean;
  tags: Record<string, string>;
  archived: { by: string | null; at: string | null; reason: string | null } | null;
  warnings: string[];
}

export interface ModelCard {
  json: ModelCardJson;
  markdown: string;
}

/** Reads the evaluation report; null when it does not exist. */
export async function loadEvaluationReport(store: ArtifactStore, reportKey: string): Promise<StoredEvaluationReport | null> {
  try {
    return JSON.parse((await store.get(reportKey)).toString('utf8')) as StoredEvaluationReport;
  } catch (err) {
    if (err instanceof ObjectNotFoundError) return null;
    throw err;
  }
}

/** Escapes text for a GitHub-flavoured Markdown table cell: "\" and "|", newlines as <br>. */
export function escapeCell(value: unknown): string {
  const text = value === null || value === undefined ? '' : String(value);
  return text
    .replace(/\\/g, '\\\\')
    .replace(/\|/g, '\\|')
    .replace(/\r\n|\r|\n/g, '<br>');
}

function table(header: readonly string[], rows: ReadonlyArray<readonly unknown[]>): string[] {
  const line = (cells: readonly unknown[]) => `| ${cells.map(escapeCell).join(' | ')} |`;
  return [line(header), `| ${header.map(() => '---').join(' | ')} |`, ...rows.map(line)];
}

function scalars(metrics: Record<string, unknown> | undefined): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const [k, v] of Object.entries(metrics ?? {})) if ((typeof v === 'number' && Number.isFinite(v)) || v === null) out[k] = v;
  return out;
}

/** Task metrics first in their canonical order, then any others alphabetically; never "support". */
function orderedMetricNames(task: Lineage['task'], ...sources: Array<Record<string, unknown>>): string[] {
  const present = new Set(sources.flatMap((s) => Object.keys(s)));
  present.delete('support');
  present.delete('confusion_matrix');
  const canonical: string[] = METRICS_BY_TASK[task].filter((m) => present.has(m));
  const rest = [...present].filter((m) => !canonical.includes(m)).sort();
  return [...canonical, ...rest];
}

function confusionMatrixOf(metrics: Record<string, unknown> | undefined): ModelCardJson['evaluation']['confusionMatrix'] {
  const cm = metrics?.confusion_matrix as { labels?: unknown; matrix?: unknown } | undefined;
  if (!cm || !Array.isArray(cm.labels) || !Array.isArray(cm.matrix)) return null;
  const labels = cm.labels.filter((l): l is string | number => typeof l === 'string' || typeof l === 'number');
  const matrix = (cm.matrix as unknown[]).map((row) => (Array.isArray(row) ? row.map((n) => Number(n)) : []));
  if (labels.length !== cm.labels.length || matrix.length !== labels.length || matrix.some((r) => r.length !== labels.length)) return null;
  return { labels, matrix };
}

function compare(metric: string, candidate: number | null, production: number | null): ModelCardComparison {
  const delta = candidate !== null && production !== null ? candidate - production : null;
  let better: boolean | null = null;
  if (delta !== null && isMetricName(metric) && delta !== 0) better = METRIC_DIRECTION[metric] === 'higher' ? delta > 0 : delta < 0;
  return { metric, candidate, production, delta, better };
}

function signed(v: number | null): string {
  if (v === null) return 'n/a';
  return `${v >= 0 ? '+' : ''}${v.toFixed(4)}`;
}

/**
 * A model card for one version: JSON for the API and Markdown for humans. The
 * evaluation report adds the confusion matrix and per-slice metrics; without it the
 * card uses the metrics stored in the version record.
 */
export function buildModelCard(lineage: Lineage, report: StoredEvaluationReport | null): ModelCard {
  const l = lineage;
  const reportMetrics = report?.metrics && typeof report.metrics === 'object' ? report.metrics : undefined;
  const metrics = { ...scalars(reportMetrics), ...l.evaluation.metrics };
  delete metrics.support;
  const confusionMatrix = l.task === 'classification' ? confusionMatrixOf(reportMetrics) : null;

  const slices: ModelCardSlice[] = [];
  const skippedSlices: ModelCardJson['evaluation']['skippedSlices'] = [];
  for (const [column, slice] of Object.entries(report?.slices ?? {})) {
    for (const s of slice?.slices ?? []) slices.push({ column, value: String(s.value), support: Number(s.support), metrics: scalars(s.metrics) });
    for (const s of slice?.skipped ?? []) skippedSlices.push({ column, value: String(s.value), support: Number(s.support) });
  }

  const prod = l.evaluation.production ?? (report?.production ? { version: report.production.version, metrics: report.production.metrics } : null);
  const production = prod
    ? {
        version: prod.version,
        comparison: orderedMetricNames(l.task, metrics, prod.metrics).map((m) => compare(m, metrics[m] ?? null, prod.metrics[m] ?? null)),
      }
    : null;

  const json: ModelCardJson = {
    schemaVersion: 1,
    model: l.model,
    version: l.version,
    createdAt: l.createdAt,
    task: l.task,
    target: l.target,
    features: l.features,
    intendedUse: l.description,
    notes: l.meta.description,
    artifact: { ...l.artifact, framework: l.trainer.framework, algorithm: l.trainer.algorithm },
    data: { ...l.dataset, split: l.split },
    training: { ...l.trainer, run: l.run },
    evaluation: {
      reportKey: l.evaluation.reportKey,
      reportAvailable: report !== null,
      holdoutRows: typeof report?.holdoutRows === 'number' ? report.holdoutRows : l.split.holdoutRows,
      metrics,
      confusionMatrix,
      slices,
      skippedSlices,
      production,
    },
    gates: l.evaluation.gates,
    gatesPassed: l.evaluation.passed,
    approval: l.decision,
    deployments: l.deployments,
    inProduction: l.inProduction,
    tags: l.meta.tags,
    archived: l.meta.archived ? { by: l.meta.archivedBy, at: l.meta.archivedAt, reason: l.meta.archiveReason } : null,
    warnings: l.warnings,
  };
  return { json, markdown: renderMarkdown(json) };
}

function renderMarkdown(c: ModelCardJson): string {
  const md: string[] = [];
  const section = (title: string) => md.push('', `## ${title}`, '');

  md.push(`# Model card: ${c.model} v${c.version}`, '');
  const status = [c.inProduction ? 'in production' : null, c.archived ? 'archived' : null].filter(Boolean).join(', ');
  md.push(
    ...table(
      ['Field', 'Value'],
      [
        ['Model', c.model],
        ['Version', c.version],
        ['Created', c.createdAt],
        ['Task', c.task],
        ['Target', c.target],
        ['Features', c.features.join(', ')],
        ['Intended use', c.intendedUse ?? 'not stated'],
        ...(c.notes ? [['Notes', c.notes]] : []),
        ['Artifact', `sha256:${c.artifact.sha256} (${formatBytes(c.artifact.size)})`],
        ['Framework', `${c.artifact.framework} / ${c.artifact.algorithm}`],
        ...(status ? [['Status', status]] : []),
        ...(c.archived ? [['Archived', `by ${c.archived.by ?? '?'} at ${c.archived.at ?? '?'}: ${c.archived.reason ?? ''}`]] : []),
      ],
    ),
  );

  section('Data');
  const d = c.data;
  md.push(
    ...table(
      ['Field', 'Value'],
      [
        ['Dataset', `sha256:${d.sha256}`],
        ['Source', d.source],
        ['Format', d.format],
        ['Size', formatBytes(d.size)],
        ['Rows', d.rowCount],
        ['Split', `seed ${d.split.seed}, holdout fraction ${d.split.holdoutFraction}: ${d.split.trainRows} train / ${d.split.holdoutRows} holdout rows`],
      ],
    ),
  );
  if (d.profile) {
    md.push('', '### Profile', '');
    md.push(
      ...table(
        ['Column', 'Kind', 'Type', 'Nulls', 'Min', 'Max', 'Distinct'],
        d.profile.columns.map((col) => [
          col.name,
          col.kind,
          col.declaredType,
          col.nulls,
          col.kind === 'numeric' ? formatValue(col.min) : '',
          col.kind === 'numeric' ? formatValue(col.max) : '',
          col.kind === 'categorical' ? (col.distinct ?? '') : '',
        ]),
      ),
    );
  } else {
    md.push('', '_Dataset profile unavailable._');
  }

  section('Training');
  const t = c.training;
  const params = Object.entries(t.params);
  const hashes = Object.entries(t.codeHashes);
  md.push(
    ...table(
      ['Field', 'Value'],
      [
        ['Trainer', `${t.kind}: ${t.entry}`],
        ['Framework', `${t.framework} / ${t.algorithm}`],
        ['Parameters', params.length ? params.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ') : 'none'],
        ['Code', hashes.length ? hashes.map(([f, h]) => `${f} ${h.slice(0, 12)}`).join(', ') : 'n/a'],
        ['Pipeline run', `${t.run.workflowId} / ${t.run.runId} by ${t.run.submittedBy}`],
        ['Spec', t.run.specHash],
        ['Git', t.run.gitCommit ? `${t.run.gitCommit}${t.run.gitDirty ? ' (dirty)' : ''}` : t.run.gitDirty ? 'unknown (dirty)' : 'unknown'],
        ...(t.run.pipelineFile ? [['Pipeline file', t.run.pipelineFile]] : []),
      ],
    ),
  );

  section('Evaluation');
  const e = c.evaluation;
  md.push(`Holdout rows: ${e.holdoutRows ?? 'n/a'}${e.reportAvailable ? '' : ' (evaluation report unavailable; metrics from the registry record)'}`, '');
  const names = orderedMetricNames(c.task, e.metrics);
  const prodByMetric = new Map((e.production?.comparison ?? []).map((x) => [x.metric, x]));
  if (e.production) {
    md.push(
      ...table(
        ['Metric', 'Value', `Production (v${e.production.version})`, 'Δ'],
        names.map((m) => {
          const cmp = prodByMetric.get(m);
          const mark = cmp?.better === true ? ' ▲' : cmp?.better === false ? ' ▼' : '';
          return [m, formatNumber(e.metrics[m]), formatNumber(cmp?.production), `${signed(cmp?.delta ?? null)}${mark}`];
        }),
      ),
    );
  } else {
    md.push(...table(['Metric', 'Value'], names.map((m) => [m, formatNumber(e.metrics[m])])));
    md.push('', 'No production model to compare against.');
  }

  if (e.confusionMatrix) {
    md.push('', '### Confusion matrix', '', 'Rows: true label; columns: predicted label.', '');
    const labels = e.confusionMatrix.labels.map(String);
    md.push(...table(['true \\ predicted', ...labels], e.confusionMatrix.matrix.map((row, i) => [labels[i], ...row])));
  }

  if (e.slices.length > 0 || e.skippedSlices.length > 0) {
    md.push('', '### Slices', '');
    const sliceNames = orderedMetricNames(c.task, ...e.slices.map((s) => s.metrics));
    md.push(
      ...table(
        ['Column', 'Value', 'Support', ...sliceNames],
        e.slices.map((s) => [s.column, s.value, s.support, ...sliceNames.map((m) => formatNumber(s.metrics[m]))]),
      ),
    );
    if (e.skippedSlices.length > 0) {
      md.push('', `Too small to score: ${e.skippedSlices.map((s) => `${s.column}=${s.value} (${s.support} rows)`).join(', ')}.`);
    }
  }

  section('Gates');
  if (c.gates.length === 0) md.push('No gates configured.');
  else {
    md.push(
      ...table(
        ['Gate', 'Actual', 'Threshold', 'Result'],
        c.gates.map((g) => [g.gate, formatNumber(g.actual), g.threshold, g.passed ? 'passed' : `failed${g.reason ? `: ${g.reason}` : ''}`]),
      ),
    );
    md.push('', c.gatesPassed ? 'All gates passed.' : '**Gates failed.**');
  }

  section('Approvals');
  const a = c.approval;
  if (!a) md.push('No decision recorded.');
  else {
    const who = a.by.length ? ` by ${a.by.join(', ')}` : a.decision === 'auto' ? ' automatically (no approval required)' : '';
    md.push(`- **${a.decision}**${who} on ${a.decidedAt}${a.comment ? `: “${a.comment.replace(/\s*[\r\n]+\s*/g, ' ')}”` : ''} (run ${a.run.workflowId})`);
  }

  section('Deployments');
  if (c.deployments.length === 0) md.push('Never deployed.');
  else {
    md.push(
      ...table(
        ['Deployed at', 'Alias', 'Strategy', 'Replaced', 'Run'],
        c.deployments.map((dep) => [dep.deployedAt, dep.alias, dep.strategy, dep.previousVersion === null ? '—' : `v${dep.previousVersion}`, `${dep.run.workflowId} / ${dep.run.runId}`]),
      ),
    );
  }

  const tags = Object.entries(c.tags);
  if (tags.length > 0) {
    section('Tags');
    md.push(...table(['Tag', 'Value'], tags.sort(([x], [y]) => x.localeCompare(y))));
  }

  if (c.warnings.length > 0) {
    section('Warnings');
    for (const w of c.warnings) md.push(`- ${w.replace(/\s*[\r\n]+\s*/g, ' ')}`);
  }
  return `${md.join('\n')}\n`;
}
