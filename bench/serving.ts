/**
 * Serving overhead: Conveyor's prediction service against a bare fastify handler
 * calling the same ONNX Runtime session, and against `session.run` alone.
 *
 *   node --import tsx bench/serving.ts [--duration 10] [--warmup 2] [--rounds 2] [--concurrency 1,32] [--shadow]
 *   node --cpu-prof --import tsx bench/serving.ts --variants conveyor   # profile one variant (ratios need all three)
 *
 * - conveyor: `buildServing` with a ModelHost over a real MinIO (registry + artifact
 *   store), bearer-token auth on, the prediction log on (writing batches to MinIO),
 *   serving the credit-risk scikit-learn fixture model registered as version 1 and
 *   aliased `production`.
 * - bare: one fastify POST route (no auth, validation or logging) that builds the
 *   same tensors from the same JSON body and calls an already-created
 *   InferenceSession of the same model with the same session options.
 * - run-only: `session.run` on prebuilt feeds in a loop, N loops at once, no HTTP.
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
import Fastify, { type FastifyInstance } from 'fastify';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { freePort, minioHealthy, startMinio, waitUntil, type ServerProcess } from '../src/dev/servers.js';
import { parseModelMetadata, sha256Hex, type ModelMetadata } from '../src/eval/onnx-model.js';
import { createLogger } from '../src/logger.js';
import { Registry } from '../src/registry/registry.js';
import { ModelHost } from '../src/serving/model-host.js';
import { buildServing, type Serving } from '../src/serving/server.js';
import { keys } from '../src/store/keys.js';
import { MinioArtifactStore } from '../src/store/minio-store.js';
import { percentile, ratio, table } from './stats.js';

const MODEL = 'credit-risk';
const FIXTURE_DIR = new URL('../test/fixtures/models/', import.meta.url);
const CSV = fileURLToPath(new URL('../examples/credit-risk/data/credit-risk.csv', import.meta.url));
const TOKEN = 'bench-serving-token-0123456789abcdef';
/** Distinct request bodies each connection cycles through. */
const BODY_ROWS = 256;
/** Same options as src/eval/onnx-model.ts opens every session with. */
const SESSION_OPTIONS: InferenceSession.SessionOptions = {
  executionProviders: ['cpu'],
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
  logSeverityLevel: 3,
};
const TARGETS = { rpsRatio: 0.8, p99AddedMs: 1, shadowCpuRatio: 1.3 };

type Variant = 'conveyor' | 'bare' | 'run-only';
const VARIANTS: readonly Variant[] = ['conveyor', 'bare', 'run-only'];


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
    const child = fork(fileURLToPath(import.meta.url), ['--loadgen'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
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

/**
 * Shadow mode: each production request is also scored by a shadow version, off the
 * response path. Serving has no shadow routing yet; the lead wires this when routing
 * lands (deploy a second version, mark it shadow, then measure CPU per request with
 * and without it against the ≤ 1.3× target).
 */
export function enableShadow(_serving: Serving, _host: ModelHost, _store: MinioArtifactStore): Promise<void> {
  throw new Error('shadow routing not available yet');
}

/** CPU time (user + system) of another process from /proc, ms; null where /proc is unavailable. */
function procCpuMs(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
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
  minioCpuMs: number | null;
}

async function main(): Promise<void> {
  const { values: argv } = parseArgs({
    options: {
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '2' },
      rounds: { type: 'string', default: '2' },
      concurrency: { type: 'string', default: '1,32' },
      shadow: { type: 'boolean', default: false },
      variants: { type: 'string', default: VARIANTS.join(',') },
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
    variants: argv.variants.split(',').map((v) => {
      if (!(VARIANTS as readonly string[]).includes(v)) throw new Error(`--variants: unknown variant "${v}" (known: ${VARIANTS.join(', ')})`);
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
    const dataSha = sha256Hex(Buffer.from('data'));
    await registry.registerVersion({
      schemaVersion: 1,
      model: MODEL,
      task: 'classification',
      target: 'default',
      features: metadata.inputs.map((i) => i.name),
      artifact: { sha256: modelSha, key: keys.modelBlob(modelSha), size: modelBytes.length, metadataKey, framework: 'scikit-learn', algorithm: 'logistic_regression' },
      data: {
        sha256: dataSha,
        key: keys.dataset(dataSha),
        source: 'credit-risk.csv',
        format: 'csv',
        size: 1,
        profileKey: keys.profile(dataSha, sha256Hex(Buffer.from('schema'))),
        rowCount: 4000,
        split: { seed: 7, holdoutFraction: 0.25, trainKey: 't', holdoutKey: 'h', trainRows: 3000, holdoutRows: 1000 },
      },
      trainer: { kind: 'command', entry: 'train_sklearn.py', params: {}, codeHashes: {} },
      code: { specHash: dataSha, gitCommit: null, gitDirty: false, pipelineFile: null },
      evaluation: { reportKey: 'r', metrics: {}, gates: [], production: null },
      run: { workflowId: 'wf-bench', runId: 'run-bench', submittedBy: 'bench' },
    });
    await registry.moveAlias({ model: MODEL, alias: 'production', version: 1, expectedVersion: null, run: { workflowId: 'wf-bench', runId: 'run-bench' } });

    // --- conveyor: the real serving app.
    const logger = createLogger({ level: 'info', pretty: false });
    const host = new ModelHost(registry, store, logger);
    await host.refresh();
    if (!host.get(MODEL)) throw new Error('ModelHost did not load the fixture model');
    const serving = buildServing({ host, logger, tokens: [TOKEN], store });
    if (opts.shadow) await enableShadow(serving, host, store);
    const conveyorUrl = await serving.app.listen({ host: '127.0.0.1', port: 0 });

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
    const unauth = await fetch(`${conveyorUrl}/v1/models/${MODEL}:predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bodies[0]! });
    if (unauth.status !== 401) throw new Error(`auth is not on: unauthenticated request answered ${unauth.status}`);

    loadgen = await LoadGen.start();
    const gen = loadgen;
    const minioPid = minio.pid;

    const once = async (variant: Variant, c: number, seconds: number): Promise<LoadResult> => {
      if (variant === 'run-only') return runOnly(session, feeds, fetches, c, seconds);
      const job: LoadJob =
        variant === 'conveyor'
          ? { url: `${conveyorUrl}/v1/models/${MODEL}:predict`, headers: { authorization: `Bearer ${TOKEN}` }, bodies, connections: c, seconds }
          : { url: `${bareUrl}/predict`, headers: {}, bodies, connections: c, seconds };
      const r = await gen.run(job);
      if (r.non2xx || r.errors || r.timeouts) throw new Error(`${variant} c=${c}: ${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts`);
      return r;
    };

    const cells = new Map<string, Cell>();
    const key = (v: Variant, c: number): string => `${v}@${c}`;
    const started = Date.now();
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
          const cpu0 = process.cpuUsage();
          const m0 = procCpuMs(minioPid);
          const res = await once(v, c, opts.duration);
          const cpu = process.cpuUsage(cpu0);
          const m1 = procCpuMs(minioPid);
          const cell = cells.get(key(v, c)) ?? { requests: 0, seconds: 0, latencies: [], cpuMs: 0, minioCpuMs: 0 };
          cell.requests += res.ok;
          cell.seconds += res.elapsedMs / 1000;
          for (const l of res.latencies) cell.latencies.push(l);
          cell.cpuMs += (cpu.user + cpu.system) / 1000;
          cell.minioCpuMs = cell.minioCpuMs === null || m0 === null || m1 === null ? null : cell.minioCpuMs + (m1 - m0);
          cells.set(key(v, c), cell);
          done++;
          progress(`${done}/${totalCells} ${v} c=${c}: ${Math.round(res.ok / (res.elapsedMs / 1000))} req/s (${Math.round((Date.now() - started) / 1000)} s)`);
        }
      }
    }

    // Flush the prediction log and check it wrote every conveyor row.
    await serving.app.close();
    const log = serving.predictionLog!;
    const conveyorRequests = opts.concurrency.reduce((n, c) => n + (cells.get(key('conveyor', c))?.requests ?? 0), 0);
    const predictionLog = { written: log.written, dropped: log.dropped, pending: log.pending, conveyorRequestsMeasured: conveyorRequests };
    await bare.close();
    await host.close();
    await session.release();

    // --- Report.
    if (selected.length < VARIANTS.length) {
      for (const [k, cell] of cells) progress(`${k}: ${Math.round(cell.requests / cell.seconds)} req/s, p50 ${percentile(cell.latencies, 50).toFixed(3)} ms, p99 ${percentile(cell.latencies, 99).toFixed(3)} ms, CPU ${(cell.cpuMs / cell.requests).toFixed(3)} ms/req`);
      return;
    }
    const fmt = (x: number, d = 2): string => x.toFixed(d);
    const summary = (v: Variant, c: number) => {
      const cell = cells.get(key(v, c))!;
      return {
        rps: cell.requests / cell.seconds,
        p50: percentile(cell.latencies, 50),
        p99: percentile(cell.latencies, 99),
        cpuMsPerReq: cell.cpuMs / cell.requests,
        minioCpuMsPerReq: cell.minioCpuMs === null ? null : cell.minioCpuMs / cell.requests,
        requests: cell.requests,
      };
    };
    const results = opts.concurrency.map((c) => {
      const s = Object.fromEntries(VARIANTS.map((v) => [v, summary(v, c)])) as Record<Variant, ReturnType<typeof summary>>;
      const rpsRatio = ratio(s.conveyor.rps, s.bare.rps);
      const p99AddedMs = Math.round((s.conveyor.p99 - s.bare.p99) * 1000) / 1000;
      return {
        concurrency: c,
        ...s,
        rpsRatio,
        p99AddedMs,
        p50AddedMs: Math.round((s.conveyor.p50 - s.bare.p50) * 1000) / 1000,
        bareVsRunOnlyRps: ratio(s.bare.rps, s['run-only'].rps),
        pass: { rps: rpsRatio >= TARGETS.rpsRatio, p99: p99AddedMs <= TARGETS.p99AddedMs },
      };
    });
    const rowsOut: string[][] = [];
    for (const r of results) {
      for (const v of VARIANTS) {
        const s = r[v];
        rowsOut.push([v, String(r.concurrency), String(s.requests), fmt(s.rps, 0), fmt(s.p50, 3), fmt(s.p99, 3), fmt(s.cpuMsPerReq, 3), v === 'conveyor' && s.minioCpuMsPerReq !== null ? fmt(s.minioCpuMsPerReq, 3) : '']);
      }
    }
    const ratioRows = results.map((r) => [
      String(r.concurrency),
      `${r.rpsRatio.toFixed(2)}x`,
      `${r.p50AddedMs >= 0 ? '+' : ''}${r.p50AddedMs.toFixed(3)}`,
      `${r.p99AddedMs >= 0 ? '+' : ''}${r.p99AddedMs.toFixed(3)}`,
      `${ratio(r.conveyor.cpuMsPerReq, r.bare.cpuMsPerReq).toFixed(2)}x`,
      `${r.bareVsRunOnlyRps.toFixed(2)}x`,
      `${r.pass.rps ? 'PASS' : 'FAIL'} (≥ ${TARGETS.rpsRatio}x)`,
      `${r.pass.p99 ? 'PASS' : 'FAIL'} (≤ +${TARGETS.p99AddedMs} ms)`,
    ]);
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
      `CPU ms/req: this process (servers, not the load generator); MinIO ms/req: the MinIO server (prediction log writes)`,
      '',
      table(['variant', 'concurrency', 'requests', 'req/s', 'p50 ms', 'p99 ms', 'CPU ms/req', 'MinIO ms/req'], rowsOut),
      '',
      table(['concurrency', 'req/s conveyor/bare', 'p50 added ms', 'p99 added ms', 'CPU/req conveyor/bare', 'req/s bare/run-only', 'req/s target', 'p99 target'], ratioRows),
      '',
      `shadow (≤ ${TARGETS.shadowCpuRatio}x CPU/req): not measured — shadow routing is not available yet (--shadow fails in enableShadow)`,
      `prediction log: ${predictionLog.written} rows written to MinIO, ${predictionLog.dropped} dropped, ${predictionLog.pending} pending after close (${predictionLog.conveyorRequestsMeasured} measured conveyor requests + warm-ups + checks)`,
      '',
    ];
    process.stdout.write(out.join('\n'));
    process.stdout.write(`${JSON.stringify({ bench: 'serving', date: new Date().toISOString(), machine, code, options: opts, results: results.map((r) => ({ ...r })), predictionLog })}\n`);
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
