import { parentPort, workerData } from 'node:worker_threads';
import type { Config } from '../config.js';
import type { PutOptions } from './artifact-store.js';
import { MinioArtifactStore } from './minio-store.js';
import type { StartReply } from '../thread-channel.js';

/** What the main thread sends a store writer thread, and what comes back. */
export type WriterRequest = { id: number; key: string; body: Uint8Array; opts?: PutOptions };
export type WriterReply = { id: number; etag: string } | { id: number; error: string; name: string };

// The thread side: its own MinIO client, so hashing (MD5 and SHA-256 of every body) and the
// HTTP upload of large, frequent writes (the prediction log) run off the serving event loop.
const port = parentPort;
if (port) {
  const store = new MinioArtifactStore((workerData as { s3: Config['s3'] }).s3);
  port.on('message', (msg: WriterRequest) => {
    const body = Buffer.from(msg.body.buffer, msg.body.byteOffset, msg.body.byteLength);
    store.put(msg.key, body, msg.opts).then(
      ({ etag }) => port.postMessage({ id: msg.id, etag } satisfies WriterReply),
      (err: unknown) => port.postMessage({ id: msg.id, error: err instanceof Error ? err.message : String(err), name: err instanceof Error ? err.name : 'Error' } satisfies WriterReply),
    );
  });
  port.postMessage({ id: 0, ready: true } satisfies StartReply);
}
