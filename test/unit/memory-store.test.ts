import { describe, expect, it } from 'vitest';
import { MemoryArtifactStore } from '../../src/store/memory-store.js';

describe('MemoryArtifactStore.listPrefixes', () => {
  it('returns one level of common prefixes, like S3 with delimiter "/"', async () => {
    const store = new MemoryArtifactStore();
    for (const key of ['models/a/versions/1.json', 'models/a/aliases/production.json', 'models/b/versions/1.json', 'models/top.json', 'datasets/x.csv']) {
      await store.put(key, 'x');
    }
    expect(await store.listPrefixes('models/')).toEqual(['models/a/', 'models/b/']);
    expect(await store.listPrefixes('models/a/')).toEqual(['models/a/aliases/', 'models/a/versions/']);
    expect(await store.listPrefixes('')).toEqual(['datasets/', 'models/']);
    expect(await store.listPrefixes('models/a/versions/')).toEqual([]);
    expect(await store.listPrefixes('nothing/')).toEqual([]);
  });
});
