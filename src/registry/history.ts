import { checkName } from '../store/keys.js';
import { formatNumber } from './lineage.js';
import type { Registry } from './registry.js';
import type { RolloutRecord } from '../shared/registry-types.js';

/** One stretch of time during which `version` was behind the alias: [from, to). */
export interface ProductionInterval {
  version: number;
  sha256: string;
  from: string;
  /** Null: still behind the alias. */
  to: string | null;
  deployedBy: { workflowId: string; runId: string };
  previousVersion: number | null;
  strategy: string;
  /** The rollout that made the move (promotion or its undo). */
  rolloutId?: string;
  /** Who asked, for moves made by hand (`conveyor rollback`). */
  by?: string;
  reason?: string;
}

export interface VersionMetrics {
  version: number;
  createdAt: string;
  metrics: Record<string, number | null>;
}

function time(iso: string): number {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) throw new RangeError(`"${iso}" is not a valid ISO-8601 time`);
  return t;
}

/**
 * Which version was behind `alias` when, oldest first: one interval per entry of the
 * alias's log. The log is the deployment history (each move is written together with
 * its deployment record, in one create), so the last interval always matches the
 * alias. Entries are ordered by their position in the log, which is the order the
 * compare-and-swap moves happened in, whatever the writers' clocks said. Each interval
 * ends where the next begins; the last is open (`to: null`).
 */
export async function productionTimeline(registry: Registry, model: string, alias = 'production'): Promise<ProductionInterval[]> {
  checkName('alias', alias);
  const moves = [...(await registry.listDeployments(model, alias))].sort((a, b) => a.seq - b.seq);
  const intervals: ProductionInterval[] = moves.map((d) => {
    time(d.deployedAt); // refuse a corrupt entry here rather than in versionAt
    return {
      version: d.version,
      sha256: d.sha256,
      from: d.deployedAt,
      to: null,
      deployedBy: { ...d.run },
      previousVersion: d.previousVersion,
      strategy: d.strategy,
      ...(d.rolloutId ? { rolloutId: d.rolloutId } : {}),
      ...(d.by ? { by: d.by } : {}),
      ...(d.reason ? { reason: d.reason } : {}),
    };
  });
  for (let i = 0; i < intervals.length - 1; i++) intervals[i]!.to = intervals[i + 1]!.from;
  return intervals;
}

/**
 * The version behind the alias at `isoTime` (intervals are [from, to)), or null
 * before the first deployment. Throws RangeError for an unparseable time.
 */
export function versionAt(timeline: readonly ProductionInterval[], isoTime: string): number | null {
  const t = time(isoTime);
  let found: ProductionInterval | null = null;
  for (const interval of timeline) {
    if (time(interval.from) <= t) found = interval;
    else break;
  }
  if (!found) return null;
  return found.to === null || t < time(found.to) ? found.version : null;
}

/**
 * Finished rollouts of a model that targeted `alias` (canary, shadow, A/B), oldest first:
 * how each ended (promoted, rolled back, aborted, refused), its steps and why.
 */
export async function rolloutHistory(registry: Registry, model: string, alias = 'production'): Promise<RolloutRecord[]> {
  checkName('alias', alias);
  return (await registry.listRollouts(model)).filter((r) => r.alias === alias);
}

/** Creation time and evaluation metrics of every version, by version. */
export async function metricsByVersion(registry: Registry, model: string): Promise<VersionMetrics[]> {
  const versions = await registry.listVersions(model);
  const out: VersionMetrics[] = [];
  // Bounded fan-out: a model may have hundreds of versions.
  for (let i = 0; i < versions.length; i += 16) {
    const batch = await Promise.all(versions.slice(i, i + 16).map((v) => registry.getVersion(model, v)));
    for (const r of batch) out.push({ version: r.version, createdAt: r.createdAt, metrics: { ...r.evaluation.metrics } });
  }
  return out;
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86_400);
  const h = Math.floor((s % 86_400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m`;
  return `${s}s`;
}

export interface FormatHistoryInput {
  model: string;
  alias?: string;
  timeline: readonly ProductionInterval[];
  /** When given, a per-version metrics table follows the timeline. */
  metrics?: readonly VersionMetrics[];
  /** Metrics columns to show (default: every metric present, "support" excluded). */
  metricNames?: readonly string[];
  /** When given, finished rollouts (outcome, strategy, steps, reason) follow the alias moves. */
  rollouts?: readonly RolloutRecord[];
  /** Used for the length of the open interval; default: now. */
  now?: Date;
}

function formatRollout(r: RolloutRecord): string[] {
  const prod = r.productionVersion === null ? 'none' : `v${r.productionVersion}`;
  const lines = [`  ${r.startedAt} → ${r.endedAt}  ${r.strategy} v${r.version} (production ${prod}): ${r.outcome.replace('_', ' ')}${r.decidedBy ? ` by ${r.decidedBy}` : ''}`];
  if (r.reason) lines.push(`      ${r.reason}`);
  for (const step of r.steps) {
    const verdict = step.verdict ? ` ${step.verdict}` : step.endedAt ? '' : ' (unfinished)';
    lines.push(`      ${step.step.padEnd(12)} ${String(step.percent).padStart(3)}%${verdict}${step.summary ? ` — ${step.summary}` : ''}`);
  }
  return lines;
}

/** The timeline (and optionally per-version metrics) as text for the CLI. */
export function formatHistory(input: FormatHistoryInput): string {
  const alias = input.alias ?? 'production';
  const now = input.now ?? new Date();
  const lines: string[] = [`${input.model}@${alias} history`];
  if (input.timeline.length === 0) lines.push('  never deployed');
  for (const iv of input.timeline) {
    const end = iv.to ?? 'now';
    const ms = (iv.to ? time(iv.to) : now.getTime()) - time(iv.from);
    const prev = iv.previousVersion === null ? 'first' : `after v${iv.previousVersion}`;
    const who = iv.by ? `${iv.by} (${iv.deployedBy.workflowId})` : iv.deployedBy.workflowId;
    const how = iv.strategy === 'direct' ? '' : ` [${iv.strategy}${iv.rolloutId ? ` ${iv.rolloutId}` : ''}]`;
    lines.push(`  v${String(iv.version).padEnd(4)} ${iv.from} → ${end}  (${formatDuration(ms)})  ${prev}, by ${who}${how}${iv.reason ? `: ${iv.reason}` : ''}`);
  }
  if (input.rollouts) {
    lines.push('');
    lines.push(`  rollouts to ${alias}`);
    if (input.rollouts.length === 0) lines.push('    none');
    for (const r of input.rollouts) lines.push(...formatRollout(r).map((l) => `  ${l}`));
  }
  if (input.metrics && input.metrics.length > 0) {
    const names =
      input.metricNames ?? [...new Set(input.metrics.flatMap((m) => Object.keys(m.metrics)))].filter((k) => k !== 'support');
    const current = input.timeline.at(-1)?.to === null ? input.timeline.at(-1)?.version : undefined;
    const deployed = new Set(input.timeline.map((iv) => iv.version));
    const header = ['version', 'created', ...names];
    const rows = input.metrics.map((m) => [
      `${current === m.version ? '*' : deployed.has(m.version) ? '+' : ' '}v${m.version}`,
      m.createdAt.slice(0, 19).replace('T', ' '),
      ...names.map((n) => formatNumber(m.metrics[n])),
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    lines.push('');
    lines.push(`  ${header.map((h, i) => h.padEnd(widths[i]!)).join('  ')}`);
    for (const r of rows) lines.push(`  ${r.map((c, i) => c.padEnd(widths[i]!)).join('  ')}`.trimEnd());
    lines.push(`  (* behind ${alias} now, + was behind ${alias})`);
  }
  return lines.join('\n');
}
