import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { decide, startPipeline, waitForRun } from '../../src/runs.js';
import { RunOutcome } from '../../src/shared/errors.js';
import { freePort, ServerExitedError, stablePort, startTemporal, temporalHealthy, waitUntil, type ServerProcess } from '../../src/dev/servers.js';
import { MinioArtifactStore } from '../../src/store/minio-store.js';
import { Registry } from '../../src/registry/registry.js';
import { createWorkers } from '../../src/worker.js';
import { testConfig, testLogger, workflowBundle } from '../helpers/stack.js';
import { examplePipeline, waitForStatus } from '../helpers/pipelines.js';

/**
 * A Temporal dev server of this test's own (on a SQLite file), so restarting it disturbs no other
 * test. The dev server also picks internal ports itself (bind :0, close, bind again), which other
 * processes of a busy test run can take in between: a server that exits before it is healthy is
 * started once more (the error it exited with, and its log, are in the message if it fails again).
 */
async function ownTemporal(dir: string, port: number): Promise<ServerProcess> {
  const logFile = join(dir, 'temporal.log');
  for (let attempt = 1; ; attempt++) {
    const server = startTemporal({ dbFile: join(dir, 'temporal.sqlite'), port, uiPort: await freePort(), logFile });
    try {
      await waitUntil('Temporal', () => temporalHealthy(port), 60_000, logFile, server);
      return server;
    } catch (err) {
      await server.stop();
      if (!(err instanceof ServerExitedError) || attempt === 2) throw err;
    }
  }
}

describe('the Temporal server restarts while a run waits for approval', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  it('keeps the run and its timers: escalation fires after the restart, and the approval then deploys', async () => {
    // Restarted on the same port: one that no client socket can have taken meanwhile.
    const port = await stablePort();
    const config = { ...testConfig('restart'), temporal: { address: `127.0.0.1:${port}`, namespace: 'default' } };
    let temporal = await ownTemporal(config.home, port);
    cleanups.push(() => temporal.stop());
    const store = new MinioArtifactStore(config.s3);
    await store.ensureBucket();
    const workers = await createWorkers({ config, logger: testLogger, workflowBundle: await workflowBundle() });
    const running = workers.run();
    cleanups.push(async () => {
      workers.shutdown();
      await running;
    });

    let connection = await Connection.connect({ address: config.temporal.address });
    let client = new Client({ connection });
    // Escalation is a durable timer set before the restart that must fire after it.
    const pipeline = await examplePipeline((s) => ({ ...s, approval: { mode: 'manual', reviewers: ['bob'], timeout: '10m', escalation: { after: '25s', reviewers: ['lena'] } } }));
    const started = await startPipeline(client, config, pipeline, { submittedBy: 'alice' });
    const awaiting = (await waitForStatus(started, (s) => s.awaitingApproval !== undefined)).awaitingApproval!;
    await connection.close();

    await temporal.stop();
    expect(await temporalHealthy(port)).toBe(false);
    temporal = await ownTemporal(config.home, port);

    connection = await Connection.connect({ address: config.temporal.address });
    cleanups.push(() => connection.close());
    client = new Client({ connection });
    const handle = client.workflow.getHandle(started.workflowId);
    // The same run, still waiting on the same candidate.
    const status = await waitForStatus(handle, (s) => s.awaitingApproval !== undefined, 90_000);
    expect(status.awaitingApproval).toMatchObject({ version: awaiting.version, sha256: awaiting.sha256 });
    const restartedAt = Date.now();
    // The timer is still to fire: stopping (up to 10 s), restarting and reconnecting took less than 25 s.
    expect(Date.parse(status.awaitingApproval!.deadline) - 600_000 + 25_000).toBeGreaterThan(restartedAt);
    expect(status.awaitingApproval?.escalated).toBe(false);
    const escalated = await waitForStatus(handle, (s) => s.awaitingApproval?.escalated === true, 60_000);
    expect(escalated.awaitingApproval?.reviewers).toContain('lena');
    // Only the escalation reviewer, admitted by the timer that fired after the restart, decides.
    await decide(handle, 'approve', { model: 'credit-risk', version: awaiting.version, sha256: awaiting.sha256, reviewer: 'lena' });
    const end = await waitForRun(handle);
    expect(end.outcome).toBe(RunOutcome.Deployed);
    expect((await new Registry(store).getAlias('credit-risk', 'production'))?.version).toBe(awaiting.version);
  });
});
