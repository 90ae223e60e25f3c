/** Registry records. Pure types: workflows, activities, CLI and serving share them. */
export interface DatasetRef {
  sha256: string;
  key: string;
  source: string;
  format: 'csv' | 'parquet';
  size: number;
}

export interface SplitRef {
  seed: number;
  holdoutFraction: number;
  trainKey: string;
  holdoutKey: string;
  trainRows: number;
  holdoutRows: number;
}

export interface ModelArtifactRef {
  sha256: string;
  key: string;
  size: number;
  metadataKey: string;
  framework: string;
  algorithm: string;
}

export interface GateResult {
  gate: string;
  metric: string;
  actual: number | null;
  threshold: number;
  passed: boolean;
  reason?: string;
}

export interface CodeVersion {
  specHash: string;
  gitCommit: string | null;
  gitDirty: boolean;
  pipelineFile: string | null;
}

export interface ModelVersionRecord {
  schemaVersion: 1;
  model: string;
  version: number;
  createdAt: string;
  task: 'classification' | 'regression';
  target: string;
  features: string[];
  artifact: ModelArtifactRef;
  data: DatasetRef & { profileKey: string; rowCount: number; split: SplitRef };
  trainer: { kind: 'command' | 'typescript'; entry: string; params: Record<string, unknown>; codeHashes: Record<string, string> };
  code: CodeVersion;
  evaluation: {
    reportKey: string;
    metrics: Record<string, number | null>;
    gates: GateResult[];
    production: { version: number; metrics: Record<string, number | null> } | null;
  };
  run: { workflowId: string; runId: string; submittedBy: string };
  description?: string;
}

/** One move of an alias. The newest entry of an alias's log is where it points; the log is the deployment history. */
export interface AliasRecord {
  model: string;
  alias: string;
  /** Position in the alias's log, from 1. */
  seq: number;
  version: number;
  sha256: string;
  strategy: string;
  updatedAt: string;
  /** Same instant as updatedAt: when this version started serving under the alias. */
  deployedAt: string;
  previousVersion: number | null;
  run: { workflowId: string; runId: string };
}

export type DeploymentRecord = AliasRecord;

export interface DecisionRecord {
  model: string;
  version: number;
  sha256: string;
  decision: 'approved' | 'rejected' | 'expired' | 'auto';
  by: string[];
  comment: string | null;
  decidedAt: string;
  run: { workflowId: string; runId: string };
}
