import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import { startDevStack } from '../src/dev/servers.js';
import { bareActivities, stubActivities } from './stub-activities.js';

Runtime.install({ logger: new DefaultLogger('WARN') });
const dir = mkdtempSync(join(tmpdir(), 'probe-'));
const stack = await startDevStack({ dir, accessKey: 'bench', secretKey: 'bench-secret-123' });
try {
  const bundle = await bundleWorkflowCode({ workflowsPath: fileURLToPath(new URL('./workflows.ts', import.meta.url)), logger: new DefaultLogger('WARN') });
  const nc = await NativeConnection.connect({ address: stack.temporalAddress });
  const { trainModel: _t, ...light } = stubActivities();
  const w = await Worker.create({ connection: nc, taskQueue: 'q', workflowBundle: bundle, activities: { ...light, ...bareActivities } });
  const running = w.run();
  const client = new Client({ connection: await Connection.connect({ address: stack.temporalAddress }) });
  for (let i = 0; i < 4; i++) {
    const t0 = performance.now();
    const h = await client.workflow.start('bareWorkflow', { taskQueue: 'q', workflowId: `b${i}`, args: [9] });
    await h.result();
    console.log('run ms', performance.now() - t0);
  }
  const hist = await client.workflow.getHandle('b3').fetchHistory();
  let prev: number | undefined;
  for (const e of hist.events ?? []) {
    const t = Number(e.eventTime!.seconds) * 1000 + e.eventTime!.nanos! / 1e6;
    const name = Object.keys(e).find((k) => k.endsWith('Attributes'));
    console.log(String(e.eventId), name, prev === undefined ? 0 : (t - prev).toFixed(1));
    prev = t;
  }
  w.shutdown();
  await running;
} finally {
  await stack.stop();
}
