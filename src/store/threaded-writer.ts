import { Worker } from 'node:worker_threads';
import type { Config } from '../config.js';
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
  private worker: Worker | undefined;
  /** Writes waiting for their answer, with the thread they were sent to. */
  private readonly pending = new Map<number, { key: string; worker: Worker; resolve: (r: { etag: string }) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private closed = false;
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly s3: Config['s3']) {}

  private started: Promise<void> | undefined;

  /** Starts the thread now (rather than at the first write) and waits until it can take writes. */
  async ready(): Promise<void> {
    if (this.closed) throw new Error('store writer is closed');
    const worker = (this.worker ??= this.start());
    // Waiting for it is a reason to stay alive: the caller may have nothing else running yet.
    worker.ref();
    try {
      await this.started;
    } finally {
      if (this.inFlight.size === 0) worker.unref();
    }
  }

  private start(): Worker {
    const worker = new Worker(ENTRY, { workerData: { s3: this.s3 } });
    let up!: () => void;
    let down!: (err: Error) => void;
    this.started = new Promise<void>((resolve, reject) => {
      up = resolve;
      down = reject;
    });
    // Nobody may be waiting for it: a failed start also fails the writes sent meanwhile.
    this.started.catch(() => undefined);
    worker.on('message', (reply: WriterReply) => {
      if ('ready' in reply) return up();
      const waiter = this.pending.get(reply.id);
      if (!waiter) return;
      this.pending.delete(reply.id);
      if ('etag' in reply) waiter.resolve({ etag: reply.etag });
      else waiter.reject(reply.name === 'PreconditionFailedError' ? new PreconditionFailedError(waiter.key) : new Error(reply.error));
    });
    // Only this thread's writes fail with it: a write already sent to a replacement may still land.
    const fail = (err: Error): void => {
      down(err);
      if (this.worker === worker) this.worker = undefined;
      for (const [id, waiter] of this.pending) {
        if (waiter.worker !== worker) continue;
        this.pending.delete(id);
        waiter.reject(err);
      }
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`store writer thread exited (${code})`)));
    // After the listeners: adding a 'message' listener refs the thread's port again. An idle
    // writer never keeps the process alive; a write in flight does (see put).
    worker.unref();
    return worker;
  }

  put(key: string, body: Buffer | string, opts?: PutOptions): Promise<{ etag: string }> {
    if (this.closed) return Promise.reject(new Error('store writer is closed'));
    const worker = (this.worker ??= this.start());
    // An exact copy, moved to the thread: a Buffer may be a view of a larger (or pooled) ArrayBuffer.
    const bytes = typeof body === 'string' ? new Uint8Array(Buffer.from(body, 'utf8')) : Uint8Array.prototype.slice.call(body);
    const id = this.nextId++;
    const written = new Promise<{ etag: string }>((resolve, reject) => {
      this.pending.set(id, { key, worker, resolve, reject });
      const message: WriterRequest = { id, key, body: bytes, ...(opts ? { opts } : {}) };
      worker.postMessage(message, [bytes.buffer as ArrayBuffer]);
    });
    // The thread keeps the process alive only while it has writes to finish.
    worker.ref();
    this.inFlight.add(written);
    const settled = (): void => {
      this.inFlight.delete(written);
      if (this.inFlight.size === 0) this.worker?.unref();
    };
    written.then(settled, settled);
    return written;
  }

  /** Waits for writes in flight, then stops the thread. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.inFlight]);
    await this.worker?.terminate();
    this.worker = undefined;
  }
}
