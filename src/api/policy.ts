import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import type { Identity } from '../auth/tokens.js';
import { NAME_PATTERN } from '../shared/names.js';
import { forbidden } from './http.js';

/**
 * Who may read and operate which model through the API. Approving and rejecting
 * are not here: they are governed by each run's own approval policy (reviewers,
 * groups, four-eyes), which the workflow's update validator enforces.
 */
export const ADMIN_GROUP = 'admin';
export const MODEL_ACTIONS = ['read', 'operate'] as const;
export type ModelAction = (typeof MODEL_ACTIONS)[number];

const NAME_RULE = 'must be 1-63 characters of a-z, 0-9, "-" or "_", starting with a letter or digit';
const group = z.string().regex(NAME_PATTERN, NAME_RULE);

const rightsSchema = z.strictObject({
  /** Groups that may use the GET routes of the model. */
  read: z.array(group).default([]),
  /** Groups that may start and cancel runs, move aliases, tag and archive versions (implies read). */
  operate: z.array(group).default([]),
});

export const apiPolicySchema = z.strictObject({
  /** Per model name, or "*" for every model without an entry of its own (an entry replaces "*", it does not add to it). */
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
  /** `policy` undefined: development mode, every authenticated identity may read and operate. */
  constructor(private readonly policy: ApiPolicy | undefined) {}

  get mode(): 'policy' | 'open' {
    return this.policy ? 'policy' : 'open';
  }

  isAdmin(caller: Identity): boolean {
    return caller.groups.includes(ADMIN_GROUP);
  }

  can(caller: Identity, action: ModelAction, model: string): boolean {
    if (this.isAdmin(caller)) return true;
    if (!this.policy) return true;
    const rights = Object.hasOwn(this.policy.models, model) ? this.policy.models[model] : this.policy.models['*'];
    if (!rights) return false;
    const allowed = action === 'read' ? [...rights.read, ...rights.operate] : rights.operate;
    return caller.groups.some((g) => allowed.includes(g));
  }

  require(caller: Identity, action: ModelAction, model: string): void {
    if (!this.can(caller, action, model)) throw forbidden(`"${caller.identity}" may not ${action} model "${model}"`);
  }
}
