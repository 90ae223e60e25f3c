/**
 * `npm run demo -- --drift`: the monitoring story end to end. Deploys credit-risk v1 with
 * monitoring, manual approval (bob) and a canary rollout; serves a steady stream of rows from
 * the example's generator; runs the monitor (verdict ok); switches the stream to drifted data
 * (incomes 40% lower); runs the monitor again (verdict decay, naming income); then follows the
 * retraining it starts by itself through approval and its canary rollout to version 2.
 *
 * Runs in a bucket and on task queues of its own (`<bucket>-drift-demo`, emptied at start), so
 * versions start at 1 and nothing else's worker picks up its tasks. Called from scripts/demo.ts.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection, WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import { Client as MinioClient } from 'minio';
import type { Config } from '../src/config.js';
import { createLogger, type Logger } from '../src/logger.js';
import { listMonitorResults, type MonitorResult } from '../src/monitoring/results.js';
import { Registry } from '../src/registry/registry.js';
import { decide, runStatus, startPipeline, waitForRun, type RunEnd } from '../src/runs.js';
import { startServing, type RunningService } from '../src/serving/service.js';
import { servingTokens } from '../src/serving/tokens.js';
import { STAGES } from '../src/shared/constants.js';
import { retrainingControllerId } from '../src/shared/monitoring.js';
import { parsePipelineSpec } from '../src/spec/define.js';
import { codeVersion, loadPipelineFile, type LoadedPipeline } from '../src/spec/load.js';
import { MinioArtifactStore } from '../src/store/minio-store.js';
import { deleteSchedule, describeSchedule, monitorScheduleId, triggerSchedule } from '../src/temporal/schedules.js';
import { createWorkers } from '../src/worker.js';
import type { PipelineStatus } from '../workflows/messages.js';
import type { MonitorSummary } from '../workflows/monitor.js';
import { retrainingStateQuery, type RetrainingState } from '../workflows/retraining.js';
import { rolloutStatusQuery, rolloutWorkflowId, type RolloutStatus } from '../workflows/rollout-messages.js';
import { generateCreditRisk, type CreditRiskRow } from '../examples/credit-risk/generate.js';

const MODEL = 'credit-risk';
const REVIEWER = 'bob';
const RATE_PER_SECOND = 40;
/** Task queues of this demo carry this marker, so leftovers of an earlier demo run can be told apart. */
const QUEUE_MARK = '-drift-demo-';

export interface DriftDemoOptions {
  config: Config;
  logger: Logger;
  /** The dev servers demo.ts started, for the "where to look" links. */
  dev?: { temporal: { ui: string }; minio: { console: string } } | undefined;
  write?: (line: string) => void;
}

type Mode = 'normal' | 'income';

/** One row per request from the generator, at a steady rate; counts answers per model version. */
class Traffic {
  mode: Mode = 'normal';
  sent = 0;
  ok = 0;
  failed = 0;
  lastError = '';
  readonly byVersion = new Map<number, number>();
  readonly byMode: Record<Mode, number> = { normal: 0, income: 0 };
  private readonly pools: Record<Mode, CreditRiskRow[]>;
  private timer: NodeJS.Timeout | undefined;
  private readonly inflight = new Set<Promise<void>>();

  constructor(
    private readonly url: string,
    private readonly token: string,
    features: string[],
  ) {
    const pick = (rows: CreditRiskRow[]): CreditRiskRow[] => rows.map((r) => Object.fromEntries(features.map((f) => [f, r[f] ?? null])));
    // Same seed: the same applicants, only their incomes differ in the drifted pool.
    this.pools = {
      normal: pick(generateCreditRisk({ rows: 4000, seed: 2024, includeTarget: false })),
      income: pick(generateCreditRisk({ rows: 4000, seed: 2024, drift: 'income', includeTarget: false })),
    };
  }

  start(): void {
    const tickMs = 1000 / RATE_PER_SECOND;
    this.timer = setInterval(() => {
      if (this.inflight.size >= 32) return; // the server is behind: do not pile up
      const p = this.one().finally(() => this.inflight.delete(p));
      this.inflight.add(p);
    }, tickMs);
  }

  private async one(): Promise<void> {
    const mode = this.mode;
    const pool = this.pools[mode];
    const instance = pool[this.sent++ % pool.length];
    try {
      const res = await fetch(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${this.token}` },
        body: JSON.stringify({ instance }),
      });
      const body = (await res.json()) as { version?: number; error?: string };
      if (!res.ok || body.version === undefined) throw new Error(`HTTP ${res.status} ${body.error ?? ''}`);
      this.ok++;
      this.byMode[mode]++;
      this.byVersion.set(body.version, (this.byVersion.get(body.version) ?? 0) + 1);
    } catch (err) {
      this.failed++;
      this.lastError = (err as Error).message;
    }
  }

  versions(): string {
    return [...this.byVersion.entries()].sort(([a], [b]) => a - b).map(([v, n]) => `v${v}: ${n}`).join(', ');
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.allSettled([...this.inflight]);
  }
}

/** Empties (or creates) the demo's own bucket, so the registry starts at version 1. */
async function freshBucket(config: Config): Promise<void> {
  const s3 = config.s3;
  const minio = new MinioClient({ endPoint: s3.endPoint, port: s3.port, useSSL: s3.useSSL, accessKey: s3.accessKey, secretKey: s3.secretKey, region: s3.region });
  if (await minio.bucketExists(s3.bucket)) {
    const names: string[] = [];
    for await (const item of minio.listObjectsV2(s3.bucket, '', true) as AsyncIterable<{ name?: string }>) if (item.name) names.push(item.name);
    for (let i = 0; i < names.length; i += 1000) await minio.removeObjects(s3.bucket, names.slice(i, i + 1000));
  }
  await new MinioArtifactStore(s3).ensureBucket();
}

export async function runDriftDemo(opts: DriftDemoOptions): Promise<number> {
  const started = Date.now();
  const out = opts.write ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const say = (line = ''): void => {
    if (!line) return out('');
    const now = new Date();
    const clock = now.toTimeString().slice(0, 8);
    const elapsed = ((now.getTime() - started) / 1000).toFixed(1).padStart(5);
    out(`[${clock} +${elapsed}s] ${line}`);
  };
  const step = (title: string): void => {
    out('');
    say(`▶ ${title}`);
  };

  // The demo's own bucket and task queues (see the file comment).
  const stamp = `${Date.now().toString(36)}${randomUUID().slice(0, 4)}`;
  const config: Config = {
    ...opts.config,
    s3: { ...opts.config.s3, bucket: `${opts.config.s3.bucket}-drift-demo` },
    taskQueues: { pipeline: `${opts.config.taskQueues.pipeline}${QUEUE_MARK}${stamp}`, training: `${opts.config.taskQueues.training}${QUEUE_MARK}${stamp}` },
  };
  // The monitor logs its breaches as warnings; the narration shows them already.
  const logger = process.env.LOG_LEVEL ? opts.logger : createLogger({ level: 'error' });

  out('▶ Conveyor drift demo: served traffic drifts, the monitor notices, the model retrains itself\n');
  say(`bucket ${config.s3.bucket} (emptied for this run), task queues …${QUEUE_MARK}${stamp}`);
  await freshBucket(config);
  const store = new MinioArtifactStore(config.s3);
  const registry = new Registry(store);

  const connection = await Connection.connect({ address: config.temporal.address });
  const client = new Client({ connection, namespace: config.temporal.namespace });
  await clearLeftovers(client, say);

  say('starting a worker (pipeline + training task queues)');
  const workers = await createWorkers({ config, logger });
  const running = workers.run();

  let service: RunningService | undefined;
  let traffic: Traffic | undefined;
  let exitCode = 1;
  try {
    // 1. Version 1, with monitoring, manual approval and a canary deployment in its spec.
    step('1. deploy version 1 of credit-risk (spec with monitoring, manual approval by bob, canary rollout)');
    const loaded = await loadPipelineFile('examples/credit-risk/pipeline.ts');
    const spec = parsePipelineSpec({
      ...loaded.spec,
      monitoring: { interval: '1h', drift: { minSamples: 200 }, retrain: { cooldown: '1h' } },
      approval: { mode: 'manual', reviewers: [REVIEWER], timeout: '1h' },
      deployment: { alias: 'production', strategy: 'canary', canary: { steps: [25, 100], bake: '5s' }, analysisInterval: '2s', bounds: { minRequests: 20 } },
    });
    const pipeline: LoadedPipeline = { ...loaded, spec, code: codeVersion(spec, loaded.file) };
    say('  monitoring  every 1h (triggered by hand here), drift verdict from 200 served rows, retrain on decay (cooldown 1h)');
    say(`  approval    manual, reviewer ${REVIEWER}, timeout 1h`);
    say('  deployment  canary 25% → 100%, bake 5s, analysis every 2s, at least 20 requests per side');
    const first = await startPipeline(client, config, pipeline, { submittedBy: 'alice' });
    say(`  pipeline ${first.workflowId} submitted by alice`);
    const v1 = await followPipeline(first, say);
    if (v1.outcome !== 'deployed') throw new Error(`version 1 ended ${v1.outcome}: ${v1.message ?? ''}`);
    const v1Status = await runStatus(first);
    say(`✓ credit-risk v${v1.result!.version} is in production (nothing was in production, so no canary); schedules: ${(v1Status.schedules ?? []).join(', ') || 'none'}`);

    // 2. Serving and a steady stream of requests.
    step(`2. serve the model and send it ${RATE_PER_SECOND} requests/s, one generated applicant per request (normal data)`);
    service = await startServing({ ...config, serving: { ...config.serving, pollIntervalMs: 500 } }, logger, { port: 0, predictionLog: { flushIntervalMs: 500 } });
    const features = Object.keys(spec.schema.columns).filter((c) => c !== spec.target.column);
    traffic = new Traffic(`${service.url}/v1/models/${MODEL}:predict`, servingTokens(config.home)[0]!, features);
    traffic.start();
    say(`  POST ${service.url}/v1/models/${MODEL}:predict`);
    await until(() => traffic!.byMode.normal >= 320, 30_000, 'normal traffic');
    say(`  served ${traffic.ok} predictions (${traffic.versions()}), ${traffic.failed} failed`);

    // 3. The monitor on normal traffic.
    step(`3. run the monitor now (trigger schedule ${monitorScheduleId(MODEL)} instead of waiting an hour)`);
    const okSummary = await runMonitor(client, service, store, say);
    if (okSummary.verdict !== 'ok') say(`  (expected ok; the generator's sample happened to differ from the training data)`);

    // 4. Drift.
    step('4. switch the traffic to drifted data: the same applicants with 40% lower incomes');
    traffic.mode = 'income';
    const driftFrom = traffic.byMode.income;
    for (let i = 0; i < 3; i++) {
      await sleep(4000);
      say(`  drifted requests served: ${traffic.byMode.income - driftFrom} (total ${traffic.ok}, ${traffic.failed} failed)`);
    }
    say(`  run the monitor again (its window, the last hour, now holds ${traffic.byMode.normal} normal and ${traffic.byMode.income} drifted rows)`);
    const decay = await runMonitor(client, service, store, say);
    if (decay.verdict !== 'decay') throw new Error(`the monitor's verdict on drifted traffic was ${decay.verdict}, not decay`);

    // 5. The retraining it started by itself.
    step(`5. the retraining controller (${retrainingControllerId(MODEL)}) decides`);
    const state = await until(
      () => client.workflow.getHandle(retrainingControllerId(MODEL)).query(retrainingStateQuery).catch(() => undefined) as Promise<RetrainingState | undefined>,
      30_000,
      'a retraining decision',
      (s) => (s?.decisions.length ?? 0) >= 1,
    );
    const decision = state!.decisions.at(-1)!;
    say(`  decision: ${decision.decision} at ${decision.at}`);
    say(`  trigger:  ${decision.trigger.kind}, monitor result ${decision.trigger.kind === 'decay' ? decision.trigger.monitorResultKey : '-'}`);
    say(`  reason:   ${decision.reason}`);
    if (decision.decision !== 'started' || !decision.workflowId) throw new Error('the controller did not start a retraining');
    say(`  retraining pipeline ${decision.workflowId}, submitted by conveyor-retraining; it retrains on the spec's data source`);
    say(`  (${spec.dataset.source}, its newest contents) with the same gates, approval and rollout`);
    const retraining = client.workflow.getHandle(decision.workflowId);
    const v2 = await followPipeline(retraining, say, traffic);
    if (v2.outcome !== 'deployed') throw new Error(`the retraining ended ${v2.outcome}: ${v2.message ?? ''}`);

    const production = await registry.getAlias(MODEL, 'production');
    const record = await registry.getVersion(MODEL, production!.version);
    step('result');
    say(`✓ production is credit-risk v${production!.version} (sha256 ${record.artifact.sha256.slice(0, 16)}…)`);
    const v1Record = await registry.getVersion(MODEL, v1.result!.version);
    if (v1Record.artifact.sha256 === record.artifact.sha256) {
      say(`  (same artifact as v${v1Record.version}: ${spec.dataset.source} has not changed since; with newer rows in it the retraining learns the drift)`);
    }
    say(`  lineage: submitted by ${record.run.submittedBy}, trigger ${JSON.stringify(record.run.trigger ?? null)}`);
    say(`  traffic answered so far: ${traffic.versions()}; ${traffic.failed} failed${traffic.failed ? ` (last: ${traffic.lastError})` : ''}`);

    out('');
    say('▶ where to look');
    if (opts.dev) {
      say(`  Temporal web UI   ${opts.dev.temporal.ui}/namespaces/${config.temporal.namespace}/workflows/${decision.workflowId}`);
      say(`  MinIO console     ${opts.dev.minio.console}   (bucket ${config.s3.bucket}: registry, prediction logs, monitor results)`);
    }
    say(`  monitor results   CONVEYOR_S3_BUCKET=${config.s3.bucket} npx conveyor monitor ${MODEL}`);
    say(`  lineage           CONVEYOR_S3_BUCKET=${config.s3.bucket} npx conveyor lineage ${MODEL}@${production!.version}`);
    exitCode = 0;
  } catch (err) {
    out('');
    say(`✗ drift demo failed: ${(err as Error).message}`);
  } finally {
    step('6. clean up');
    if (traffic) {
      await traffic.stop();
      say(`  traffic stopped after ${traffic.ok} predictions (${traffic.versions()})`);
    }
    if (service) {
      await service.close();
      say('  serving stopped (prediction log flushed)');
    }
    // The schedule and the controller would otherwise wait for this run's worker forever.
    await deleteSchedule(client, monitorScheduleId(MODEL)).then(
      () => say(`  schedule ${monitorScheduleId(MODEL)} deleted`),
      () => undefined,
    );
    await client.workflow
      .getHandle(retrainingControllerId(MODEL))
      .terminate('end of the drift demo')
      .then(
        () => say(`  retraining controller ${retrainingControllerId(MODEL)} stopped`),
        () => undefined,
      );
    workers.shutdown();
    await running;
    await connection.close();
    say('  worker stopped');
    say(`${exitCode === 0 ? '✓' : '✗'} drift demo ${exitCode === 0 ? 'finished' : 'ended'} in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  }
  return exitCode;
}

/** A controller or rollout of credit-risk left running by an earlier (interrupted) drift demo holds state this run must not inherit. */
async function clearLeftovers(client: Client, say: (line: string) => void): Promise<void> {
  for (const id of [retrainingControllerId(MODEL), rolloutWorkflowId(MODEL)]) {
    let d;
    try {
      d = await client.workflow.getHandle(id).describe();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) continue;
      throw err;
    }
    if (d.status.name !== 'RUNNING') continue;
    if (!d.taskQueue.includes(QUEUE_MARK)) {
      throw new Error(`workflow ${id} is running (task queue ${d.taskQueue}); finish or terminate it before the drift demo, which uses the same workflow id`);
    }
    await client.workflow.getHandle(id).terminate('left over by an earlier drift demo');
    say(`terminated ${id}, left over by an earlier drift demo`);
  }
  await deleteSchedule(client, monitorScheduleId(MODEL)).catch(() => undefined);
}

/** Polls `probe` until `done` holds for its value (truthy by default), or fails after timeoutMs. */
async function until<T>(probe: () => T | Promise<T>, timeoutMs: number, what: string, done: (v: T) => boolean = Boolean): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/** Triggers the monitor schedule, waits for the run it starts, and prints its verdict. */
async function runMonitor(client: Client, service: RunningService, store: MinioArtifactStore, say: (line: string) => void): Promise<MonitorSummary> {
  const scheduleId = monitorScheduleId(MODEL);
  await service.predictionLog?.flush();
  const before = new Set((await describeSchedule(client, scheduleId)).info.recentActions.map((a) => a.action.workflow.workflowId));
  await triggerSchedule(client, scheduleId);
  const action = await until(
    async () => (await describeSchedule(client, scheduleId)).info.recentActions.find((a) => !before.has(a.action.workflow.workflowId)),
    30_000,
    'the triggered monitor run',
  );
  const { workflowId, firstExecutionRunId } = action!.action.workflow;
  say(`  monitor run ${workflowId} started`);
  const summary = (await client.workflow.getHandle(workflowId, firstExecutionRunId).result()) as MonitorSummary;
  const result: MonitorResult | undefined = (await listMonitorResults(store, MODEL, { limit: 10 })).find((r) => r.resultKey === summary.resultKey);
  say(`  verdict ${summary.verdict.toUpperCase()} for v${summary.version} on ${result?.sampleSize ?? '?'} served rows (window ${summary.windowStart} → ${summary.windowEnd})`);
  for (const breach of summary.breaches) say(`    breach: ${breach}`);
  const income = result?.drift?.features['income']?.measures;
  const named = summary.breaches.some((b) => b.startsWith('income'));
  if (!named && income?.psi !== undefined && income.ks !== undefined) say(`    income: psi ${income.psi.toFixed(3)} (limit 0.2), ks ${income.ks.toFixed(3)} (limit 0.1)`);
  say(`  retraining requested: ${summary.retrainingRequested ? 'yes' : 'no'}; result ${summary.resultKey}`);
  return summary;
}

/**
 * Follows a pipeline run stage by stage; approves as bob when it waits for approval, and
 * follows its canary rollout (each step and analysis verdict) when there is one.
 */
async function followPipeline(handle: WorkflowHandle, say: (line: string) => void, traffic?: Traffic): Promise<RunEnd> {
  const seen = new Set<string>();
  const result = waitForRun(handle);
  let finished = false;
  void result.finally(() => (finished = true));
  let rolloutSeen = '';
  const rollout = new RolloutPrinter(say, traffic);
  while (!finished) {
    const status: PipelineStatus | undefined = await runStatus(handle).catch(() => undefined);
    printStages(status, seen, say);
    const waiting = status?.awaitingApproval;
    if (waiting && !seen.has('approve')) {
      seen.add('approve');
      say(`  ⏸ v${waiting.version} awaits approval by ${waiting.reviewers.join(', ')} (submitted by ${waiting.submittedBy}, deadline ${waiting.deadline})`);
      if (status?.metrics) say(`    metrics: ${Object.entries(status.metrics).map(([k, v]) => `${k} ${v === null ? '-' : Number.isInteger(v) ? v : v.toFixed(3)}`).join(', ')}`);
      await sleep(1500); // a moment for the audience to read it
      const decision = await decide(handle, 'approve', { model: waiting.model, version: waiting.version, sha256: waiting.sha256, reviewer: REVIEWER, comment: 'drift demo: metrics look fine' });
      say(`  ✓ ${decision.reviewer} approves v${decision.version} (${decision.decision}, ${decision.approvals}/${decision.quorum})`);
    }
    if (status?.rollout && rolloutSeen !== status.rollout.workflowId) {
      rolloutSeen = status.rollout.workflowId;
      say(`  canary rollout ${status.rollout.workflowId} (${status.rollout.rolloutId}) started`);
    }
    if (rolloutSeen) await rollout.poll(rolloutSeen, handle);
    await sleep(250);
  }
  if (rolloutSeen) await rollout.poll(rolloutSeen, handle);
  return result;
}

/** Prints a rollout's state, steps and analyses as they change. */
class RolloutPrinter {
  private readonly printed = new Set<string>();
  constructor(
    private readonly say: (line: string) => void,
    private readonly traffic: Traffic | undefined,
  ) {}

  async poll(workflowId: string, pipeline: WorkflowHandle): Promise<void> {
    const status: RolloutStatus | undefined = await pipeline.client
      .getHandle(workflowId)
      .query(rolloutStatusQuery)
      .catch(() => undefined);
    if (!status) return;
    const once = (key: string, line: string): void => {
      if (this.printed.has(key)) return;
      this.printed.add(key);
      this.say(line);
    };
    const served = this.traffic ? ` — traffic so far ${this.traffic.versions()}` : '';
    once(`state:${status.state}:${status.percent}`, `    rollout v${status.version} vs production v${status.productionVersion ?? '-'}: ${status.state}, ${status.percent}% of traffic on v${status.version}${served}`);
    for (const s of status.steps) {
      once(`step:${s.step}:start`, `    step ${s.step}: ${s.percent}% on the candidate`);
      if (s.endedAt) once(`step:${s.step}:end`, `    step ${s.step} done: ${s.verdict ?? '-'}${s.summary ? ` — ${s.summary}` : ''}`);
    }
    const a = status.lastAnalysis;
    if (a) once(`analysis:${a.at}`, `    analysis ${a.verdict}: ${a.summary} (requests: production ${a.requests.production}, candidate ${a.requests.candidate})`);
    if (status.outcome) once('outcome', `    rollout ${status.outcome}${status.reason ? `: ${status.reason}` : ''}`);
  }
}

/** Prints each stage of a pipeline run once when it starts and once when it ends (shared with demo.ts). */
export function printStages(status: PipelineStatus | undefined, seen: Set<string>, say: (line: string) => void): void {
  for (const stage of STAGES) {
    const s = status?.stages[stage];
    if (s?.state === 'running' && !seen.has(`${stage}:run`)) {
      seen.add(`${stage}:run`);
      say(`  … ${stage}`);
    }
    if ((s?.state === 'done' || s?.state === 'failed') && !seen.has(`${stage}:end`)) {
      seen.add(`${stage}:end`);
      say(`  ${s.state === 'done' ? '✓' : '✗'} ${stage.padEnd(9)} ${s.detail ?? ''}`);
    }
  }
}
