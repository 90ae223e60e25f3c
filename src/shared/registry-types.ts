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

export interface AliasRecord {
  model: string;
  alias: string;
  version: number;
  sha256: string;
  updatedAt: string;
  previousVersion: number | null;
  run: { workflowId: string; runId: string };
}

export interface DeploymentRecord {
  model: string;
  version: number;
  sha256: string;
  alias: string;
  strategy: string;
  previousVersion: number | null;
  deployedAt: string;
  run: { workflowId: string; runId: string };
}

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
