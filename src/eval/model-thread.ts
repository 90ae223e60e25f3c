import { parentPort, workerData } from 'node:worker_threads';
import { loadModel, type LoadedModel, type ModelMetadata, type Prediction } from './onnx-model.js';

/** What the main thread sends an inference thread, and what comes back. */
export type ThreadRequest = { id: number; rows: Array<Record<string, unknown>> } | { id: number; release: true };
export type ThreadReply = { id: number; prediction: Prediction; latencyMs: number } | { id: number; error: string; name: string } | { id: number; released: true };
export interface ThreadInit {
  bytes: Uint8Array;
  sha256: string;
  metadata: ModelMetadata;
}

// onnxruntime-node runs a session synchronously on the thread that calls it; this thread
// is where a model that must never hold up the main thread (a shadow candidate) runs.
const port = parentPort;
if (port) {
  const init = workerData as ThreadInit;
  let model: LoadedModel | undefined;
  const ready = loadModel(init.bytes, init.sha256, init.metadata).then(
    (m) => {
      model = m;
      port.postMessage({ id: 0, ready: true });
    },
    (err: unknown) => port.postMessage({ id: 0, error: (err as Error).message, name: (err as Error).name }),
  );
  port.on('message', (msg: ThreadRequest) => {
    void ready.then(async () => {
      if ('release' in msg) {
        await model?.release();
        port.postMessage({ id: msg.id, released: true } satisfies ThreadReply);
        return;
      }
      try {
        if (!model) throw new Error('model failed to load');
        const started = performance.now();
        const prediction = await model.predict(msg.rows);
        port.postMessage({ id: msg.id, prediction, latencyMs: performance.now() - started } satisfies ThreadReply);
      } catch (err) {
        port.postMessage({ id: msg.id, error: (err as Error).message, name: (err as Error).name } satisfies ThreadReply);
      }
    });
  });
}
