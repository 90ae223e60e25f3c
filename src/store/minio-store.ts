import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Client, S3Error } from 'minio';
import type { Config } from '../config.js';
import {
  ObjectNotFoundError,
  PreconditionFailedError,
  type ArtifactStore,
  type ObjectInfo,
  type PutOptions,
} from './artifact-store.js';

function conditionHeaders(opts?: PutOptions): Record<string, string> {
  const headers: Record<string, string> = { 'Content-Type': opts?.contentType ?? 'application/octet-stream' };
  if (opts?.ifAbsent) headers['If-None-Match'] = '*';
  if (opts?.ifMatch) headers['If-Match'] = `"${opts.ifMatch}"`;
  return headers;
}

function isCode(err: unknown, ...codes: string[]): boolean {
  return err instanceof S3Error ? codes.includes(String(err.code)) : codes.includes(String((err as { code?: unknown })?.code));
}

export class MinioArtifactStore implements ArtifactStore {
  readonly bucket: string;
  private readonly client: Client;
  private readonly region: string;

  constructor(config: Config['s3']) {
    this.bucket = config.bucket;
    this.region = config.region;
    this.client = new Client({
      endPoint: config.endPoint,
      port: config.port,
      useSSL: config.useSSL,
      accessKey: config.accessKey,
      secretKey: config.secretKey,
      region: config.region,
    });
  }

  async ensureBucket(): Promise<void> {
    if (await this.client.bucketExists(this.bucket)) return;
    try {
      await this.client.makeBucket(this.bucket, this.region);
    } catch (err) {
      if (!isCode(err, 'BucketAlreadyOwnedByYou', 'BucketAlreadyExists')) throw err;
    }
  }

  async put(key: string, body: Buffer | string, opts?: PutOptions): Promise<{ etag: string }> {
    const buffer = typeof body === 'string' ? Buffer.from(body) : body;
    try {
      const info = await this.client.putObject(this.bucket, key, buffer, buffer.length, conditionHeaders(opts));
      return { etag: info.etag };
    } catch (err) {
      if (isCode(err, 'PreconditionFailed')) throw new PreconditionFailedError(key);
      throw err;
    }
  }

  async putStream(key: string, body: Readable, size: number, opts?: PutOptions): Promise<{ etag: string }> {
    try {
      const info = await this.client.putObject(this.bucket, key, body, size, conditionHeaders(opts));
      return { etag: info.etag };
    } catch (err) {
      if (isCode(err, 'PreconditionFailed')) throw new PreconditionFailedError(key);
      throw err;
    }
  }

  async putFile(key: string, path: string, size: number, opts?: PutOptions): Promise<{ etag: string }> {
    return this.putStream(key, createReadStream(path), size, opts);
  }

  async get(key: string): Promise<Buffer> {
    const found = await this.getWithEtag(key);
    if (!found) throw new ObjectNotFoundError(key);
    return found.body;
  }

  async getWithEtag(key: string): Promise<{ body: Buffer; etag: string } | null> {
    try {
      // The response's own ETag belongs to exactly these bytes; a separate stat could race a writer.
      const stream = await this.client.getObject(this.bucket, key);
      const etag = String((stream as { headers?: Record<string, unknown> }).headers?.etag ?? '').replace(/"/g, '');
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(chunk as Buffer);
      return { body: Buffer.concat(chunks), etag };
    } catch (err) {
      if (isCode(err, 'NoSuchKey', 'NotFound')) return null;
      throw err;
    }
  }

  async getToFile(key: string, path: string): Promise<void> {
    // Stream into a temp file unique to this call, next to `path`, then rename: a crash never
    // leaves a partial file at `path`, and concurrent downloads of the same key to the same
    // destination (two activities on one worker) never share or resume each other's temp file.
    // (fGetObject resumes and keeps `<path>.<etag>.part.minio`, so it is not used.)
    const partial = join(dirname(path), `.${basename(path)}.${randomUUID()}.partial`);
    let body: Readable | undefined;
    try {
      body = await this.client.getObject(this.bucket, key);
      // Created before streaming starts, so the cleanup below cannot race a pending open.
      const file = await open(partial, 'wx');
      await pipeline(body, file.createWriteStream());
      await rename(partial, path);
    } catch (err) {
      body?.destroy();
      await rm(partial, { force: true });
      if (isCode(err, 'NoSuchKey', 'NotFound', 'NoSuchBucket')) throw new ObjectNotFoundError(key);
      throw err;
    }
  }

  async head(key: string): Promise<ObjectInfo | null> {
    try {
      const stat = await this.client.statObject(this.bucket, key);
      return { key, size: stat.size, etag: stat.etag };
    } catch (err) {
      if (isCode(err, 'NoSuchKey', 'NotFound')) return null;
      throw err;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    const stream = this.client.listObjectsV2(this.bucket, prefix, true);
    for await (const item of stream as AsyncIterable<{ name?: string }>) if (item.name) keys.push(item.name);
    return keys.sort();
  }

  async listPrefixes(prefix: string): Promise<string[]> {
    const prefixes: string[] = [];
    // Not recursive: S3 groups keys by the next '/' after `prefix` into common prefixes.
    const stream = this.client.listObjectsV2(this.bucket, prefix, false);
    for await (const item of stream as AsyncIterable<{ prefix?: string }>) if (item.prefix) prefixes.push(item.prefix);
    return prefixes.sort();
  }
}
