import type { DatasetProfile } from '../data/types.js';
import type { AliasRecord, GateResult, ModelVersionRecord, SplitRef } from '../shared/registry-types.js';
import { ALIASES } from '../shared/constants.js';
import type { ArtifactStore } from '../store/artifact-store.js';
import type { Registry } from './registry.js';
import { readVersionMeta, type VersionMeta } from './version-meta.js';

/** One profiled column, reduced to what a lineage/model card shows. */
export interface ColumnSummary {
  name: string;
  kind: 'numeric' | 'categorical';
  declaredType: string;
  nulls: number;
  nullFraction: number;
  /** Numeric columns only. */
  min: number | null;
  max: number | null;
  /** Categorical columns only. */
  distinct: number | null;
}

export interface ProfileSummary {
  rowCount: number;
  columnCount: number;
  columns: ColumnSummary[];
}

export interface LineageDeployment {
  alias: string;
  strategy: string;
  deployedAt: string;
  run: { workflowId: string; runId: string };
  previousVersion: number | null;
  sha256: string;
}

/** The whole provenance chain of one model version; plain JSON. */
export interface Lineage {
  schemaVersion: 1;
  model: string;
  version: number;
  createdAt: string;
  task: ModelVersionRecord['task'];
  target: string;
  features: string[];
  /** Intended use, from the version record (immutable). */
  description: string | null;
  artifact: { sha256: string; key: string; size: number; metadataKey: string };
  dataset: {
    sha256: string;
    key: string;
    source: string;
    format: 'csv' | 'parquet';
    size: number;
    rowCount: number;
    profileKey: string;
    /** Null when the profile object cannot be read (see warnings). */
    profile: ProfileSummary | null;
  };
  split: SplitRef;
  run: {
    workflowId: string;
    runId: string;
    submittedBy: string;
    /** Why the run started, when not by hand: a schedule or a monitor's decay report. */
    trigger: ModelVersionRecord['run']['trigger'] | null;
    specHash: string;
    gitCommit: string | null;
    gitDirty: boolean;
    pipelineFile: string | null;
  };
  trainer: {
    kind: ModelVersionRecord['trainer']['kind'];
    entry: string;
    params: Record<string, unknown>;
    codeHashes: Record<string, string>;
    framework: string;
    algorithm: string;
  };
  evaluation: {
    reportKey: string;
    metrics: Record<string, number | null>;
    gates: GateResult[];
    /** All gates passed (true when there are none). */
    passed: boolean;
    production: { version: number; metrics: Record<string, number | null> } | null;
  };
  decision: {
    decision: 'approved' | 'rejected' | 'expired' | 'auto';
    by: string[];
    comment: string | null;
    decidedAt: string;
    run: { workflowId: string; runId: string };
  } | null;
  /** Deployments of this version (any alias), oldest first. */
  deployments: LineageDeployment[];
  /** Whether the production alias points at this version now. */
  inProduction: boolean;
  meta: Pick<VersionMeta, 'tags' | 'description' | 'archived' | 'archivedBy' | 'archivedAt' | 'archiveReason' | 'updatedAt'>;
  /** Inconsistencies found while assembling the chain (missing profile, hash mismatches). */
  warnings: string[];
}

export function summarizeProfile(profile: DatasetProfile): ProfileSummary {
  const columns: ColumnSummary[] = Object.entries(profile.columns ?? {}).map(([name, c]) => ({
    name,
    kind: c.kind,
    declaredType: String(c.declaredType),
    nulls: c.nulls,
    nullFraction: c.nullFraction,
    min: c.kind === 'numeric' ? c.min : null,
    max: c.kind === 'numeric' ? c.max : null,
    distinct: c.kind === 'categorical' ? c.distinct : null,
  }));
  return { rowCount: profile.rowCount, columnCount: profile.columnCount ?? columns.length, columns };
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Assembles the lineage of `model@version` from the registry and the store:
 * dataset (with its profile) → split → pipeline run → trainer → evaluation →
 * decision → deployments, plus the mutable metadata. Throws VersionNotFoundError
 * for an unknown version; a missing profile object only adds a warning.
 */
export async function buildLineage(registry: Registry, store: ArtifactStore, model: string, version: number): Promise<Lineage> {
  const record = await registry.getVersion(model, version);
  const warnings: string[] = [];
  const [profile, decision, deployments, meta] = await Promise.all([
    store.get(record.data.profileKey).then(
      (body) => summarizeProfile(JSON.parse(body.toString('utf8')) as DatasetProfile),
      (err: unknown) => {
        warnings.push(`dataset profile ${record.data.profileKey} unreadable: ${errorMessage(err)}`);
        return null;
      },
    ),
    registry.getDecision(model, version),
    registry.listDeployments(model),
    readVersionMeta(store, model, version),
  ]);
  // Where production points now: its log's newest entry, already among the deployments read above.
  const production = deployments.filter((d) => d.alias === ALIASES.production).reduce<AliasRecord | null>((a, d) => (a === null || d.seq > a.seq ? d : a), null);
  const mine = deployments.filter((d) => d.version === version);
  if (decision && decision.sha256 !== record.artifact.sha256) {
    warnings.push(`decision was recorded for artifact ${decision.sha256}, but the version's artifact is ${record.artifact.sha256}`);
  }
  for (const d of mine) {
    if (d.sha256 !== record.artifact.sha256) warnings.push(`deployment to ${d.alias} at ${d.deployedAt} has artifact ${d.sha256}, expected ${record.artifact.sha256}`);
  }
  const { split, profileKey, rowCount, ...dataset } = record.data;
  return {
    schemaVersion: 1,
    model: record.model,
    version: record.version,
    createdAt: record.createdAt,
    task: record.task,
    target: record.target,
    features: [...record.features],
    description: record.description ?? null,
    artifact: { sha256: record.artifact.sha256, key: record.artifact.key, size: record.artifact.size, metadataKey: record.artifact.metadataKey },
    dataset: {
      sha256: dataset.sha256,
      key: dataset.key,
      source: dataset.source,
      format: dataset.format,
      size: dataset.size,
      rowCount,
      profileKey,
      profile,
    },
    split: { ...split },
    run: {
      workflowId: record.run.workflowId,
      runId: record.run.runId,
      submittedBy: record.run.submittedBy,
      trigger: record.run.trigger ?? null,
      specHash: record.code.specHash,
      gitCommit: record.code.gitCommit,
      gitDirty: record.code.gitDirty,
      pipelineFile: record.code.pipelineFile,
    },
    trainer: {
      kind: record.trainer.kind,
      entry: record.trainer.entry,
      params: record.trainer.params,
      codeHashes: record.trainer.codeHashes,
      framework: record.artifact.framework,
      algorithm: record.artifact.algorithm,
    },
    evaluation: {
      reportKey: record.evaluation.reportKey,
      metrics: record.evaluation.metrics,
      gates: record.evaluation.gates,
      passed: record.evaluation.gates.every((g) => g.passed),
      production: record.evaluation.production,
    },
    decision: decision
      ? { decision: decision.decision, by: decision.by, comment: decision.comment, decidedAt: decision.decidedAt, run: { workflowId: decision.run.workflowId, runId: decision.run.runId } }
      : null,
    deployments: mine.map((d) => ({
      alias: d.alias,
      strategy: d.strategy,
      deployedAt: d.deployedAt,
      run: { workflowId: d.run.workflowId, runId: d.run.runId },
      previousVersion: d.previousVersion,
      sha256: d.sha256,
    })),
    inProduction: production?.version === version,
    meta: {
      tags: meta.tags,
      description: meta.description,
      archived: meta.archived,
      archivedBy: meta.archivedBy,
      archivedAt: meta.archivedAt,
      archiveReason: meta.archiveReason,
      updatedAt: meta.updatedAt,
    },
    warnings,
  };
}

// ---------------------------------------------------------------- formatting

export function formatNumber(v: number | null | undefined, digits = 4): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return 'n/a';
  return Number.isInteger(v) ? String(v) : v.toFixed(digits);
}

/** A data value (not a metric): at most 4 decimals, no trailing zeros. */
export function formatValue(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return 'n/a';
  return String(Number(v.toFixed(4)));
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

export function shortHash(sha: string, n = 12): string {
  return sha.length > n ? sha.slice(0, n) : sha;
}

function oneLine(text: string, max = 120): string {
  const flat = text.replace(/\s*[\r\n]+\s*/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

function metricsLine(metrics: Record<string, number | null>): string {
  const shown = Object.entries(metrics).filter(([k]) => k !== 'support');
  return shown.length ? shown.map(([k, v]) => `${k}=${formatNumber(v)}`).join(' ') : '(none)';
}

function columnLine(c: ColumnSummary): string {
  const parts = [`${c.name}`, c.kind, `nulls=${c.nulls}`];
  if (c.kind === 'numeric') parts.push(`min=${formatValue(c.min)}`, `max=${formatValue(c.max)}`);
  else parts.push(`distinct=${c.distinct ?? 'n/a'}`);
  return parts.join(' ');
}

/**
 * Human-readable lineage for the CLI: one compact section per link of the chain
 * dataset → run → trainer → metrics & gates → approvals → deployments.
 */
export function formatLineage(l: Lineage): string {
  const out: string[] = [];
  const status = [l.inProduction ? 'in production' : null, l.meta.archived ? 'archived' : null].filter(Boolean).join(', ');
  out.push(`${l.model}@${l.version}  ${l.task} → ${l.target}  created ${l.createdAt}${status ? `  [${status}]` : ''}`);
  out.push(`  artifact  sha256:${shortHash(l.artifact.sha256)}  ${formatBytes(l.artifact.size)}  ${l.trainer.framework}/${l.trainer.algorithm}`);
  if (l.description) out.push(`  use       ${oneLine(l.description)}`);
  out.push(`  chain     dataset → run → trainer → metrics & gates → approvals → deployments`);

  const d = l.dataset;
  out.push('dataset');
  out.push(`  sha256:${shortHash(d.sha256)}  ${d.source}  (${d.format}, ${formatBytes(d.size)}, ${d.rowCount} rows)`);
  if (d.profile) {
    for (const c of d.profile.columns) out.push(`  · ${columnLine(c)}`);
  } else {
    out.push('  · profile unavailable');
  }
  const s = l.split;
  out.push(`  split seed=${s.seed} holdout=${s.holdoutFraction} → ${s.trainRows} train / ${s.holdoutRows} holdout rows`);

  const r = l.run;
  const git = r.gitCommit ? `git ${r.gitCommit.slice(0, 12)}${r.gitDirty ? ' (dirty)' : ''}` : r.gitDirty ? 'git (dirty)' : 'git n/a';
  out.push('run');
  out.push(`  ${r.workflowId} / ${r.runId}  by ${r.submittedBy}`);
  if (r.trigger) {
    const t = r.trigger;
    const detail = t.kind === 'decay' ? `monitor result ${t.monitorResultKey ?? 'n/a'}${t.reason ? ` (${t.reason})` : ''}` : t.kind === 'schedule' ? `schedule ${t.scheduleId ?? 'n/a'}` : t.reason ?? '';
    out.push(`  started by ${t.kind}: ${detail}`);
  }
  out.push(`  spec ${shortHash(r.specHash)}  ${git}${r.pipelineFile ? `  pipeline ${r.pipelineFile}` : ''}`);

  const t = l.trainer;
  out.push('trainer');
  out.push(`  ${t.kind}: ${t.entry}  (${t.framework}/${t.algorithm})`);
  const params = Object.entries(t.params);
  if (params.length) out.push(`  params ${params.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ')}`);
  const hashes = Object.entries(t.codeHashes);
  if (hashes.length) out.push(`  code ${hashes.map(([f, h]) => `${f}@${shortHash(h, 8)}`).join(' ')}`);

  const e = l.evaluation;
  out.push(`metrics & gates  ${e.passed ? 'passed' : 'FAILED'}`);
  out.push(`  ${metricsLine(e.metrics)}`);
  if (e.production) {
    const diffs = Object.entries(e.metrics)
      .filter(([k, v]) => k !== 'support' && typeof v === 'number' && typeof e.production?.metrics[k] === 'number')
      .map(([k, v]) => {
        const p = e.production!.metrics[k] as number;
        const delta = (v as number) - p;
        return `${k} ${formatNumber(p)}→${formatNumber(v)} (${delta >= 0 ? '+' : ''}${delta.toFixed(4)})`;
      });
    out.push(`  vs production v${e.production.version}: ${diffs.length ? diffs.join(', ') : 'no comparable metrics'}`);
  }
  for (const g of e.gates) {
    out.push(`  ${g.passed ? '✓' : '✗'} ${g.gate}  actual=${formatNumber(g.actual)}${g.reason ? `  (${g.reason})` : ''}`);
  }

  out.push('approvals');
  const dec = l.decision;
  if (!dec) out.push('  none recorded');
  else {
    const who = dec.by.length ? ` by ${dec.by.join(', ')}` : '';
    out.push(`  ${dec.decision}${who} at ${dec.decidedAt}${dec.comment ? ` — "${oneLine(dec.comment)}"` : ''}`);
  }

  out.push('deployments');
  if (l.deployments.length === 0) out.push('  never deployed');
  for (const dep of l.deployments) {
    const prev = dep.previousVersion === null ? 'first deployment' : `replaced v${dep.previousVersion}`;
    out.push(`  ${dep.alias} ${dep.deployedAt} (${dep.strategy}) by ${dep.run.workflowId} / ${dep.run.runId}, ${prev}`);
  }

  const m = l.meta;
  const tags = Object.entries(m.tags);
  if (tags.length || m.description || m.archived) {
    out.push('meta');
    if (tags.length) out.push(`  tags ${tags.map(([k, v]) => `${k}=${v}`).join(' ')}`);
    if (m.description) out.push(`  note ${oneLine(m.description)}`);
    if (m.archived) out.push(`  archived by ${m.archivedBy ?? '?'} at ${m.archivedAt ?? '?'}: ${oneLine(m.archiveReason ?? '')}`);
  }
  if (l.warnings.length) {
    out.push('warnings');
    for (const w of l.warnings) out.push(`  ! ${w}`);
  }
  return out.join('\n');
}
