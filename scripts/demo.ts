/**
 * `npm run demo`: the whole pipeline end to end on this machine. Starts (or
 * reuses) the Temporal dev server and MinIO, runs a worker in this process,
 * runs examples/credit-risk through every stage, serves one prediction from the
 * deployed model over HTTP, and prints where to look. Exits 0 on success.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection } from '@temporalio/client';
import { loadConfig } from '../src/config.js';
import { devUp } from '../src/dev/dev-env.js';
import { createLogger } from '../src/logger.js';
import { runStatus, startPipeline, waitForRun } from '../src/runs.js';
import { printStages } from './demo-drift.js';
import { startServing } from '../src/serving/service.js';
import { loadPipelineFile } from '../src/spec/load.js';
import { createWorkers } from '../src/worker.js';
import { formatStatus } from '../src/cli/format.js';

const say = (line = ''): void => {
  process.stdout.write(`${line}\n`);
};

const config = loadConfig();
// The demo's own narration goes to stdout; component logs only when they matter.
const logger = createLogger({ level: process.env.LOG_LEVEL ?? 'warn' });

// `npm run demo -- --drift`: the monitoring and retraining story instead (scripts/demo-drift.ts).
const drift = process.argv.includes('--drift');
if (!drift) say('▶ Conveyor demo: credit-risk model from CSV to a served prediction\n');
const started = Date.now();
const external = Boolean(process.env.TEMPORAL_ADDRESS || process.env.CONVEYOR_S3_ENDPOINT);
if (external) say(`  using servers from the environment: Temporal ${config.temporal.address}, S3 ${config.s3.endPoint}:${config.s3.port}`);
const dev = external ? undefined : await devUp(config, (l) => say(`  ${l}`));
if (drift) {
  const { runDriftDemo } = await import('./demo-drift.js');
  process.exit(await runDriftDemo({ config, logger, dev }));
}

say('▶ starting a worker (pipeline + training task queues)');
const workers = await createWorkers({ config, logger });
const running = workers.run();
const connection = await Connection.connect({ address: config.temporal.address });
const client = new Client({ connection, namespace: config.temporal.namespace });

let exitCode = 1;
try {
  const pipeline = await loadPipelineFile('examples/credit-risk/pipeline.ts');
  say(`▶ running pipeline "${pipeline.spec.name}" on ${pipeline.spec.dataset.source}`);
  const handle = await startPipeline(client, config, pipeline, { submittedBy: 'demo' });
  say(`  workflow ${handle.workflowId}  run ${handle.firstExecutionRunId}`);

  const seen = new Set<string>();
  const result = waitForRun(handle);
  let finished = false;
  void result.finally(() => (finished = true));
  while (!finished) {
    const status = await runStatus(handle).catch(() => undefined);
    printStages(status, seen, say);
    await sleep(250);
  }
  const end = await result;
  const status = await runStatus(handle);
  say();
  say(formatStatus(status));
  if (end.outcome !== 'deployed') throw new Error(`pipeline ended ${end.outcome}: ${end.message ?? ''}`);

  say('\n▶ serving the production model and asking it for one prediction');
  const service = await startServing({ ...config, serving: { ...config.serving, pollIntervalMs: 500 } }, logger, { port: 0 });
  const [headerLine, firstRow] = readFileSync(pipeline.spec.dataset.source, 'utf8').split('\n');
  const header = headerLine!.split(',');
  const values = firstRow!.split(',');
  const instance = Object.fromEntries(
    header
      .map((name, i) => [name, values[i]] as const)
      .filter(([name]) => name !== pipeline.spec.target.column)
      .map(([name, v]) => {
        const type = pipeline.spec.schema.columns[name]?.type;
        return [name, v === '' ? null : type === 'integer' || type === 'float' ? Number(v) : v];
      }),
  );
  const token = (await import('../src/serving/tokens.js')).servingTokens(config.home)[0]!;
  const url = `${service.url}/v1/models/${pipeline.spec.name}:predict`;
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ instance }),
  });
  const body = (await response.json()) as { version: number; sha256: string; predictions: unknown[] };
  if (!response.ok) throw new Error(`prediction failed: HTTP ${response.status} ${JSON.stringify(body)}`);
  say(`  POST ${url} → HTTP ${response.status}`);
  say(`  ${JSON.stringify({ version: body.version, sha256: body.sha256.slice(0, 16) + '…', predictions: body.predictions })}`);
  await service.close();

  const port = config.serving.port;
  say('\n▶ where to look');
  if (dev) {
    say(`  Temporal web UI   ${dev.temporal.ui}/namespaces/${config.temporal.namespace}/workflows/${handle.workflowId}`);
    say(`  MinIO console     ${dev.minio.console}   (user ${config.s3.accessKey}, password in CONVEYOR_S3_SECRET_KEY or the dev default)`);
  }
  say(`  registry          npx conveyor models show ${pipeline.spec.name}@${end.result!.version}`);
  say(`  run status        npx conveyor status ${handle.workflowId}`);
  say(`  serve it          npx conveyor serve      # then, in another terminal:`);
  say(`  curl -s -X POST http://127.0.0.1:${port}/v1/models/${pipeline.spec.name}:predict \\`);
  say(`       -H "Authorization: Bearer $(cat ${config.home}/serve-token)" -H 'content-type: application/json' \\`);
  say(`       -d '${JSON.stringify({ instance })}'`);
  say(`  lineage           npx conveyor lineage ${pipeline.spec.name}@${end.result!.version}`);
  say(`  governance API    npx conveyor api        # then: CONVEYOR_USER=bob npx conveyor approvals`);
  if (dev) say('  stop the servers  npx conveyor dev down');
  say(`\n✓ demo finished in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  exitCode = 0;
} catch (err) {
  say(`\n✗ demo failed: ${(err as Error).message}`);
} finally {
  workers.shutdown();
  await running;
  await connection.close();
}
process.exit(exitCode);
