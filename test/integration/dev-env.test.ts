import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { loadConfig } from '../../src/config.js';
import { devDown, devStatus, devUp } from '../../src/dev/dev-env.js';
import { isAlive, stablePort } from '../../src/dev/servers.js';
import { MinioArtifactStore } from '../../src/store/minio-store.js';
import { SEARCH_ATTRIBUTES } from '../../src/shared/constants.js';

describe('conveyor dev up | status | down', async () => {
  const home = mkdtempSync(join(tmpdir(), 'conveyor-dev-'));
  // Below the ephemeral range (no client socket can take them before the servers bind them), and distinct.
  const taken: number[] = [];
  const pick = async (): Promise<number> => {
    const port = await stablePort(taken);
    taken.push(port);
    return port;
  };
  const ports = { temporal: await pick(), temporalUi: await pick(), minio: await pick(), minioConsole: await pick() };
  const config = loadConfig({
    CONVEYOR_HOME: home,
    TEMPORAL_ADDRESS: `127.0.0.1:${ports.temporal}`,
    CONVEYOR_S3_ENDPOINT: `http://127.0.0.1:${ports.minio}`,
  });
  afterAll(async () => devDown(config, () => {}));

  it('starts both servers in the background, healthy, with the search attributes, and stops them', async () => {
    const lines: string[] = [];
    const status = await devUp(config, (l) => lines.push(l), ports);
    expect(status.temporal).toMatchObject({ healthy: true, running: true, address: `127.0.0.1:${ports.temporal}` });
    expect(status.minio).toMatchObject({ healthy: true, running: true });

    // A second `up` reuses what runs.
    await devUp(config, (l) => lines.push(l), ports);
    expect(lines.at(-1)).toBe('dev servers already running');

    // MinIO accepts the configured credentials; Temporal has the search attributes.
    const store = new MinioArtifactStore(config.s3);
    await store.ensureBucket();
    await store.put('probe.txt', 'ok');
    expect((await store.get('probe.txt')).toString()).toBe('ok');
    const connection = await Connection.connect({ address: config.temporal.address });
    const client = new Client({ connection });
    const attrs = await client.connection.operatorService.listSearchAttributes({ namespace: 'default' });
    expect(Object.keys(attrs.customAttributes ?? {})).toEqual(expect.arrayContaining(Object.values(SEARCH_ATTRIBUTES)));
    await connection.close();

    const before = await devStatus(config);
    expect(before.temporal.running && before.minio.running).toBe(true);
    await devDown(config, () => {});
    const after = await devStatus(config);
    expect(after.temporal.healthy).toBe(false);
    expect(after.minio.healthy).toBe(false);
    expect(before.pids.temporal).toBeGreaterThan(0);
    expect(isAlive(before.pids.temporal!) || isAlive(before.pids.minio!)).toBe(false);
  });
});
