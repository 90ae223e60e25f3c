import { setTimeout as sleep } from 'node:timers/promises';
import { Command, Option } from 'commander';
// CommonJS: only the default export is reliable from ESM.
import proto from '@temporalio/proto';
import { loadConfig, type Config } from '../config.js';
import { createLogger } from '../logger.js';
import { EXIT_CODES, RunOutcome } from '../shared/errors.js';
import { loadPipelineFile } from '../spec/load.js';
import { InvalidSpecError } from '../spec/define.js';
import { connectClient } from '../temporal/client.js';
import { describeFailure, runStatus, startPipeline, waitForRun } from '../runs.js';
import { MinioArtifactStore } from '../store/minio-store.js';
import { Registry } from '../registry/registry.js';
import { formatStatus, parseModelRef } from './format.js';
import { apiRequest, controlRollout, getRollout, rollback, type RolloutAction, type RolloutView } from './api-client.js';
import type { ApprovalItem } from '../api/approvals.js';
import { buildLineage, formatLineage } from '../registry/lineage.js';
import { formatHistory, metricsByVersion, productionTimeline, rolloutHistory, versionAt } from '../registry/history.js';
import { buildModelCard, loadEvaluationReport } from '../registry/model-card.js';
import { STAGES } from '../shared/constants.js';
import type { PipelineStatus } from '../../workflows/messages.js';
import type { RolloutStatus } from '../../workflows/rollout-messages.js';
import type { RolloutStep, TrafficRecord } from '../shared/registry-types.js';
import { listMonitorResults, type MonitorResult } from '../monitoring/results.js';
import {
  backfillSchedule,
  deleteSchedule,
  getSchedule,
  listSchedules,
  pauseSchedule,
  triggerSchedule,
  unpauseSchedule,
  type ScheduleInfo,
} from '../temporal/schedules.js';

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

function json(value: unknown): void {
  out(JSON.stringify(value, null, 2));
}

function formatSteps(steps: readonly RolloutStep[]): string[] {
  if (!steps.length) return ['  steps     none yet'];
  return steps.map((st, i) => {
    const verdict = st.verdict ?? (st.endedAt ? 'done' : 'in progress');
    return `  ${i === 0 ? 'steps' : ''.padEnd(5)}     ${st.step.padEnd(12)} ${String(st.percent).padStart(3)}%  ${verdict}${st.summary ? ` — ${st.summary}` : ''}  (from ${st.startedAt}${st.endedAt ? ` to ${st.endedAt}` : ''})`;
  });
}

function formatTraffic(t: TrafficRecord | null): string {
  if (!t || t.mode === 'none') return `  traffic   production only${t ? ` (since ${t.updatedAt}${t.reason ? `: ${t.reason}` : ''})` : ''}`;
  const share = t.mode === 'shadow' ? 'copies of all requests' : `${t.percent}% of requests`;
  return `  traffic   ${t.mode}: ${share} → v${t.candidate?.version ?? '?'} (rollout ${t.rolloutId ?? '?'}, step ${t.step}, since ${t.updatedAt})`;
}

function formatRolloutStatus(status: RolloutStatus): string[] {
  const prod = status.productionVersion === null ? 'none' : `v${status.productionVersion}`;
  const share = status.strategy === 'shadow' ? (status.percent > 0 ? 'scoring copies of all requests' : 'no traffic yet') : `${status.percent}% of traffic`;
  const lines = [
    `${status.model}: ${status.strategy} rollout of v${status.version} — ${status.state}, ${share}; production ${prod}`,
    `  rollout   ${status.rolloutId}  sha256:${status.sha256.slice(0, 12)}`,
    ...formatSteps(status.steps),
  ];
  const a = status.lastAnalysis;
  if (a) lines.push(`  analysis  ${a.verdict} at ${a.at}: ${a.summary} (requests: production ${a.requests.production}, candidate ${a.requests.candidate})`);
  else lines.push('  analysis  none yet');
  if (status.decisionDeadline) lines.push(`  decision  needed by ${status.decisionDeadline} (npx conveyor rollout promote ${status.model}), else it ends with production unchanged`);
  if (status.outcome) lines.push(`  outcome   ${status.outcome}${status.reason ? `: ${status.reason}` : ''}`);
  return lines;
}

function formatRolloutView(view: RolloutView): string {
  const lines: string[] = [];
  if (view.status) lines.push(...formatRolloutStatus(view.status));
  else if (view.last) {
    const r = view.last;
    lines.push(`${view.model}: no rollout running; the last one (${r.strategy} of v${r.version}) ended ${r.outcome.replace('_', ' ')}${r.decidedBy ? ` by ${r.decidedBy}` : ''}`);
    lines.push(`  rollout   ${r.rolloutId}  ${r.startedAt} → ${r.endedAt}; production was ${r.productionVersion === null ? 'none' : `v${r.productionVersion}`}`);
    if (r.reason) lines.push(`  reason    ${r.reason}`);
    lines.push(...formatSteps(r.steps));
  }
  lines.push(formatTraffic(view.traffic));
  return lines.join('\n');
}

async function withTemporal<T>(config: Config, fn: (client: Awaited<ReturnType<typeof connectClient>>) => Promise<T>): Promise<T> {
  const client = await connectClient(config);
  try {
    return await fn(client);
  } finally {
    await client.connection.close();
  }
}

function formatSchedules(list: readonly ScheduleInfo[]): string {
  const lines: string[] = [];
  for (const s of list) {
    const state = s.paused ? 'PAUSED' : 'active';
    lines.push(`${s.id}  ${state}  ${s.spec}  (${s.kind}${s.model ? ` of ${s.model}` : ''}, starts ${s.workflowType})`);
    if (s.note) lines.push(`  note      ${s.note}`);
    lines.push(`  next      ${s.paused ? '(paused)' : s.nextActionTimes.join(', ') || 'none'}`);
    lines.push(`  running   ${s.running}${s.buffered ? ` (+${s.buffered} buffered)` : ''}; ${s.actionsTaken} started, ${s.skippedOverlap} skipped (overlap), ${s.missedCatchupWindow} missed (catch-up window)`);
    if (!s.recentActions.length) lines.push('  recent    none yet');
    s.recentActions.forEach((a, i) => lines.push(`  ${i === 0 ? 'recent' : ''.padEnd(6)}    ${a.scheduledAt} → ${a.workflowId} (started ${a.startedAt})`));
  }
  return lines.join('\n');
}

function num(value: number | null, digits = 4): string {
  return value === null ? 'n/a' : value.toFixed(digits);
}

function formatMonitorLatest(r: MonitorResult): string[] {
  const lines = [
    `${r.model}: ${r.verdict.toUpperCase().replace('_', ' ')}${r.decayKinds.length ? ` (${r.decayKinds.join(', ')})` : ''} — version ${r.version}`,
    `  window       ${r.windowStart} → ${r.windowEnd} (computed ${r.computedAt})`,
    `  sample size  ${r.sampleSize}`,
  ];
  if (!r.breaches.length) lines.push('  breaches     none');
  r.breaches.forEach((b, i) => lines.push(`  ${i === 0 ? 'breaches' : ''.padEnd(8)}     [${b.kind}] ${b.message}`));
  const p = r.performance;
  if (p) {
    const drop = p.drop === null ? '' : `, ${p.drop >= 0 ? 'worse' : 'better'} by ${num(Math.abs(p.drop))}`;
    const judged = p.value === null ? 'not judged (too few labels)' : p.breached ? 'BREACHED' : 'ok';
    lines.push(`  performance  ${p.metric} ${num(p.value)} vs baseline ${num(p.baseline)}${drop} — ${p.labels} labels since ${p.from}; ${judged}`);
  } else {
    lines.push('  performance  not measured');
  }
  for (const n of r.notes) lines.push(`  note         ${n}`);
  return lines;
}

function formatMonitorHistory(results: readonly MonitorResult[]): string[] {
  const rows = results.map((r) => [r.windowEnd, `v${r.version}`, r.verdict, String(r.sampleSize), String(r.breaches.length), r.breaches[0]?.message ?? '-']);
  const header = ['window end', 'version', 'verdict', 'sample', 'breaches', 'top breach'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => `  ${cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')}`.trimEnd();
  return [`history (newest first, ${results.length})`, line(header), ...rows.map(line)];
}

async function versionLineage(config: Config, ref: string) {
  const { model, version } = parseModelRef(ref);
  if (version === undefined) throw new Error(`name the version: ${model}@<version>`);
  const store = new MinioArtifactStore(config.s3);
  return { store, lineage: await buildLineage(new Registry(store), store, model, version) };
}

async function registry(config: Config): Promise<Registry> {
  return new Registry(new MinioArtifactStore(config.s3));
}

const PENDING_ACTIVITY_SCHEDULED = proto.temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED;
/** How long a training activity may sit scheduled (no worker picked it up) before `follow` says so. */
const UNPICKED_TRAINING_HINT_MS = 30_000;

/** Prints stage transitions and training progress until the run ends. */
async function follow(handle: Awaited<ReturnType<typeof startPipeline>>, quiet: boolean, trainingTaskQueue: string): Promise<void> {
  let lastLine = '';
  // When the training activity was first seen scheduled but not started, per attempt; and whether the hint was printed.
  let scheduledSince: { attempt: number; at: number } | undefined;
  let warnedNoWorker = false;
  const done = waitForRun(handle).then(() => true);
  for (;;) {
    const finished = await Promise.race([done, sleep(1000).then(() => false)]);
    let status: PipelineStatus | undefined;
    try {
      status = await runStatus(handle);
    } catch {
      // the run may have finished between race and query
    }
    if (status && !quiet) {
      const stage = status.stage === 'done' ? undefined : status.stages[status.stage];
      let line = STAGES.filter((s) => status.stages[s].state === 'done').map((s) => `${s} ✓`).join('  ');
      if (stage?.state === 'running') {
        line += `${line ? '  ' : ''}${status.stage} …`;
        if (status.stage === 'train') {
          const desc = await handle.describe();
          const pending = desc.raw.pendingActivities?.[0];
          const details = pending?.heartbeatDetails?.payloads?.[0]?.data;
          if (details) {
            const progress = JSON.parse(Buffer.from(details).toString('utf8')) as { step?: number; total?: number; message?: string };
            line += ` ${progress.step ?? '?'}/${progress.total ?? '?'} ${progress.message ?? ''}`;
          }
          if (pending?.attempt && pending.attempt > 1) line += ` (attempt ${pending.attempt})`;
          if (pending?.state === PENDING_ACTIVITY_SCHEDULED) {
            const attempt = pending.attempt ?? 1;
            if (scheduledSince?.attempt !== attempt) scheduledSince = { attempt, at: Date.now() };
            if (!warnedNoWorker && Date.now() - scheduledSince.at > UNPICKED_TRAINING_HINT_MS) {
              warnedNoWorker = true;
              out(`  waiting for a worker on task queue ${trainingTaskQueue} — is "conveyor worker" (with --role training) running?`);
            }
          } else {
            scheduledSince = undefined;
          }
        }
      }
      if (status.awaitingApproval) line += `  awaiting approval of ${status.model}@${status.awaitingApproval.version}`;
      if (line !== lastLine) out(`  ${line}`);
      lastLine = line;
    }
    if (finished) return;
  }
}

export function buildProgram(): Command {
  const program = new Command('conveyor').description('Model-lifecycle pipelines on Temporal').showHelpAfterError();
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel });

  program
    .command('run <pipeline>')
    .description('start a pipeline run from a pipeline file (.ts)')
    .option('--wait', 'follow the run stage by stage; the exit code says how it ended')
    .option('--id <workflowId>', 'workflow id to use (default: pipeline-<model>-<time>-<random>)')
    .option('--api', 'submit through the governance API, as the authenticated identity of your token (four-eyes then holds against that identity)')
    .option('--json', 'machine-readable output')
    .action(async (file: string, opts: { wait?: boolean; id?: string; json?: boolean; api?: boolean }) => {
      const pipeline = await loadPipelineFile(file);
      const client = await connectClient(config);
      let handle: Awaited<ReturnType<typeof startPipeline>>;
      if (opts.api) {
        const started = await apiRequest<{ workflowId: string; runId: string }>(config, 'POST', '/v1/runs', {
          spec: pipeline.spec,
          code: { gitCommit: pipeline.code.gitCommit, gitDirty: pipeline.code.gitDirty, pipelineFile: pipeline.code.pipelineFile },
          ...(opts.id ? { workflowId: opts.id } : {}),
        });
        handle = client.workflow.getHandle(started.workflowId, started.runId, { firstExecutionRunId: started.runId }) as typeof handle;
      } else {
        // Direct to Temporal: the submitter is the claimed CONVEYOR_USER / OS user.
        handle = await startPipeline(client, config, pipeline, opts.id ? { workflowId: opts.id } : {});
      }
      if (!opts.json) out(`started ${pipeline.spec.name}: workflow ${handle.workflowId} run ${handle.firstExecutionRunId}`);
      if (!opts.wait) {
        if (opts.json) json({ workflowId: handle.workflowId, runId: handle.firstExecutionRunId });
        return;
      }
      if (!opts.json) await follow(handle, false, config.taskQueues.training);
      const end = await waitForRun(handle);
      const status = await runStatus(handle).catch(() => undefined);
      if (opts.json) json({ workflowId: handle.workflowId, runId: handle.firstExecutionRunId, ...end, status });
      else {
        if (status) out(formatStatus(status));
        out(`result: ${end.outcome}${end.message ? ` — ${end.message}` : ''}`);
      }
      process.exitCode = EXIT_CODES[end.outcome];
    });

  program
    .command('status <workflowId>')
    .description('show the stages, metrics and decision state of a run')
    .option('--json', 'machine-readable output')
    .action(async (workflowId: string, opts: { json?: boolean }) => {
      const client = await connectClient(config);
      const handle = client.workflow.getHandle(workflowId);
      const desc = await handle.describe();
      const running = desc.status.name === 'RUNNING';
      // Queries need a live worker; a finished run can be described from its result alone.
      const status = await runStatus(handle).catch((err: unknown) => {
        if (running) throw err;
        return undefined;
      });
      const end = running ? { outcome: RunOutcome.Running } : await waitForRun(handle);
      if (opts.json) return json({ workflowId, runId: desc.runId, temporalStatus: desc.status.name, ...end, status: status ?? null });
      if (status) out(formatStatus(status));
      else out(`${workflowId}: ${end.outcome}${end.result ? ` (version ${end.result.version}, sha256 ${end.result.sha256.slice(0, 12)})` : ''}${end.message ? ` — ${end.message}` : ''}`);
      out(`  temporal: ${desc.status.name}, started ${desc.startTime.toISOString()}${desc.closeTime ? `, closed ${desc.closeTime.toISOString()}` : ''}`);
    });

  program
    .command('whoami')
    .description('who the governance API thinks you are (from your token)')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const me = await apiRequest<{ identity: string; groups: string[]; admin: boolean }>(config, 'GET', '/v1/whoami');
      if (opts.json) return json(me);
      out(`${me.identity} (groups: ${me.groups.join(', ') || 'none'})${me.admin ? ' — admin' : ''}`);
    });

  program
    .command('approvals')
    .description('candidates awaiting a decision you may make, next to production on the same holdout')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const list = await apiRequest<{ approvals: ApprovalItem[]; unavailable: Array<{ workflowId: string; error: string }> }>(config, 'GET', '/v1/approvals');
      if (opts.json) return json(list);
      if (!list.approvals.length) out('nothing awaits your decision');
      for (const a of list.approvals) {
        out(`${a.model}@${a.version}  sha256:${a.sha256.slice(0, 12)}  data:${a.dataVersion?.slice(0, 12) ?? 'n/a'}  submitted by ${a.submittedBy}  until ${a.deadline}`);
        out(`  approvals ${a.approvals.length}/${a.quorum}${a.approvals.length ? ` (${a.approvals.map((x) => x.reviewer).join(', ')})` : ''}${a.escalated ? '  [escalated]' : ''}`);
        const prod = a.metrics.production;
        for (const [name, value] of Object.entries(a.metrics.candidate)) {
          if (name === 'support' || typeof value !== 'number') continue;
          const p = prod?.metrics[name];
          out(`  ${name.padEnd(10)} ${value.toFixed(4)}${typeof p === 'number' ? `   production@${prod!.version} ${p.toFixed(4)}   Δ ${(value - p >= 0 ? '+' : '') + (value - p).toFixed(4)}` : ''}`);
        }
        for (const g of a.gates) out(`  gate ${g.passed ? 'pass' : 'FAIL'} ${g.gate}`);
        out(`  → npx conveyor approve ${a.model}@${a.version}   |   npx conveyor reject ${a.model}@${a.version} --comment "..."`);
      }
      for (const u of list.unavailable) out(`  (could not query ${u.workflowId}: ${u.error})`);
    });

  for (const kind of ['approve', 'reject'] as const) {
    program
      .command(`${kind} <modelAtVersion>`)
      .description(`${kind} the candidate awaiting a decision, as the identity of your API token`)
      .option('--comment <text>', kind === 'reject' ? 'why (required)' : 'optional note')
      .option('--sha256 <hash>', 'bind the decision to this artifact hash (refused if it is not the candidate)')
      .option('--json', 'machine-readable output')
      .action(async (ref: string, opts: { comment?: string; sha256?: string; json?: boolean }) => {
        const { model, version } = parseModelRef(ref);
        if (version === undefined) throw new Error(`name the version: ${model}@<version>`);
        if (kind === 'reject' && !opts.comment) throw new Error('reject needs --comment "<why>"');
        const me = await apiRequest<{ identity: string; groups: string[] }>(config, 'GET', '/v1/whoami');
        if (!opts.json) out(`deciding as ${me.identity} (groups: ${me.groups.join(', ') || 'none'})`);
        const result = await apiRequest<{ decision: string; reviewer: string; approvals?: number; quorum?: number; workflowId: string }>(
          config,
          'POST',
          `/v1/approvals/${model}/${version}/${kind}`,
          { ...(opts.comment ? { comment: opts.comment } : {}), ...(opts.sha256 ? { sha256: opts.sha256 } : {}) },
        );
        if (opts.json) return json(result);
        const progress = result.decision === 'approval_recorded' ? ` (${result.approvals}/${result.quorum} approvals)` : '';
        out(`${result.decision}: ${model}@${version} by ${result.reviewer}${progress} (run ${result.workflowId})`);
      });
  }

  program
    .command('lineage <modelAtVersion>')
    .description('the chain behind a version: data → run → trainer → metrics and gates → approvals → deployments')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, opts: { json?: boolean }) => {
      const { lineage } = await versionLineage(config, ref);
      if (opts.json) return json(lineage);
      out(formatLineage(lineage));
    });

  const models = program.command('models').description('list registered models, or show one');
  models
    .command('list', { isDefault: true })
    .description('list registered models')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
    const reg = await registry(config);
    const rows = [];
    for (const name of await reg.listModels()) {
      const versions = await reg.listVersions(name);
      const production = await reg.getAlias(name, 'production');
      rows.push({ model: name, versions: versions.length, latest: versions.at(-1) ?? null, production: production?.version ?? null });
    }
    if (opts.json) return json(rows);
    if (!rows.length) return out('no models registered yet');
    for (const r of rows) out(`${r.model.padEnd(24)} versions=${r.versions} latest=${r.latest} production=${r.production ?? '-'}`);
    });
  models
    .command('show <modelRef>')
    .description('show a model (all versions) or one version: <model>[@<version>]')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, opts: { json?: boolean }) => {
      const { model, version } = parseModelRef(ref);
      const reg = await registry(config);
      if (version !== undefined) {
        const record = await reg.getVersion(model, version);
        const decision = await reg.getDecision(model, version);
        if (opts.json) return json({ ...record, decision });
        out(`${model}@${version}  created ${record.createdAt}`);
        out(`  artifact  sha256:${record.artifact.sha256} (${record.artifact.framework}, ${record.artifact.algorithm})`);
        out(`  data      sha256:${record.data.sha256} from ${record.data.source} (${record.data.rowCount} rows)`);
        out(`  trainer   ${record.trainer.entry} params=${JSON.stringify(record.trainer.params)}`);
        out(`  code      spec ${record.code.specHash.slice(0, 12)} git ${record.code.gitCommit?.slice(0, 12) ?? 'n/a'}${record.code.gitDirty ? ' (dirty)' : ''}`);
        out(`  metrics   ${Object.entries(record.evaluation.metrics).filter(([k]) => k !== 'support').map(([k, v]) => `${k}=${v === null ? 'n/a' : v.toFixed(4)}`).join(' ')}`);
        for (const g of record.evaluation.gates) out(`  gate      ${g.passed ? 'pass' : 'FAIL'} ${g.gate} (actual ${g.actual === null ? 'n/a' : g.actual.toFixed(4)}${g.reason ? `; ${g.reason}` : ''})`);
        out(`  run       ${record.run.workflowId} / ${record.run.runId} by ${record.run.submittedBy}`);
        if (decision) out(`  decision  ${decision.decision}${decision.by.length ? ` by ${decision.by.join(', ')}` : ''} at ${decision.decidedAt}${decision.comment ? `: ${decision.comment}` : ''}`);
        return;
      }
      const versions = await reg.listVersions(model);
      const aliases = { production: await reg.getAlias(model, 'production') };
      const deployments = await reg.listDeployments(model);
      if (opts.json) return json({ model, versions, aliases, deployments });
      out(`${model}: ${versions.length} versions; production → ${aliases.production ? `@${aliases.production.version}` : 'none'}`);
      for (const v of versions) {
        const r = await reg.getVersion(model, v);
        out(`  @${v}  ${r.createdAt}  sha256:${r.artifact.sha256.slice(0, 12)}  data:${r.data.sha256.slice(0, 12)}  ${Object.entries(r.evaluation.metrics).slice(0, 3).map(([k, x]) => `${k}=${x?.toFixed(3) ?? 'n/a'}`).join(' ')}`);
      }
      for (const d of deployments) out(`  deployed @${d.version} at ${d.deployedAt} (was ${d.previousVersion ?? 'none'}) by ${d.run.workflowId}`);
    });

  models
    .command('history <model>')
    .description('which version was in production when, and every version\'s metrics')
    .option('--at <time>', 'only: which version was in production at this ISO time')
    .option('--alias <alias>', 'alias to follow', 'production')
    .option('--json', 'machine-readable output')
    .action(async (model: string, opts: { at?: string; alias: string; json?: boolean }) => {
      const reg = await registry(config);
      const timeline = await productionTimeline(reg, parseModelRef(model).model, opts.alias);
      if (opts.at) {
        const version = versionAt(timeline, opts.at);
        if (opts.json) return json({ model, alias: opts.alias, at: opts.at, version });
        return out(version === null ? `nothing was in ${opts.alias} at ${opts.at}` : `${model}@${version} was in ${opts.alias} at ${opts.at}`);
      }
      const [metrics, rollouts] = await Promise.all([metricsByVersion(reg, model), rolloutHistory(reg, parseModelRef(model).model, opts.alias)]);
      if (opts.json) return json({ model, alias: opts.alias, timeline, rollouts, metrics });
      out(formatHistory({ model, alias: opts.alias, timeline, rollouts, metrics }));
    });
  models
    .command('card <modelAtVersion>')
    .description('the model card of a version (Markdown; --json for the structured card)')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, opts: { json?: boolean }) => {
      const { lineage, store } = await versionLineage(config, ref);
      const card = buildModelCard(lineage, await loadEvaluationReport(store, lineage.evaluation.reportKey));
      if (opts.json) return json(card.json);
      out(card.markdown);
    });
  models
    .command('tag <modelAtVersion> <tags...>')
    .description('set tags (key=value) on a version; --remove key to drop one')
    .option('--remove <keys...>', 'tag keys to remove')
    .action(async (ref: string, tags: string[], opts: { remove?: string[] }) => {
      const { model, version } = parseModelRef(ref);
      const pairs = Object.fromEntries(tags.map((t) => {
        const i = t.indexOf('=');
        if (i < 1) throw new Error(`"${t}" is not key=value`);
        return [t.slice(0, i), t.slice(i + 1)];
      }));
      const meta = await apiRequest(config, 'PATCH', `/v1/models/${model}/versions/${version}`, { tags: pairs, ...(opts.remove ? { removeTags: opts.remove } : {}) });
      json(meta);
    });
  models
    .command('describe <modelAtVersion> <text>')
    .description('set the description of a version ("" clears it); the version record itself never changes')
    .action(async (ref: string, text: string) => {
      const { model, version } = parseModelRef(ref);
      await apiRequest(config, 'PATCH', `/v1/models/${model}/versions/${version}`, { description: text === '' ? null : text });
      out(`${model}@${version} description ${text === '' ? 'cleared' : 'set'}`);
    });
  models
    .command('archive <modelAtVersion>')
    .description('archive a version (never the one in production); archived versions are never deployed')
    .option('--reason <text>', 'why (required to archive)')
    .option('--undo', 'unarchive instead')
    .action(async (ref: string, opts: { reason?: string; undo?: boolean }) => {
      const { model, version } = parseModelRef(ref);
      if (!opts.undo && !opts.reason) throw new Error('archive needs --reason "<why>"');
      const body = opts.undo ? { archived: false } : { archived: true, archiveReason: opts.reason };
      const meta = await apiRequest<{ archived: boolean }>(config, 'PATCH', `/v1/models/${model}/versions/${version}`, body);
      out(`${model}@${version} ${meta.archived ? 'archived' : 'unarchived'}`);
    });

  program
    .command('alias <model> <alias> <version>')
    .description('point an alias (staging, champion, challenger, …) at a version; compare-and-swap on --expect')
    .requiredOption('--expect <version>', 'the version the alias points at now ("none" if unset)')
    .action(async (model: string, alias: string, version: string, opts: { expect: string }) => {
      const moved = await apiRequest<{ version: number; previousVersion: number | null }>(config, 'PUT', `/v1/models/${model}/aliases/${alias}`, {
        version: Number(version),
        expectedVersion: opts.expect === 'none' ? null : Number(opts.expect),
      });
      out(`${model}@${alias} → ${moved.version} (was ${moved.previousVersion ?? 'none'})`);
    });

  program
    .command('monitor <model>')
    .description('the latest monitor verdict of a deployed model (drift, quality, performance) and the history of verdicts')
    .option('--limit <n>', 'history rows (default 20)', (v) => Number(v), 20)
    .option('--version <version>', 'only results for this model version', (v) => Number(v))
    .option('--json', 'machine-readable output')
    .action(async (model: string, opts: { limit: number; version?: number; json?: boolean }) => {
      const { model: name, version: atVersion } = parseModelRef(model);
      const version = opts.version ?? atVersion;
      if (!Number.isInteger(opts.limit) || opts.limit < 1) throw new Error('--limit must be a positive integer');
      if (version !== undefined && (!Number.isInteger(version) || version < 1)) throw new Error('--version must be a positive integer');
      const store = new MinioArtifactStore(config.s3);
      const results = await listMonitorResults(store, name, { limit: opts.limit, ...(version !== undefined ? { version } : {}) });
      if (opts.json) return json({ model: name, version: version ?? null, latest: results[0] ?? null, history: results });
      if (!results.length) {
        out(`${name}: no monitor results${version !== undefined ? ` for version ${version}` : ''} yet — the monitor has not run.`);
        out(`  Monitoring is enabled by a \`monitoring\` section in the pipeline spec (e.g. monitoring: { interval: '1h' });`);
        out(`  deploying the model then creates the schedule monitor-${name} (see: npx conveyor schedule list --model ${name}).`);
        return;
      }
      out(formatMonitorLatest(results[0]!).join('\n'));
      out('');
      out(formatMonitorHistory(results).join('\n'));
    });

  const schedule = program.command('schedule').description('Temporal Schedules: monitor-<model> and retrain-<model> (list, pause, unpause, trigger, delete, backfill)');
  schedule
    .command('list', { isDefault: true })
    .description('schedules with their spec, state, next and recent actions')
    .option('--model <model>', 'only this model\'s schedules')
    .option('--json', 'machine-readable output')
    .action(async (opts: { model?: string; json?: boolean }) => {
      const list = await withTemporal(config, (client) => listSchedules(client, opts.model !== undefined ? { model: opts.model } : {}));
      if (opts.json) return json(list);
      if (!list.length) return out(opts.model ? `no schedules for ${opts.model}` : 'no schedules');
      out(formatSchedules(list));
    });
  for (const action of ['pause', 'unpause'] as const) {
    schedule
      .command(`${action} <id>`)
      .description(action === 'pause' ? 'stop taking scheduled actions (trigger and backfill still work)' : 'resume taking scheduled actions')
      .option('--note <text>', 'why (shown by schedule list)')
      .option('--json', 'machine-readable output')
      .action(async (id: string, opts: { note?: string; json?: boolean }) => {
        const info = await withTemporal(config, async (client) => {
          await (action === 'pause' ? pauseSchedule : unpauseSchedule)(client, id, opts.note ?? `${action}d with conveyor schedule ${action}`);
          return getSchedule(client, id);
        });
        if (opts.json) return json(info);
        out(`${id}: ${info.paused ? 'paused' : 'active'}${info.note ? ` (${info.note})` : ''}`);
      });
  }
  schedule
    .command('trigger <id>')
    .description('take the action now, unless a run of this schedule is still running (overlap policy SKIP)')
    .action(async (id: string) => {
      await withTemporal(config, (client) => triggerSchedule(client, id));
      out(`${id}: triggered (skipped if a run of it is still running; see npx conveyor schedule list)`);
    });
  schedule
    .command('delete <id>')
    .description('delete the schedule (workflows it started keep running)')
    .action(async (id: string) => {
      await withTemporal(config, (client) => deleteSchedule(client, id));
      out(`${id}: deleted`);
    });
  schedule
    .command('backfill <id>')
    .description('take the actions the spec would have taken between --from and --to (both included), one after another')
    .requiredOption('--from <time>', 'start, ISO 8601 (e.g. 2026-01-01T00:00:00Z)')
    .requiredOption('--to <time>', 'end, ISO 8601')
    .action(async (id: string, opts: { from: string; to: string }) => {
      const from = new Date(opts.from);
      const to = new Date(opts.to);
      if (Number.isNaN(from.getTime())) throw new Error(`--from "${opts.from}" is not an ISO 8601 time`);
      if (Number.isNaN(to.getTime())) throw new Error(`--to "${opts.to}" is not an ISO 8601 time`);
      await withTemporal(config, (client) => backfillSchedule(client, id, from, to));
      out(`${id}: backfilling ${from.toISOString()} → ${to.toISOString()} (runs one at a time; see npx conveyor schedule list)`);
    });

  const rollout = program.command('rollout').description('follow and control a model\'s canary, shadow or A/B rollout (through the governance API)');
  rollout
    .command('status <model>')
    .description('the running rollout (state, share of traffic, steps with verdicts, last analysis), else the last one; and the traffic split')
    .option('--json', 'machine-readable output')
    .action(async (model: string, opts: { json?: boolean }) => {
      const view = await getRollout(config, parseModelRef(model).model);
      if (opts.json) return json(view);
      out(formatRolloutView(view));
    });
  const ACTIONS: Record<RolloutAction, string> = {
    promote: 'canary: skip the remaining steps and promote now; shadow and A/B: decide to promote (needs the right to decide the model)',
    pause: 'hold a running canary at its current share (health checks go on)',
    resume: 'resume a paused canary',
    abort: 'undo every step taken; production stays as it was',
  };
  for (const [action, description] of Object.entries(ACTIONS) as Array<[RolloutAction, string]>) {
    rollout
      .command(`${action} <model>`)
      .description(description)
      .option('--reason <text>', 'why (recorded with your identity)')
      .option('--json', 'machine-readable output')
      .action(async (model: string, opts: { reason?: string; json?: boolean }) => {
        const result = await controlRollout(config, parseModelRef(model).model, action, opts.reason);
        if (opts.json) return json(result);
        const effect: Record<RolloutAction, string> = {
          promote: 'promotion requested',
          pause: 'paused',
          resume: 'resumed',
          abort: 'abort requested; its steps are being undone',
        };
        out(`${result.model}: rollout ${result.status.rolloutId} of v${result.status.version} ${effect[action]} by ${result.by}`);
        out(formatRolloutStatus(result.status).slice(1).join('\n'));
      });
  }

  program
    .command('rollback <model>')
    .description('abort the running rollout of a model, or else move production back to its previous version (or --to)')
    .option('--to <version>', 'version to put back in production (default: the one before the current production entry)')
    .option('--reason <text>', 'why (recorded with your identity in the alias log)')
    .option('--json', 'machine-readable output')
    .action(async (model: string, opts: { to?: string; reason?: string; json?: boolean }) => {
      let toVersion: number | undefined;
      if (opts.to !== undefined) {
        toVersion = Number(opts.to.replace(/^v/, ''));
        if (!Number.isSafeInteger(toVersion) || toVersion < 1) throw new Error(`--to "${opts.to}" is not a version number`);
      }
      const result = await rollback(config, parseModelRef(model).model, { ...(toVersion !== undefined ? { toVersion } : {}), ...(opts.reason ? { reason: opts.reason } : {}) });
      if (opts.json) return json(result);
      out(`${result.action === 'aborted_rollout' ? 'rollout aborted' : 'production moved'}: ${result.message} (by ${result.by})`);
    });

  program
    .command('api')
    .description('serve the governance HTTP API (runs, approvals, registry; OpenAPI at /openapi.json)')
    .option('--port <port>', 'port (default CONVEYOR_API_PORT or 8090)', (v) => Number(v))
    .option('--host <host>', 'bind address (default CONVEYOR_API_HOST or 127.0.0.1)')
    .action(async (opts: { port?: number; host?: string }) => {
      const { startApi } = await import('../api/index.js');
      const api = await startApi(config, logger, { ...(opts.port !== undefined ? { port: opts.port } : {}), ...(opts.host ? { host: opts.host } : {}) });
      logger.info({ url: api.url }, 'governance API');
      for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void api.close());
    });

  program
    .command('worker')
    .description('run a worker: workflows and light activities, and/or training')
    .addOption(new Option('--role <role...>', 'which task queues to poll').choices(['pipeline', 'training']).default(['pipeline', 'training']))
    .option('--plugin <file...>', 'module registering TypeScript trainers and custom checks (export default defineWorkerPlugins({...}))')
    .action(async (opts: { role: Array<'pipeline' | 'training'>; plugin?: string[] }) => {
      const { createWorkers } = await import('../worker.js');
      const { loadWorkerPlugins } = await import('../plugins.js');
      const plugins = await loadWorkerPlugins(opts.plugin ?? []);
      const running = await createWorkers({ config, logger, roles: opts.role, tsTrainers: plugins.trainers, customChecks: plugins.checks });
      for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => running.shutdown());
      logger.info({ roles: opts.role, taskQueues: config.taskQueues, temporal: config.temporal.address }, 'worker started');
      await running.run();
    });

  program
    .command('serve')
    .description('serve predictions from each model\'s production version')
    .option('--port <port>', 'port', (v) => Number(v))
    .option('--max-batch-rows <n>', 'dynamic batching: rows one inference run may answer across concurrent requests (default 64, or CONVEYOR_SERVE_MAX_BATCH_ROWS; 1 turns it off)')
    .action(async (opts: { port?: number; maxBatchRows?: string }) => {
      const { parseMaxBatchRows, startServing } = await import('../serving/service.js');
      const maxBatchRows = opts.maxBatchRows === undefined ? undefined : parseMaxBatchRows(opts.maxBatchRows, '--max-batch-rows');
      const service = await startServing(config, logger, { ...(opts.port ? { port: opts.port } : {}), ...(maxBatchRows === undefined ? {} : { maxBatchRows }) });
      logger.info({ url: service.url, models: service.host.list() }, 'serving');
      for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void service.close());
    });

  const dev = program.command('dev').description('local Temporal dev server and MinIO as background processes');
  dev.command('up').description('start both (data under .conveyor/dev) and wait until healthy').action(async () => {
    const { devUp } = await import('../dev/dev-env.js');
    const status = await devUp(config, out);
    out(`Temporal  ${status.temporal.address}   web UI ${status.temporal.ui}`);
    out(`MinIO     ${status.minio.endpoint}   console ${status.minio.console}   (user ${config.s3.accessKey})`);
  });
  dev.command('down').description('stop both').action(async () => {
    const { devDown } = await import('../dev/dev-env.js');
    await devDown(config, out);
  });
  dev
    .command('status')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const { devStatus } = await import('../dev/dev-env.js');
      const status = await devStatus(config);
      if (opts.json) return json(status);
      out(`Temporal  ${status.temporal.healthy ? 'healthy' : 'down'}  ${status.temporal.address}  UI ${status.temporal.ui}`);
      out(`MinIO     ${status.minio.healthy ? 'healthy' : 'down'}  ${status.minio.endpoint}  console ${status.minio.console}`);
      if (!status.temporal.healthy || !status.minio.healthy) process.exitCode = 1;
    });

  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof InvalidSpecError || (err as Error).name === 'InvalidSpecError') {
      process.stderr.write(`${(err as Error).message}\n`);
      process.exitCode = 2;
      return;
    }
    const end = describeFailure(err);
    process.stderr.write(`error: ${end.message ?? (err as Error).message}\n`);
    process.exitCode = 1;
  }
}
