import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import { startDevStack } from '../src/dev/servers.js';
import { modelSearchAttribute } from '../src/shared/search-attributes.js';
import { loadPipelineFile } from '../src/spec/load.js';
import type { PipelineInput } from '../workflows/index.js';
import { bareActivities, stubActivities } from './stub-activities.js';
import { summarize } from './stats.js';

const ROUNDS = Number(process.env.ROUNDS ?? 10);
const C = Number(process.env.C ?? 16);
Runtime.install({ logger: new DefaultLogger('ERROR') });
const dir = mkdtempSync(join(tmpdir(), 'variants-'));
const stack = await startDevStack({ dir, accessKey: 'bench', secretKey: 'bench-secret-123' });
const cpuMs = (pid: number) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8'); const x = f.slice(f.lastIndexOf(')') + 2).split(' '); return (Number(x[11]) + Number(x[12])) * 10; };
try {
  const bundle = await bundleWorkflowCode({ workflowsPath: fileURLToPath(new URL('./_variant-workflows.ts', import.meta.url)), logger: new DefaultLogger('WARN') });
  const nc = await NativeConnection.connect({ address: stack.temporalAddress });
  const { trainModel, ...light } = stubActivities();
  const extra = { echo: async (_p: unknown) => null, sized: async (p: { out: number }) => 'y'.repeat(p.out) };
  const workers = [
    await Worker.create({ connection: nc, taskQueue: 'p', workflowBundle: bundle, activities: { ...light, ...bareActivities, ...extra, trainModel } }),
    await Worker.create({ connection: nc, taskQueue: 't', activities: { trainModel } }),
  ];
  const running = Promise.all(workers.map((w) => w.run()));
  const client = new Client({ connection: await Connection.connect({ address: stack.temporalAddress }) });
  const loaded = await loadPipelineFile(fileURLToPath(new URL('../examples/credit-risk/pipeline.ts', import.meta.url)));
  const input: PipelineInput = { spec: loaded.spec, code: loaded.code, submittedBy: 'bench', trainingTaskQueue: 't' };
  const sa = [{ key: modelSearchAttribute, value: loaded.spec.name }];
  const go = async (type: string, args: unknown[], typedSearchAttributes?: typeof sa) => {
    const t0 = performance.now();
    const h = await client.workflow.start(type, { taskQueue: 'p', workflowId: `${type}-${randomUUID()}`, args, workflowExecutionTimeout: '2m', ...(typedSearchAttributes ? { typedSearchAttributes } : {}) });
    await h.result();
    return { ms: performance.now() - t0, id: h.workflowId };
  };
  // payload sizes per activity from one real pipeline run
  const probe = await go('modelPipeline', [input], sa);
  const hist = await client.workflow.getHandle(probe.id).fetchHistory();
  const bytes = (ps?: { payloads?: { data?: Uint8Array | null }[] | null } | null) => (ps?.payloads ?? []).reduce((n, p) => n + (p.data?.length ?? 0), 0);
  const sizes: [number, number][] = [];
  let wfInput = 0;
  for (const e of hist.events ?? []) {
    if (e.workflowExecutionStartedEventAttributes) wfInput = bytes(e.workflowExecutionStartedEventAttributes.input);
    if (e.activityTaskScheduledEventAttributes) sizes.push([bytes(e.activityTaskScheduledEventAttributes.input), 0]);
    if (e.activityTaskCompletedEventAttributes) sizes[sizes.length - 1]![1] = bytes(e.activityTaskCompletedEventAttributes.result);
  }
  console.log('workflow input bytes', wfInput, 'activity [in,out] bytes', JSON.stringify(sizes));
  const single = { ...input, trainingTaskQueue: 'p' };
  const kinds: Record<string, () => Promise<{ ms: number }>> = {
    bare: () => go('bareWorkflow', [9]),
    pipeline: () => go('modelPipeline', [input], sa),
    'copy(upsert,handlers)': () => go('modelPipelineVariant', [input, { upsert: true, handlers: true }], sa),
    'copy no-upsert': () => go('modelPipelineVariant', [input, { upsert: false, handlers: true }], sa),
    'copy no-upsert no-handlers': () => go('modelPipelineVariant', [input, { upsert: false, handlers: false }], sa),
    'copy no-upsert no-startSA 1queue': () => go('modelPipelineVariant', [single, { upsert: false, handlers: true }]),
    'bare+6 upserts': () => go('bareExtra', [9, 6, []]),
    'bare+payloads': () => go('barePayload', [sizes, 0]),
    'bare+payloads+6 upserts': () => go('barePayload', [sizes, 6]),
  };
  const names = Object.keys(kinds);
  // warm-up
  for (const n of names) await Promise.all(Array.from({ length: C }, () => kinds[n]!()));
  const temporalPid = stack.processes[0]!.pid;
  const acc: Record<string, { ms: number[]; wall: number; node: number; server: number }> = {};
  for (const n of names) acc[n] = { ms: [], wall: 0, node: 0, server: 0 };
  for (let r = 0; r < ROUNDS; r++) {
    const order = names.map((_, i) => names[(i + r) % names.length]!);
    for (const n of order) {
      const c0 = process.cpuUsage(); const s0 = cpuMs(temporalPid); const t0 = performance.now();
      const res = await Promise.all(Array.from({ length: C }, () => kinds[n]!()));
      const a = acc[n]!;
      a.wall += performance.now() - t0; const cu = process.cpuUsage(c0); a.node += (cu.user + cu.system) / 1000; a.server += cpuMs(temporalPid) - s0;
      a.ms.push(...res.map((x) => x.ms));
    }
  }
  const base = summarize(acc.bare!.ms);
  console.log(`c=${C}, ${ROUNDS} rounds`);
  console.log('kind | p50 | p95 | ratio p50 | ratio p95 | runs/s | node cpu ms/run | server cpu ms/run');
  for (const n of names) {
    const a = acc[n]!; const s = summarize(a.ms); const runs = a.ms.length;
    console.log([n, s.p50, s.p95, (s.p50 / base.p50).toFixed(2), (s.p95 / base.p95).toFixed(2), (runs / (a.wall / 1000)).toFixed(2), (a.node / runs).toFixed(1), (a.server / runs).toFixed(1)].join(' | '));
  }
  for (const w of workers) w.shutdown();
  await running;
} finally {
  await stack.stop();
}
