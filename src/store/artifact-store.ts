import type { Readable } from 'node:stream';

/** A write that lost a compare-and-swap race: someone else wrote the key first. */
export class PreconditionFailedError extends Error {
  constructor(readonly key: string) {
    super(`conditional write to "${key}" lost a race: the object changed or already exists`);
    this.name = 'PreconditionFailedError';
  }
}

export class ObjectNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`object "${key}" does not exist`);
    this.name = 'ObjectNotFoundError';
  }
}

export interface PutOptions {
  contentType?: string;
  /** Create only: fail with PreconditionFailedError when the key exists. */
  ifAbsent?: boolean;
  /** Replace only this version (etag from `head`/`getWithEtag`). */
  ifMatch?: string;
}

export interface ObjectInfo {
  key: string;
  size: number;
  etag: string;
}

/**
 * The S3-compatible object store behind every artifact and the registry. Objects
 * are written whole (S3 semantics), so a reader never sees a partial object.
 */
export interface ArtifactStore {
  readonly bucket: string;
  ensureBucket(): Promise<void>;
  put(key: string, body: Buffer | string, opts?: PutOptions): Promise<{ etag: string }>;
  putStream(key: string, body: Readable, size: number, opts?: PutOptions): Promise<{ etag: string }>;
  get(key: string): Promise<Buffer>;
  getWithEtag(key: string): Promise<{ body: Buffer; etag: string } | null>;
  getToFile(key: string, path: string): Promise<void>;
  head(key: string): Promise<ObjectInfo | null>;
  /** Keys under a prefix, sorted ascending. */
  list(prefix: string): Promise<string[]>;
  /**
   * One level of "directories" under a prefix (S3 common prefixes, delimiter '/'), sorted
   * ascending: each is `prefix` plus the next path segment and its '/', e.g.
   * `listPrefixes('models/')` → `['models/a/', 'models/b/']`. Keys directly under
   * `prefix` (no further '/') are not included.
   */
  listPrefixes(prefix: string): Promise<string[]>;
}
