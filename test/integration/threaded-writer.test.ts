import type { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PreconditionFailedError } from '../../src/store/artifact-store.js';
import { MinioArtifactStore } from '../../src/store/minio-store.js';
import { ThreadedObjectWriter } from '../../src/store/threaded-writer.js';
import { testConfig } from '../helpers/stack.js';

describe('store writer thread, real MinIO', () => {
  const config = testConfig('threaded-writer');
  const store = new MinioArtifactStore(config.s3);
  const writer = new ThreadedObjectWriter(config.s3);

  beforeAll(async () => {
    await store.ensureBucket();
  });
  afterAll(async () => {
    await writer.close();
  });

  it('writes exactly the bytes of a view into a larger buffer, and strings as UTF-8', async () => {
    const backing = Buffer.alloc(1024, 'z');
    backing.write('{"a":1}\n{"b":"żółw"}\n', 100, 'utf8');
    const view = backing.subarray(100, 100 + Buffer.byteLength('{"a":1}\n{"b":"żółw"}\n'));
    const { etag } = await writer.put('threaded/view.jsonl', view, { ifAbsent: true, contentType: 'application/x-ndjson' });
    expect(etag).toMatch(/^[0-9a-f]{32}$/);
    expect((await store.get('threaded/view.jsonl')).toString('utf8')).toBe('{"a":1}\n{"b":"żółw"}\n');
    // The caller's buffer is not taken from it (copied, then moved to the thread).
    expect(backing.length).toBe(1024);
    expect(backing.subarray(0, 100).every((b) => b === 'z'.charCodeAt(0))).toBe(true);

    await writer.put('threaded/text.txt', 'héllo');
    expect((await store.get('threaded/text.txt')).toString('utf8')).toBe('héllo');
  });

  it('ready() starts the thread before any write, and refuses once closed', async () => {
    const w = new ThreadedObjectWriter(config.s3);
    await w.ready();
    expect((w as unknown as { channel?: { thread: Worker } }).channel?.thread).toBeDefined();
    await w.put('threaded/ready.txt', 'ok');
    await w.close();
    await expect(w.ready()).rejects.toThrow(/closed/);
  });

  it('a create-if-absent write of an existing key fails as a PreconditionFailedError naming the key', async () => {
    await writer.put('threaded/once.jsonl', 'first\n', { ifAbsent: true });
    const err = await writer.put('threaded/once.jsonl', 'second\n', { ifAbsent: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PreconditionFailedError);
    expect((err as PreconditionFailedError).key).toBe('threaded/once.jsonl');
    expect((await store.get('threaded/once.jsonl')).toString()).toBe('first\n');
  });

  it('many writes in flight at once all land, each once', async () => {
    const keys = Array.from({ length: 40 }, (_, i) => `threaded/many/${String(i).padStart(2, '0')}.txt`);
    await Promise.all(keys.map((k, i) => writer.put(k, `row ${i}\n`.repeat(1000), { ifAbsent: true })));
    expect(await store.list('threaded/many/')).toEqual(keys);
    expect((await store.get(keys[17]!)).toString()).toBe('row 17\n'.repeat(1000));
  });

  it('a thread that dies fails its writes in flight; the next write starts a new thread', async () => {
    const w = new ThreadedObjectWriter(config.s3);
    await w.put('threaded/before.txt', 'before');
    const thread = (w as unknown as { channel?: { thread: Worker } }).channel!.thread;
    const inFlight = w.put('threaded/during.txt', 'x'.repeat(1_000_000));
    await thread.terminate();
    await expect(inFlight).rejects.toThrow(/store writer thread exited/);
    await w.put('threaded/after.txt', 'after');
    expect((await store.get('threaded/after.txt')).toString()).toBe('after');
    expect((w as unknown as { channel?: { thread: Worker } }).channel?.thread).not.toBe(thread);
    await w.close();
  });

  it('an unreachable store fails the write with the client error; a closed writer refuses writes', async () => {
    const down = new ThreadedObjectWriter({ ...config.s3, port: 1 });
    const err = await down.put('threaded/never.txt', 'x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/ECONNREFUSED|connect/);
    await down.close();
    await expect(down.put('threaded/never.txt', 'x')).rejects.toThrow(/closed/);
    expect(await store.list('threaded/never')).toEqual([]);
  });
});
