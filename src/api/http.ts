import type { FastifyBaseLogger, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { Identity } from '../auth/tokens.js';
import type { ApiDeps } from './deps.js';
import type { Authorizer, ModelAction } from './policy.js';

/** An error the API reports as it is: status, message, and optional extra fields in the body. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const badRequest = (message: string, extra?: Record<string, unknown>) => new ApiError(400, message, extra);
export const forbidden = (message: string) => new ApiError(403, message);
export const notFound = (message: string) => new ApiError(404, message);
export const conflict = (message: string, extra?: Record<string, unknown>) => new ApiError(409, message, extra);

/**
 * Who may call a route.
 * - public: no token (documents and health only, never data).
 * - authenticated: any valid token; the handler decides what the caller sees.
 * - read / operate: the per-model right from the API policy. With a `model` path
 *   parameter the framework checks it before the handler runs; otherwise the handler
 *   must call `ctx.authorize(action, model)` (a route that forgets is a 500, not a leak).
 */
export type Access = 'public' | 'authenticated' | ModelAction;

export interface ApiResponse {
  status: number;
  body: unknown;
  /** Default application/json. */
  contentType?: string;
  headers?: Record<string, string>;
}

export interface HandlerContext<P, Q, B> {
  deps: ApiDeps;
  authz: Authorizer;
  /** The authenticated caller (a public route has none). */
  caller: Identity;
  params: P;
  query: Q;
  body: B;
  req: FastifyRequest;
  log: FastifyBaseLogger;
  /** Throws 403 unless the caller has `action` on `model`. */
  authorize(action: ModelAction, model: string): void;
}

export interface DocumentedResponse {
  description: string;
  /** JSON body schema; omitted for non-JSON or empty bodies. */
  schema?: z.ZodType;
  /** Default application/json. */
  contentType?: string;
}

type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

export interface RouteSpec<P extends z.ZodType | undefined = z.ZodType | undefined, Q extends z.ZodType | undefined = z.ZodType | undefined, B extends z.ZodType | undefined = z.ZodType | undefined> {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH';
  /** Fastify path, parameters as `:name`. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag: string;
  access: Access;
  params?: P;
  query?: Q;
  body?: B;
  /** Whether an empty body is accepted (validated as `{}`). */
  bodyOptional?: boolean;
  /** Documented instead of `body` when the runtime schema is looser (e.g. validated further by the handler). */
  bodyDoc?: z.ZodType;
  responses: Record<number, DocumentedResponse>;
  handler(ctx: HandlerContext<Out<P>, Out<Q>, Out<B>>): Promise<ApiResponse>;
}

/** Keeps each route's handler typed by its own schemas inside a heterogeneous route list. */
export function defineRoute<P extends z.ZodType | undefined = undefined, Q extends z.ZodType | undefined = undefined, B extends z.ZodType | undefined = undefined>(
  spec: RouteSpec<P, Q, B>,
): RouteSpec {
  return spec as unknown as RouteSpec;
}

export const ok = (body: unknown, status = 200): ApiResponse => ({ status, body });

export interface Issue {
  field: string;
  message: string;
}

/** 400 whose message names the first few offending fields; every issue is in `issues`. */
export function invalid(issues: Issue[]): ApiError {
  return badRequest(issues.slice(0, 5).map((i) => `${i.field}: ${i.message}`).join('; '), { issues });
}

/** A zod error as issues; an issue on the value as a whole is named `where`. */
export function zodIssues(error: z.ZodError, where: string): Issue[] {
  return error.issues.map((i) => ({ field: i.path.map(String).filter(Boolean).join('.') || where, message: i.message }));
}
