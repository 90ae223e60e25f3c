import type { Logger } from '../logger.js';
import type { Registry } from '../registry/registry.js';
import type { ArtifactStore } from '../store/artifact-store.js';
import { ArtifactIntegrityError, MISSING_CATEGORY, ModelSignatureError, type LoadedModel } from '../eval/onnx-model.js';
import { loadStoredModel } from '../eval/stored-model.js';
import { ALIASES } from '../shared/constants.js';

export interface ServedModel {
  model: string;
  version: number;
  sha256: string;
  loaded: LoadedModel;
  inFlight: number;
  loadedAt: string;
  /** Set when a newer version took over: released as soon as its last request finishes. */
  retired?: Promise<void>;
}

type Retiring = ServedModel & { onDrained?: () => void };

/**
 * Keeps one inference session per model on the version its alias points at.
 * A new version is loaded (hash verified) and warmed up before it takes traffic;
 * the old session is released only after its in-flight requests finish.
 */
export class ModelHost {
  private readonly served = new Map<string, ServedModel>();
  private readonly failedLoads = new Map<string, string>();
  private refreshing: Promise<void> | undefined;
  ready = false;

  constructor(
    private readonly registry: Registry,
    private readonly store: ArtifactStore,
    private readonly logger: Logger,
    private readonly alias: string = ALIASES.production,
  ) {}

  get(model: string): ServedModel | undefined {
    return this.served.get(model);
  }

  list(): Array<Omit<ServedModel, 'loaded' | 'inFlight'>> {
    return [...this.served.values()].map(({ model, version, sha256, loadedAt }) => ({ model, version, sha256, loadedAt }));
  }

  /** Runs `fn` against the current session, counting it as in flight so a swap never releases it mid-request. */
  async use<T>(model: string, fn: (served: ServedModel) => Promise<T>): Promise<T | undefined> {
    const served = this.served.get(model);
    if (!served) return undefined;
    served.inFlight++;
    try {
      return await fn(served);
    } finally {
      served.inFlight--;
      if (served.inFlight === 0) (served as Retiring).onDrained?.();
    }
  }

  refresh(): Promise<void> {
    this.refreshing ??= this.doRefresh().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async doRefresh(): Promise<void> {
    for (const model of await this.registry.listModels()) {
      const alias = await this.registry.getAlias(model, this.alias);
      const current = this.served.get(model);
      if (!alias || (current && current.version === alias.version && current.sha256 === alias.sha256)) continue;
      const attemptKey = `${alias.version}:${alias.sha256}`;
      if (this.failedLoads.get(model) === attemptKey) continue;
      try {
        await this.swap(model, alias.version);
        this.failedLoads.delete(model);
      } catch (err) {
        // Only a verdict on the artifact itself is final; a store outage is retried next poll.
        const permanent = err instanceof ArtifactIntegrityError || err instanceof ModelSignatureError;
        if (permanent) this.failedLoads.set(model, attemptKey);
        this.logger.error(
          { model, version: alias.version, err: (err as Error).message, permanent },
          permanent ? 'refusing to serve new version; keeping the current one' : 'could not load new version yet; will retry',
        );
      }
    }
    this.ready = true;
  }

  private async swap(model: string, version: number): Promise<void> {
    const record = await this.registry.getVersion(model, version);
    const loaded = await loadStoredModel(this.store, record.artifact);
    const warmup = Object.fromEntries(loaded.metadata.inputs.map((i) => [i.name, i.type === 'float' ? 0 : MISSING_CATEGORY]));
    await loaded.predict([warmup]);
    const previous = this.served.get(model);
    this.served.set(model, { model, version, sha256: record.artifact.sha256, loaded, inFlight: 0, loadedAt: new Date().toISOString() });
    this.logger.info({ model, version, sha256: record.artifact.sha256, previous: previous?.version ?? null }, 'serving new version');
    if (previous) void this.drainAndRelease(previous);
  }

  /** Releases `old` once no request uses it: at once if idle, else when the last one finishes. */
  private drainAndRelease(old: ServedModel): Promise<void> {
    old.retired ??= new Promise<void>((resolve) => {
      const release = (): void => void old.loaded.release().finally(resolve);
      if (old.inFlight === 0) release();
      else (old as Retiring).onDrained = release;
    });
    return old.retired;
  }

  async close(): Promise<void> {
    await this.refreshing;
    for (const served of this.served.values()) await this.drainAndRelease(served);
    this.served.clear();
  }
}
