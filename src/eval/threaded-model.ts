import type { Worker } from 'node:worker_threads';
import { ThreadChannel, ThreadStartError } from '../thread-channel.js';
import { ArtifactIntegrityError, buildColumns, columnBuffers, ModelSignatureError, sha256Hex, type ClassLabel, type LoadedModel, type ModelMetadata, type Prediction } from './onnx-model.js';
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
  const channel = new ThreadChannel<ThreadReply>(ENTRY, { bytes, sha256: actual, metadata } satisfies ThreadInit, 'inference thread');
  try {
    await channel.ready;
  } catch (err) {
    void channel.thread.terminate();
    if (err instanceof ThreadStartError) throw err.causeName === 'ModelSignatureError' ? new ModelSignatureError(err.message) : new Error(err.message || 'inference thread failed to load the model');
    // A thread that dies while loading (native crash, out of memory) must not leave the caller waiting.
    throw new Error(`${(err as Error).message} while loading the model`);
  }
  let released = false;
  const model: ThreadedModel = {
    thread: channel.thread,
    failure: () => channel.failure(),
    metadata,
    sha256: actual,
    async predict(rows): Promise<Prediction> {
      if (released) throw new Error('model has been released');
      // Rows go as columns, converted and checked here: one float buffer (transferred) and
      // string arrays cost a fraction of cloning row objects, on both threads.
      const columns = buildColumns(rows, metadata);
      const reply = await channel.call({ columns, n: rows.length }, columnBuffers(columns));
      if ('error' in reply) throw new Error(reply.error);
      if (!('prediction' in reply)) throw new Error('unexpected reply from inference thread');
      return fromWire(reply.prediction, metadata.classes ?? []);
    },
    async release(): Promise<void> {
      if (released) return;
      released = true;
      await channel.call({ release: true }).catch(() => undefined);
      await channel.close();
    },
  };
  return model;
}
