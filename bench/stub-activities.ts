/**
 * Trivial activities for the pipeline-overhead benchmark: every activity the
 * pipeline workflow can call, each returning a minimal valid value at once (no I/O),
 * so a run measures orchestration only.
 */
import type { PipelineActivities } from '../activities/index.js';

export interface BareActivities {
  noop(i: number): Promise<void>;
}

export const bareActivities: BareActivities = {
  async noop(_i: number): Promise<void> {},
};

const SHA = '0'.repeat(64);

/** An activity the benchmark's pipeline never calls (it deploys directly, without monitoring). */
const unused = (): Promise<never> => Promise.reject(new Error('not used by the benchmark'));

/** Fresh stubs; versions count up per instance so results look like real ones. */
export function stubActivities(): PipelineActivities {
  let nextVersion = 1;
  return {
    async ingestDataset(input) {
      return { sha256: SHA, key: `datasets/${SHA}`, source: input.source, format: 'csv', size: 1 };
    },
    async validateDataset() {
      return { rowCount: 1, profileKey: 'profile', reportKey: 'report' };
    },
    async splitDataset(input) {
      return { seed: input.spec.split.seed, holdoutFraction: input.spec.split.holdoutFraction, trainKey: 'train', holdoutKey: 'holdout', trainRows: 1, holdoutRows: 1 };
    },
    async trainModel() {
      return { sha256: SHA, key: 'model', size: 1, metadataKey: 'metadata', framework: 'stub', algorithm: 'stub', params: {}, entry: 'stub', codeHashes: {} };
    },
    async getAlias() {
      return null;
    },
    async evaluateModel() {
      return { reportKey: 'evaluation', metrics: {}, gates: [], passed: true, production: null, holdoutRows: 1 };
    },
    async registerVersion(input) {
      const { params, entry, codeHashes, ...artifact } = input.artifact;
      return {
        schemaVersion: 1,
        model: input.model,
        version: nextVersion++,
        createdAt: new Date().toISOString(),
        task: input.spec.target.task,
        target: input.spec.target.column,
        features: [],
        artifact,
        data: { ...input.dataset, profileKey: input.validation.profileKey, rowCount: input.validation.rowCount, split: input.split },
        trainer: { kind: input.spec.trainer.kind, entry, params, codeHashes },
        code: input.code,
        evaluation: { reportKey: input.evaluation.reportKey, metrics: {}, gates: [], production: null },
        run: input.run,
      };
    },
    async recordDecision(input) {
      return { ...input, decidedAt: new Date().toISOString() };
    },
    async promoteVersion() {
      return { ok: true, previousVersion: null };
    },
    async validateDeployment(input) {
      return { model: input.model, version: input.version, sha256: SHA, rows: 1, maxAbsDiff: 0, latencyP50Ms: 0, latencyP95Ms: 0, passed: true, problems: [], reportKey: 'validation' };
    },
    // The example deploys directly: the rollout activities below are never called by the benchmark.
    setTraffic: unused,
    clearTraffic: unused,
    analyzeRollout: unused,
    restoreAlias: unused,
    recordRollout: unused,
    // The example spec has no monitoring or schedule: no monitor runs, and the schedules that
    // follow each deployment are none (nothing to create; the real activity removes stale ones).
    runMonitor: unused,
    requestRetraining: unused,
    async ensureSchedules() {
      return [];
    },
    // Only called for specs with webhooks; the example has none.
    async sendNotification() {
      return { status: 200 };
    },
  };
}
