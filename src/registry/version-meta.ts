import { setTimeout as sleep } from 'node:timers/promises';
import type { ArtifactStore } from '../store/artifact-store.js';
import { PreconditionFailedError } from '../store/artifact-store.js';
import { checkName, keys } from '../store/keys.js';
import { VersionNotFoundError, type Registry } from './registry.js';

/**
 * Mutable, non-lineage metadata of a model version (tags, description, archived),
 * kept beside the immutable version record at `registry/<model>/meta/<000001>.json`.
 * Nothing here ever rewrites the version record or the artifact.
 */

export const MAX_TAGS = 50;
export const MAX_TAG_VALUE_LENGTH = 256;
export const MAX_DESCRIPTION_LENGTH = 4000;
export const MAX_REASON_LENGTH = 1000;
export const MAX_ACTOR_LENGTH = 128;
/** Oldest entries are dropped beyond this. */
export const MAX_HISTORY = 50;
const HISTORY_TEXT_LIMIT = 200;
const DEFAULT_MAX_ATTEMPTS = 25;

/** Tag keys: 1-63 of A-Z a-z 0-9 "_" "." ":" "-", starting with a letter or digit (so no "__proto__"). */
export const TAG_KEY_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$/;
// C0/C1 control characters except in descriptions, where \n and \t are allowed.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const CONTROL_EXCEPT_NEWLINE_TAB = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

const metaPrefix = (model: string): string => keys.versionMetaPrefix(model);
export const metaKey = (model: string, version: number): string => keys.versionMeta(model, version);

export type VersionMetaChange =
  | { action: 'set-tags'; tags: Record<string, string> }
  | { action: 'remove-tags'; keys: string[] }
  | { action: 'set-description'; description: string | null }
  | { action: 'archive'; reason: string }
  | { action: 'unarchive' };

export type VersionMetaHistoryEntry = VersionMetaChange & { at: string; by: string };

export interface VersionMeta {
  schemaVersion: 1;
  model: string;
  version: number;
  tags: Record<string, string>;
  description: string | null;
  archived: boolean;
  archivedBy: string | null;
  archivedAt: string | null;
  archiveReason: string | null;
  /** Time of the last change; null when never changed. */
  updatedAt: string | null;
  /** Oldest first, at most MAX_HISTORY entries. */
  history: VersionMetaHistoryEntry[];
}

export class InvalidVersionMetaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidVersionMetaError';
  }
}

export class ArchiveRefusedError extends Error {
  constructor(
    readonly model: string,
    readonly version: number,
    readonly alias: string,
  ) {
    super(`refusing to archive ${model}@${version}: it is the version behind the "${alias}" alias; deploy another version first`);
    this.name = 'ArchiveRefusedError';
  }
}

export class VersionMetaConflictError extends Error {
  constructor(model: string, version: number, attempts: number) {
    super(`metadata of ${model}@${version} kept changing concurrently; gave up after ${attempts} attempts`);
    this.name = 'VersionMetaConflictError';
  }
}

export function emptyVersionMeta(model: string, version: number): VersionMeta {
  return {
    schemaVersion: 1,
    model,
    version,
    tags: {},
    description: null,
    archived: false,
    archivedBy: null,
    archivedAt: null,
    archiveReason: null,
    updatedAt: null,
    history: [],
  };
}

function parseMeta(body: Buffer, model: string, version: number): VersionMeta {
  const parsed = JSON.parse(body.toString('utf8')) as Partial<VersionMeta>;
  // Tolerate older/partial objects: fill in what is missing.
  return { ...emptyVersionMeta(model, version), ...parsed, tags: { ...(parsed.tags ?? {}) }, history: [...(parsed.history ?? [])] };
}

/** Reads the metadata of a version without a Registry (empty metadata when none was ever written). */
export async function readVersionMeta(store: ArtifactStore, model: string, version: number): Promise<VersionMeta> {
  const found = await store.getWithEtag(metaKey(model, version));
  return found ? parseMeta(found.body, model, version) : emptyVersionMeta(model, version);
}

export function checkTagKey(key: string): string {
  if (typeof key !== 'string' || !TAG_KEY_PATTERN.test(key)) {
    throw new InvalidVersionMetaError(`invalid tag key ${JSON.stringify(key)}: use 1-63 characters of A-Z, a-z, 0-9, "_", ".", ":" or "-", starting with a letter or digit`);
  }
  return key;
}

export function checkTagValue(key: string, value: string): string {
  if (typeof value !== 'string') throw new InvalidVersionMetaError(`tag ${key}: value must be a string`);
  if (value.length > MAX_TAG_VALUE_LENGTH) throw new InvalidVersionMetaError(`tag ${key}: value is longer than ${MAX_TAG_VALUE_LENGTH} characters`);
  if (CONTROL.test(value)) throw new InvalidVersionMetaError(`tag ${key}: value contains control characters`);
  return value;
}

function checkText(what: string, value: string, max: number, allowNewlines: boolean): string {
  if (typeof value !== 'string') throw new InvalidVersionMetaError(`${what} must be a string`);
  if (value.length > max) throw new InvalidVersionMetaError(`${what} is longer than ${max} characters`);
  if ((allowNewlines ? CONTROL_EXCEPT_NEWLINE_TAB : CONTROL).test(value)) throw new InvalidVersionMetaError(`${what} contains control characters`);
  return value;
}

function checkActor(by: string): string {
  checkText('actor ("by")', by, MAX_ACTOR_LENGTH, false);
  if (by.trim() === '') throw new InvalidVersionMetaError('actor ("by") must not be empty');
  return by;
}

function clip(text: string): string {
  return text.length > HISTORY_TEXT_LIMIT ? `${text.slice(0, HISTORY_TEXT_LIMIT - 1)}…` : text;
}

function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

export interface VersionMetaStoreOptions {
  /** Aliases whose current version may not be archived. Default: ["production"]. */
  protectedAliases?: string[];
  /** Compare-and-swap attempts before VersionMetaConflictError. Default 25. */
  maxAttempts?: number;
  /** Clock, for tests. */
  now?: () => Date;
}

/**
 * Reads and edits version metadata. Every edit is a compare-and-swap on the meta
 * object's ETag (create-if-absent for the first one), retried with jitter on a lost
 * race, so concurrent edits of different tags never lose each other.
 */
export class VersionMetaStore {
  private readonly protectedAliases: string[];
  private readonly maxAttempts: number;
  private readonly now: () => Date;

  constructor(
    private readonly store: ArtifactStore,
    private readonly registry: Registry,
    options: VersionMetaStoreOptions = {},
  ) {
    this.protectedAliases = (options.protectedAliases ?? ['production']).map((a) => checkName('alias', a));
    this.maxAttempts = Math.max(1, options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);
    this.now = options.now ?? (() => new Date());
  }

  /** Metadata of an existing version (empty when never edited); VersionNotFoundError otherwise. */
  async get(model: string, version: number): Promise<VersionMeta> {
    const key = metaKey(model, version);
    await this.assertVersionExists(model, version);
    const found = await this.store.getWithEtag(key);
    return found ? parseMeta(found.body, model, version) : emptyVersionMeta(model, version);
  }

  /** Metadata of every version of a model that has any, by version. */
  async list(model: string): Promise<VersionMeta[]> {
    const prefix = metaPrefix(model);
    const found = await this.store.list(prefix);
    const versions = found
      .map((k) => Number(k.slice(prefix.length).replace(/\.json$/, '')))
      .filter((n) => Number.isSafeInteger(n) && n > 0);
    return Promise.all(versions.map((v) => readVersionMeta(this.store, model, v)));
  }

  /** Adds or replaces tags (merge); other tags are kept. At most MAX_TAGS in total. */
  async setTags(model: string, version: number, tags: Record<string, string>, by: string): Promise<VersionMeta> {
    checkActor(by);
    if (tags === null || typeof tags !== 'object' || Array.isArray(tags)) throw new InvalidVersionMetaError('tags must be an object of string values');
    const entries = Object.entries(tags).map(([k, v]) => [checkTagKey(k), checkTagValue(k, v)] as const);
    if (entries.length > MAX_TAGS) throw new InvalidVersionMetaError(`at most ${MAX_TAGS} tags per version`);
    return this.update(model, version, (meta) => {
      const changed = entries.filter(([k, v]) => meta.tags[k] !== v);
      if (changed.length === 0) return null;
      const next = { ...meta.tags };
      for (const [k, v] of changed) next[k] = v;
      if (Object.keys(next).length > MAX_TAGS) {
        throw new InvalidVersionMetaError(`${model}@${version} would have ${Object.keys(next).length} tags; at most ${MAX_TAGS} are allowed`);
      }
      meta.tags = next;
      return { action: 'set-tags', tags: Object.fromEntries(changed) };
    }, by);
  }

  async removeTags(model: string, version: number, tagKeys: string[], by: string): Promise<VersionMeta> {
    checkActor(by);
    if (!Array.isArray(tagKeys)) throw new InvalidVersionMetaError('tag keys must be an array');
    const wanted = [...new Set(tagKeys.map(checkTagKey))];
    return this.update(model, version, (meta) => {
      const removed = wanted.filter((k) => Object.prototype.hasOwnProperty.call(meta.tags, k));
      if (removed.length === 0) return null;
      const next = { ...meta.tags };
      for (const k of removed) delete next[k];
      meta.tags = next;
      return { action: 'remove-tags', keys: removed };
    }, by);
  }

  /** Sets (or with null / "" clears) the free-text description. Newlines are allowed. */
  async setDescription(model: string, version: number, description: string | null, by: string): Promise<VersionMeta> {
    checkActor(by);
    const value = description === null || description === '' ? null : checkText('description', description, MAX_DESCRIPTION_LENGTH, true);
    return this.update(model, version, (meta) => {
      if (meta.description === value) return null;
      meta.description = value;
      return { action: 'set-description', description: value === null ? null : clip(value) };
    }, by);
  }

  /**
   * Marks a version archived. Refused (ArchiveRefusedError) while a protected alias
   * (default: production) points at it. Archiving an archived version is a no-op.
   */
  async archive(model: string, version: number, by: string, reason: string): Promise<VersionMeta> {
    checkActor(by);
    checkText('reason', reason, MAX_REASON_LENGTH, false);
    if (reason.trim() === '') throw new InvalidVersionMetaError('an archive reason is required');
    return this.update(
      model,
      version,
      (meta, at) => {
        if (meta.archived) return null;
        meta.archived = true;
        meta.archivedBy = by;
        meta.archivedAt = at;
        meta.archiveReason = reason;
        return { action: 'archive', reason: clip(reason) };
      },
      by,
      // Re-checked on every attempt, right before the conditional write.
      async () => {
        for (const alias of this.protectedAliases) {
          const current = await this.registry.getAlias(model, alias);
          if (current?.version === version) throw new ArchiveRefusedError(model, version, alias);
        }
      },
    );
  }

  /** Clears the archived flag. Unarchiving a version that is not archived is a no-op. */
  async unarchive(model: string, version: number, by: string): Promise<VersionMeta> {
    checkActor(by);
    return this.update(model, version, (meta) => {
      if (!meta.archived) return null;
      meta.archived = false;
      meta.archivedBy = null;
      meta.archivedAt = null;
      meta.archiveReason = null;
      return { action: 'unarchive' };
    }, by);
  }

  private async assertVersionExists(model: string, version: number): Promise<void> {
    if (!(await this.store.head(keys.version(model, version)))) throw new VersionNotFoundError(model, version);
  }

  /**
   * Read-modify-write with compare-and-swap. `mutate` edits its (private) copy and
   * returns the change to record, or null when there is nothing to change (no write).
   */
  private async update(
    model: string,
    version: number,
    mutate: (meta: VersionMeta, at: string) => VersionMetaChange | null,
    by: string,
    precondition?: () => Promise<void>,
  ): Promise<VersionMeta> {
    const key = metaKey(model, version);
    await this.assertVersionExists(model, version);
    for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
      if (attempt > 0) await sleep(Math.min(5 * 2 ** Math.min(attempt, 6), 200) * Math.random());
      const found = await this.store.getWithEtag(key);
      const meta = found ? parseMeta(found.body, model, version) : emptyVersionMeta(model, version);
      const at = this.now().toISOString();
      const change = mutate(meta, at);
      if (change === null) return meta;
      await precondition?.();
      meta.updatedAt = at;
      meta.history = [...meta.history, { ...change, at, by }].slice(-MAX_HISTORY);
      try {
        await this.store.put(key, json(meta), found ? { ifMatch: found.etag, contentType: 'application/json' } : { ifAbsent: true, contentType: 'application/json' });
        return meta;
      } catch (err) {
        if (err instanceof PreconditionFailedError) continue;
        throw err;
      }
    }
    throw new VersionMetaConflictError(model, version, this.maxAttempts);
  }
}
