import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ObjectNotFoundError } from '../../src/store/artifact-store.js';
import { MinioArtifactStore } from '../../src/store/minio-store.js';
import { testConfig } from '../helpers/stack.js';

describe('MinioArtifactStore against a real MinIO', () => {
  const config = testConfig('store');
  const store = new MinioArtifactStore(config.s3);
  const dir = mkdtempSync(join(tmpdir(), 'conveyor-store-'));
  beforeAll(() => store.ensureBucket());
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('getToFile: concurrent downloads of one key to one path all succeed and leave no temp files', async () => {
    const body = randomBytes(16 * 1024 * 1024);
    await store.put('data/big.bin', body);
    const dest = join(dir, 'big.bin');
    // Staggered, so some downloads are mid-stream while others finish and rename.
    await Promise.all(Array.from({ length: 8 }, (_, i) => sleep(i * 15).then(() => store.getToFile('data/big.bin', dest))));
    expect(readFileSync(dest).equals(body)).toBe(true);
    expect(readdirSync(dir)).toEqual(['big.bin']);
  });

  it('getToFile: a missing key or bucket is ObjectNotFoundError and leaves nothing behind', async () => {
    await expect(store.getToFile('data/missing.bin', join(dir, 'missing.bin'))).rejects.toBeInstanceOf(ObjectNotFoundError);
    const noBucket = new MinioArtifactStore({ ...config.s3, bucket: `${config.s3.bucket}-absent` });
    await expect(noBucket.getToFile('data/big.bin', join(dir, 'absent.bin'))).rejects.toBeInstanceOf(ObjectNotFoundError);
    expect(readdirSync(dir)).toEqual(['big.bin']);
  });

  it('listPrefixes: one level of common prefixes', async () => {
    for (const key of ['models/a/versions/1.json', 'models/a/aliases/production.json', 'models/b/versions/1.json', 'models/top.json']) {
      await store.put(key, '{}');
    }
    expect(await store.listPrefixes('models/')).toEqual(['models/a/', 'models/b/']);
    expect(await store.listPrefixes('models/a/')).toEqual(['models/a/aliases/', 'models/a/versions/']);
    expect(await store.listPrefixes('')).toEqual(['data/', 'models/']);
    expect(await store.listPrefixes('models/a/versions/')).toEqual([]);
  });
});
