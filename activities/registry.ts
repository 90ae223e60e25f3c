import { ApplicationFailure, Context } from '@temporalio/activity';
import { ErrorType } from '../src/shared/errors.js';
import type {
  AliasRecord,
  CodeVersion,
  DatasetRef,
  DecisionRecord,
  ModelVersionRecord,
  RunTrigger,
  SplitRef,
} from '../src/shared/registry-types.js';
import type { PipelineSpec } from '../src/spec/schema.js';
import { featureColumns } from '../src/data/features.js';
import { AliasConflictError, VersionArchivedError } from '../src/registry/registry.js';
import type { ActivityDeps } from './deps.js';
import { activityLogger } from './context.js';
import { classified } from './errors.js';
import type { ValidationSummary } from './data.js';
import type { TrainedModel } from './training.js';
import type { EvaluationReport } from './evaluation.js';

export interface RegisterInput {
  model: string;
  spec: PipelineSpec;
  dataset: DatasetRef;
  validation: ValidationSummary;
  split: SplitRef;
  artifact: TrainedModel;
  evaluation: EvaluationReport;
  code: CodeVersion;
  run: { workflowId: string; runId: string; submittedBy: string; trigger?: RunTrigger };
}

export interface DecisionInput {
  model: string;
  version: number;
  sha256: string;
  decision: DecisionRecord['decision'];
  by: string[];
  comment: string | null;
  run: { workflowId: string; runId: string };
}

export interface PromoteInput {
  model: string;
  alias: string;
  version: number;
  expectedVersion: number | null;
  strategy: string;
  /** Set when a rollout (canary, shadow, A/B) makes the move. */
  rolloutId?: string;
  run: { workflowId: string; runId: string };
}

export type PromoteResult = { ok: true; previousVersion: number | null } | { ok: false; current: AliasRecord | null };

export function registryActivities(deps: ActivityDeps) {
  return {
    async getAlias(input: { model: string; alias: string }): Promise<AliasRecord | null> {
      return classified(() => deps.registry.getAlias(input.model, input.alias));
    },

    /** Writes the immutable version record; every artifact it names already exists. */
    async registerVersion(input: RegisterInput): Promise<ModelVersionRecord> {
      const log = activityLogger(deps.logger);
      return classified(async () => {
        for (const key of [input.artifact.key, input.artifact.metadataKey, input.dataset.key, input.validation.profileKey, input.split.trainKey, input.split.holdoutKey, input.evaluation.reportKey]) {
          if (!(await deps.store.head(key))) throw new Error(`artifact ${key} is missing; refusing to register a version that points at it`);
        }
        const { spec } = input;
        const { params, entry, codeHashes, ...artifact } = input.artifact;
        const signal = Context.current().cancellationSignal;
        const record = await deps.registry.registerVersion({
          schemaVersion: 1,
          model: input.model,
          task: spec.target.task,
          target: spec.target.column,
          features: featureColumns(spec),
          artifact,
          data: { ...input.dataset, profileKey: input.validation.profileKey, rowCount: input.validation.rowCount, split: input.split },
          trainer: { kind: spec.trainer.kind, entry, params, codeHashes },
          code: input.code,
          evaluation: {
            reportKey: input.evaluation.reportKey,
            metrics: input.evaluation.metrics,
            gates: input.evaluation.gates,
            production: input.evaluation.production
              ? { version: input.evaluation.production.version, metrics: input.evaluation.production.metrics }
              : null,
            ...(input.evaluation.predictionReferenceKey ? { predictionReferenceKey: input.evaluation.predictionReferenceKey } : {}),
          },
          run: input.run,
          ...(spec.description ? { description: spec.description } : {}),
        }, { stillValid: () => !signal.aborted });
        log.info({ model: record.model, version: record.version, sha256: record.artifact.sha256 }, 'version registered');
        return record;
      });
    },

    async recordDecision(input: DecisionInput): Promise<DecisionRecord> {
      return classified(() => deps.registry.recordDecision({ ...input, decidedAt: new Date().toISOString() }));
    },

    /** Compare-and-swap of the alias; a lost race is reported, not thrown, so the workflow can re-check gates. */
    async promoteVersion(input: PromoteInput): Promise<PromoteResult> {
      const log = activityLogger(deps.logger);
      return classified(async () => {
        let moved: AliasRecord;
        try {
          moved = await deps.registry.moveAlias({
            model: input.model,
            alias: input.alias,
            version: input.version,
            expectedVersion: input.expectedVersion,
            run: input.run,
            strategy: input.strategy,
            ...(input.rolloutId ? { rolloutId: input.rolloutId } : {}),
          });
        } catch (err) {
          if (err instanceof VersionArchivedError) {
            throw ApplicationFailure.create({ type: ErrorType.GateFailed, nonRetryable: true, message: err.message });
          }
          if (err instanceof AliasConflictError) {
            log.warn({ err: err.message }, 'alias moved concurrently');
            return { ok: false, current: await deps.registry.getAlias(input.model, input.alias) };
          }
          throw err;
        }
        log.info({ alias: input.alias, version: input.version, previous: moved.previousVersion }, 'alias moved');
        return { ok: true, previousVersion: moved.previousVersion };
      });
    },
  };
}
