import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify';
import { ServiceError, WorkflowUpdateFailedError } from '@temporalio/client';
import { WorkflowNotFoundError } from '@temporalio/common';
import type { z } from 'zod';
import { bearerToken, type Identity } from '../auth/tokens.js';
import { VersionNotFoundError } from '../registry/registry.js';
import { ArchiveRefusedError, InvalidVersionMetaError, VersionMetaConflictError } from '../registry/version-meta.js';
import { InvalidNameError } from '../store/keys.js';
import type { ApiDeps } from './deps.js';
import { ApiError, defineRoute, invalid, ok, zodIssues, type Access, type RouteSpec } from './http.js';
import { buildOpenApiDocument } from './openapi.js';
import { Authorizer, type ModelAction } from './policy.js';
import { modelRoutes } from './routes-models.js';
import { rolloutRoutes } from './routes-rollouts.js';
import { runRoutes } from './routes-runs.js';
import { healthResponse } from './schemas.js';

export const API_BODY_LIMIT_BYTES = 1024 * 1024;
export const API_DOC_VERSION = '1.0.0';
/** gRPC status DEADLINE_EXCEEDED: a query no worker answered in time. */
const GRPC_DEADLINE_EXCEEDED = 4;

let openApiDocument: Record<string, unknown> | undefined;

const publicRoutes: RouteSpec[] = [
  defineRoute({
    method: 'GET',
    path: '/healthz',
    operationId: 'health',
    summary: 'Liveness',
    tag: 'meta',
    access: 'public',
    responses: { 200: { description: 'The API process is up.', schema: healthResponse } },
    handler: async () => ok({ status: 'ok' }),
  }),
  defineRoute({
    method: 'GET',
    path: '/openapi.json',
    operationId: 'openapi',
    summary: 'This OpenAPI 3.1 document',
    description: 'Public on purpose: it documents the routes and holds no data.',
    tag: 'meta',
    access: 'public',
    responses: { 200: { description: 'The OpenAPI 3.1 document.', contentType: 'application/json' } },
    handler: async () => ok(apiOpenApiDocument()),
  }),
];

/** Every route of the API; the OpenAPI document is generated from this list. */
export const API_ROUTES: readonly RouteSpec[] = [...publicRoutes, ...runRoutes, ...modelRoutes, ...rolloutRoutes];

export function apiOpenApiDocument(): Record<string, unknown> {
  return (openApiDocument ??= buildOpenApiDocument(API_ROUTES, { version: API_DOC_VERSION }));
}

function validate<S extends z.ZodType>(schema: S, value: unknown, where: string): z.output<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw invalid(zodIssues(parsed.error, where));
  return parsed.data;
}

/** Errors of the layers below, as HTTP; null for the unexpected (500). */
function asApiError(err: unknown): ApiError | null {
  if (err instanceof ApiError) return err;
  if (err instanceof InvalidNameError || err instanceof InvalidVersionMetaError) return new ApiError(400, err.message);
  if (err instanceof VersionNotFoundError) return new ApiError(404, err.message);
  if (err instanceof WorkflowNotFoundError) return new ApiError(404, 'no such pipeline run');
  if (err instanceof ArchiveRefusedError || err instanceof VersionMetaConflictError) return new ApiError(409, err.message);
  if (err instanceof WorkflowUpdateFailedError) return new ApiError(403, err.cause?.message ?? err.message);
  if (err instanceof ServiceError && (err.cause as { code?: number } | undefined)?.code === GRPC_DEADLINE_EXCEEDED) {
    return new ApiError(503, 'Temporal did not answer in time: is a worker polling the pipeline task queue?');
  }
  return null;
}

const ANONYMOUS: Identity = { identity: 'anonymous', groups: [] };

/**
 * The governance API. Authentication is decided on the MATCHED route
 * (`req.routeOptions`), never on the raw URL: the router decodes paths, so a prefix
 * test on req.url ("/%761/...") would be bypassable. Unmatched requests need a token
 * too, so an anonymous caller learns nothing about which routes exist.
 */
export function createApiApp(deps: ApiDeps): FastifyInstance {
  const authz = new Authorizer(deps.authz);
  const app = Fastify({
    loggerInstance: deps.logger.child({ component: 'api' }) as FastifyBaseLogger,
    logController: new LogController({ requestIdLogLabel: 'requestId' }),
    genReqId: () => randomUUID(),
    bodyLimit: API_BODY_LIMIT_BYTES,
    exposeHeadRoutes: false,
    routerOptions: { maxParamLength: 256 },
  });
  const callers = new WeakMap<FastifyRequest, Identity>();

  // An empty body is "no body" (optional bodies); anything else is strict JSON without prototype poisoning.
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (body === '') return done(null, undefined);
    return json(req, body as string, done);
  });

  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
    const access = req.routeOptions.url === undefined ? undefined : (req.routeOptions.config as { access?: Access }).access;
    if (access === 'public') return;
    reply.header('cache-control', 'no-store');
    const token = bearerToken(req.headers.authorization);
    const caller = deps.tokens.authenticate(token);
    if (!caller) {
      return reply
        .code(401)
        .header('www-authenticate', token === undefined ? 'Bearer' : 'Bearer error="invalid_token"')
        .send({ error: 'missing or invalid bearer token' });
    }
    callers.set(req, caller);
    // Both: fastify logs the request's completion through the reply's logger.
    req.log = reply.log = req.log.child({ identity: caller.identity });
    return undefined;
  });

  app.setNotFoundHandler((_req, reply) => reply.code(404).send({ error: 'no such route' }));

  app.setErrorHandler((err: FastifyError, req, reply) => {
    const known = asApiError(err);
    if (known) {
      if (known.status >= 500) req.log.warn({ err }, known.message);
      return reply.code(known.status).send({ ...known.extra, error: known.message });
    }
    // Fastify's own refusals: malformed JSON (400), body too large (413), unsupported media type (415).
    if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.code(err.statusCode).send({ error: err.message });
    }
    req.log.error({ err }, 'request failed');
    return reply.code(500).send({ error: 'internal error', requestId: req.id });
  });

  for (const route of API_ROUTES) {
    const modelAccess: ModelAction | undefined = route.access === 'read' || route.access === 'operate' ? route.access : undefined;
    app.route({
      method: route.method,
      url: route.path,
      config: { access: route.access },
      handler: async (req, reply) => {
        const caller = route.access === 'public' ? ANONYMOUS : callers.get(req);
        if (!caller) throw new ApiError(401, 'missing or invalid bearer token');
        const params = route.params ? validate(route.params, req.params, 'params') : undefined;
        const query = route.query ? validate(route.query, req.query ?? {}, 'query') : undefined;
        const rawBody = req.body === undefined && route.bodyOptional ? {} : req.body;
        const body = route.body ? validate(route.body, rawBody, 'body') : undefined;

        let authorized = false;
        const authorize = (action: ModelAction, model: string): void => {
          authz.require(caller, action, model);
          authorized = true;
        };
        const model = (params as { model?: unknown } | undefined)?.model;
        if (modelAccess && typeof model === 'string') authorize(modelAccess, model);

        const res = await route.handler({ deps, authz, caller, params, query, body, req, log: req.log, authorize });
        if (modelAccess && !authorized) {
          throw new Error(`route ${route.operationId} returned without checking the ${modelAccess} right`);
        }
        reply.code(res.status);
        for (const [name, value] of Object.entries(res.headers ?? {})) reply.header(name, value);
        reply.type(res.contentType ?? 'application/json; charset=utf-8');
        return reply.send(res.body);
      },
    });
  }

  return app;
}
