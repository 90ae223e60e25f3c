import type { ArtifactStore } from '../store/artifact-store.js';
import { PreconditionFailedError } from '../store/artifact-store.js';
import { checkName, keys } from '../store/keys.js';
import { isValidName } from '../shared/names.js';
import type {
  AliasRecord,
  DecisionRecord,
  DeploymentRecord,
  ModelVersionRecord,
  RolloutRecord,
  TrafficRecord,
} from '../shared/registry-types.js';

export class AliasConflictError extends Error {
  constructor(model: string, alias: string, expected: number | null, actual: number | null) {
    super(`alias ${model}@${alias} moved concurrently: expected version ${expected ?? 'none'}, found ${actual ?? 'none'}`);
    this.name = 'AliasConflictError';
  }
}

export class VersionArchivedError extends Error {
  constructor(
    readonly model: string,
    readonly version: number,
    readonly archivedBy: string | null,
    readonly reason: string | null,
  ) {
    super(`${model}@${version} was archived by ${archivedBy ?? 'someone'} (${reason ?? 'no reason'}); archived versions are never deployed or aliased`);
    this.name = 'VersionArchivedError';
  }
}

/** Another rollout owns the model's traffic split. */
export class TrafficOwnedError extends Error {
  constructor(
    readonly model: string,
    readonly owner: string | null,
  ) {
    super(`traffic of ${model} is split by rollout ${owner ?? '(unknown)'}; one rollout at a time per model`);
    this.name = 'TrafficOwnedError';
  }
}

export class VersionNotFoundError extends Error {
  constructor(model: string, version: number | string) {
    super(`model version ${model}@${version} does not exist`);
    this.name = 'VersionNotFoundError';
  }
}

const MAX_ALLOCATION_ATTEMPTS = 50;
/** How far back a retry looks for what its earlier attempt wrote. */
const RECENT_SCAN = 50;

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

  /** Models with at least one version. One level of listing per model, not every registry object. */
  async listModels(): Promise<string[]> {
    const prefixes = await this.store.listPrefixes(keys.modelsPrefix());
    const names: string[] = [];
    for (const prefix of prefixes) {
      const model = prefix.slice(keys.modelsPrefix().length).replace(/\/$/, '');
      if (!isValidName(model)) continue;
      if ((await this.store.listPrefixes(`${prefix}`)).includes(keys.versionsPrefix(model))) names.push(model);
    }
    return names.sort();
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
    const versions = (await this.listVersions(model)).slice(-RECENT_SCAN).reverse();
    for (const version of versions) {
      const record = await this.getVersion(model, version);
      if (record.run.workflowId === workflowId && record.run.runId === runId) return record;
    }
    return null;
  }

  /**
   * Allocates the next version number and writes the record in one conditional
   * create. All artifacts the record points to must already exist.
   *
   * Retry safety: an attempt first claims the run (create-if-absent). A second
   * attempt of the same run that finds the claim waits for the first one's
   * version instead of allocating another; a claim older than the lease is taken
   * over, because its holder has been cancelled by its own timeout long before.
   */
  async registerVersion(
    draft: Omit<ModelVersionRecord, 'version' | 'createdAt'>,
    opts: { now?: Date; leaseMs?: number; waitMs?: number; stillValid?: () => boolean } = {},
  ): Promise<ModelVersionRecord> {
    checkName('model', draft.model);
    const { workflowId, runId } = draft.run;
    const claimKey = keys.runClaim(draft.model, workflowId);
    const claim = JSON.stringify({ runId, claimedAt: new Date().toISOString() });
    try {
      // A fresh claim means no earlier attempt of this run got as far as registering: no lookup needed.
      await this.store.put(claimKey, claim, { ifAbsent: true, contentType: 'application/json' });
    } catch (err) {
      if (!(err instanceof PreconditionFailedError)) throw err;
      const existing = await this.findVersionByRun(draft.model, workflowId, runId);
      if (existing) return existing;
      const held = await this.store.getWithEtag(claimKey);
      const holder = held ? (JSON.parse(held.body.toString('utf8')) as { runId: string; claimedAt: string }) : null;
      const age = holder ? Date.now() - Date.parse(holder.claimedAt) : Infinity;
      if (holder && holder.runId === runId && age < (opts.leaseMs ?? 120_000)) {
        const deadline = Date.now() + (opts.waitMs ?? 20_000);
        while (Date.now() < deadline) {
          const found = await this.findVersionByRun(draft.model, workflowId, runId);
          if (found) return found;
          await new Promise((r) => setTimeout(r, 250));
        }
        throw new Error(`another attempt of run ${workflowId} is registering ${draft.model}; will check again`);
      }
      // A stale claim, or one from an earlier run with the same workflow id: take it over.
      await this.store.put(claimKey, claim, held ? { ifMatch: held.etag, contentType: 'application/json' } : { ifAbsent: true });
    }

    for (let attempt = 0; attempt < MAX_ALLOCATION_ATTEMPTS; attempt++) {
      const versions = await this.listVersions(draft.model);
      const next = (versions.at(-1) ?? 0) + 1;
      const record: ModelVersionRecord = { ...draft, version: next, createdAt: (opts.now ?? new Date()).toISOString() };
      // A caller whose own deadline passed must not write: a newer attempt owns the run now.
      if (opts.stillValid && !opts.stillValid()) throw new Error('registration attempt was cancelled before writing');
      try {
        await this.store.put(keys.version(draft.model, next), json(record), { ifAbsent: true, contentType: 'application/json' });
      } catch (err) {
        if (err instanceof PreconditionFailedError) continue;
        throw err;
      }
      await this.store.put(keys.runIndex(draft.model, workflowId), json({ version: next, runId }), {
        contentType: 'application/json',
      });
      return record;
    }
    throw new Error(`could not allocate a version of ${draft.model} after ${MAX_ALLOCATION_ATTEMPTS} attempts`);
  }

  private async readJson<T>(key: string): Promise<T> {
    return JSON.parse((await this.store.get(key)).toString('utf8')) as T;
  }

  /**
   * The newest `limit` records of an append-only log (alias or traffic split), newest first.
   * Entry keys are zero-padded sequence numbers, so listing order is log order.
   */
  private async newestEntries<T>(prefix: string, limit = Infinity): Promise<T[]> {
    const found = (await this.store.list(prefix)).filter((k) => k.endsWith('.json'));
    const newest = found.slice(-Math.min(limit, found.length)).reverse();
    return Promise.all(newest.map((k) => this.readJson<T>(k)));
  }

  /** Every JSON record under a prefix, in listing order. */
  private async readAll<T>(prefix: string): Promise<T[]> {
    return this.newestEntries<T>(prefix).then((newestFirst) => newestFirst.reverse());
  }

  /** Writes a record once (create-if-absent); if it is already there, the stored record is returned. */
  private async createOnce<T>(key: string, record: T): Promise<{ created: boolean; stored: T }> {
    try {
      await this.store.put(key, json(record), { ifAbsent: true, contentType: 'application/json' });
      return { created: true, stored: record };
    } catch (err) {
      if (!(err instanceof PreconditionFailedError)) throw err;
      return { created: false, stored: await this.readJson<T>(key) };
    }
  }

  private aliasLog(model: string, alias: string, limit = Infinity): Promise<AliasRecord[]> {
    return this.newestEntries<AliasRecord>(keys.aliasPrefix(model, alias), limit);
  }

  async getAlias(model: string, alias: string): Promise<AliasRecord | null> {
    return (await this.aliasLog(model, alias, 1))[0] ?? null;
  }

  /**
   * Moves an alias with compare-and-swap: appends entry N+1 only if the alias
   * still points at `expectedVersion` (null: never set). The entry is also the
   * deployment record, so a move can never be half-recorded. Re-applying a move
   * this run already made is a no-op, so a retried activity is safe.
   */
  async moveAlias(input: {
    model: string;
    alias: string;
    version: number;
    expectedVersion: number | null;
    run: { workflowId: string; runId: string };
    strategy?: string;
    rolloutId?: string;
    by?: string;
    reason?: string;
    now?: Date;
  }): Promise<AliasRecord> {
    const [record, meta] = await Promise.all([this.getVersion(input.model, input.version), this.store.getWithEtag(keys.versionMeta(input.model, input.version))]);
    const archived = meta ? (JSON.parse(meta.body.toString('utf8')) as { archived?: boolean; archivedBy?: string | null; archiveReason?: string | null }) : null;
    if (archived?.archived) throw new VersionArchivedError(input.model, input.version, archived.archivedBy ?? null, archived.archiveReason ?? null);
    const recent = await this.aliasLog(input.model, input.alias, RECENT_SCAN);
    const mine = recent.find((e) => e.version === input.version && e.run.runId === input.run.runId);
    if (mine) return mine;
    const current = recent[0] ?? null;
    const actual = current?.version ?? null;
    if (actual !== input.expectedVersion) throw new AliasConflictError(input.model, input.alias, input.expectedVersion, actual);
    const at = (input.now ?? new Date()).toISOString();
    const next: AliasRecord = {
      model: input.model,
      alias: input.alias,
      seq: (current?.seq ?? 0) + 1,
      version: input.version,
      sha256: record.artifact.sha256,
      strategy: input.strategy ?? 'direct',
      updatedAt: at,
      deployedAt: at,
      previousVersion: actual,
      run: input.run,
      ...(input.rolloutId ? { rolloutId: input.rolloutId } : {}),
      ...(input.by ? { by: input.by } : {}),
      ...(input.reason ? { reason: input.reason } : {}),
    };
    try {
      await this.store.put(keys.aliasEntry(input.model, input.alias, next.seq), json(next), { ifAbsent: true, contentType: 'application/json' });
    } catch (err) {
      if (err instanceof PreconditionFailedError) {
        const now = await this.getAlias(input.model, input.alias);
        throw new AliasConflictError(input.model, input.alias, input.expectedVersion, now?.version ?? null);
      }
      throw err;
    }
    return next;
  }

  /** The model's current traffic split; null when none was ever set (production only). */
  async getTraffic(model: string): Promise<TrafficRecord | null> {
    return (await this.newestEntries<TrafficRecord>(keys.trafficPrefix(model), 1))[0] ?? null;
  }

  /**
   * Appends a traffic entry. Only the rollout that owns the split (or anyone, when the
   * split is `none`) may change it; re-writing the step a rollout already wrote is a
   * no-op, so a retried activity is safe. `force` lets an operator clear a split whose
   * rollout is gone.
   */
  async setTraffic(entry: Omit<TrafficRecord, 'seq' | 'updatedAt'>, opts: { now?: Date; force?: boolean } = {}): Promise<TrafficRecord> {
    checkName('model', entry.model);
    if (entry.candidate) {
      const record = await this.getVersion(entry.model, entry.candidate.version);
      if (record.artifact.sha256 !== entry.candidate.sha256) {
        throw new Error(`${entry.model}@${entry.candidate.version} has artifact ${record.artifact.sha256.slice(0, 12)}, not ${entry.candidate.sha256.slice(0, 12)}`);
      }
    }
    for (let attempt = 0; attempt < MAX_ALLOCATION_ATTEMPTS; attempt++) {
      const current = await this.getTraffic(entry.model);
      if (current && current.rolloutId === entry.rolloutId && current.step === entry.step) return current;
      const owned = current && current.mode !== 'none' && current.rolloutId !== entry.rolloutId;
      if (owned && !opts.force) throw new TrafficOwnedError(entry.model, current.rolloutId);
      const next: TrafficRecord = { ...entry, seq: (current?.seq ?? 0) + 1, updatedAt: (opts.now ?? new Date()).toISOString() };
      try {
        await this.store.put(keys.trafficEntry(entry.model, next.seq), json(next), { ifAbsent: true, contentType: 'application/json' });
        return next;
      } catch (err) {
        if (!(err instanceof PreconditionFailedError)) throw err;
      }
    }
    throw new Error(`could not update the traffic split of ${entry.model} after ${MAX_ALLOCATION_ATTEMPTS} attempts`);
  }

  /** Stores a finished rollout's record; writing the same rollout again keeps the first record. */
  async recordRollout(record: RolloutRecord): Promise<RolloutRecord> {
    return (await this.createOnce(keys.rollout(record.model, record.rolloutId), record)).stored;
  }

  /** Finished rollouts of a model, oldest first. */
  async listRollouts(model: string): Promise<RolloutRecord[]> {
    const records = await this.readAll<RolloutRecord>(keys.rolloutsPrefix(model));
    return records.sort((a, b) => a.startedAt.localeCompare(b.startedAt));
  }

  /** Every alias move of a model (all aliases), oldest first. */
  async listDeployments(model: string, alias?: string): Promise<DeploymentRecord[]> {
    const prefix = alias ? keys.aliasPrefix(model, alias) : keys.aliasesPrefix(model);
    const records = await this.readAll<DeploymentRecord>(prefix);
    return records.sort((a, b) => a.deployedAt.localeCompare(b.deployedAt) || a.seq - b.seq);
  }

  /** A version is decided once; a second, different decision is refused. */
  async recordDecision(record: DecisionRecord): Promise<DecisionRecord> {
    const { created, stored: existing } = await this.createOnce(keys.decision(record.model, record.version), record);
    if (created || (existing.run.runId === record.run.runId && existing.decision === record.decision)) return existing;
    throw new Error(`${record.model}@${record.version} was already ${existing.decision} at ${existing.decidedAt}`);
  }

  async getDecision(model: string, version: number): Promise<DecisionRecord | null> {
    const found = await this.store.getWithEtag(keys.decision(model, version));
    return found ? (JSON.parse(found.body.toString('utf8')) as DecisionRecord) : null;
  }
}
