import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import type { Identity } from '../auth/tokens.js';
import { ALIASES } from '../shared/constants.js';
import { NAME_PATTERN } from '../shared/names.js';
import type { PipelineSpec } from '../spec/schema.js';
import { forbidden } from './http.js';

/**
 * Who may read, operate and decide which model through the API, and what a run that
 * deploys to production must ask for. Deciding is governed twice: by this policy
 * (`approve`: who may decide runs of the model through the API at all) and by each
 * run's own approval policy (reviewers, groups, quorum, four-eyes), which the
 * workflow's update validator enforces. The `production` rule keeps a submitter from
 * choosing that approval policy for a run that moves production.
 */
export const ADMIN_GROUP = 'admin';
export type ModelAction = 'read' | 'operate';

export const NAME_RULE = 'must be 1-63 characters of a-z, 0-9, "-" or "_", starting with a letter or digit';
const group = z.string().regex(NAME_PATTERN, NAME_RULE);

const productionRuleSchema = z.strictObject({
  /** Least quorum a production run's manual approval may ask for (default 1). */
  minQuorum: z.number().int().min(1).max(20).optional(),
  /**
   * When set, a production run's approval `groups` (and escalation groups) must all be
   * among these, and it may name no individual reviewers: the submitter cannot pick
   * their own team.
   */
  approverGroups: z.array(group).min(1, 'must name at least one group (omit it to allow any)').optional(),
});

const rightsSchema = z.strictObject({
  /** Groups that may use the GET routes of the model. */
  read: z.array(group).default([]),
  /** Groups that may start and cancel runs, move aliases, tag and archive versions (implies read). */
  operate: z.array(group).default([]),
  /**
   * Groups that may approve or reject runs of the model through the API (they need read
   * too). Omitted: whoever the run's approval policy names; [] : admins only. Either way
   * the run's own approval policy must also allow the decision.
   */
  approve: z.array(group).optional(),
  /** Set: POST /v1/runs deploying to the production alias must ask for an independent manual approval. Admins are not exempt. */
  production: productionRuleSchema.optional(),
});

export type ModelRights = z.output<typeof rightsSchema>;
export type ProductionRule = z.output<typeof productionRuleSchema>;

export const apiPolicySchema = z.strictObject({
  /** Per model name, or "*" for every model without an entry of its own (an entry replaces "*" as a whole, it does not add to it). */
  models: z.record(z.union([z.literal('*'), z.string().regex(NAME_PATTERN, `model names ${NAME_RULE} (or "*")`)]), rightsSchema),
});

export type ApiPolicy = z.output<typeof apiPolicySchema>;

export class ApiPolicyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ApiPolicyError';
  }
}

/** Validates a policy document; errors name every offending field. */
export function parseApiPolicy(raw: unknown, source = 'API policy'): ApiPolicy {
  const parsed = apiPolicySchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(policy)'}: ${i.message}`);
    throw new ApiPolicyError(`invalid ${source}:\n${issues.join('\n')}`);
  }
  return parsed.data;
}

export function loadApiPolicy(file: string): ApiPolicy {
  if (!existsSync(file)) throw new ApiPolicyError(`API policy file not found: ${file}`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    throw new ApiPolicyError(`invalid API policy ${file}: not valid JSON`);
  }
  return parseApiPolicy(raw, `API policy ${file}`);
}

export class Authorizer {
  /** `policy` undefined: development mode, every authenticated identity may read, operate and decide. */
  constructor(private readonly policy: ApiPolicy | undefined) {}

  get mode(): 'policy' | 'open' {
    return this.policy ? 'policy' : 'open';
  }

  isAdmin(caller: Identity): boolean {
    return caller.groups.includes(ADMIN_GROUP);
  }

  /** The model's entry, else "*"; undefined: the model is closed (or there is no policy). */
  private rights(model: string): ModelRights | undefined {
    if (!this.policy) return undefined;
    return Object.hasOwn(this.policy.models, model) ? this.policy.models[model] : this.policy.models['*'];
  }

  can(caller: Identity, action: ModelAction, model: string): boolean {
    if (this.isAdmin(caller)) return true;
    if (!this.policy) return true;
    const rights = this.rights(model);
    if (!rights) return false;
    const allowed = action === 'read' ? [...rights.read, ...rights.operate] : rights.operate;
    return caller.groups.some((g) => allowed.includes(g));
  }

  require(caller: Identity, action: ModelAction, model: string): void {
    if (!this.can(caller, action, model)) throw forbidden(`"${caller.identity}" may not ${action} model "${model}"`);
  }

  /** Whether the API lets `caller` approve or reject runs of `model`: read, and (when the policy has `approve`) one of those groups. */
  canDecide(caller: Identity, model: string): boolean {
    if (!this.can(caller, 'read', model)) return false;
    if (this.isAdmin(caller) || !this.policy) return true;
    const approve = this.rights(model)?.approve;
    return approve === undefined || caller.groups.some((g) => approve.includes(g));
  }

  /** 403 unless `canDecide`; without read the refusal says nothing about the model beyond its name. */
  requireDecide(caller: Identity, model: string): void {
    this.require(caller, 'read', model);
    if (!this.canDecide(caller, model)) {
      throw forbidden(`"${caller.identity}" may not decide runs of model "${model}" (API policy: not in its approve groups)`);
    }
  }

  /** What keeps `spec` from being started under the model's production rule (empty: nothing). Admins are not exempt. */
  productionRuleProblems(spec: PipelineSpec): string[] {
    const rule = this.rights(spec.name)?.production;
    if (!rule || spec.deployment.alias !== ALIASES.production) return [];
    const approval = spec.approval;
    if (approval.mode !== 'manual') return [`approval.mode must be "manual" (got "${approval.mode}")`];
    const problems: string[] = [];
    const minQuorum = rule.minQuorum ?? 1;
    if (approval.quorum < minQuorum) problems.push(`approval.quorum must be at least ${minQuorum} (got ${approval.quorum})`);
    if (rule.approverGroups) {
      const allowed = rule.approverGroups;
      const outside = (groups: readonly string[]) => groups.filter((g) => !allowed.includes(g));
      const list = (names: readonly string[]) => names.map((n) => `"${n}"`).join(', ');
      if (approval.reviewers.length) problems.push('approval.reviewers must be empty (production is approved by the policy\'s approver groups)');
      if (outside(approval.groups).length) problems.push(`approval.groups may only name ${list(allowed)} (not ${list(outside(approval.groups))})`);
      const escalation = approval.escalation;
      if (escalation?.reviewers.length) problems.push('approval.escalation.reviewers must be empty');
      if (escalation && outside(escalation.groups).length) {
        problems.push(`approval.escalation.groups may only name ${list(allowed)} (not ${list(outside(escalation.groups))})`);
      }
    }
    return problems;
  }

  /** 403 naming the rule unless `spec` satisfies the production rule of its model. */
  requireProductionRule(spec: PipelineSpec): void {
    const problems = this.productionRuleProblems(spec);
    if (problems.length) {
      throw forbidden(`API policy "production" rule of model "${spec.name}": a run deploying to "${ALIASES.production}" needs an independent manual approval: ${problems.join('; ')}`);
    }
  }
}
