/**
 * Serving overhead: Conveyor's prediction service against a bare fastify handler
 * calling the same ONNX Runtime session, and against `session.run` alone.
 *
 *   node --import tsx bench/serving.ts [--duration 10] [--warmup 2] [--rounds 2] [--concurrency 1,32] [--shadow]
 *   node --cpu-prof --import tsx bench/serving.ts --variants conveyor   # profile one variant (ratios need conveyor, bare and run-only)
 *
 * - conveyor: `buildServing` with a ModelHost over a real MinIO (registry + artifact
 *   store), bearer-token auth on, the prediction log on (writing batches to MinIO),
 *   serving the credit-risk scikit-learn fixture model registered as version 1 and
 *   aliased `production`; as `conveyor serve` runs it, with dynamic batching on (default
 *   64 rows: requests that arrive together share one inference run).
 * - conveyor-unbatched: the same app and host with dynamic batching off (`maxBatchRows: 1`),
 *   one inference run per request as the bare handler does: what routing, checks, logging
 *   and metrics cost per request, without what batching saves.
 * - bare: one fastify POST route (no auth, validation or logging) that builds the
 *   same tensors from the same JSON body and calls an already-created
 *   InferenceSession of the same model with the same session options.
 * - run-only: `session.run` on prebuilt feeds in a loop, N loops at once, no HTTP.
 * - conveyor-shadow (only with --shadow): the SAME serving app as conveyor, called on a
 *   second model name (credit-risk-shadow) registered twice (v1, v2: the same fixture
 *   bytes) with production → v1 and a registry traffic split {mode: 'shadow'} → v2. The
 *   ModelHost loads v2 on a worker thread and every answered request is also scored
 *   there (arm shadow, logged too). Compared with conveyor: CPU per request with and
 *   without a shadow, against the ≤ 1.3× target. `process.cpuUsage()` counts every
 *   thread of the process (getrusage RUSAGE_SELF), so the worker thread's CPU is in it;
 *   the script checks that with a busy worker thread before measuring.
 *
 * The servers run in this process; the load generator (autocannon) runs in a child
 * process on loopback with keep-alive connections, so `process.cpuUsage()` here is
 * the server's CPU alone. Batch size 1: each request is `{"instance": {...}}`, one
 * row of examples/credit-risk/data/credit-risk.csv, rows varied across requests.
 * Each cell is warmed up, then measured; variant order rotates each round so drift
 * affects all variants alike. Latency percentiles are computed from every response
 * time (autocannon's own histogram has 1 ms resolution, too coarse here).
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem, availableParallelism } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import Fastify, { type FastifyInstance } from 'fastify';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { freePort, minioHealthy, startMinio, waitUntil, type ServerProcess } from '../src/dev/servers.js';
import { SESSION_OPTIONS, parseModelMetadata, sha256Hex, type ModelMetadata } from '../src/eval/onnx-model.js';
import { fixtureVersionDraft } from '../test/helpers/fixture-model.js';
import { createLogger } from '../src/logger.js';
import { Registry } from '../src/registry/registry.js';
import { ModelHost } from '../src/serving/model-host.js';
import type { ServingMetrics } from '../src/serving/metrics.js';
import { buildServing, SHADOW_DEFAULTS } from '../src/serving/server.js';
import { keys } from '../src/store/keys.js';
import { MinioArtifactStore } from '../src/store/minio-store.js';
import { ThreadedObjectWriter } from '../src/store/threaded-writer.js';
import { percentile, ratio, table } from './stats.js';

const MODEL = 'credit-risk';
const FIXTURE_DIR = new URL('../test/fixtures/models/', import.meta.url);
const CSV = fileURLToPath(new URL('../examples/credit-risk/data/credit-risk.csv', import.meta.url));
const TOKEN = 'bench-serving-token-0123456789abcdef';
/** Distinct request bodies each connection cycles through. */
const BODY_ROWS = 256;
const TARGETS = { rpsRatio: 0.8, p99AddedMs: 1, shadowCpuRatio: 1.3 };

type Variant = 'conveyor' | 'conveyor-unbatched' | 'bare' | 'run-only' | 'conveyor-shadow';
/** The variants the overhead ratios need; conveyor-unbatched is run by default too, conveyor-shadow is added by --shadow. */
const BASE_VARIANTS: readonly Variant[] = ['conveyor', 'bare', 'run-only'];
const DEFAULT_VARIANTS: readonly Variant[] = ['conveyor', 'conveyor-unbatched', 'bare', 'run-only'];
const VARIANTS: readonly Variant[] = [...DEFAULT_VARIANTS, 'conveyor-shadow'];
/** Conveyor variants whose overhead is reported against bare (the targets are the default configuration's: conveyor). */
const SERVING_VARIANTS = ['conveyor', 'conveyor-unbatched'] as const;
/** Model served with a shadow split (production v1, shadow v2) for the conveyor-shadow variant. */
const SHADOW_MODEL = 'credit-risk-shadow';


// ---------------------------------------------------------------------------------------------
// Load generator: this same file, forked with --loadgen. Receives one job per message.

interface LoadJob {
  url: string;
  headers: Record<string, string>;
  bodies: string[];
  connections: number;
  seconds: number;
}
interface LoadResult {
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  elapsedMs: number;
  /** Every 2xx response time, ms. */
  latencies: number[];
}

async function loadgenMain(): Promise<void> {
  const { default: autocannon } = await import('autocannon');
  process.on('message', (job: LoadJob) => {
    const latencies: number[] = [];
    let ok = 0;
    let non2xx = 0;
    const t0 = performance.now();
    const instance = autocannon(
      {
        url: job.url,
        method: 'POST',
        headers: { 'content-type': 'application/json', ...job.headers },
        requests: job.bodies.map((body) => ({ method: 'POST', body })),
        connections: job.connections,
        pipelining: 1,
        duration: job.seconds,
        timeout: 10,
      },
      (err: unknown, result) => {
        const elapsedMs = performance.now() - t0;
        if (err) {
          process.send!({ error: String(err) });
          return;
        }
        const out: LoadResult = { ok, non2xx, errors: result.errors, timeouts: result.timeouts, elapsedMs, latencies };
        process.send!(out);
      },
    );
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) {
        ok++;
        latencies.push(responseTime);
      } else non2xx++;
    });
  });
  process.on('disconnect', () => process.exit(0));
  process.send!({ ready: true });
}

class LoadGen {
  private constructor(private readonly child: ChildProcess) {}

  static async start(): Promise<LoadGen> {
    // Not profiled with the server (--cpu-prof* flags are the server's): the load generator must not slow down under the profiler.
    const execArgv = process.execArgv.filter((a) => !a.startsWith('--cpu-prof'));
    const child = fork(fileURLToPath(import.meta.url), ['--loadgen'], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code) => reject(new Error(`load generator exited with ${code}`)));
    });
    return new LoadGen(child);
  }

  run(job: LoadJob): Promise<LoadResult> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`load generator exited with ${code}`));
      this.child.once('exit', onExit);
      this.child.once('message', (msg: LoadResult | { error: string }) => {
        this.child.off('exit', onExit);
        if ('error' in msg) reject(new Error(`autocannon: ${msg.error}`));
        else resolve(msg);
      });
      this.child.send(job);
    });
  }

  stop(): void {
    this.child.kill();
  }
}

// ---------------------------------------------------------------------------------------------

function positive(name: string, raw: string, max: number, integer = true): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0 || n > max || (integer && !Number.isInteger(n))) throw new Error(`--${name} must be a positive ${integer ? 'integer' : 'number'} ≤ ${max}, got "${raw}"`);
  return n;
}

type VersionDraft = Parameters<Registry['registerVersion']>[0];

/**
 * Shadow mode as a rollout sets it up: SHADOW_MODEL registered as v1 and v2 (same bytes),
 * production → v1, and a traffic split copying every request to v2. Returns the versions.
 */
async function deployShadow(registry: Registry, draft: (model: string, workflowId: string) => VersionDraft): Promise<{ production: number; candidate: number }> {
  const v1 = await registry.registerVersion(draft(SHADOW_MODEL, 'wf-bench-shadow-v1'));
  const v2 = await registry.registerVersion(draft(SHADOW_MODEL, 'wf-bench-shadow-v2'));
  await registry.moveAlias({ model: SHADOW_MODEL, alias: 'production', version: v1.version, expectedVersion: null, run: { workflowId: 'wf-bench-shadow-v1', runId: 'run-bench' } });
  await registry.setTraffic({
    model: SHADOW_MODEL,
    mode: 'shadow',
    candidate: { version: v2.version, sha256: v2.artifact.sha256 },
    percent: 100,
    rolloutId: 'bench-shadow',
    step: 'shadow',
    workflowId: 'wf-bench-shadow-v2',
  });
  return { production: v1.version, candidate: v2.version };
}

/** Runs in a worker thread: spins until the thread itself has used `spinMs` of CPU (its /proc/thread-self/stat), posts what it used. */
const SPIN_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { readFileSync } = require('node:fs');
const cpu = () => {
  try {
    const s = readFileSync('/proc/thread-self/stat', 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
  } catch { return null; }
};
const c0 = cpu();
const t0 = Date.now();
let c = c0;
let x = 0;
while (Date.now() - t0 < 20 * workerData.spinMs) {
  for (let i = 0; i < 100000; i++) x += i;
  c = cpu();
  if (c === null || c0 === null ? Date.now() - t0 >= workerData.spinMs : c - c0 >= workerData.spinMs) break;
}
parentPort.postMessage(c === null || c0 === null ? null : c - c0 + (x === -1 ? 1 : 0));
`;

/**
 * Does `process.cpuUsage()` include worker threads? A worker thread spins until it has used
 * `spinMs` of CPU while the main thread sleeps; the process's CPU delta is compared with the
 * worker's and the main thread's own (from /proc/.../task, null where /proc is unavailable).
 */
async function cpuUsageCoversWorkers(spinMs = 300): Promise<{ spinMs: number; processCpuMs: number; workerThreadCpuMs: number | null; mainThreadCpuMs: number | null; covered: boolean }> {
  const main0 = procCpuMs(process.pid, process.pid);
  const cpu0 = process.cpuUsage();
  const worker = new Worker(SPIN_WORKER, { eval: true, workerData: { spinMs } });
  const workerThreadCpuMs = await new Promise<number | null>((resolve, reject) => {
    worker.once('message', (ms: number | null) => resolve(ms));
    worker.once('error', reject);
  });
  await worker.terminate();
  const cpu = process.cpuUsage(cpu0);
  const main1 = procCpuMs(process.pid, process.pid);
  const processCpuMs = Math.round((cpu.user + cpu.system) / 1000);
  const mainThreadCpuMs = main0 === null || main1 === null ? null : Math.round(main1 - main0);
  // What the process counted beyond its main thread must hold the spinning thread's CPU (/proc ticks are 10 ms).
  const covered = workerThreadCpuMs === null ? processCpuMs >= spinMs * 0.5 : processCpuMs - (mainThreadCpuMs ?? 0) >= workerThreadCpuMs - 20;
  return { spinMs, processCpuMs, workerThreadCpuMs, mainThreadCpuMs, covered };
}

/** Shadow copies of SHADOW_MODEL so far, from the serving app's metrics: scored, skipped (too many in flight), failed. */
async function shadowCounts(metrics: ServingMetrics): Promise<{ scored: number; skipped: number; failed: number }> {
  const sum = (values: Array<{ value: number; labels: Record<string, unknown> }>, arm?: string): number =>
    values.filter((v) => v.labels.model === SHADOW_MODEL && (arm === undefined || v.labels.arm === arm)).reduce((n, v) => n + v.value, 0);
  const [predictions, skipped, failures] = await Promise.all([metrics.predictions.get(), metrics.shadowSkipped.get(), metrics.inferenceFailures.get()]);
  return { scored: sum(predictions.values, 'shadow'), skipped: sum(skipped.values), failed: sum(failures.values, 'shadow') };
}

/** CPU time (user + system) of a process (or one of its threads) from /proc, ms; null where /proc is unavailable. */
function procCpuMs(pid: number, tid?: number): number | null {
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return null;
  }
}

/**
 * Which code was measured: the commit, whether src/serving differs from it, and a digest
 * of src/serving's files as loaded (so runs on uncommitted work can be told apart).
 */
function codeIdentity(): { commit: string; servingDirty: boolean; servingDigest: string } {
  const git = (...args: string[]): string => spawnSync('git', args, { encoding: 'utf8' }).stdout?.trim() ?? '';
  const dir = fileURLToPath(new URL('../src/serving/', import.meta.url));
  const hash = createHash('sha256');
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.ts')).sort()) hash.update(f).update(readFileSync(join(dir, f)));
  return { commit: git('rev-parse', '--short', 'HEAD') || 'unknown', servingDirty: git('status', '--porcelain', '--', 'src/serving') !== '', servingDigest: hash.digest('hex').slice(0, 12) };
}

/** Rows of the credit-risk CSV as feature records typed per the model's inputs (the target column dropped). */
function readRows(metadata: ModelMetadata, n: number): Array<Record<string, number | string>> {
  const [headerLine, ...lines] = readFileSync(CSV, 'utf8').trim().split('\n');
  const header = headerLine!.split(',');
  const types = new Map(metadata.inputs.map((i) => [i.name, i.type]));
  return lines.slice(0, n).map((line) => {
    const cells = line.split(',');
    const row: Record<string, number | string> = {};
    header.forEach((h, i) => {
      const type = types.get(h);
      if (type) row[h] = type === 'float' ? Number(cells[i]) : cells[i]!;
    });
    return row;
  });
}

/** The tensors of one row, built the way OnnxModel.predict builds a batch of 1. */
function feedsFor(metadata: ModelMetadata, row: Record<string, unknown>): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  for (const { name, type } of metadata.inputs) {
    feeds[name] = type === 'float' ? new Tensor('float32', Float32Array.of(Number(row[name])), [1, 1]) : new Tensor('string', [String(row[name])], [1, 1]);
  }
  return feeds;
}

async function bareApp(session: InferenceSession, metadata: ModelMetadata): Promise<FastifyInstance> {
  const app = Fastify({ logger: false });
  const fetches = [metadata.outputs.label!, metadata.outputs.probabilities!];
  const classes = metadata.classes!;
  app.post('/predict', async (req) => {
    const { instance } = req.body as { instance: Record<string, unknown> };
    const out = await session.run(feedsFor(metadata, instance), fetches);
    const labels = out[fetches[0]!]!.data as BigInt64Array;
    const proba = out[fetches[1]!]!.data as Float32Array;
    return { predictions: [{ label: Number(labels[0]), probabilities: Object.fromEntries(classes.map((c, j) => [String(c), proba[j]!])) }] };
  });
  return app;
}

/** `session.run` alone: `loops` concurrent loops over prebuilt feeds for `seconds`. */
async function runOnly(session: InferenceSession, feeds: Array<Record<string, Tensor>>, fetches: string[], loops: number, seconds: number): Promise<LoadResult> {
  const latencies: number[] = [];
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let next = 0;
  await Promise.all(
    Array.from({ length: loops }, async () => {
      while (performance.now() < end) {
        const f = feeds[next++ % feeds.length]!;
        const s = performance.now();
        await session.run(f, fetches);
        latencies.push(performance.now() - s);
      }
    }),
  );
  return { ok: latencies.length, non2xx: 0, errors: 0, timeouts: 0, elapsedMs: performance.now() - t0, latencies };
}

interface Cell {
  requests: number;
  seconds: number;
  latencies: number[];
  cpuMs: number;
  /** CPU of the main (event loop) thread alone; the rest of cpuMs is other threads (shadow worker, GC, libuv). */
  mainThreadCpuMs: number | null;
  minioCpuMs: number | null;
  /** conveyor-shadow only: shadow copies scored / skipped / failed during the measured windows. */
  shadow?: { scored: number; skipped: number; failed: number };
}

async function main(): Promise<void> {
  const { values: argv } = parseArgs({
    options: {
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '2' },
      rounds: { type: 'string', default: '2' },
      concurrency: { type: 'string', default: '1,32' },
      shadow: { type: 'boolean', default: false },
      variants: { type: 'string' },
      loadgen: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (argv.loadgen) return loadgenMain();
  const opts = {
    duration: positive('duration', argv.duration, 600, false),
    warmup: positive('warmup', argv.warmup, 60, false),
    rounds: positive('rounds', argv.rounds, 20),
    concurrency: argv.concurrency.split(',').map((c) => positive('concurrency', c, 1024)),
    shadow: argv.shadow,
    variants: (argv.variants ?? [...DEFAULT_VARIANTS, ...(argv.shadow ? ['conveyor-shadow'] : [])].join(',')).split(',').map((v) => {
      if (!(VARIANTS as readonly string[]).includes(v)) throw new Error(`--variants: unknown variant "${v}" (known: ${VARIANTS.join(', ')})`);
      if (v === 'conveyor-shadow' && !argv.shadow) throw new Error('--variants: conveyor-shadow needs --shadow');
      return v as Variant;
    }),
  };
  const progress = (m: string): void => void process.stderr.write(`[bench] ${m}\n`);

  const code = codeIdentity();
  const dir = mkdtempSync(join(tmpdir(), 'conveyor-bench-serving-'));
  const loadBefore = loadavg().map((x) => Math.round(x * 100) / 100);
  let minio: ServerProcess | undefined;
  let loadgen: LoadGen | undefined;
  let failed = false;
  const cleanup = async (): Promise<void> => {
    loadgen?.stop();
    await minio?.stop();
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    progress(`${signal}: stopping`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    // --- MinIO, registry, fixture model deployed as version 1, aliased production.
    const port = await freePort();
    const accessKey = 'bench';
    const secretKey = 'bench-secret-123';
    progress(`starting MinIO in ${dir} (load average ${loadBefore.join(' ')})`);
    minio = startMinio({ dataDir: join(dir, 'minio-data'), port, consolePort: await freePort(), accessKey, secretKey, logFile: join(dir, 'minio.log') });
    await waitUntil('MinIO', () => minioHealthy(port), 60_000, join(dir, 'minio.log'));
    const store = new MinioArtifactStore({ endPoint: '127.0.0.1', port, useSSL: false, accessKey, secretKey, bucket: 'conveyor', region: 'us-east-1' });
    await store.ensureBucket();
    const registry = new Registry(store);

    const modelBytes = readFileSync(new URL('credit-sklearn.onnx', FIXTURE_DIR));
    const metadataBytes = readFileSync(new URL('credit-sklearn.metadata.json', FIXTURE_DIR));
    const metadata = parseModelMetadata(JSON.parse(metadataBytes.toString('utf8')));
    const modelSha = sha256Hex(modelBytes);
    const metadataKey = keys.modelMetadata(sha256Hex(metadataBytes));
    await store.put(keys.modelBlob(modelSha), modelBytes);
    await store.put(metadataKey, metadataBytes);
    // The same plausible lineage the tests register fixture versions with.
    const draft = (model: string, workflowId: string): VersionDraft => ({
      ...fixtureVersionDraft({ model, artifact: { sha256: modelSha, key: keys.modelBlob(modelSha), size: modelBytes.length, metadataKey }, run: 'bench' }),
      run: { workflowId, runId: 'run-bench', submittedBy: 'bench' },
    });
    await registry.registerVersion(draft(MODEL, 'wf-bench'));
    await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: { workflowId: 'wf-bench', runId: 'run-bench' } });

    // --- shadow: a second model name with production → v1 and every request copied to v2.
    let cpuCheck: Awaited<ReturnType<typeof cpuUsageCoversWorkers>> | undefined;
    let shadowVersions: { production: number; candidate: number } | undefined;
    if (opts.shadow) {
      cpuCheck = await cpuUsageCoversWorkers();
      progress(`process.cpuUsage() while a worker thread used ${cpuCheck.workerThreadCpuMs ?? '?'} ms of CPU: +${cpuCheck.processCpuMs} ms process CPU, main thread +${cpuCheck.mainThreadCpuMs ?? '?'} ms`);
      if (!cpuCheck.covered) throw new Error(`process.cpuUsage() does not include worker threads here (${JSON.stringify(cpuCheck)}): CPU per request would miss the shadow's inference`);
      shadowVersions = await deployShadow(registry, draft);
    }

    // --- conveyor (and conveyor-shadow): the real serving app.
    const logger = createLogger({ level: 'info', pretty: false });
    const host = new ModelHost(registry, store, logger);
    await host.refresh();
    if (!host.get(MODEL)) throw new Error('ModelHost did not load the fixture model');
    if (opts.shadow) {
      const split = host.route(SHADOW_MODEL)?.split;
      if (split?.mode !== 'shadow' || split.candidate.version !== shadowVersions?.candidate) throw new Error(`ModelHost has no shadow split for ${SHADOW_MODEL}: ${JSON.stringify(host.list())}`);
    }
    // As `conveyor serve` runs it (src/serving/service.ts): log batches written from a thread of their own.
    const s3 = { endPoint: '127.0.0.1', port, useSSL: false, accessKey, secretKey, bucket: 'conveyor', region: 'us-east-1' };
    const predictionLogWriter = new ThreadedObjectWriter(s3);
    await predictionLogWriter.ready();
    const serving = buildServing({ host, logger, tokens: [TOKEN], store, predictionLogWriter });
    const conveyorUrl = await serving.app.listen({ host: '127.0.0.1', port: 0 });
    // The same host (sessions) with batching off; its log has a writer thread of its own (each app closes its writer).
    const unbatchedWriter = new ThreadedObjectWriter(s3);
    await unbatchedWriter.ready();
    const unbatched = buildServing({ host, logger, tokens: [TOKEN], store, predictionLogWriter: unbatchedWriter, maxBatchRows: 1 });
    const unbatchedUrl = await unbatched.app.listen({ host: '127.0.0.1', port: 0 });

    // --- bare and run-only share one session of the same model and options.
    const session = await InferenceSession.create(modelBytes, SESSION_OPTIONS);
    const fetches = [metadata.outputs.label!, metadata.outputs.probabilities!];
    const bare = await bareApp(session, metadata);
    const bareUrl = await bare.listen({ host: '127.0.0.1', port: 0 });

    const rows = readRows(metadata, BODY_ROWS);
    const bodies = rows.map((instance) => JSON.stringify({ instance }));
    const feeds = rows.map((r) => feedsFor(metadata, r));

    // Sanity: both HTTP variants answer 200 with the same label for the same row.
    for (const [i, body] of bodies.slice(0, 8).entries()) {
      const c = await fetch(`${conveyorUrl}/v1/models/${MODEL}:predict`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body });
      const b = await fetch(`${bareUrl}/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      const cj = (await c.json()) as { predictions?: Array<{ label: unknown }> };
      const bj = (await b.json()) as { predictions?: Array<{ label: unknown }> };
      if (c.status !== 200 || b.status !== 200 || cj.predictions?.[0]?.label !== bj.predictions?.[0]?.label) {
        throw new Error(`row ${i}: conveyor ${c.status} ${JSON.stringify(cj)} vs bare ${b.status} ${JSON.stringify(bj)}`);
      }
    }
    if (opts.shadow) {
      // The shadow model answers like production, from production (v1), and the copies are scored on v2.
      for (const [i, body] of bodies.slice(0, 8).entries()) {
        const c = await fetch(`${conveyorUrl}/v1/models/${SHADOW_MODEL}:predict`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body });
        const cj = (await c.json()) as { version?: number; arm?: string; predictions?: Array<{ label: unknown }> };
        const b = (await (await fetch(`${bareUrl}/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })).json()) as { predictions?: Array<{ label: unknown }> };
        if (c.status !== 200 || cj.arm !== 'production' || cj.version !== shadowVersions!.production || cj.predictions?.[0]?.label !== b.predictions?.[0]?.label) {
          throw new Error(`${SHADOW_MODEL} row ${i}: ${c.status} ${JSON.stringify(cj)}`);
        }
      }
      await waitUntil('shadow copies of the checks', async () => (await shadowCounts(serving.metrics)).scored >= 8, 10_000);
      const counts = await shadowCounts(serving.metrics);
      if (counts.failed || counts.skipped) throw new Error(`shadow checks: ${JSON.stringify(counts)}`);
    }
    const unauth = await fetch(`${conveyorUrl}/v1/models/${MODEL}:predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bodies[0]! });
    if (unauth.status !== 401) throw new Error(`auth is not on: unauthenticated request answered ${unauth.status}`);

    loadgen = await LoadGen.start();
    const gen = loadgen;
    const minioPid = minio.pid;

    const once = async (variant: Variant, c: number, seconds: number): Promise<LoadResult> => {
      if (variant === 'run-only') return runOnly(session, feeds, fetches, c, seconds);
      const job: LoadJob =
        variant === 'bare'
          ? { url: `${bareUrl}/predict`, headers: {}, bodies, connections: c, seconds }
          : {
              url: `${variant === 'conveyor-unbatched' ? unbatchedUrl : conveyorUrl}/v1/models/${variant === 'conveyor-shadow' ? SHADOW_MODEL : MODEL}:predict`,
              headers: { authorization: `Bearer ${TOKEN}` },
              bodies,
              connections: c,
              seconds,
            };
      const r = await gen.run(job);
      if (r.non2xx || r.errors || r.timeouts) throw new Error(`${variant} c=${c}: ${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts`);
      return r;
    };

    const cells = new Map<string, Cell>();
    const key = (v: Variant, c: number): string => `${v}@${c}`;
    const started = Date.now();
    /** Measured windows on the monotonic clock (µs), which is also a --cpu-prof profile's: see BENCH_WINDOWS. */
    const windows: Array<{ variant: Variant; concurrency: number; requests: number; startUs: number; endUs: number }> = [];
    const selected = opts.variants;
    const totalCells = opts.rounds * opts.concurrency.length * selected.length;
    let done = 0;
    for (let r = 0; r < opts.rounds; r++) {
      for (const c of opts.concurrency) {
        // Rotate the order each round (and each concurrency) so no variant always runs first or last.
        const shift = (r + opts.concurrency.indexOf(c)) % selected.length;
        const order = [...selected.slice(shift), ...selected.slice(0, shift)];
        for (const v of r % 2 === 0 ? order : order.reverse()) {
          await once(v, c, opts.warmup);
          const s0 = v === 'conveyor-shadow' ? await shadowCounts(serving.metrics) : undefined;
          const cpu0 = process.cpuUsage();
          const t0 = procCpuMs(process.pid, process.pid);
          const m0 = procCpuMs(minioPid);
          const w0 = process.hrtime.bigint();
          const res = await once(v, c, opts.duration);
          const cpu = process.cpuUsage(cpu0);
          windows.push({ variant: v, concurrency: c, requests: res.ok, startUs: Number(w0 / 1000n), endUs: Number(process.hrtime.bigint() / 1000n) });
          const t1 = procCpuMs(process.pid, process.pid);
          const m1 = procCpuMs(minioPid);
          const cell = cells.get(key(v, c)) ?? { requests: 0, seconds: 0, latencies: [], cpuMs: 0, mainThreadCpuMs: 0, minioCpuMs: 0 };
          cell.requests += res.ok;
          cell.seconds += res.elapsedMs / 1000;
          for (const l of res.latencies) cell.latencies.push(l);
          cell.cpuMs += (cpu.user + cpu.system) / 1000;
          cell.mainThreadCpuMs = cell.mainThreadCpuMs === null || t0 === null || t1 === null ? null : cell.mainThreadCpuMs + (t1 - t0);
          cell.minioCpuMs = cell.minioCpuMs === null || m0 === null || m1 === null ? null : cell.minioCpuMs + (m1 - m0);
          if (s0) {
            // Copies still in flight when the window closed (at most SHADOW_DEFAULTS.maxInFlight) are given a moment to settle.
            await new Promise((r) => setTimeout(r, 200));
            const s1 = await shadowCounts(serving.metrics);
            const prev = cell.shadow ?? { scored: 0, skipped: 0, failed: 0 };
            cell.shadow = { scored: prev.scored + s1.scored - s0.scored, skipped: prev.skipped + s1.skipped - s0.skipped, failed: prev.failed + s1.failed - s0.failed };
          }
          cells.set(key(v, c), cell);
          done++;
          progress(`${done}/${totalCells} ${v} c=${c}: ${Math.round(res.ok / (res.elapsedMs / 1000))} req/s (${Math.round((Date.now() - started) / 1000)} s)`);
        }
      }
    }

    // Flush the prediction log and check it wrote every conveyor row (and every scored shadow copy).
    const shadowTotal = opts.shadow ? await shadowCounts(serving.metrics) : undefined;
    // Dynamic batching as it happened (warm-ups and checks included): requests per inference run, per model and arm.
    const batching = (await serving.metrics.batchRequests.get()).values
      .filter((v) => v.metricName?.endsWith('_sum') || v.metricName?.endsWith('_count'))
      .reduce<Record<string, { runs: number; requests: number; requestsPerRun?: number }>>((acc, v) => {
        const k = `${v.labels.model}/${v.labels.arm}`;
        const e = (acc[k] ??= { runs: 0, requests: 0 });
        if (v.metricName!.endsWith('_sum')) e.requests += v.value;
        else e.runs += v.value;
        e.requestsPerRun = e.runs ? Math.round((e.requests / e.runs) * 10) / 10 : undefined;
        return acc;
      }, {});
    progress(`requests per inference run: ${Object.entries(batching).map(([k, e]) => `${k} ${e.requestsPerRun} (${e.runs} runs)`).join(', ')}`);
    await serving.app.close();
    await unbatched.app.close();
    const logs = [serving.predictionLog!, unbatched.predictionLog!];
    const measured = (v: Variant): number => opts.concurrency.reduce((n, c) => n + (cells.get(key(v, c))?.requests ?? 0), 0);
    const predictionLog = {
      written: logs.reduce((n, l) => n + l.written, 0),
      dropped: logs.reduce((n, l) => n + l.dropped, 0),
      pending: logs.reduce((n, l) => n + l.pending, 0),
      conveyorRequestsMeasured: measured('conveyor') + measured('conveyor-unbatched'),
      ...(opts.shadow ? { conveyorShadowRequestsMeasured: measured('conveyor-shadow'), shadowCopiesLogged: shadowTotal!.scored + shadowTotal!.failed } : {}),
    };
    await bare.close();
    await host.close();
    await session.release();

    // --- Report.
    const fmt = (x: number, d = 2): string => x.toFixed(d);
    const summary = (v: Variant, c: number) => {
      const cell = cells.get(key(v, c))!;
      return {
        rps: cell.requests / cell.seconds,
        p50: percentile(cell.latencies, 50),
        p99: percentile(cell.latencies, 99),
        cpuMsPerReq: cell.cpuMs / cell.requests,
        mainThreadCpuMsPerReq: cell.mainThreadCpuMs === null ? null : cell.mainThreadCpuMs / cell.requests,
        minioCpuMsPerReq: cell.minioCpuMs === null ? null : cell.minioCpuMs / cell.requests,
        requests: cell.requests,
        ...(cell.shadow ? { shadow: cell.shadow } : {}),
      };
    };
    // Shadow: the same app and model bytes, with and without every request copied to a shadow version.
    const shadowResults = selected.includes('conveyor') && selected.includes('conveyor-shadow')
      ? opts.concurrency.map((c) => {
          const without = summary('conveyor', c);
          const withShadow = summary('conveyor-shadow', c);
          const cpuRatio = ratio(withShadow.cpuMsPerReq, without.cpuMsPerReq);
          return {
            concurrency: c,
            cpuMsPerReq: { conveyor: without.cpuMsPerReq, conveyorShadow: withShadow.cpuMsPerReq },
            mainThreadCpuMsPerReq: { conveyor: without.mainThreadCpuMsPerReq, conveyorShadow: withShadow.mainThreadCpuMsPerReq },
            cpuRatio,
            rpsRatio: ratio(withShadow.rps, without.rps),
            p99AddedMs: Math.round((withShadow.p99 - without.p99) * 1000) / 1000,
            shadow: withShadow.shadow!,
            requests: withShadow.requests,
            pass: cpuRatio <= TARGETS.shadowCpuRatio,
          };
        })
      : [];
    const cpuCheckLine = cpuCheck
      ? `CPU ms/req includes every thread of this process: process.cpuUsage() is getrusage(RUSAGE_SELF); checked here: a worker thread spun for ${cpuCheck.workerThreadCpuMs ?? '?'} ms of its own CPU (/proc) while the main thread slept, and process.cpuUsage() grew by ${cpuCheck.processCpuMs} ms, main thread ${cpuCheck.mainThreadCpuMs ?? '?'} ms of it`
      : undefined;
    const shadowLines = shadowResults.length
      ? [
          table(
            ['concurrency', 'CPU ms/req conveyor', 'CPU ms/req conveyor-shadow', 'main-thread ms/req conveyor', 'main-thread ms/req conveyor-shadow', 'CPU/req conveyor-shadow / conveyor', 'req/s conveyor-shadow / conveyor', 'p99 added ms', 'shadow scored', 'shadow skipped', 'shadow failed', 'target'],
            shadowResults.map((r) => [
              String(r.concurrency),
              fmt(r.cpuMsPerReq.conveyor, 3),
              fmt(r.cpuMsPerReq.conveyorShadow, 3),
              r.mainThreadCpuMsPerReq.conveyor === null ? '' : fmt(r.mainThreadCpuMsPerReq.conveyor, 3),
              r.mainThreadCpuMsPerReq.conveyorShadow === null ? '' : fmt(r.mainThreadCpuMsPerReq.conveyorShadow, 3),
              `${r.cpuRatio.toFixed(2)}x`,
              `${r.rpsRatio.toFixed(2)}x`,
              `${r.p99AddedMs >= 0 ? '+' : ''}${r.p99AddedMs.toFixed(3)}`,
              `${r.shadow.scored} of ${r.requests}`,
              String(r.shadow.skipped),
              String(r.shadow.failed),
              `${r.pass ? 'PASS' : 'FAIL'} (≤ ${TARGETS.shadowCpuRatio}x)`,
            ]),
          ),
          `shadow (${SHADOW_MODEL}: production v${shadowVersions!.production}, shadow v${shadowVersions!.candidate} on a worker thread): ${shadowTotal!.scored} copies scored, ${shadowTotal!.skipped} skipped (over ${SHADOW_DEFAULTS.maxInFlight} in flight), ${shadowTotal!.failed} failed in all (warm-ups, measured windows, checks; scored/skipped columns: measured windows only)`,
          cpuCheckLine!,
        ]
      : [];
    if (!BASE_VARIANTS.every((v) => selected.includes(v))) {
      for (const [k, cell] of cells) progress(`${k}: ${Math.round(cell.requests / cell.seconds)} req/s, p50 ${percentile(cell.latencies, 50).toFixed(3)} ms, p99 ${percentile(cell.latencies, 99).toFixed(3)} ms, CPU ${(cell.cpuMs / cell.requests).toFixed(3)} ms/req`);
      if (shadowLines.length) process.stdout.write(`${shadowLines.join('\n')}\n`);
      // The measured windows, for bench/profile-by-variant.ts.
      process.stdout.write(`${JSON.stringify({ bench: 'serving', partial: true, date: new Date().toISOString(), code, options: opts, predictionLog, batching, windows })}\n`);
      return;
    }
    /** A Conveyor variant against bare at one concurrency; the targets are judged for `conveyor` (the default configuration). */
    const overhead = (v: (typeof SERVING_VARIANTS)[number], c: number) => {
      const mine = summary(v, c);
      const bare = summary('bare', c);
      const rpsRatio = ratio(mine.rps, bare.rps);
      const p99AddedMs = Math.round((mine.p99 - bare.p99) * 1000) / 1000;
      return {
        variant: v,
        rpsRatio,
        p50AddedMs: Math.round((mine.p50 - bare.p50) * 1000) / 1000,
        p99AddedMs,
        cpuRatio: ratio(mine.cpuMsPerReq, bare.cpuMsPerReq),
        pass: { rps: rpsRatio >= TARGETS.rpsRatio, p99: p99AddedMs <= TARGETS.p99AddedMs },
      };
    };
    const results = opts.concurrency.map((c) => {
      const s = Object.fromEntries(BASE_VARIANTS.map((v) => [v, summary(v, c)])) as Record<'conveyor' | 'bare' | 'run-only', ReturnType<typeof summary>>;
      const against = SERVING_VARIANTS.filter((v) => selected.includes(v)).map((v) => overhead(v, c));
      const main = against.find((o) => o.variant === 'conveyor')!;
      return {
        concurrency: c,
        ...s,
        ...(selected.includes('conveyor-unbatched') ? { 'conveyor-unbatched': summary('conveyor-unbatched', c) } : {}),
        rpsRatio: main.rpsRatio,
        p99AddedMs: main.p99AddedMs,
        p50AddedMs: main.p50AddedMs,
        bareVsRunOnlyRps: ratio(s.bare.rps, s['run-only'].rps),
        pass: main.pass,
        against,
      };
    });
    const rowsOut: string[][] = [];
    for (const r of results) {
      for (const v of VARIANTS.filter((x) => selected.includes(x))) {
        const s = summary(v, r.concurrency);
        const logs = v !== 'bare' && v !== 'run-only';
        rowsOut.push([v, String(r.concurrency), String(s.requests), fmt(s.rps, 0), fmt(s.p50, 3), fmt(s.p99, 3), fmt(s.cpuMsPerReq, 3), logs && s.minioCpuMsPerReq !== null ? fmt(s.minioCpuMsPerReq, 3) : '']);
      }
    }
    const ratioRows = results.flatMap((r) =>
      r.against.map((o) => [
        String(r.concurrency),
        o.variant,
        `${o.rpsRatio.toFixed(2)}x`,
        `${o.p50AddedMs >= 0 ? '+' : ''}${o.p50AddedMs.toFixed(3)}`,
        `${o.p99AddedMs >= 0 ? '+' : ''}${o.p99AddedMs.toFixed(3)}`,
        `${o.cpuRatio.toFixed(2)}x`,
        `${r.bareVsRunOnlyRps.toFixed(2)}x`,
        o.variant === 'conveyor' ? `${o.pass.rps ? 'PASS' : 'FAIL'} (≥ ${TARGETS.rpsRatio}x)` : `(${o.pass.rps ? '≥' : '<'} ${TARGETS.rpsRatio}x)`,
        o.variant === 'conveyor' ? `${o.pass.p99 ? 'PASS' : 'FAIL'} (≤ +${TARGETS.p99AddedMs} ms)` : `(${o.pass.p99 ? '≤' : '>'} +${TARGETS.p99AddedMs} ms)`,
      ]),
    );
    const machine = {
      nproc: availableParallelism(),
      cpu: cpus()[0]?.model ?? 'unknown',
      memGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
      node: process.version,
      loadAverage: { before: loadBefore, after: loadavg().map((x) => Math.round(x * 100) / 100) },
    };
    const out = [
      '',
      `serving — ${new Date().toISOString()} — ${machine.nproc} CPUs (${machine.cpu}), ${machine.memGiB} GiB, node ${machine.node}, load average ${machine.loadAverage.before.join(' ')} → ${machine.loadAverage.after.join(' ')}`,
      `code: ${code.commit}${code.servingDirty ? ` + uncommitted changes in src/serving (digest ${code.servingDigest})` : ''}`,
      `batch size 1; ${opts.duration} s per cell after ${opts.warmup} s warm-up, ${opts.rounds} rounds; latency ms as the load generator sees it (run-only: around session.run)`,
      `CPU ms/req: this process, all its threads (servers and the shadow worker thread, not the load generator); MinIO ms/req: the MinIO server (prediction log writes)`,
      '',
      table(['variant', 'concurrency', 'requests', 'req/s', 'p50 ms', 'p99 ms', 'CPU ms/req', 'MinIO ms/req'], rowsOut),
      '',
      table(['concurrency', 'variant', 'req/s variant/bare', 'p50 added ms', 'p99 added ms', 'CPU/req variant/bare', 'req/s bare/run-only', 'req/s target', 'p99 target'], ratioRows),
      `targets are judged for conveyor as \`conveyor serve\` runs it (dynamic batching on); conveyor-unbatched (batching off) is shown in parentheses for what the rest costs per request`,
      '',
      ...(shadowLines.length ? [`shadow mode (target ≤ ${TARGETS.shadowCpuRatio}x CPU/req): conveyor-shadow vs conveyor, same app; main-thread = the event loop thread alone (/proc), the rest is other threads, mostly the shadow worker`, '', ...shadowLines, ''] : []),
      `prediction log: ${predictionLog.written} rows written to MinIO, ${predictionLog.dropped} dropped, ${predictionLog.pending} pending after close (${predictionLog.conveyorRequestsMeasured} measured conveyor requests${opts.shadow ? ` + ${predictionLog.conveyorShadowRequestsMeasured} measured conveyor-shadow requests + ${predictionLog.shadowCopiesLogged} shadow copies` : ''} + warm-ups + checks)`,
      '',
    ];
    process.stdout.write(out.join('\n'));
    process.stdout.write(`${JSON.stringify({ bench: 'serving', date: new Date().toISOString(), machine, code, options: opts, results: results.map((r) => ({ ...r })), ...(opts.shadow ? { shadow: { cpuCheck, versions: shadowVersions, results: shadowResults, total: shadowTotal } } : {}), predictionLog, batching, windows })}\n`);
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    await cleanup();
    if (failed) progress(`MinIO log kept in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => {
    if (!process.argv.includes('--loadgen')) process.exit(0);
  },
  (err: unknown) => {
    process.stderr.write(`[bench] failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
