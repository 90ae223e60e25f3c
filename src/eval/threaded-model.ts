import { Worker } from 'node:worker_threads';
import { ArtifactIntegrityError, ModelSignatureError, sha256Hex, type ClassLabel, type LoadedModel, type ModelMetadata, type Prediction } from './onnx-model.js';
import type { ThreadInit, ThreadReply, WirePrediction } from './model-thread.js';

const ENTRY = new URL('./model-thread-entry.mjs', import.meta.url);

/** The inverse of `toWire` (model-thread.ts, not imported here: that module runs the thread side when loaded on a worker), with the model's classes. */
function fromWire(wire: WirePrediction, classes: readonly ClassLabel[]): Prediction {
  if (wire.task === 'regression') return { task: 'regression', values: wire.values };
  const labels = 'labels' in wire ? wire.labels : Array.from(wire.labelIndex, (j) => classes[j]!);
  return { task: 'classification', labels, probabilities: wire.probabilities, classes };
}

/** A model on a thread of its own; `thread` is exposed for tests that need it to die. */
export interface ThreadedModel extends LoadedModel {
  readonly thread: Worker;
}

/**
 * A model whose inference runs on a worker thread of its own. onnxruntime-node runs a
 * session synchronously on the calling thread, so a model scored here never blocks the
 * main thread's event loop (shadow candidates: they must not slow production answers).
 * The hash is checked here and again by the thread before onnxruntime sees the bytes.
 */
export async function loadModelOnThread(bytes: Uint8Array, expectedSha256: string, metadata: ModelMetadata): Promise<ThreadedModel> {
  const actual = sha256Hex(bytes);
  if (actual !== expectedSha256.trim().toLowerCase()) throw new ArtifactIntegrityError(expectedSha256, actual);
  const worker = new Worker(ENTRY, { workerData: { bytes, sha256: actual, metadata } satisfies ThreadInit });
  const pending = new Map<number, { resolve: (r: ThreadReply) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let failed: Error | undefined;
  await new Promise<void>((resolve, reject) => {
    worker.once('message', (msg: { ready?: true; error?: string; name?: string }) => {
      if (msg.ready) return resolve();
      const err = msg.name === 'ModelSignatureError' ? new ModelSignatureError(msg.error ?? '') : new Error(msg.error ?? 'inference thread failed to load the model');
      void worker.terminate();
      reject(err);
    });
    worker.once('error', reject);
    // A thread that dies while loading (native crash, out of memory) must not leave the caller waiting.
    worker.once('exit', (code) => reject(new Error(`inference thread exited (${code}) while loading the model`)));
  });
  worker.on('message', (msg: ThreadReply) => {
    const waiter = pending.get(msg.id);
    if (!waiter) return;
    pending.delete(msg.id);
    waiter.resolve(msg);
  });
  const fail = (err: Error): void => {
    failed = err;
    for (const waiter of pending.values()) waiter.reject(err);
    pending.clear();
  };
  worker.on('error', fail);
  worker.on('exit', (code) => fail(new Error(`inference thread exited (${code})`)));
  // After the listeners: adding a 'message' listener refs the thread's port again; an idle model thread must not keep the process alive.
  worker.unref();
  const call = (message: object): Promise<ThreadReply> => {
    if (failed) return Promise.reject(failed);
    const id = nextId++;
    return new Promise<ThreadReply>((resolve, reject) => {
      pending.set(id, { resolve, reject });
      worker.postMessage({ id, ...message });
    });
  };
  let released = false;
  const model: ThreadedModel = {
    thread: worker,
    failure: () => failed,
    metadata,
    sha256: actual,
    async predict(rows): Promise<Prediction> {
      if (released) throw new Error('model has been released');
      const reply = await call({ rows });
      if ('error' in reply) throw new Error(reply.error);
      if (!('prediction' in reply)) throw new Error('unexpected reply from inference thread');
      return fromWire(reply.prediction, metadata.classes ?? []);
    },
    async release(): Promise<void> {
      if (released) return;
      released = true;
      await call({ release: true }).catch(() => undefined);
      await worker.terminate();
    },
  };
  return model;
}
