import { parentPort, workerData } from 'node:worker_threads';
import { loadModel, type ClassLabel, type Columns, type ModelMetadata, type Prediction, type SessionModel } from './onnx-model.js';

/**
 * A `Prediction` as it crosses the thread boundary: typed arrays whose buffers are
 * transferred (not cloned), labels as indices into the metadata's classes when every
 * label is one of them (the usual case), and no `classes` (the main thread has them).
 */
export type WirePrediction =
  | { task: 'classification'; probabilities: Float32Array; labelIndex: Int32Array }
  | { task: 'classification'; probabilities: Float32Array; labels: ClassLabel[] }
  | { task: 'regression'; values: Float64Array };

/** What the main thread sends an inference thread (rows as the model's input columns: see `buildColumns`), and what comes back. */
export type ThreadRequest = { id: number; columns: Columns; n: number } | { id: number; release: true };
export type ThreadReply = { id: number; prediction: WirePrediction; latencyMs: number } | { id: number; error: string; name: string } | { id: number; released: true };
export interface ThreadInit {
  bytes: Uint8Array;
  sha256: string;
  metadata: ModelMetadata;
}

/** A typed array's own buffer when the view covers all of it (transferable), else a copy that does. */
function owned<T extends Float32Array | Float64Array>(a: T): T {
  return a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && a.buffer instanceof ArrayBuffer ? a : (a.slice() as T);
}

/** Packs a prediction for `postMessage`; returns it with the buffers to transfer (one: each transferred buffer has a cost of its own). */
export function toWire(prediction: Prediction, classIndex: Map<ClassLabel, number>): { wire: WirePrediction; transfer: ArrayBuffer[] } {
  if (prediction.task === 'regression') {
    const values = owned(prediction.values);
    return { wire: { task: 'regression', values }, transfer: [values.buffer as ArrayBuffer] };
  }
  const { probabilities: p, labels } = prediction;
  // Probabilities, then label indices, in one buffer (both 4-byte values).
  const buffer = new ArrayBuffer((p.length + labels.length) * 4);
  const probabilities = new Float32Array(buffer, 0, p.length);
  probabilities.set(p);
  const labelIndex = new Int32Array(buffer, p.length * 4, labels.length);
  for (let i = 0; i < labelIndex.length; i++) {
    const j = classIndex.get(labels[i]!);
    if (j === undefined) {
      const own = owned(p);
      return { wire: { task: 'classification', probabilities: own, labels }, transfer: [own.buffer as ArrayBuffer] };
    }
    labelIndex[i] = j;
  }
  return { wire: { task: 'classification', probabilities, labelIndex }, transfer: [buffer] };
}

// onnxruntime-node runs a session synchronously on the thread that calls it; this thread
// is where a model that must never hold up the main thread (a shadow candidate) runs.
const port = parentPort;
if (port) {
  const init = workerData as ThreadInit;
  const classIndex = new Map<ClassLabel, number>((init.metadata.classes ?? []).map((c, j) => [c, j]));
  let model: SessionModel | undefined;
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
        const { wire, transfer } = toWire(await model.predictColumns(msg.columns, msg.n), classIndex);
        port.postMessage({ id: msg.id, prediction: wire, latencyMs: performance.now() - started } satisfies ThreadReply, transfer);
      } catch (err) {
        port.postMessage({ id: msg.id, error: (err as Error).message, name: (err as Error).name } satisfies ThreadReply);
      }
    });
  });
}
