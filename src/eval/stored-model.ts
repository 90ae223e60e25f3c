import type { ArtifactStore } from '../store/artifact-store.js';
import { loadModel, parseModelMetadata, type LoadedModel } from './onnx-model.js';
import { loadModelOnThread } from './threaded-model.js';

/** Where a registered model's bytes and metadata are, and the hash its bytes must have. */
export interface StoredModelRef {
  key: string;
  sha256: string;
  metadataKey: string;
}

/**
 * Loads a stored model the one way evaluation and serving both use: the registry's
 * hash (not the blob's name) is checked before onnxruntime sees the bytes.
 */
export async function loadStoredModel(store: ArtifactStore, artifact: StoredModelRef, opts: { onThread?: boolean } = {}): Promise<LoadedModel> {
  const [bytes, metadataBytes] = await Promise.all([store.get(artifact.key), store.get(artifact.metadataKey)]);
  const metadata = parseModelMetadata(JSON.parse(metadataBytes.toString('utf8')));
  return opts.onThread ? loadModelOnThread(bytes, artifact.sha256, metadata) : loadModel(bytes, artifact.sha256, metadata);
}
