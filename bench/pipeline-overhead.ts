/**
 * Orchestration overhead of Conveyor's `modelPipeline` workflow against a bare
 * Temporal workflow making the same number of activity calls, on the same real
 * Temporal dev server, worker process and machine. Activities are stubs (no I/O),
 * so the difference is what the pipeline workflow itself costs.
 *
 *   node --import tsx bench/pipeline-overhead.ts [--runs 30] [--warmup 3] [--concurrency 16] [--rounds 5] [--max-minutes 15]
 *
 * Runs of the two kinds are interleaved (ABBA order) so drift of the server
 * (its SQLite file grows as runs accumulate) affects both equally.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import { startDevStack, type DevStack } from '../src/dev/servers.js';
import { RunOutcome } from '../src/shared/errors.js';
import { modelSearchAttribute } from '../src/shared/search-attributes.js';
import { loadPipelineFile } from '../src/spec/load.js';
import type { PipelineInput } from '../workflows/index.js';
import { bareActivities, stubActivities } from './stub-activities.js';
import { ratio, summarize, table, type Summary } from './stats.js';
import type { bareWorkflow, modelPipeline } from './workflows.js';

/**
 * Activity calls `modelPipeline` makes on the auto-approval path with gates
 * passing, no promotion race and no webhooks (the example spec has none): ingestDataset, validateDataset, splitDataset,
 * trainModel, getAlias, evaluateModel, registerVersion, recordDecision,
 * validateDeployment (pre-deployment validation, since v4 of the workflow),
 * promoteVersion and ensureSchedules (schedules follow every deployment, since the
 * schedules-follow-every-deployment patch). Checked against a real run's history before measuring.
 */
const PIPELINE_AUTO_ACTIVITIES = 11;
const PIPELINE_QUEUE = 'bench-pipeline';
const TRAINING_QUEUE = 'bench-training';
/** Bounds every single run; a stuck run fails the benchmark instead of hanging it. */
const RUN_TIMEOUT = '2m';
const EXAMPLE = fileURLToPath(new URL('../examples/credit-risk/pipeline.ts', import.meta.url));

type Kind = 'pipeline' | 'bare';
const KINDS: readonly Kind[] = ['pipeline', 'bare'];

function positiveInt(name: string, raw: string, max: number): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`--${name} must be an integer in 1..${max}, got "${raw}"`);
  return n;
}

const { values: argv } = parseArgs({
  options: {
    runs: { type: 'string', default: '30' },
    warmup: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '5' },
    'max-minutes': { type: 'string', default: '15' },
  },
  strict: true,
});
const opts = {
  runs: positiveInt('runs', argv.runs, 1000),
  warmup: positiveInt('warmup', argv.warmup, 100),
  concurrency: positiveInt('concurrency', argv.concurrency, 256),
  rounds: positiveInt('rounds', argv.rounds, 100),
  maxMinutes: positiveInt('max-minutes', argv['max-minutes'], 120),
};

const progress = (message: string): void => {
  process.stderr.write(`[bench] ${message}\n`);
};

interface HistoryShape {
  events: number;
  activitiesScheduled: number;
  workflowTasks: number;
  searchAttributeUpserts: number;
  payloadBytes: number;
}

/** Sums the bytes of every payload (`{ metadata, data }`) anywhere in a history. */
function payloadBytes(value: unknown): number {
  if (!value || typeof value !== 'object') return 0;
  if (value instanceof Uint8Array) return 0;
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + payloadBytes(v), 0);
  const obj = value as Record<string, unknown>;
  if (obj.data instanceof Uint8Array && 'metadata' in obj) return obj.data.length;
  let n = 0;
  for (const v of Object.values(obj)) n += payloadBytes(v);
  return n;
}

async function historyShape(client: Client, workflowId: string): Promise<HistoryShape> {
  const history = await client.workflow.getHandle(workflowId).fetchHistory();
  const events = history.events ?? [];
  return {
    events: events.length,
    activitiesScheduled: events.filter((e) => e.activityTaskScheduledEventAttributes).length,
    workflowTasks: events.filter((e) => e.workflowTaskCompletedEventAttributes).length,
    searchAttributeUpserts: events.filter((e) => e.upsertWorkflowSearchAttributesEventAttributes).length,
    payloadBytes: payloadBytes(events),
  };
}

/** CPU time (user + system) of a process from /proc, in ms; null where /proc is unavailable. */
function procCpuMs(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime + stime, USER_HZ = 100
  } catch {
    return null;
  }
}

/** CPU spent per run, split into this process (client + workers) and the Temporal server. */
class CpuMeter {
  private readonly totals: Record<Kind, { node: number; server: number | null; runs: number }> = {
    pipeline: { node: 0, server: 0, runs: 0 },
    bare: { node: 0, server: 0, runs: 0 },
  };
  constructor(private readonly serverPid: number) {}
  async measure<T>(kind: Kind, runs: number, fn: () => Promise<T>): Promise<T> {
    const node0 = process.cpuUsage();
    const server0 = procCpuMs(this.serverPid);
    const result = await fn();
    const node = process.cpuUsage(node0);
    const server1 = procCpuMs(this.serverPid);
    const t = this.totals[kind];
    t.node += (node.user + node.system) / 1000;
    t.server = t.server === null || server0 === null || server1 === null ? null : t.server + (server1 - server0);
    t.runs += runs;
    return result;
  }
  perRun(): Record<Kind, { nodeMs: number; serverMs: number | null }> {
    const per = (k: Kind) => {
      const t = this.totals[k];
      return { nodeMs: Math.round((t.node / t.runs) * 10) / 10, serverMs: t.server === null ? null : Math.round((t.server / t.runs) * 10) / 10 };
    };
    return { pipeline: per('pipeline'), bare: per('bare') };
  }
}

async function main(): Promise<void> {
  const deadline = Date.now() + opts.maxMinutes * 60_000;
  const checkDeadline = (): void => {
    if (Date.now() > deadline) throw new Error(`benchmark exceeded --max-minutes ${opts.maxMinutes}`);
  };

  Runtime.install({ logger: new DefaultLogger('WARN') });
  const dir = mkdtempSync(join(tmpdir(), 'conveyor-bench-'));
  let stack: DevStack | undefined;
  let failed = false;
  // Last resort if something hangs past every bound: stop the servers and exit.
  const watchdog = setTimeout(() => {
    progress(`watchdog: still running ${opts.maxMinutes + 2} minutes after start; stopping (logs in ${dir})`);
    void (stack?.stop() ?? Promise.resolve()).finally(() => process.exit(2));
  }, (opts.maxMinutes + 2) * 60_000);
  watchdog.unref();
  const onSignal = (signal: NodeJS.Signals): void => {
    progress(`${signal}: stopping the dev stack`);
    void (stack?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const loadBefore = loadavg().map((x) => Math.round(x * 100) / 100);
    progress(`starting Temporal dev server + MinIO in ${dir} (load average ${loadBefore.join(' ')})`);
    stack = await startDevStack({ dir, accessKey: 'bench', secretKey: 'bench-secret-123' });

    const bundle = await bundleWorkflowCode({
      workflowsPath: fileURLToPath(new URL('./workflows.ts', import.meta.url)),
      logger: new DefaultLogger('WARN'),
    });
    const workerConnection = await NativeConnection.connect({ address: stack.temporalAddress });
    const { trainModel, ...light } = stubActivities();
    // Same layout as src/worker.ts: workflows + light activities on the pipeline queue, training on its own queue.
    const workers = [
      await Worker.create({
        connection: workerConnection,
        taskQueue: PIPELINE_QUEUE,
        workflowBundle: bundle,
        activities: { ...light, ...bareActivities },
      }),
      await Worker.create({ connection: workerConnection, taskQueue: TRAINING_QUEUE, activities: { trainModel } }),
    ];
    let workersDone = false;
    let workerError: unknown;
    const running = Promise.all(workers.map((w) => w.run()))
      .then(
        () => undefined,
        (err: unknown) => {
          workerError = err;
        },
      )
      .finally(() => {
        workersDone = true;
      });
    const connection = await Connection.connect({ address: stack.temporalAddress });
    const client = new Client({ connection });

    try {
      const loaded = await loadPipelineFile(EXAMPLE);
      const input: PipelineInput = {
        spec: { ...loaded.spec, approval: { mode: 'auto' } },
        code: loaded.code,
        submittedBy: 'bench',
        trainingTaskQueue: TRAINING_QUEUE,
      };
      let seq = 0;
      const lastId: Partial<Record<Kind, string>> = {};

      /** One run, timed from `client.workflow.start` to its result. */
      const runOnce = async (kind: Kind): Promise<number> => {
        if (workersDone) throw new Error(`a worker stopped during the benchmark: ${String(workerError)}`);
        const workflowId = `bench-${kind}-${++seq}-${randomUUID().slice(0, 8)}`;
        lastId[kind] = workflowId;
        if (kind === 'pipeline') {
          const t0 = performance.now();
          const handle = await client.workflow.start<typeof modelPipeline>('modelPipeline', {
            taskQueue: PIPELINE_QUEUE,
            workflowId,
            args: [input],
            // As src/runs.ts starts a pipeline.
            typedSearchAttributes: [{ key: modelSearchAttribute, value: input.spec.name }],
            workflowExecutionTimeout: RUN_TIMEOUT,
          });
          const result = await handle.result();
          const ms = performance.now() - t0;
          if (result.outcome !== RunOutcome.Deployed) throw new Error(`pipeline run ${workflowId} ended ${result.outcome}`);
          return ms;
        }
        const t0 = performance.now();
        const handle = await client.workflow.start<typeof bareWorkflow>('bareWorkflow', {
          taskQueue: PIPELINE_QUEUE,
          workflowId,
          args: [PIPELINE_AUTO_ACTIVITIES],
          workflowExecutionTimeout: RUN_TIMEOUT,
        });
        const calls = await handle.result();
        const ms = performance.now() - t0;
        if (calls !== PIPELINE_AUTO_ACTIVITIES) throw new Error(`bare run ${workflowId} made ${calls} calls`);
        return ms;
      };

      /** Alternates which kind goes first (ABBA) so neither always follows the other. */
      const orderFor = (i: number): readonly Kind[] => (i % 2 === 0 ? KINDS : [...KINDS].reverse());

      const temporalPid = stack.processes.find((p) => p.name === 'temporal')!.pid;

      const sequential = async (n: number, cpu = new CpuMeter(temporalPid)): Promise<{ samples: Record<Kind, number[]>; cpu: CpuMeter }> => {
        const samples: Record<Kind, number[]> = { pipeline: [], bare: [] };
        for (let i = 0; i < n; i++) {
          for (const kind of orderFor(i)) {
            checkDeadline();
            samples[kind].push(await cpu.measure(kind, 1, () => runOnce(kind)));
          }
        }
        return { samples, cpu };
      };

      /** Rounds of `c` simultaneous runs of one kind; a round ends when its last run does. */
      const concurrent = async (c: number, rounds: number, cpu = new CpuMeter(temporalPid)) => {
        const samples: Record<Kind, number[]> = { pipeline: [], bare: [] };
        const roundMs: Record<Kind, number[]> = { pipeline: [], bare: [] };
        for (let r = 0; r < rounds; r++) {
          for (const kind of orderFor(r)) {
            checkDeadline();
            const t0 = performance.now();
            samples[kind].push(...(await cpu.measure(kind, c, () => Promise.all(Array.from({ length: c }, () => runOnce(kind))))));
            roundMs[kind].push(Math.round(performance.now() - t0));
          }
        }
        return { samples, roundMs, cpu };
      };

      progress(`warm-up: ${opts.warmup} sequential runs of each kind + 1 round of ${opts.concurrency}`);
      await sequential(opts.warmup);
      const shapes = {
        pipeline: await historyShape(client, lastId.pipeline!),
        bare: await historyShape(client, lastId.bare!),
      };
      if (shapes.pipeline.activitiesScheduled !== PIPELINE_AUTO_ACTIVITIES || shapes.bare.activitiesScheduled !== PIPELINE_AUTO_ACTIVITIES) {
        throw new Error(`activity counts differ from ${PIPELINE_AUTO_ACTIVITIES}: ${JSON.stringify(shapes)}`);
      }
      await concurrent(opts.concurrency, 1);

      progress(`concurrency 1: ${opts.runs} runs of each kind`);
      const seq1 = await sequential(opts.runs);
      progress(`concurrency ${opts.concurrency}: ${opts.rounds} rounds of each kind`);
      const conc = await concurrent(opts.concurrency, opts.rounds);

      const level = (samples: Record<Kind, number[]>, cpu: CpuMeter, roundMs?: Record<Kind, number[]>) => {
        const pipeline = summarize(samples.pipeline);
        const bare = summarize(samples.bare);
        const throughput = roundMs
          ? Object.fromEntries(
              KINDS.map((k) => [k, Math.round((samples[k].length / (roundMs[k].reduce((a, b) => a + b, 0) / 1000)) * 10) / 10]),
            ) as Record<Kind, number>
          : undefined;
        return {
          pipeline,
          bare,
          ratioP50: ratio(pipeline.p50, bare.p50),
          ratioP95: ratio(pipeline.p95, bare.p95),
          cpuPerRun: cpu.perRun(),
          ...(throughput ? { runsPerSecond: throughput } : {}),
          ...(roundMs ? { roundMs } : {}),
        };
      };
      const results = {
        c1: level(seq1.samples, seq1.cpu),
        [`c${opts.concurrency}`]: level(conc.samples, conc.cpu, conc.roundMs),
      } as Record<string, ReturnType<typeof level>>;

      const fmt = (x: number): string => x.toFixed(1);
      const rows: string[][] = [];
      for (const [name, r] of Object.entries(results)) {
        const c = name.slice(1);
        const row = (kind: Kind, s: Summary): string[] => {
          const cpu = r.cpuPerRun[kind];
          return [c, kind, String(s.n), fmt(s.p50), fmt(s.p95), fmt(s.mean), r.runsPerSecond ? fmt(r.runsPerSecond[kind]) : '-', fmt(cpu.nodeMs), cpu.serverMs === null ? '-' : fmt(cpu.serverMs)];
        };
        rows.push(row('pipeline', r.pipeline), row('bare', r.bare), [c, 'pipeline/bare', '', `${r.ratioP50.toFixed(2)}x`, `${r.ratioP95.toFixed(2)}x`, '', '', '', '']);
      }
      const machine = {
        nproc: availableParallelism(),
        cpu: cpus()[0]?.model ?? 'unknown',
        memGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
        node: process.version,
        platform: `${process.platform}-${process.arch}`,
        // Other work on the machine skews concurrent figures; the 1-minute load average before and after says how much there was.
        loadAverage1m: { before: loadBefore[0], after: Math.round(loadavg()[0]! * 100) / 100 },
      };
      const out = [
        '',
        `pipeline-overhead — ${new Date().toISOString()} — ${machine.nproc} CPUs (${machine.cpu}), ${machine.memGiB} GiB, node ${machine.node}, load average ${machine.loadAverage1m.before} → ${machine.loadAverage1m.after}`,
        `latency per run in ms, client.workflow.start → result; ${PIPELINE_AUTO_ACTIVITIES} activity calls per run; target pipeline/bare ≤ 1.3x`,
        `runs/s: throughput of the concurrent rounds; CPU ms/run: this process (client + workers) and the Temporal server`,
        '',
        table(['concurrency', 'workflow', 'runs', 'p50 ms', 'p95 ms', 'mean ms', 'runs/s', 'node CPU ms/run', 'server CPU ms/run'], rows),
        '',
        'history per run (one run of each kind):',
        table(
          ['workflow', 'events', 'activities', 'workflow tasks', 'SA upserts', 'payload bytes'],
          KINDS.map((k) => [k, String(shapes[k].events), String(shapes[k].activitiesScheduled), String(shapes[k].workflowTasks), String(shapes[k].searchAttributeUpserts), String(shapes[k].payloadBytes)]),
        ),
        '',
      ];
      process.stdout.write(out.join('\n'));
      process.stdout.write(
        `${JSON.stringify({ bench: 'pipeline-overhead', date: new Date().toISOString(), machine, options: opts, activityCalls: PIPELINE_AUTO_ACTIVITIES, results, history: shapes })}\n`,
      );
    } finally {
      await connection.close();
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await running;
      if (workerError) throw workerError;
      await workerConnection.close();
    }
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    clearTimeout(watchdog);
    progress('stopping the dev stack');
    await stack?.stop();
    if (failed) progress(`server logs kept in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`[bench] failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
