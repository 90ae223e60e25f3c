import type { ArtifactStore } from '../store/artifact-store.js';
import { PreconditionFailedError } from '../store/artifact-store.js';
import { checkName, keys } from '../store/keys.js';
import type {
  AliasRecord,
  DecisionRecord,
  DeploymentRecord,
  ModelVersionRecord,
} from '../shared/registry-types.js';

export class AliasConflictError extends Error {
  constructor(model: string, alias: string, expected: number | null, actual: number | null) {
    super(`alias ${model}@${alias} moved concurrently: expected version ${expected ?? 'none'}, found ${actual ?? 'none'}`);
    this.name = 'AliasConflictError';
  }
}

export class VersionNotFoundError extends Error {
  constructor(model: string, version: number | string) {
    super(`model version ${model}@${version} does not exist`);
    this.name = 'VersionNotFoundError';
  }
}

const MAX_ALLOCATION_ATTEMPTS = 50;

function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/**
 * The model registry, stored as objects. Every state change is a conditional write
 * (create-if-absent or compare-and-swap on the ETag), so concurrent pipelines of
 * one model can never allocate one version number twice or lose an alias move.
 */
export class Registry {
  constructor(private readonly store: ArtifactStore) {}

  async listModels(): Promise<string[]> {
    const all = await this.store.list(keys.modelsPrefix());
    const names = new Set<string>();
    for (const key of all) {
      const [, model, kind] = key.split('/');
      if (model && kind === 'versions') names.add(model);
    }
    return [...names].sort();
  }

  async listVersions(model: string): Promise<number[]> {
    const prefix = keys.versionsPrefix(model);
    const found = await this.store.list(prefix);
    return found
      .map((k) => Number(k.slice(prefix.length).replace(/\.json$/, '')))
      .filter((n) => Number.isSafeInteger(n) && n > 0)
      .sort((a, b) => a - b);
  }

  async getVersion(model: string, version: number): Promise<ModelVersionRecord> {
    const found = await this.store.getWithEtag(keys.version(model, version));
    if (!found) throw new VersionNotFoundError(model, version);
    return JSON.parse(found.body.toString('utf8')) as ModelVersionRecord;
  }

  /** The version a pipeline run registered, if it did (makes registration retry-safe). */
  async findVersionByRun(model: string, workflowId: string, runId: string): Promise<ModelVersionRecord | null> {
    const index = await this.store.getWithEtag(keys.runIndex(model, workflowId));
    if (index) {
      const { version } = JSON.parse(index.body.toString('utf8')) as { version: number };
      const record = await this.getVersion(model, version);
      if (record.run.runId === runId) return record;
    }
    // The index is written after the record; a crash in between leaves only the record.
    const versions = (await this.listVersions(model)).slice(-50).reverse();
    for (const version of versions) {
      const record = await this.getVersion(model, version);
      if (record.run.workflowId === workflowId && record.run.runId === runId) return record;
    }
    return null;
  }

  /**
   * Allocates the next version number and writes the record in one conditional
   * create. All artifacts the record points to must already exist.
   */
  async registerVersion(draft: Omit<ModelVersionRecord, 'version' | 'createdAt'>, now: Date = new Date()): Promise<ModelVersionRecord> {
    checkName('model', draft.model);
    const existing = await this.findVersionByRun(draft.model, draft.run.workflowId, draft.run.runId);
    if (existing) return existing;
    for (let attempt = 0; attempt < MAX_ALLOCATION_ATTEMPTS; attempt++) {
      const versions = await this.listVersions(draft.model);
      const next = (versions.at(-1) ?? 0) + 1;
      const record: ModelVersionRecord = { ...draft, version: next, createdAt: now.toISOString() };
      try {
        await this.store.put(keys.version(draft.model, next), json(record), { ifAbsent: true, contentType: 'application/json' });
      } catch (err) {
        if (err instanceof PreconditionFailedError) continue;
        throw err;
      }
      await this.store.put(keys.runIndex(draft.model, draft.run.workflowId), json({ version: next, runId: draft.run.runId }), {
        contentType: 'application/json',
      });
      return record;
    }
    throw new Error(`could not allocate a version of ${draft.model} after ${MAX_ALLOCATION_ATTEMPTS} attempts`);
  }

  async getAlias(model: string, alias: string): Promise<AliasRecord | null> {
    const found = await this.store.getWithEtag(keys.alias(model, alias));
    return found ? (JSON.parse(found.body.toString('utf8')) as AliasRecord) : null;
  }

  /**
   * Moves an alias with compare-and-swap: succeeds only if the alias still points
   * at `expectedVersion` (null: does not exist yet). Re-applying the same move
   * by the same run is a no-op, so a retried activity is safe.
   */
  async moveAlias(input: {
    model: string;
    alias: string;
    version: number;
    expectedVersion: number | null;
    run: { workflowId: string; runId: string };
    now?: Date;
  }): Promise<AliasRecord> {
    const record = await this.getVersion(input.model, input.version);
    const key = keys.alias(input.model, input.alias);
    const current = await this.store.getWithEtag(key);
    const currentRecord = current ? (JSON.parse(current.body.toString('utf8')) as AliasRecord) : null;
    if (currentRecord && currentRecord.version === input.version && currentRecord.run.runId === input.run.runId) {
      return currentRecord;
    }
    const actual = currentRecord?.version ?? null;
    if (actual !== input.expectedVersion) throw new AliasConflictError(input.model, input.alias, input.expectedVersion, actual);
    const next: AliasRecord = {
      model: input.model,
      alias: input.alias,
      version: input.version,
      sha256: record.artifact.sha256,
      updatedAt: (input.now ?? new Date()).toISOString(),
      previousVersion: actual,
      run: input.run,
    };
    try {
      await this.store.put(key, json(next), current ? { ifMatch: current.etag, contentType: 'application/json' } : { ifAbsent: true, contentType: 'application/json' });
    } catch (err) {
      if (err instanceof PreconditionFailedError) {
        const now = await this.getAlias(input.model, input.alias);
        throw new AliasConflictError(input.model, input.alias, input.expectedVersion, now?.version ?? null);
      }
      throw err;
    }
    return next;
  }

  async recordDeployment(record: DeploymentRecord): Promise<void> {
    await this.store.put(keys.deployment(record.model, record.version, record.run.workflowId), json(record), {
      contentType: 'application/json',
    });
  }

  async listDeployments(model: string): Promise<DeploymentRecord[]> {
    const found = await this.store.list(keys.deploymentsPrefix(model));
    const records = await Promise.all(found.map(async (k) => JSON.parse((await this.store.get(k)).toString('utf8')) as DeploymentRecord));
    return records.sort((a, b) => a.deployedAt.localeCompare(b.deployedAt));
  }

  /** A version is decided once; a second, different decision is refused. */
  async recordDecision(record: DecisionRecord): Promise<DecisionRecord> {
    const key = keys.decision(record.model, record.version);
    try {
      await this.store.put(key, json(record), { ifAbsent: true, contentType: 'application/json' });
      return record;
    } catch (err) {
      if (!(err instanceof PreconditionFailedError)) throw err;
      const existing = JSON.parse((await this.store.get(key)).toString('utf8')) as DecisionRecord;
      if (existing.run.runId === record.run.runId && existing.decision === record.decision) return existing;
      throw new Error(`${record.model}@${record.version} was already ${existing.decision} at ${existing.decidedAt}`);
    }
  }

  async getDecision(model: string, version: number): Promise<DecisionRecord | null> {
    const found = await this.store.getWithEtag(keys.decision(model, version));
    return found ? (JSON.parse(found.body.toString('utf8')) as DecisionRecord) : null;
  }
}
