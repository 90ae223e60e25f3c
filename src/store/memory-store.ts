import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import {
  ObjectNotFoundError,
  PreconditionFailedError,
  type ArtifactStore,
  type ObjectInfo,
  type PutOptions,
} from './artifact-store.js';

/** In-memory store with the same conditional-write semantics as S3; for unit tests. */
export class MemoryArtifactStore implements ArtifactStore {
  readonly bucket = 'memory';
  private readonly objects = new Map<string, { body: Buffer; etag: string }>();

  async ensureBucket(): Promise<void> {}

  async put(key: string, body: Buffer | string, opts?: PutOptions): Promise<{ etag: string }> {
    const existing = this.objects.get(key);
    if (opts?.ifAbsent && existing) throw new PreconditionFailedError(key);
    if (opts?.ifMatch && existing?.etag !== opts.ifMatch) throw new PreconditionFailedError(key);
    const buffer = typeof body === 'string' ? Buffer.from(body) : Buffer.from(body);
    const etag = createHash('md5').update(buffer).digest('hex');
    this.objects.set(key, { body: buffer, etag });
    return { etag };
  }

  async putStream(key: string, body: Readable, _size: number, opts?: PutOptions): Promise<{ etag: string }> {
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(Buffer.from(chunk as Buffer));
    return this.put(key, Buffer.concat(chunks), opts);
  }

  async get(key: string): Promise<Buffer> {
    const found = this.objects.get(key);
    if (!found) throw new ObjectNotFoundError(key);
    return found.body;
  }

  async getWithEtag(key: string): Promise<{ body: Buffer; etag: string } | null> {
    return this.objects.get(key) ?? null;
  }

  async getToFile(key: string, path: string): Promise<void> {
    await writeFile(path, await this.get(key));
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const found = this.objects.get(key);
    return found ? { key, size: found.body.length, etag: found.etag } : null;
  }

  async list(prefix: string): Promise<string[]> {
    return [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort();
  }

  async listPrefixes(prefix: string): Promise<string[]> {
    const prefixes = new Set<string>();
    for (const key of this.objects.keys()) {
      if (!key.startsWith(prefix)) continue;
      const slash = key.indexOf('/', prefix.length);
      if (slash >= 0) prefixes.add(key.slice(0, slash + 1));
    }
    return [...prefixes].sort();
  }
}
