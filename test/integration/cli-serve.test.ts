import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stablePort } from '../../src/dev/servers.js';
import { Registry } from '../../src/registry/registry.js';
import type { PredictionRecord } from '../../src/serving/prediction-log.js';
import { MinioArtifactStore } from '../../src/store/minio-store.js';
import { keys } from '../../src/store/keys.js';
import { creditRows, deployFixtureModel } from '../helpers/fixture-model.js';
import { configEnv, testConfig } from '../helpers/stack.js';

const MODEL = 'cli-served';
const TOKEN = 'cli-serve-test-token-0123456789';

/** `conveyor serve` as users run it: its own process, through bin/conveyor.mjs. */
describe('conveyor serve as a process (real MinIO)', () => {
  const config = testConfig('cli-serve');
  const store = new MinioArtifactStore(config.s3);
  let child: ChildProcess | undefined;
  let output = '';

  beforeAll(async () => {
    await store.ensureBucket();
    await deployFixtureModel(store, new Registry(store), MODEL);
  });
  afterAll(() => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
  });

  it('starts, stays up, answers, and on SIGTERM writes its prediction log and exits 0', async () => {
    // Below the ephemeral range: no client socket can take it while the CLI starts (seconds).
    const port = await stablePort();
    child = spawn(process.execPath, ['bin/conveyor.mjs', 'serve', '--port', String(port)], {
      env: { ...process.env, ...configEnv(config), CONVEYOR_SERVE_TOKEN: TOKEN, CONVEYOR_PREDICTION_LOG_FLUSH_MS: '60000', LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    const url = `http://127.0.0.1:${port}`;
    let up = false;
    for (let i = 0; i < 600 && !up && child.exitCode === null; i++) {
      up = await fetch(`${url}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (!up) await sleep(100);
    }
    expect(child.exitCode, output.slice(-2000)).toBeNull();
    expect(up, output.slice(-2000)).toBe(true);
    // Still up a moment later: nothing it started lets it exit on its own.
    await sleep(500);
    expect(child.exitCode).toBeNull();

    const [row] = creditRows(1);
    const { default: _label, ...instance } = row!;
    const res = await fetch(`${url}/v1/models/${MODEL}:predict`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ instance }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { requestId: string; version: number; arm: string };
    expect(body).toMatchObject({ version: 1, arm: 'production' });

    // The log flushes only on shutdown here (60 s interval): SIGTERM must write it, then exit 0.
    child.kill('SIGTERM');
    expect(await exited, output.slice(-2000)).toBe(0);
    const written = await store.list(keys.predictionsPrefix(MODEL));
    expect(written).toHaveLength(1);
    const rows = (await store.get(written[0]!)).toString('utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as PredictionRecord);
    expect(rows.map((r) => r.requestId)).toEqual([body.requestId]);
  });
});
