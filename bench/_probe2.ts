import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import { freePort, locateBinary, stopPid, temporalHealthy, waitUntil } from '../src/dev/servers.js';
import { bareActivities } from './stub-activities.js';

Runtime.install({ logger: new DefaultLogger('ERROR') });
const dir = mkdtempSync(join(tmpdir(), 'probe-'));
const port = await freePort();
const extra = (process.env.EXTRA ?? '').split(' ').filter(Boolean);
const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--ui-port', String(await freePort()), '--log-level', 'warn', ...(process.env.MEM ? [] : ['--db-filename', join(dir, 'db.sqlite')]), ...extra];
const child = spawn(locateBinary('temporal'), args, { stdio: 'ignore' });
try {
  await waitUntil('temporal', () => temporalHealthy(port), 60_000);
  const bundle = await bundleWorkflowCode({ workflowsPath: fileURLToPath(new URL('./workflows.ts', import.meta.url)), logger: new DefaultLogger('WARN') });
  const nc = await NativeConnection.connect({ address: `127.0.0.1:${port}` });
  const w = await Worker.create({ connection: nc, taskQueue: 'q', workflowBundle: bundle, activities: bareActivities });
  const running = w.run();
  const client = new Client({ connection: await Connection.connect({ address: `127.0.0.1:${port}` }) });
  const ms: number[] = [];
  for (let i = 0; i < 12; i++) {
    const t0 = performance.now();
    const h = await client.workflow.start('bareWorkflow', { taskQueue: 'q', workflowId: `b${i}`, args: [9] });
    await h.result();
    ms.push(Math.round(performance.now() - t0));
  }
  console.log(process.env.EXTRA ?? '', process.env.MEM ? 'in-memory' : 'file', ms.join(' '));
  w.shutdown();
  await running;
} finally {
  await stopPid(child.pid!, child);
}
