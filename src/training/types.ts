/** The trainer file contract, shared by command trainers and TypeScript trainers. */
export interface TrainerJob {
  schemaVersion: 1;
  task: 'classification' | 'regression';
  target: string;
  features: Array<{ name: string; type: 'numeric' | 'categorical' }>;
  /** CSV with a header: the feature columns and the target. */
  trainPath: string;
  /** Where the trainer writes model.onnx and metadata.json. */
  outputDir: string;
  params: Record<string, unknown>;
  seed: number;
}

export interface TrainerProgress {
  step?: number;
  total?: number;
  message?: string;
}

export interface TrainerContext {
  heartbeat(progress: TrainerProgress): void;
  /** Aborted when the workflow cancels the training or the activity times out. */
  signal: AbortSignal;
  log: (message: string, fields?: Record<string, unknown>) => void;
}

/** A trainer written in TypeScript, registered on the worker under a name. */
export interface TypeScriptTrainer {
  /** Describes the trainer in lineage, e.g. "my-lib 1.2 gradient boosting". */
  describe(params: Record<string, unknown>): { framework: string; algorithm: string };
  train(job: TrainerJob, ctx: TrainerContext): Promise<void>;
}

export const MODEL_FILE = 'model.onnx';
export const METADATA_FILE = 'metadata.json';
