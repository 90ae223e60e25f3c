import { z } from 'zod';
import { MAX_DESCRIPTION_LENGTH, MAX_REASON_LENGTH, MAX_TAGS, MAX_TAG_VALUE_LENGTH, TAG_KEY_PATTERN } from '../registry/version-meta.js';
import { NAME_PATTERN } from '../shared/names.js';
import { pipelineSpecSchema } from '../spec/schema.js';
import { checkWorkflowId } from '../store/keys.js';
import { NAME_RULE } from './policy.js';

/**
 * Every request and response shape of the API, once: the routes validate with these
 * and the OpenAPI document is generated from them.
 */

const SHA256_HEX = /^[0-9a-f]{64}$/;
// C0/C1 control characters, except \t and \n in free text.
const CONTROL_EXCEPT_NEWLINE_TAB = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

function isWorkflowId(value: string): boolean {
  try {
    checkWorkflowId(value);
    return true;
  } catch {
    return false;
  }
}

const freeText = (max: number) =>
  z
    .string()
    .max(max)
    .refine((s) => !CONTROL_EXCEPT_NEWLINE_TAB.test(s), 'must not contain control characters');

// ---------------------------------------------------------------- parameters

export const modelName = z.string().regex(NAME_PATTERN, NAME_RULE).meta({ description: 'Model name.', examples: ['credit-risk'] });
export const aliasName = z.string().regex(NAME_PATTERN, NAME_RULE).meta({ description: 'Alias name, e.g. production or staging.', examples: ['staging'] });
export const workflowId = z
  .string()
  .min(1)
  .max(200)
  .refine(isWorkflowId, 'must be 1-200 characters of A-Z, a-z, 0-9, "_", ".", ":" or "-", starting with a letter or digit, without ".."')
  .meta({ description: 'Temporal workflow id of a pipeline run.', examples: ['pipeline-credit-risk-20250101T000000Z-0a1b2c3d'] });
const versionNumber = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
export const versionParam = z
  .string()
  .regex(/^[1-9][0-9]{0,14}$/, 'must be a positive integer version number')
  .meta({ description: 'Model version number.', examples: ['1'] })
  .transform(Number);
export const sha256 = z.string().regex(SHA256_HEX, 'must be the 64 lowercase hex characters of a sha256');

export const modelParams = z.strictObject({ model: modelName });
export const versionParams = z.strictObject({ model: modelName, version: versionParam });
export const aliasParams = z.strictObject({ model: modelName, alias: aliasName });
export const runParams = z.strictObject({ workflowId });

export const historyQuery = z.strictObject({
  at: z.iso.datetime({ offset: true }).optional().meta({ description: 'ISO-8601 time: also report which version was behind the alias then.' }),
  alias: aliasName.optional().meta({ description: 'Alias whose history to show (default production).' }),
});

// ---------------------------------------------------------------- request bodies

export const codeProvenanceBody = z
  .strictObject({
    gitCommit: z.string().regex(/^[0-9a-f]{40}$/, 'must be a 40-character lowercase hex commit id').nullable().optional(),
    gitDirty: z.boolean().optional(),
    pipelineFile: freeText(500).nullable().optional(),
  })
  .meta({ description: 'Where the spec came from, as stated by the (authenticated) submitter; recorded in the version\'s lineage. Default: unknown.' });

export const startRunBody = z.strictObject({
  spec: z.record(z.string(), z.unknown()).meta({ description: 'A pipeline spec (JSON form of definePipeline).' }),
  workflowId: workflowId
    .optional()
    .meta({
      description: 'Workflow id for the run; must start with `pipeline-<model>-` (the spec\'s name). Default: `pipeline-<model>-<time>-<random>`.',
      examples: ['pipeline-credit-risk-nightly-2025-01-01'],
    }),
  code: codeProvenanceBody.optional(),
});
/** What the OpenAPI document shows for POST /v1/runs: the spec's own schema, generated from the spec validator. */
export const startRunBodyDoc = startRunBody.extend({ spec: pipelineSpecSchema });

export const decisionBody = z.strictObject({
  comment: freeText(2000).optional().meta({ description: 'Required to reject.' }),
  sha256: sha256.optional().meta({ description: 'Binds the decision to this artifact: refused unless it is the candidate\'s. Default: the candidate\'s hash.' }),
});

export const moveAliasBody = z.strictObject({
  version: versionNumber.meta({ description: 'Version the alias should point at.' }),
  expectedVersion: versionNumber.nullable().meta({ description: 'Version the alias points at now (null: not set). The move is refused with 409 if it points elsewhere.' }),
});

const tagKey = z.string().regex(TAG_KEY_PATTERN, 'tag keys are 1-63 characters of A-Z, a-z, 0-9, "_", ".", ":" or "-", starting with a letter or digit');
export const patchVersionBody = z
  .strictObject({
    tags: z
      .record(tagKey, freeText(MAX_TAG_VALUE_LENGTH).refine((s) => !/[\n\t]/.test(s), 'must be one line'))
      .refine((t) => Object.keys(t).length <= MAX_TAGS, `at most ${MAX_TAGS} tags`)
      .optional()
      .meta({ description: 'Tags to add or replace; other tags are kept.' }),
    removeTags: z.array(tagKey).max(MAX_TAGS).optional(),
    description: freeText(MAX_DESCRIPTION_LENGTH).nullable().optional().meta({ description: 'Free-text note; null or "" clears it.' }),
    archived: z.boolean().optional().meta({ description: 'Archive (needs archiveReason) or unarchive. The production version cannot be archived (409).' }),
    archiveReason: freeText(MAX_REASON_LENGTH).optional(),
  })
  .superRefine((b, ctx) => {
    if (Object.values(b).every((v) => v === undefined)) ctx.addIssue({ code: 'custom', path: [], message: 'nothing to change' });
    if (b.archived === true && !b.archiveReason?.trim()) ctx.addIssue({ code: 'custom', path: ['archiveReason'], message: 'archiving needs a reason' });
    if (b.archiveReason !== undefined && b.archived !== true) ctx.addIssue({ code: 'custom', path: ['archiveReason'], message: 'only with "archived": true' });
    for (const [i, k] of (b.removeTags ?? []).entries()) {
      if (b.tags && Object.hasOwn(b.tags, k)) ctx.addIssue({ code: 'custom', path: ['removeTags', i], message: `"${k}" is also set in tags` });
    }
  });

// ---------------------------------------------------------------- responses

const metrics = z.record(z.string(), z.number().nullable());
const runRef = z.object({ workflowId: z.string(), runId: z.string() });

export const errorResponse = z
  .looseObject({
    error: z.string(),
    issues: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
  })
  .meta({ description: 'What went wrong; 400s name the offending field.' });

export const healthResponse = z.object({ status: z.literal('ok') });

export const whoamiResponse = z.object({
  identity: z.string(),
  groups: z.array(z.string()),
  admin: z.boolean(),
  authorization: z.enum(['policy', 'open']).meta({ description: '"open": no policy file, every identity may read and operate.' }),
});

export const runStartedResponse = z.object({ workflowId: z.string(), runId: z.string(), model: z.string() });

export const gateResult = z.object({
  gate: z.string(),
  metric: z.string(),
  actual: z.number().nullable(),
  threshold: z.number(),
  passed: z.boolean(),
  reason: z.string().optional(),
});

export const runStateResponse = z.object({
  workflowId: z.string(),
  runId: z.string(),
  model: z.string(),
  temporalStatus: z.string(),
  startedAt: z.string(),
  closedAt: z.string().nullable(),
  outcome: z.string(),
  message: z.string().optional(),
  result: z.looseObject({}).nullable().meta({ description: 'The run\'s result (PipelineResult) once it deployed or registered.' }),
  status: z.looseObject({}).nullable().meta({ description: 'The run\'s status query (PipelineStatus): stages, metrics, gates, awaitingApproval. Null when no worker answered.' }),
  statusError: z.string().optional(),
});

export const cancelResponse = z.object({ workflowId: z.string(), runId: z.string(), cancelRequested: z.literal(true) });

export const metricComparison = z.object({
  metric: z.string(),
  candidate: z.number().nullable(),
  production: z.number().nullable(),
  delta: z.number().nullable().meta({ description: 'candidate − production' }),
});

export const approvalItem = z.object({
  workflowId: z.string(),
  runId: z.string(),
  model: z.string(),
  version: z.number(),
  sha256: z.string(),
  submittedBy: z.string(),
  deadline: z.string(),
  reviewers: z.array(z.string()),
  groups: z.array(z.string()),
  quorum: z.number(),
  approvals: z.array(z.object({ reviewer: z.string(), at: z.string(), comment: z.string().nullable() })),
  escalated: z.boolean(),
  dataVersion: z.string().nullable().meta({ description: 'sha256 of the dataset the candidate was trained and evaluated on.' }),
  metrics: z.object({
    candidate: metrics,
    production: z.object({ version: z.number(), metrics }).nullable().meta({ description: 'The production model, evaluated on the same holdout split.' }),
  }),
  comparison: z.array(metricComparison),
  gates: z.array(gateResult),
});

export const approvalsResponse = z.object({
  approvals: z.array(approvalItem),
  unavailable: z
    .array(z.object({ workflowId: z.string(), error: z.string() }))
    .meta({ description: 'Running pipeline runs of models the caller may read whose status could not be queried (no worker?); they may await the caller too.' }),
});

export const decisionResponse = z.object({
  decision: z.enum(['approved', 'rejected', 'approval_recorded']).meta({ description: '"approval_recorded": counted toward the quorum, not reached yet.' }),
  model: z.string(),
  version: z.number(),
  reviewer: z.string(),
  decidedAt: z.string(),
  approvals: z.number().optional(),
  quorum: z.number().optional(),
  workflowId: z.string(),
  runId: z.string(),
});

export const aliasRecord = z.object({
  model: z.string(),
  alias: z.string(),
  seq: z.number(),
  version: z.number(),
  sha256: z.string(),
  strategy: z.string(),
  updatedAt: z.string(),
  deployedAt: z.string(),
  previousVersion: z.number().nullable(),
  run: runRef,
  rolloutId: z.string().optional(),
  by: z.string().optional(),
  reason: z.string().optional(),
});

export const modelsResponse = z.object({
  models: z.array(z.object({ model: z.string(), versions: z.number(), latest: z.number().nullable(), production: z.number().nullable() })),
});

export const modelResponse = z.object({
  model: z.string(),
  versions: z.array(
    z.object({
      version: z.number(),
      createdAt: z.string(),
      sha256: z.string(),
      metrics,
      submittedBy: z.string(),
      archived: z.boolean(),
      tags: z.record(z.string(), z.string()),
    }),
  ),
  aliases: z.record(z.string(), aliasRecord).meta({ description: 'Where each alias points now.' }),
  deployments: z.array(aliasRecord).meta({ description: 'Every alias move, oldest first.' }),
});

export const versionMeta = z.object({
  schemaVersion: z.literal(1),
  model: z.string(),
  version: z.number(),
  tags: z.record(z.string(), z.string()),
  description: z.string().nullable(),
  archived: z.boolean(),
  archivedBy: z.string().nullable(),
  archivedAt: z.string().nullable(),
  archiveReason: z.string().nullable(),
  updatedAt: z.string().nullable(),
  history: z.array(z.looseObject({ action: z.string(), at: z.string(), by: z.string() })),
});

export const decisionRecord = z.object({
  model: z.string(),
  version: z.number(),
  sha256: z.string(),
  decision: z.enum(['approved', 'rejected', 'expired', 'auto']),
  by: z.array(z.string()),
  comment: z.string().nullable(),
  decidedAt: z.string(),
  run: runRef,
});

export const versionRecord = z
  .looseObject({
    schemaVersion: z.literal(1),
    model: z.string(),
    version: z.number(),
    createdAt: z.string(),
    task: z.enum(['classification', 'regression']),
    target: z.string(),
    features: z.array(z.string()),
    artifact: z.looseObject({ sha256: z.string(), key: z.string(), size: z.number() }),
    data: z.looseObject({ sha256: z.string(), source: z.string(), rowCount: z.number() }),
    evaluation: z.looseObject({ metrics, gates: z.array(gateResult), production: z.object({ version: z.number(), metrics }).nullable() }),
    run: z.object({ workflowId: z.string(), runId: z.string(), submittedBy: z.string() }),
  })
  .meta({ description: 'The immutable version record (ModelVersionRecord).' });

export const versionResponse = z.object({ record: versionRecord, meta: versionMeta, decision: decisionRecord.nullable() });

export const lineageResponse = z
  .looseObject({
    schemaVersion: z.literal(1),
    model: z.string(),
    version: z.number(),
    dataset: z.looseObject({ sha256: z.string(), source: z.string(), rowCount: z.number(), profile: z.looseObject({}).nullable() }),
    split: z.looseObject({ seed: z.number(), holdoutFraction: z.number() }),
    run: z.looseObject({ workflowId: z.string(), runId: z.string(), submittedBy: z.string(), specHash: z.string() }),
    trainer: z.looseObject({ kind: z.string(), entry: z.string() }),
    evaluation: z.looseObject({ metrics, gates: z.array(gateResult), passed: z.boolean() }),
    decision: z.looseObject({ decision: z.string(), by: z.array(z.string()) }).nullable(),
    deployments: z.array(z.looseObject({ alias: z.string(), deployedAt: z.string() })),
    inProduction: z.boolean(),
    warnings: z.array(z.string()),
  })
  .meta({ description: 'Provenance chain dataset → split → run → trainer → evaluation → decision → deployments (Lineage).' });

export const modelCardResponse = z
  .looseObject({
    schemaVersion: z.literal(1),
    model: z.string(),
    version: z.number(),
    evaluation: z.looseObject({ metrics, reportAvailable: z.boolean() }),
    gates: z.array(gateResult),
    gatesPassed: z.boolean(),
    inProduction: z.boolean(),
  })
  .meta({ description: 'Model card (ModelCardJson); the same card as Markdown at card.md.' });

export const historyResponse = z.object({
  model: z.string(),
  alias: z.string(),
  timeline: z.array(
    z.object({
      version: z.number(),
      sha256: z.string(),
      from: z.string(),
      to: z.string().nullable(),
      deployedBy: runRef,
      previousVersion: z.number().nullable(),
      strategy: z.string(),
    }),
  ),
  metrics: z.array(z.object({ version: z.number(), createdAt: z.string(), metrics })),
  at: z.object({ time: z.string(), version: z.number().nullable() }).optional(),
});
