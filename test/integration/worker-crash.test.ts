import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { startPipeline, waitForRun } from '../../src/runs.js';
import { RunOutcome } from '../../src/shared/errors.js';
import { Registry } from '../../src/registry/registry.js';
import { MinioArtifactStore } from '../../src/store/minio-store.js';
import { isAlive } from '../../src/dev/servers.js';
import { configEnv, testConfig } from '../helpers/stack.js';
import { examplePipeline, waitForStatus } from '../helpers/pipelines.js';
import { startWorkerProcess } from '../helpers/worker-process.js';

describe('a worker killed in the middle of training', () => {
  const config = testConfig('crash');
  const env = configEnv(config);
  let client: Client;
  let connection: Connection;
  const workers: ChildProcess[] = [];

  beforeAll(async () => {
    connection = await Connection.connect({ address: config.temporal.address });
    client = new Client({ connection });
  });
  afterAll(async () => {
    for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
    await connection?.close();
  });

  it('is replaced by another worker; the run completes with exactly one version', async () => {
    const marker = join(config.home, 'trainer-starts.txt');
    const pipeline = await examplePipeline((s) => ({
      ...s,
      trainer: {
        kind: 'command',
        command: ['{python}', resolve('test/fixtures/trainers/slow_train.py')],
        params: { algorithm: 'logistic_regression', sleepSeconds: 6, startedMarker: marker },
        timeout: '5m',
        // Short enough to notice the dead worker quickly; retries leave room for a busy CI machine,
        // where a live worker's heartbeat can arrive late and cost an attempt.
        heartbeatTimeout: '5s',
        retries: 4,
      },
    }));
    workers.push(await startWorkerProcess(env));
    const handle = await startPipeline(client, config, pipeline);
    await waitForStatus(handle, (s) => s.stage === 'train');
    // The trainer writes the marker once Python has imported its libraries: up to 60 s on a loaded machine.
    for (let i = 0; i < 600 && !existsSync(marker); i++) await sleep(100);
    expect(existsSync(marker)).toBe(true);
    const firstTrainerPid = Number(readFileSync(marker, 'utf8').trim().split('\n')[0]);
    expect(isAlive(firstTrainerPid)).toBe(true);

    workers[0]!.kill('SIGKILL');
    await new Promise((r) => workers[0]!.once('exit', r));
    // The orphaned trainer dies at its next progress line (broken pipe), not minutes later.
    for (let i = 0; i < 50 && isAlive(firstTrainerPid); i++) await sleep(100);
    expect(isAlive(firstTrainerPid)).toBe(false);

    workers.push(await startWorkerProcess(env));
    const end = await waitForRun(handle);
    expect(end.message).toBeUndefined();
    expect(end.outcome).toBe(RunOutcome.Deployed);

    const starts = readFileSync(marker, 'utf8').trim().split('\n');
    // Killed once, then at least one more start (a busy machine may cost another attempt).
    expect(starts.length).toBeGreaterThanOrEqual(2);
    const registry = new Registry(new MinioArtifactStore(config.s3));
    expect(await registry.listVersions('credit-risk')).toEqual([1]);
    expect((await registry.getAlias('credit-risk', 'production'))?.version).toBe(1);
    const history = await handle.fetchHistory();
    const trainingStarts = (history.events ?? []).filter((e) => e.activityTaskStartedEventAttributes && Number(e.activityTaskStartedEventAttributes.attempt) >= 2);
    expect(trainingStarts.length).toBeGreaterThan(0);
  });
});
