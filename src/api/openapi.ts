import { z } from 'zod';
import type { RouteSpec } from './http.js';
import { errorResponse, startRunBodyDoc } from './schemas.js';
import { pipelineSpecSchema } from '../spec/schema.js';

type JsonSchema = Record<string, unknown>;

/** Schemas shown once under components and referenced by name. */
const NAMED: ReadonlyArray<[string, z.ZodType]> = [
  ['Error', errorResponse],
  ['PipelineSpec', pipelineSpecSchema],
];

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'draft-2020-12' }) as JsonSchema;
  return rest;
}

function schemaOrRef(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const named = NAMED.find(([, s]) => s === schema);
  if (named) return { $ref: `#/components/schemas/${named[0]}` };
  if (schema === startRunBodyDoc) {
    // The spec is large: reference it instead of inlining it into the body.
    const body = jsonSchema(schema, io);
    const properties = { ...(body.properties as JsonSchema), spec: { $ref: '#/components/schemas/PipelineSpec' } };
    return { ...body, properties };
  }
  return jsonSchema(schema, io);
}

/** `/v1/models/:model` → `/v1/models/{model}` */
export function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function parameters(schema: z.ZodType | undefined, where: 'path' | 'query'): JsonSchema[] {
  if (!schema) return [];
  const object = jsonSchema(schema, 'input');
  const properties = (object.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set((object.required as string[] | undefined) ?? []);
  return Object.entries(properties).map(([name, property]) => {
    const { description, examples, ...rest } = property;
    return {
      name,
      in: where,
      required: where === 'path' || required.has(name),
      ...(description ? { description } : {}),
      ...(Array.isArray(examples) && examples.length ? { example: examples[0] } : {}),
      schema: rest,
    };
  });
}

const ACCESS_TEXT: Record<RouteSpec['access'], string> = {
  public: 'Public: no token needed.',
  authenticated: 'Any valid bearer token.',
  read: 'Bearer token with the read right on the model (API policy; members of `admin` always).',
  operate: 'Bearer token with the operate right on the model (API policy; members of `admin` always).',
};

export function buildOpenApiDocument(routes: readonly RouteSpec[], info: { version: string }): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const r of routes) {
    const responses: Record<string, JsonSchema> = {};
    for (const [status, doc] of Object.entries(r.responses)) {
      const contentType = doc.contentType ?? 'application/json';
      responses[status] = {
        description: doc.description,
        ...(doc.schema ? { content: { [contentType]: { schema: schemaOrRef(doc.schema, 'output') } } } : doc.contentType ? { content: { [contentType]: { schema: { type: 'string' } } } } : {}),
      };
    }
    if (r.access !== 'public') {
      responses['401'] ??= { description: 'Missing or invalid bearer token (`WWW-Authenticate: Bearer`).', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
      if (r.access === 'read' || r.access === 'operate') {
        responses['403'] ??= { description: `No ${r.access} right on the model.`, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
      }
    }
    if (r.params || r.query || r.body) {
      responses['400'] ??= { description: 'Invalid parameter or body; `issues` names each offending field.', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
    }
    const bodySchema = r.bodyDoc ?? r.body;
    const operation: JsonSchema = {
      operationId: r.operationId,
      summary: r.summary,
      description: [r.description, `Access: ${ACCESS_TEXT[r.access]}`].filter(Boolean).join('\n\n'),
      tags: [r.tag],
      'x-conveyor-access': r.access,
      security: r.access === 'public' ? [] : [{ bearerAuth: [] }],
      parameters: [...parameters(r.params, 'path'), ...parameters(r.query, 'query')],
      ...(bodySchema
        ? { requestBody: { required: !r.bodyOptional, content: { 'application/json': { schema: schemaOrRef(bodySchema, 'input') } } } }
        : {}),
      responses,
    };
    (paths[openApiPath(r.path)] ??= {})[r.method.toLowerCase()] = operation;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Conveyor governance API',
      version: info.version,
      description:
        'Start and follow pipeline runs, decide approvals, and read and govern the model registry (versions, lineage, model cards, ' +
        'history, aliases, tags). Every route needs `Authorization: Bearer <token>` except `GET /healthz` and `GET /openapi.json` ' +
        '(this document: it describes the API and holds no data). Request bodies are JSON, at most 1 MiB.',
    },
    components: {
      securitySchemes: {
        bearerAuth: { type: 'http', scheme: 'bearer', description: 'An API token (CONVEYOR_API_TOKENS or the hashed tokens file).' },
      },
      schemas: Object.fromEntries(NAMED.map(([name, schema]) => [name, jsonSchema(schema, name === 'PipelineSpec' ? 'input' : 'output')])),
    },
    security: [{ bearerAuth: [] }],
    paths,
  };
}
