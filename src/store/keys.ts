import { isValidName } from '../shared/names.js';

/** Refused names and keys: never reach the store, whatever their encoding. */
export class InvalidNameError extends Error {
  constructor(what: string, value: string) {
    super(`invalid ${what} "${value}": use 1-63 characters of a-z, 0-9, "-" or "_", starting with a letter or digit`);
    this.name = 'InvalidNameError';
  }
}

export function checkName(what: string, value: string): string {
  if (!isValidName(value)) throw new InvalidNameError(what, value);
  return value;
}

const WORKFLOW_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$/;
export function checkWorkflowId(value: string): string {
  if (!WORKFLOW_ID.test(value) || value.includes('..')) throw new InvalidNameError('workflow id', value);
  return value;
}

const HEX64 = /^[0-9a-f]{64}$/;
export function checkSha256(value: string): string {
  if (!HEX64.test(value)) throw new InvalidNameError('sha256', value);
  return value;
}

/** Version numbers are zero-padded so keys sort in version order. */
export function versionSegment(version: number): string {
  if (!Number.isSafeInteger(version) || version < 1) throw new InvalidNameError('version', String(version));
  return String(version).padStart(6, '0');
}

const BATCH_SUFFIX = /^[a-z0-9]{1,32}$/;
/** UTC date, hour and an ISO 8601 basic-format stamp (no ":" in keys) for time-partitioned logs. */
function utcParts(time: Date, suffix: string): { day: string; hour: string; stamp: string } {
  if (!(time instanceof Date) || Number.isNaN(time.getTime())) throw new InvalidNameError('time', String(time));
  if (!BATCH_SUFFIX.test(suffix)) throw new InvalidNameError('batch suffix', suffix);
  const iso = time.toISOString();
  return { day: iso.slice(0, 10), hour: iso.slice(11, 13), stamp: `${iso.replace(/[-:]/g, '')}-${suffix}` };
}

/** Every key Conveyor writes, in one place. */
export const keys = {
  dataset: (sha: string) => `datasets/sha256/${checkSha256(sha)}`,
  datasetInfo: (sha: string) => `datasets/sha256/${checkSha256(sha)}.json`,
  /** A profile depends on the declared schema as well as the bytes. */
  profile: (sha: string, schemaHash: string) => `profiles/${checkSha256(sha)}/${checkSha256(schemaHash)}.json`,
  split: (sha: string, seed: number, fraction: number, layout: string, part: 'train' | 'holdout') =>
    `splits/${checkSha256(sha)}/${layout.replace(/[^a-f0-9]/g, '')}-seed-${Math.trunc(seed)}-holdout-${fraction.toFixed(4)}/${part}.csv`,
  modelBlob: (sha: string) => `models/sha256/${checkSha256(sha)}.onnx`,
  /** Metadata is content-addressed on its own: the same model bytes can come with different metadata. */
  modelMetadata: (sha: string) => `models/metadata/sha256/${checkSha256(sha)}.json`,
  runReport: (model: string, workflowId: string, runId: string, name: string) =>
    `runs/${checkName('model', model)}/${checkWorkflowId(workflowId)}/${checkWorkflowId(runId)}/${checkName('report', name)}.json`,
  versionsPrefix: (model: string) => `registry/${checkName('model', model)}/versions/`,
  version: (model: string, version: number) => `registry/${checkName('model', model)}/versions/${versionSegment(version)}.json`,
  runIndex: (model: string, workflowId: string) => `registry/${checkName('model', model)}/runs/${checkWorkflowId(workflowId)}.json`,
  /** An alias is an append-only log: entry N+1 is created only if absent, so moves are compare-and-swap and every move is kept. */
  aliasPrefix: (model: string, alias: string) => `registry/${checkName('model', model)}/aliases/${checkName('alias', alias)}/`,
  aliasEntry: (model: string, alias: string, seq: number) =>
    `registry/${checkName('model', model)}/aliases/${checkName('alias', alias)}/${versionSegment(seq)}.json`,
  /** Mutable metadata beside an immutable version: tags, description, archived. */
  versionMetaPrefix: (model: string) => `registry/${checkName('model', model)}/meta/`,
  versionMeta: (model: string, version: number) => `registry/${checkName('model', model)}/meta/${versionSegment(version)}.json`,
  aliasesPrefix: (model: string) => `registry/${checkName('model', model)}/aliases/`,
  runClaim: (model: string, workflowId: string) => `registry/${checkName('model', model)}/claims/${checkWorkflowId(workflowId)}.json`,
  decision: (model: string, version: number) => `registry/${checkName('model', model)}/decisions/${versionSegment(version)}.json`,
  modelsPrefix: () => 'registry/',
  /** Traffic split beside the production alias (canary, shadow, A/B): an append-only log like an alias. */
  trafficPrefix: (model: string) => `registry/${checkName('model', model)}/traffic/`,
  trafficEntry: (model: string, seq: number) => `registry/${checkName('model', model)}/traffic/${versionSegment(seq)}.json`,
  rolloutsPrefix: (model: string) => `registry/${checkName('model', model)}/rollouts/`,
  rollout: (model: string, rolloutId: string) => `registry/${checkName('model', model)}/rollouts/${checkWorkflowId(rolloutId)}.json`,
  rolloutReport: (model: string, rolloutId: string, name: string) =>
    `registry/${checkName('model', model)}/rollout-reports/${checkWorkflowId(rolloutId)}/${checkName('report', name)}.json`,
  /** Served predictions, JSON lines, partitioned by UTC day and hour: predictions/<model>/<yyyy-mm-dd>/<hh>/<stamp>-<suffix>.jsonl */
  predictionBatch: (model: string, time: Date, suffix: string) => {
    const { day, hour, stamp } = utcParts(time, suffix);
    return `predictions/${checkName('model', model)}/${day}/${hour}/${stamp}.jsonl`;
  },
  predictionsPrefix: (model: string) => `predictions/${checkName('model', model)}/`,
  /** Ground-truth labels sent back by clients, JSON lines, by UTC day of arrival: feedback/<model>/<yyyy-mm-dd>/<stamp>-<suffix>.jsonl */
  feedbackBatch: (model: string, time: Date, suffix: string) => {
    const { day, stamp } = utcParts(time, suffix);
    return `feedback/${checkName('model', model)}/${day}/${stamp}.jsonl`;
  },
  feedbackPrefix: (model: string) => `feedback/${checkName('model', model)}/`,
  /** One monitor result per model version and window end: monitoring/<model>/<version>/<window end stamp>.json (a time series). */
  monitorResult: (model: string, version: number, windowEnd: Date) => {
    const { stamp } = utcParts(windowEnd, 'w');
    return `monitoring/${checkName('model', model)}/${versionSegment(version)}/${stamp}.json`;
  },
  monitorPrefix: (model: string) => `monitoring/${checkName('model', model)}/`,
  monitorVersionPrefix: (model: string, version: number) => `monitoring/${checkName('model', model)}/${versionSegment(version)}/`,
};
