import { buildLineage } from '../registry/lineage.js';
import { metricsByVersion, productionTimeline, versionAt } from '../registry/history.js';
import { buildModelCard, loadEvaluationReport, type ModelCard } from '../registry/model-card.js';
import { AliasConflictError, VersionArchivedError, type Registry } from '../registry/registry.js';
import { readVersionMeta, VersionMetaStore, type VersionMeta } from '../registry/version-meta.js';
import type { AliasRecord } from '../shared/registry-types.js';
import { ALIASES } from '../shared/constants.js';
import type { ApiDeps } from './deps.js';
import { conflict, defineRoute, forbidden, notFound, ok, type RouteSpec } from './http.js';
import * as s from './schemas.js';

const TAG = 'models';
const notFoundResponse = { description: 'No such model or version.', schema: s.errorResponse };

const modelNotFound = (model: string) => notFound(`model "${model}" has no registered versions`);

async function requireModel(registry: Registry, model: string): Promise<number[]> {
  const versions = await registry.listVersions(model);
  if (versions.length === 0) throw modelNotFound(model);
  return versions;
}

async function loadModelCard(deps: ApiDeps, model: string, version: number): Promise<ModelCard> {
  const lineage = await buildLineage(deps.registry, deps.store, model, version);
  return buildModelCard(lineage, await loadEvaluationReport(deps.store, lineage.evaluation.reportKey));
}

export const modelRoutes: RouteSpec[] = [
  defineRoute({
    method: 'GET',
    path: '/v1/models',
    operationId: 'listModels',
    summary: 'Registered models the caller may read',
    description: 'Any authenticated identity; the list holds only the models the API policy lets the caller read.',
    tag: TAG,
    access: 'authenticated',
    responses: { 200: { description: 'Models with their version count, latest version and production version.', schema: s.modelsResponse } },
    handler: async ({ deps, authz, caller }) => {
      const names = (await deps.registry.listModels()).filter((m) => authz.can(caller, 'read', m));
      const models = await Promise.all(
        names.map(async (model) => {
          const [versions, production] = await Promise.all([deps.registry.listVersions(model), deps.registry.getAlias(model, ALIASES.production)]);
          return { model, versions: versions.length, latest: versions.at(-1) ?? null, production: production?.version ?? null };
        }),
      );
      return ok({ models });
    },
  }),

  defineRoute({
    method: 'GET',
    path: '/v1/models/:model',
    operationId: 'getModel',
    summary: 'A model: its versions, aliases and deployments',
    tag: TAG,
    access: 'read',
    params: s.modelParams,
    responses: { 200: { description: 'The model.', schema: s.modelResponse }, 404: notFoundResponse },
    handler: async ({ deps, params }) => {
      const { model } = params;
      const numbers = await requireModel(deps.registry, model);
      const [records, metas, deployments] = await Promise.all([
        Promise.all(numbers.map((v) => deps.registry.getVersion(model, v))),
        Promise.all(numbers.map((v) => readVersionMeta(deps.store, model, v))),
        deps.registry.listDeployments(model),
      ]);
      // Every alias move is a deployment record: where an alias points now is its last entry (highest seq).
      const aliases: Record<string, AliasRecord> = {};
      for (const d of deployments) if ((aliases[d.alias]?.seq ?? 0) < d.seq) aliases[d.alias] = d;
      const versions = records.map((r, i) => ({
        version: r.version,
        createdAt: r.createdAt,
        sha256: r.artifact.sha256,
        metrics: r.evaluation.metrics,
        submittedBy: r.run.submittedBy,
        archived: metas[i]!.archived,
        tags: metas[i]!.tags,
      }));
      return ok({ model, versions, aliases, deployments });
    },
  }),

  defineRoute({
    method: 'GET',
    path: '/v1/models/:model/versions/:version',
    operationId: 'getVersion',
    summary: 'A version: immutable record, mutable metadata and the approval decision',
    tag: TAG,
    access: 'read',
    params: s.versionParams,
    responses: { 200: { description: 'The version.', schema: s.versionResponse }, 404: notFoundResponse },
    handler: async ({ deps, params }) => {
      const [record, meta, decision] = await Promise.all([
        deps.registry.getVersion(params.model, params.version),
        readVersionMeta(deps.store, params.model, params.version),
        deps.registry.getDecision(params.model, params.version),
      ]);
      return ok({ record, meta, decision });
    },
  }),

  defineRoute({
    method: 'GET',
    path: '/v1/models/:model/versions/:version/lineage',
    operationId: 'getLineage',
    summary: 'Lineage of a version: dataset → run → trainer → evaluation → decision → deployments',
    tag: TAG,
    access: 'read',
    params: s.versionParams,
    responses: { 200: { description: 'The provenance chain.', schema: s.lineageResponse }, 404: notFoundResponse },
    handler: async ({ deps, params }) => ok(await buildLineage(deps.registry, deps.store, params.model, params.version)),
  }),

  defineRoute({
    method: 'GET',
    path: '/v1/models/:model/versions/:version/card',
    operationId: 'getModelCard',
    summary: 'Model card (JSON)',
    tag: TAG,
    access: 'read',
    params: s.versionParams,
    responses: { 200: { description: 'The model card.', schema: s.modelCardResponse }, 404: notFoundResponse },
    handler: async ({ deps, params }) => ok((await loadModelCard(deps, params.model, params.version)).json),
  }),

  defineRoute({
    method: 'GET',
    path: '/v1/models/:model/versions/:version/card.md',
    operationId: 'getModelCardMarkdown',
    summary: 'Model card (Markdown)',
    tag: TAG,
    access: 'read',
    params: s.versionParams,
    responses: { 200: { description: 'The model card as GitHub-flavoured Markdown.', contentType: 'text/markdown' }, 404: notFoundResponse },
    handler: async ({ deps, params }) => {
      const card = await loadModelCard(deps, params.model, params.version);
      return { status: 200, body: card.markdown, contentType: 'text/markdown; charset=utf-8' };
    },
  }),

  defineRoute({
    method: 'GET',
    path: '/v1/models/:model/history',
    operationId: 'getHistory',
    summary: 'Which version was behind an alias when, and every version\'s metrics',
    tag: TAG,
    access: 'read',
    params: s.modelParams,
    query: s.historyQuery,
    responses: { 200: { description: 'Timeline (oldest first) and metrics by version.', schema: s.historyResponse }, 404: notFoundResponse },
    handler: async ({ deps, params, query }) => {
      const alias = query.alias ?? ALIASES.production;
      const [timeline, metrics] = await Promise.all([productionTimeline(deps.registry, params.model, alias), metricsByVersion(deps.registry, params.model)]);
      if (metrics.length === 0) throw modelNotFound(params.model); // one entry per version
      const at = query.at ? { time: query.at, version: versionAt(timeline, query.at) } : undefined;
      return ok({ model: params.model, alias, timeline, metrics, ...(at ? { at } : {}) });
    },
  }),

  defineRoute({
    method: 'PUT',
    path: '/v1/models/:model/aliases/:alias',
    operationId: 'moveAlias',
    summary: 'Point an alias at a version (compare-and-swap)',
    description:
      'Moves the alias only if it still points at `expectedVersion` (null: not set); otherwise 409 with the current version. ' +
      'Needs operate on the model. The `production` alias can be moved here only by members of `admin`: production moves belong to ' +
      'pipeline runs, which evaluate and get the candidate approved first; this route is the break-glass path (e.g. a rollback). ' +
      'Archived versions cannot be pointed at. The move is recorded as a deployment with strategy "manual" and run ' +
      '{ workflowId: "api:<identity>", runId: <request id> }.',
    tag: TAG,
    access: 'operate',
    params: s.aliasParams,
    body: s.moveAliasBody,
    responses: {
      200: { description: 'The new alias entry (also the deployment record).', schema: s.aliasRecord },
      403: { description: 'No operate right, or `production` by a non-admin.', schema: s.errorResponse },
      404: notFoundResponse,
      409: { description: 'The alias moved meanwhile (body has `currentVersion`), or the version is archived.', schema: s.errorResponse },
    },
    handler: async ({ deps, authz, caller, params, body, req }) => {
      if (params.alias === ALIASES.production && !authz.isAdmin(caller)) {
        throw forbidden('the production alias is moved by pipeline runs (after evaluation and approval); only members of "admin" may move it through the API');
      }
      try {
        const moved = await deps.registry.moveAlias({
          model: params.model,
          alias: params.alias,
          version: body.version,
          expectedVersion: body.expectedVersion,
          run: { workflowId: `api:${caller.identity}`, runId: String(req.id) },
          strategy: 'manual',
        });
        req.log.info({ model: params.model, alias: params.alias, version: body.version, previous: moved.previousVersion }, 'alias moved');
        return ok(moved);
      } catch (err) {
        if (err instanceof VersionArchivedError) throw conflict(`${params.model}@${body.version} is archived; unarchive it before pointing an alias at it`);
        if (err instanceof AliasConflictError) {
          const current = await deps.registry.getAlias(params.model, params.alias);
          throw conflict(err.message, { currentVersion: current?.version ?? null });
        }
        throw err;
      }
    },
  }),

  defineRoute({
    method: 'PATCH',
    path: '/v1/models/:model/versions/:version',
    operationId: 'updateVersionMeta',
    summary: 'Tag, describe, archive or unarchive a version',
    description:
      'Edits only the mutable metadata beside the immutable version record. Archiving is applied first and is refused (409) for the ' +
      'version behind `production`; then tags, removed tags and the description. Needs operate on the model.',
    tag: TAG,
    access: 'operate',
    params: s.versionParams,
    body: s.patchVersionBody,
    responses: {
      200: { description: 'The metadata after the change.', schema: s.versionMeta },
      404: notFoundResponse,
      409: { description: 'Archiving the production version, or concurrent edits kept conflicting.', schema: s.errorResponse },
    },
    handler: async ({ deps, caller, params, body }) => {
      const { model, version } = params;
      const metaStore = new VersionMetaStore(deps.store, deps.registry);
      const by = caller.identity;
      let meta: VersionMeta | undefined;
      if (body.archived === true) meta = await metaStore.archive(model, version, by, body.archiveReason ?? '');
      if (body.archived === false) meta = await metaStore.unarchive(model, version, by);
      if (body.tags && Object.keys(body.tags).length) meta = await metaStore.setTags(model, version, body.tags, by);
      if (body.removeTags?.length) meta = await metaStore.removeTags(model, version, body.removeTags, by);
      if (body.description !== undefined) meta = await metaStore.setDescription(model, version, body.description, by);
      // Only read when no edit ran (e.g. `tags: {}`): each edit returns the metadata it left.
      return ok(meta ?? (await metaStore.get(model, version)));
    },
  }),
];

