import { randomUUID, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Logger } from '../logger.js';
import { isValidName } from '../shared/names.js';
import { InputValidationError } from '../eval/onnx-model.js';
import type { ModelHost } from './model-host.js';

const predictBody = z
  .object({
    instances: z.array(z.record(z.string(), z.union([z.number(), z.string(), z.boolean(), z.null()]))).min(1).max(10_000).optional(),
    instance: z.record(z.string(), z.union([z.number(), z.string(), z.boolean(), z.null()])).optional(),
  })
  .strict()
  .refine((b) => (b.instances === undefined) !== (b.instance === undefined), { message: 'send exactly one of "instance" or "instances"' });

export interface ServingOptions {
  host: ModelHost;
  logger: Logger;
  /** Bearer tokens accepted on /v1 routes. */
  tokens: string[];
  bodyLimitBytes?: number;
}

function tokenMatches(presented: string, tokens: string[]): boolean {
  const a = Buffer.from(presented);
  return tokens.some((t) => {
    const b = Buffer.from(t);
    return a.length === b.length && timingSafeEqual(a, b);
  });
}

export function createServingApp(opts: ServingOptions): FastifyInstance {
  if (opts.tokens.length === 0) throw new Error('serving needs at least one API token (CONVEYOR_SERVE_TOKEN)');
  const app = Fastify({ loggerInstance: opts.logger.child({ component: 'serving' }, { level: 'warn' }) as FastifyBaseLogger, bodyLimit: opts.bodyLimitBytes ?? 5 * 1024 * 1024, genReqId: () => randomUUID() });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => (opts.host.ready ? { status: 'ready', models: opts.host.list() } : reply.code(503).send({ status: 'loading' })));

  // Authentication is decided by the matched route, not the raw URL: the router decodes
  // the path ("/%761/models" matches "/v1/models"), so a prefix test on req.url is bypassable.
  // Only the routes declared public skip it, and unmatched requests are 404s before any handler.
  const PUBLIC_ROUTES = new Set(['/healthz', '/readyz']);
  app.addHook('onRequest', async (req, reply) => {
    const route = req.routeOptions.url;
    if (route !== undefined && PUBLIC_ROUTES.has(route)) return;
    const header = req.headers.authorization ?? '';
    const token = header.startsWith('Bearer ') ? header.slice(7) : '';
    if (!token || !tokenMatches(token, opts.tokens)) {
      return reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'missing or invalid bearer token' });
    }
  });

  app.get('/v1/models', async () => ({ models: opts.host.list() }));

  // Google-style custom method: /v1/models/<name>:predict. The router sees one segment.
  app.post<{ Params: { target: string } }>('/v1/models/:target', async (req, reply) => {
    const [name = '', method] = req.params.target.split(':');
    if (method !== 'predict') return reply.code(404).send({ error: `unknown method "${method ?? ''}"; use POST /v1/models/<name>:predict` });
    if (!isValidName(name)) return reply.code(400).send({ error: `invalid model name "${name}"` });
    const parsed = predictBody.safeParse(req.body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return reply.code(400).send({ error: `${issue?.path.join('.') || 'body'}: ${issue?.message}` });
    }
    const rows = parsed.data.instances ?? [parsed.data.instance!];
    const result = await opts.host.use(name, async (served) => {
      const inputs = served.loaded.metadata.inputs.map((i) => i.name);
      for (const [index, row] of rows.entries()) {
        const missing = inputs.find((n) => !(n in row));
        if (missing) throw new InputValidationError(missing, index, 'missing feature');
        const extra = Object.keys(row).find((k) => !inputs.includes(k));
        if (extra) throw new InputValidationError(extra, index, 'unknown feature');
      }
      const started = performance.now();
      const prediction = await served.loaded.predict(rows);
      const latencyMs = performance.now() - started;
      const predictions =
        prediction.task === 'classification'
          ? prediction.labels.map((label, i) => ({
              label,
              probabilities: Object.fromEntries(prediction.classes.map((c, j) => [String(c), prediction.probabilities[i * prediction.classes.length + j]])),
            }))
          : [...prediction.values].map((value) => ({ value }));
      return { model: served.model, version: served.version, sha256: served.sha256, predictions, latencyMs };
    }).catch((err: unknown) => {
      if (err instanceof InputValidationError) return { error: err.message, field: err.field } as const;
      throw err;
    });
    if (result === undefined) return reply.code(404).send({ error: `model "${name}" has no ${'production'} version being served` });
    if ('error' in result) return reply.code(400).send(result);
    return { requestId: req.id, ...result };
  });

  return app;
}
