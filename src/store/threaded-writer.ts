import type { Config } from '../config.js';
import { ThreadChannel } from '../thread-channel.js';
import { PreconditionFailedError, type PutOptions } from './artifact-store.js';
import type { WriterReply, WriterRequest } from './writer-thread.js';

const ENTRY = new URL('./writer-thread-entry.mjs', import.meta.url);

/** Writes whole objects (`put`), as an `ArtifactStore` does. */
export interface ObjectWriter {
  put(key: string, body: Buffer | string, opts?: PutOptions): Promise<{ etag: string }>;
  close(): Promise<void>;
}

/**
 * `put` on a worker thread with its own MinIO client: the MinIO client hashes every body
 * (MD5, and SHA-256 to sign it over plain HTTP) on the calling thread, about 1 ms per
 * 250 KB, which the serving event loop should not spend between answers. The body's bytes
 * are copied once and moved to the thread (not cloned again). Errors come back with their
 * kind: a create-if-absent that finds the key is a `PreconditionFailedError`, as from the
 * store itself. A thread that dies fails the writes it had; the next write starts another.
 */
export class ThreadedObjectWriter implements ObjectWriter {
  /** The current thread; a new one is started when it has died. */
  private channel: ThreadChannel<WriterReply> | undefined;
  private closed = false;

  constructor(private readonly s3: Config['s3']) {}

  private thread(): ThreadChannel<WriterReply> {
    if (this.closed) throw new Error('store writer is closed');
    if (!this.channel || this.channel.failure()) this.channel = new ThreadChannel<WriterReply>(ENTRY, { s3: this.s3 }, 'store writer thread');
    return this.channel;
  }

  /** Starts the thread now (rather than at the first write) and waits until it can take writes. */
  async ready(): Promise<void> {
    await this.thread().ready;
  }

  async put(key: string, body: Buffer | string, opts?: PutOptions): Promise<{ etag: string }> {
    const channel = this.thread();
    // An exact copy, moved to the thread: a Buffer may be a view of a larger (or pooled) ArrayBuffer.
    const bytes = typeof body === 'string' ? new Uint8Array(Buffer.from(body, 'utf8')) : Uint8Array.prototype.slice.call(body);
    const reply = await channel.call({ key, body: bytes, ...(opts ? { opts } : {}) } satisfies Omit<WriterRequest, 'id'>, [bytes.buffer as ArrayBuffer]);
    if ('etag' in reply) return { etag: reply.etag };
    throw reply.name === 'PreconditionFailedError' ? new PreconditionFailedError(key) : new Error(reply.error);
  }

  /** Waits for writes in flight, then stops the thread. */
  async close(): Promise<void> {
    this.closed = true;
    await this.channel?.close();
    this.channel = undefined;
  }
}
