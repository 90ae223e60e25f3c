import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { API_ROUTES, apiOpenApiDocument, Authorizer, loadApiPolicy, parseApiPolicy } from '../../src/api/index.js';
import { apiPathIssues } from '../../src/api/pipeline-runs.js';
import { parsePipelineSpec } from '../../src/spec/define.js';
import type { PipelineSpecInput } from '../../src/spec/schema.js';

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
});
