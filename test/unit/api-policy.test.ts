import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { API_ROUTES, apiOpenApiDocument, Authorizer, loadApiPolicy, parseApiPolicy } from '../../src/api/index.js';
import { apiPathIssues, checkApiWorkflowId } from '../../src/api/pipeline-runs.js';
import { ApiError } from '../../src/api/http.js';
import { parsePipelineSpec } from '../../src/spec/define.js';
import type { PipelineSpec, PipelineSpecInput } from '../../src/spec/schema.js';

const who = (identity: string, ...groups: string[]) => ({ identity, groups });

describe('API policy', () => {
  const policy = parseApiPolicy({
    models: {
      '*': { read: ['analysts'], operate: ['ml-eng'] },
      'credit-risk': { read: ['risk-reviewers'], operate: ['risk-eng'] },
    },
  });
  const authz = new Authorizer(policy);

  it('a model entry replaces "*"; operate implies read; admin may do everything', () => {
    expect(authz.can(who('a', 'analysts'), 'read', 'churn')).toBe(true);
    expect(authz.can(who('a', 'analysts'), 'operate', 'churn')).toBe(false);
    expect(authz.can(who('a', 'analysts'), 'read', 'credit-risk')).toBe(false);
    expect(authz.can(who('m', 'ml-eng'), 'read', 'churn')).toBe(true);
    expect(authz.can(who('m', 'ml-eng'), 'operate', 'credit-risk')).toBe(false);
    expect(authz.can(who('r', 'risk-eng'), 'read', 'credit-risk')).toBe(true);
    expect(authz.can(who('root', 'admin'), 'operate', 'credit-risk')).toBe(true);
    expect(authz.can(who('nobody'), 'read', 'churn')).toBe(false);
    expect(() => authz.require(who('nobody'), 'read', 'churn')).toThrow(/"nobody" may not read model "churn"/);
  });

  it('without a policy (development) every identity may read and operate', () => {
    const open = new Authorizer(undefined);
    expect(open.mode).toBe('open');
    expect(open.can(who('x'), 'operate', 'anything')).toBe(true);
  });

  it('without a "*" entry, unlisted models are closed; "__proto__" is not a model', () => {
    const closed = new Authorizer(parseApiPolicy({ models: { churn: { read: ['a'] } } }));
    expect(closed.can(who('x', 'a'), 'read', 'churn')).toBe(true);
    expect(closed.can(who('x', 'a'), 'read', 'other')).toBe(false);
    expect(closed.can(who('x', 'a'), 'read', 'constructor')).toBe(false);
    expect(() => parseApiPolicy({ models: { __proto__x: { read: [] } } })).toThrow(/models/);
  });

  it('invalid policies are refused with the offending field named', () => {
    expect(() => parseApiPolicy({ models: { 'Bad Name': { read: [] } } })).toThrow(/models/);
    expect(() => parseApiPolicy({ models: { churn: { read: ['UPPER'] } } })).toThrow(/models\.churn\.read\.0/);
    expect(() => parseApiPolicy({ models: { churn: { write: ['a'] } } })).toThrow(/write/);
    expect(() => parseApiPolicy({ model: {} })).toThrow(/model/);
    const dir = mkdtempSync(join(tmpdir(), 'api-policy-'));
    writeFileSync(join(dir, 'bad.json'), '{"models": ');
    expect(() => loadApiPolicy(join(dir, 'bad.json'))).toThrow(/not valid JSON/);
    expect(() => loadApiPolicy(join(dir, 'missing.json'))).toThrow(/not found/);
    writeFileSync(join(dir, 'ok.json'), JSON.stringify({ models: { '*': { read: ['a'] } } }));
    expect(loadApiPolicy(join(dir, 'ok.json')).models['*']).toEqual({ read: ['a'], operate: [] });
  });

  it('refuses invalid approve groups and production rules, naming the field', () => {
    expect(() => parseApiPolicy({ models: { churn: { approve: ['Bad'] } } })).toThrow(/models\.churn\.approve\.0/);
    expect(() => parseApiPolicy({ models: { churn: { approve: 'reviewers' } } })).toThrow(/models\.churn\.approve/);
    expect(() => parseApiPolicy({ models: { churn: { production: { minQuorum: 0 } } } })).toThrow(/models\.churn\.production\.minQuorum/);
    expect(() => parseApiPolicy({ models: { churn: { production: { minQuorum: 1.5 } } } })).toThrow(/production\.minQuorum/);
    expect(() => parseApiPolicy({ models: { churn: { production: { approverGroups: [] } } } })).toThrow(/production\.approverGroups: must name at least one group/);
    expect(() => parseApiPolicy({ models: { churn: { production: { approvers: ['a'] } } } })).toThrow(/approvers/);
    expect(() => parseApiPolicy({ models: { churn: { production: true } } })).toThrow(/models\.churn\.production/);
    const full = parseApiPolicy({ models: { '*': { read: ['a'], approve: ['r'], production: { minQuorum: 2, approverGroups: ['r'] } }, churn: { production: {} } } });
    expect(full.models['*']).toEqual({ read: ['a'], operate: [], approve: ['r'], production: { minQuorum: 2, approverGroups: ['r'] } });
    expect(full.models.churn).toEqual({ read: [], operate: [], production: {} });
  });
});

describe('API policy: who may decide through the API', () => {
  const authz = new Authorizer(
    parseApiPolicy({
      models: {
        '*': { read: ['analysts'], operate: ['ml-eng'] },
        'credit-risk': { read: ['analysts', 'risk-reviewers'], operate: ['risk-eng'], approve: ['risk-reviewers'] },
        locked: { read: ['analysts'], approve: [] },
        'approvers-only': { approve: ['risk-reviewers'] },
      },
    }),
  );

  it('per-model approve groups: members (with read) may decide, other readers may not', () => {
    expect(authz.canDecide(who('bob', 'risk-reviewers'), 'credit-risk')).toBe(true);
    expect(authz.canDecide(who('dave', 'analysts'), 'credit-risk')).toBe(false);
    // operate does not imply deciding when the model has approve groups
    expect(authz.canDecide(who('r', 'risk-eng'), 'credit-risk')).toBe(false);
    expect(() => authz.requireDecide(who('dave', 'analysts'), 'credit-risk')).toThrow(/"dave" may not decide runs of model "credit-risk" \(API policy: not in its approve groups\)/);
    expect(() => authz.requireDecide(who('bob', 'risk-reviewers'), 'credit-risk')).not.toThrow();
  });

  it('without approve, every reader may decide (the run\'s own policy still applies); without read, nobody', () => {
    expect(authz.canDecide(who('dave', 'analysts'), 'churn')).toBe(true);
    expect(authz.canDecide(who('m', 'ml-eng'), 'churn')).toBe(true);
    expect(authz.canDecide(who('eve', 'marketing'), 'churn')).toBe(false);
    // read is checked first, and its refusal says nothing but the model name
    expect(() => authz.requireDecide(who('eve', 'marketing'), 'credit-risk')).toThrow(/^"eve" may not read model "credit-risk"$/);
    // approve groups do not grant read
    expect(authz.canDecide(who('bob', 'risk-reviewers'), 'approvers-only')).toBe(false);
  });

  it('approve: [] leaves deciding to admins; admins and the open mode may always decide', () => {
    expect(authz.canDecide(who('dave', 'analysts'), 'locked')).toBe(false);
    expect(authz.canDecide(who('root', 'admin'), 'locked')).toBe(true);
    expect(authz.canDecide(who('root', 'admin'), 'credit-risk')).toBe(true);
    expect(new Authorizer(undefined).canDecide(who('x'), 'credit-risk')).toBe(true);
  });
});

describe('API policy: production rule', () => {
  const base: PipelineSpecInput = {
    name: 'credit-risk',
    dataset: { source: '/data/m.csv' },
    target: { column: 'y', task: 'classification' },
    schema: { columns: { x: { type: 'float' }, y: { type: 'integer' } } },
    trainer: { kind: 'command', command: ['{python}', '/opt/trainers/train.py'] },
  };
  const spec = (patch: Partial<PipelineSpecInput> = {}): PipelineSpec => parsePipelineSpec({ ...base, ...patch });
  const manual = (approval: Record<string, unknown>, alias = 'production') =>
    spec({ approval: { mode: 'manual', ...approval } as PipelineSpecInput['approval'], deployment: { alias } });
  const authz = new Authorizer(
    parseApiPolicy({
      models: {
        '*': { operate: ['ml-eng'], production: {} },
        'credit-risk': { operate: ['ml-eng'], production: { minQuorum: 2, approverGroups: ['risk-reviewers', 'risk-leads'] } },
        churn: { operate: ['ml-eng'] },
      },
    }),
  );
  const problems = (s: PipelineSpec) => authz.productionRuleProblems(s);

  it('accepts a manual approval by the approver groups with enough quorum, and any run not deploying to production', () => {
    expect(problems(manual({ groups: ['risk-reviewers'], quorum: 2 }))).toEqual([]);
    expect(problems(manual({ groups: ['risk-reviewers', 'risk-leads'], quorum: 3, escalation: { after: '1h', groups: ['risk-leads'] } }))).toEqual([]);
    expect(problems(spec({ deployment: { alias: 'staging' } }))).toEqual([]);
    expect(problems(manual({ reviewers: ['alice'] }, 'shadow'))).toEqual([]);
    // a model without a production rule (its entry replaces "*")
    expect(problems(spec({ name: 'churn' }))).toEqual([]);
    expect(() => authz.requireProductionRule(manual({ groups: ['risk-reviewers'], quorum: 2 }))).not.toThrow();
  });

  it('refuses auto approval (deployment defaults to production), low quorum, own groups and named reviewers', () => {
    expect(spec().deployment.alias).toBe('production');
    expect(problems(spec())).toEqual(['approval.mode must be "manual" (got "auto")']);
    expect(problems(manual({ groups: ['risk-reviewers'], quorum: 1 }))).toEqual(['approval.quorum must be at least 2 (got 1)']);
    expect(problems(manual({ groups: ['ml-eng'], quorum: 2 }))).toEqual(['approval.groups may only name "risk-reviewers", "risk-leads" (not "ml-eng")']);
    expect(problems(manual({ groups: ['risk-reviewers'], reviewers: ['bob', 'carol'], quorum: 2 }))).toEqual([
      'approval.reviewers must be empty (production is approved by the policy\'s approver groups)',
    ]);
    expect(problems(manual({ groups: ['risk-reviewers'], quorum: 2, escalation: { after: '1h', reviewers: ['mallory'], groups: ['ml-eng'] } }))).toEqual([
      'approval.escalation.reviewers must be empty',
      'approval.escalation.groups may only name "risk-reviewers", "risk-leads" (not "ml-eng")',
    ]);
    expect(() => authz.requireProductionRule(spec())).toThrow(ApiError);
    expect(() => authz.requireProductionRule(spec())).toThrow(/API policy "production" rule of model "credit-risk"/);
    try {
      authz.requireProductionRule(spec());
    } catch (err) {
      expect((err as ApiError).status).toBe(403);
    }
  });

  it('"production": {} needs manual approval, by any approvers (admins are not exempt: see the integration test)', () => {
    const other = (patch: Partial<PipelineSpecInput>) => authz.productionRuleProblems(parsePipelineSpec({ ...base, name: 'fraud', ...patch }));
    expect(other({})).toEqual(['approval.mode must be "manual" (got "auto")']);
    expect(other({ approval: { mode: 'manual', reviewers: ['alice'] } })).toEqual([]);
  });

  it('without a policy there is no production rule', () => {
    expect(new Authorizer(undefined).productionRuleProblems(spec())).toEqual([]);
  });
});

describe('workflow ids chosen through the API', () => {
  it('must start with pipeline-<model>- and have something after it', () => {
    expect(() => checkApiWorkflowId('credit-risk', undefined)).not.toThrow();
    expect(() => checkApiWorkflowId('credit-risk', 'pipeline-credit-risk-nightly')).not.toThrow();
    for (const id of ['notify-evt-0', 'pipeline-credit-risk', 'pipeline-credit-risk-', 'pipeline-churn-1', 'Pipeline-credit-risk-1', 'x-pipeline-credit-risk-1']) {
      let caught: unknown;
      try {
        checkApiWorkflowId('credit-risk', id);
      } catch (err) {
        caught = err;
      }
      expect(caught, id).toBeInstanceOf(ApiError);
      expect((caught as ApiError).status).toBe(400);
      expect((caught as ApiError).extra.issues).toEqual([{ field: 'workflowId', message: expect.stringContaining('"pipeline-credit-risk-"') }]);
    }
  });
});

describe('paths in specs submitted through the API', () => {
  const base: PipelineSpecInput = {
    name: 'm',
    dataset: { source: '/data/m.csv' },
    target: { column: 'y', task: 'classification' },
    schema: { columns: { x: { type: 'float' }, y: { type: 'integer' } } },
    trainer: { kind: 'command', command: ['{python}', '/opt/trainers/train.py', '--epochs', '3', '--out=/tmp/o'] },
  };
  const issues = (patch: Partial<PipelineSpecInput>) => apiPathIssues(parsePipelineSpec({ ...base, ...patch })).map((i) => i.field);

  it('accepts absolute paths, s3:// sources, placeholders, interpreter names and plain flags', () => {
    expect(issues({})).toEqual([]);
    expect(issues({ dataset: { source: 's3://bucket/data/m.parquet' } })).toEqual([]);
    expect(issues({ trainer: { kind: 'command', command: ['python3', '-u', '/opt/t.py', '--lr=0.1'] } })).toEqual([]);
  });

  it('refuses relative, dotted, encoded and backslashed paths', () => {
    expect(issues({ dataset: { source: 'data/m.csv' } })).toEqual(['spec.dataset.source']);
    expect(issues({ dataset: { source: '/data/../etc/m.csv' } })).toEqual(['spec.dataset.source']);
    expect(issues({ dataset: { source: '/data/%2e%2e/m.csv' } })).toEqual(['spec.dataset.source']);
    expect(issues({ dataset: { source: 's3://bucket/../m.csv' } })).toEqual(['spec.dataset.source']);
    expect(issues({ dataset: { source: '\\\\server\\share\\m.csv' } })).toEqual(['spec.dataset.source']);
    const command = (...args: string[]) => issues({ trainer: { kind: 'command', command: args } });
    expect(command('{python}', './train.py')).toEqual(['spec.trainer.command.1']);
    expect(command('{python}', 'train.py')).toEqual(['spec.trainer.command.1']);
    expect(command('{python}', 'trainers/train.py')).toEqual(['spec.trainer.command.1']);
    expect(command('{python}', '~/train.py')).toEqual(['spec.trainer.command.1']);
    expect(command('{python}', '/opt/./train.py')).toEqual(['spec.trainer.command.1']);
    expect(command('python', '--script=../t.py')).toEqual(['spec.trainer.command.1']);
    expect(command('C:\\python.exe', '/t.py')).toEqual(['spec.trainer.command.0']);
  });
});

describe('OpenAPI document', () => {
  const doc = apiOpenApiDocument() as {
    openapi: string;
    paths: Record<string, Record<string, { security: unknown[]; parameters: Array<{ name: string; in: string; example?: unknown }>; responses: Record<string, unknown>; requestBody?: unknown }>>;
    components: { schemas: Record<string, unknown> };
  };

  it('documents every route with its auth, parameters (with examples), bodies and responses', () => {
    expect(doc.openapi).toBe('3.1.0');
    const operations = Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => ({ path, method, op })));
    expect(operations).toHaveLength(API_ROUTES.length);
    for (const { path, method, op } of operations) {
      const isPublic = path === '/healthz' || path === '/openapi.json';
      expect(op.security, `${method} ${path}`).toEqual(isPublic ? [] : [{ bearerAuth: [] }]);
      if (!isPublic) expect(Object.keys(op.responses), `${method} ${path}`).toContain('401');
      const names = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      expect(op.parameters.filter((p) => p.in === 'path').map((p) => p.name), `${method} ${path}`).toEqual(names);
      for (const p of op.parameters.filter((x) => x.in === 'path')) expect(p.example, `${p.name} in ${path}`).toBeDefined();
      if (['post', 'put', 'patch'].includes(method) && !path.endsWith('/cancel')) expect(op.requestBody, `${method} ${path}`).toBeDefined();
    }
    // The spec schema is generated from the spec validator, not written twice.
    expect(doc.components.schemas.PipelineSpec).toMatchObject({ type: 'object', required: expect.arrayContaining(['name', 'dataset', 'target', 'schema', 'trainer']) });
    expect(JSON.parse(JSON.stringify(doc))).toEqual(doc);
  });

  it('documents the production rule (admins not exempt), the workflowId prefix and the read/approve checks of decisions', () => {
    const described = (path: string, method: string) => (doc.paths[path]![method] as unknown as { description: string }).description;
    const start = described('/v1/runs', 'post');
    expect(start).toContain('Production rule');
    expect(start).toContain('`admin` are NOT exempt');
    expect(start).toContain('`pipeline-<model>-`');
    for (const kind of ['approve', 'reject']) {
      const op = doc.paths[`/v1/approvals/{model}/{version}/${kind}`]!.post!;
      expect((op as unknown as { description: string }).description).toMatch(/Needs read on the model.*`approve`/s);
      expect((op as unknown as { 'x-conveyor-access': string })['x-conveyor-access']).toBe('read');
    }
    expect(described('/v1/approvals', 'get')).toContain('`unavailable` lists only runs of models the caller may read');
  });
});
