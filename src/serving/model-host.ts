import type { Logger } from '../logger.js';
import type { Registry } from '../registry/registry.js';
import type { ArtifactStore } from '../store/artifact-store.js';
import { ArtifactIntegrityError, MISSING_CATEGORY, ModelSignatureError, type LoadedModel } from '../eval/onnx-model.js';
import { loadStoredModel } from '../eval/stored-model.js';
import type { ThreadedModel } from '../eval/threaded-model.js';
import { ALIASES } from '../shared/constants.js';
import type { TrafficMode } from '../shared/registry-types.js';

export interface ServedModel {
  model: string;
  version: number;
  sha256: string;
  loaded: LoadedModel;
  /** The model's input names, for per-request signature checks. */
  inputNames: ReadonlySet<string>;
  inFlight: number;
  loadedAt: string;
  /** Set when no route uses it any more: released as soon as its last request finishes. */
  retired?: Promise<void>;
}

type Retiring = ServedModel & { onDrained?: () => void };

/** A share of traffic (canary, ab) or a copy of it (shadow) going to a candidate version. */
export interface TrafficSplit {
  mode: Exclude<TrafficMode, 'none'>;
  candidate: ServedModel;
  /** Percent of requests routed to the candidate (canary, ab); shadow copies every request. */
  percent: number;
  rolloutId: string | null;
}

export interface ModelRoute {
  production: ServedModel;
  split: TrafficSplit | null;
}

export interface RouteSummary {
  model: string;
  version: number;
  sha256: string;
  loadedAt: string;
  traffic: { mode: TrafficSplit['mode']; version: number; percent: number; rolloutId: string | null } | null;
}

/** Shadow candidates run on a thread of their own (see threaded-model.ts), so their sessions are kept apart. */
const sessionKey = (version: number, sha256: string, onThread: boolean): string => `${version}:${sha256}${onThread ? ':thread' : ''}`;

/**
 * Keeps the inference sessions each model's routes need: the version its alias points
 * at and, during a rollout, the candidate named by the model's traffic split. A new
 * version is loaded (hash verified) and warmed up before any request is routed to it;
 * a session no route uses is released only after its in-flight requests finish. A
 * session moving between roles (canary promoted to production) is kept, not reloaded.
 * A shadow candidate runs on a worker thread, so scoring copies never blocks the
 * event loop that answers production requests.
 */
export class ModelHost {
  private readonly routes = new Map<string, ModelRoute>();
  private readonly sessions = new Map<string, Map<string, ServedModel>>();
  /** Per model, the sessions (version and hash) whose artifact was refused: never retried. */
  private readonly failedLoads = new Map<string, Set<string>>();
  private refreshing: Promise<void> | undefined;
  /** The refresh that runs after the current one, shared by every caller that arrived during it. */
  private queued: Promise<void> | undefined;
  ready = false;

  constructor(
    private readonly registry: Registry,
    private readonly store: ArtifactStore,
    private readonly logger: Logger,
    private readonly alias: string = ALIASES.production,
  ) {}

  route(model: string): ModelRoute | undefined {
    return this.routes.get(model);
  }

  /** The production session of a model. */
  get(model: string): ServedModel | undefined {
    return this.routes.get(model)?.production;
  }

  list(): RouteSummary[] {
    return [...this.routes.entries()].map(([model, { production: p, split }]) => ({
      model,
      version: p.version,
      sha256: p.sha256,
      loadedAt: p.loadedAt,
      traffic: split ? { mode: split.mode, version: split.candidate.version, percent: split.percent, rolloutId: split.rolloutId } : null,
    }));
  }

  /** Runs `fn` against the model's production session (see `useSession`). */
  async use<T>(model: string, fn: (served: ServedModel) => Promise<T>): Promise<T | undefined> {
    const served = this.get(model);
    return served ? this.useSession(served, fn) : undefined;
  }

  /** Runs `fn` against a session, counting it as in flight so a swap never releases it mid-request. */
  async useSession<T>(served: ServedModel, fn: (served: ServedModel) => Promise<T>): Promise<T> {
    const release = this.hold(served);
    try {
      return await fn(served);
    } finally {
      release();
    }
  }

  /** Counts a use of the session until the returned function is called (once): `useSession` without a promise. */
  hold(served: ServedModel): () => void {
    served.inFlight++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      served.inFlight--;
      if (served.inFlight === 0) (served as Retiring).onDrained?.();
    };
  }

  /**
   * Reloads routes from the registry. The promise settles after a refresh that started
   * reading the registry after this call: a refresh already running may have read it
   * before the caller's change (a poll that read the alias just before a rollout set its
   * traffic), so callers arriving during one share a single refresh that runs after it.
   */
  refresh(): Promise<void> {
    // Checked first: between the running refresh's end and the queued one's start, only `queued` is set.
    if (this.queued) return this.queued;
    if (!this.refreshing) return this.startRefresh();
    this.queued = this.refreshing
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return this.startRefresh();
      });
    return this.queued;
  }

  /**
   * The periodic poll: joins a refresh already running instead of queueing another, so a
   * refresh slower than the poll interval (a slow store) is not followed by another at once.
   */
  poll(): Promise<void> {
    return this.queued ?? this.refreshing ?? this.startRefresh();
  }

  private startRefresh(): Promise<void> {
    const run: Promise<void> = this.doRefresh().finally(() => {
      if (this.refreshing === run) this.refreshing = undefined;
    });
    this.refreshing = run;
    return run;
  }

  private async doRefresh(): Promise<void> {
    for (const model of await this.registry.listModels()) {
      const [alias, traffic] = await Promise.all([this.registry.getAlias(model, this.alias), this.registry.getTraffic(model)]);
      if (!alias) continue;
      const current = this.routes.get(model);
      const production = await this.session(model, alias.version, alias.sha256, false);
      if (!production) continue;
      let split: TrafficSplit | null = null;
      if (traffic && traffic.mode !== 'none' && traffic.candidate && traffic.candidate.version !== alias.version) {
        const candidate = await this.session(model, traffic.candidate.version, traffic.candidate.sha256, traffic.mode === 'shadow');
        // A candidate that cannot be loaded gets no traffic; production keeps all of it.
        if (candidate) split = { mode: traffic.mode, candidate, percent: traffic.percent, rolloutId: traffic.rolloutId };
      }
      this.routes.set(model, { production, split });
      if (current?.production !== production) {
        this.logger.info({ model, version: production.version, sha256: production.sha256, previous: current?.production.version ?? null }, 'serving new version');
      }
      const splitChanged = (current?.split?.candidate ?? null) !== (split?.candidate ?? null) || current?.split?.percent !== split?.percent || current?.split?.mode !== split?.mode;
      if (splitChanged) {
        this.logger.info({ model, mode: split?.mode ?? 'none', candidate: split?.candidate.version ?? null, percent: split?.percent ?? 0, rolloutId: split?.rolloutId ?? null }, 'traffic split changed');
      }
      this.releaseUnused(model);
    }
    this.ready = true;
  }

  /**
   * The loaded, warmed-up session of a version, loading it if needed. Undefined when it
   * cannot be loaded: a verdict on the artifact itself (hash, signature) is final for
   * that artifact; a store outage is retried on the next poll.
   */
  private async session(model: string, version: number, sha256: string, onThread: boolean): Promise<ServedModel | undefined> {
    const key = sessionKey(version, sha256, onThread);
    const existing = this.sessions.get(model)?.get(key);
    const dead = existing?.loaded.failure?.();
    if (existing && !dead) return existing;
    if (existing && dead) {
      // An inference thread that died (native crash, out of memory) is not the artifact's
      // fault: load the version again rather than fail every request routed to it.
      this.logger.warn({ model, version, err: dead.message }, 'inference thread died; loading the version again');
      this.sessions.get(model)!.delete(key);
      void this.drainAndRelease(existing);
    }
    if (this.failedLoads.get(model)?.has(key)) return undefined;
    try {
      const record = await this.registry.getVersion(model, version);
      if (record.artifact.sha256 !== sha256) throw new ArtifactIntegrityError(sha256, record.artifact.sha256);
      const loaded = await loadStoredModel(this.store, record.artifact, { onThread });
      const warmup = Object.fromEntries(loaded.metadata.inputs.map((i) => [i.name, i.type === 'float' ? 0 : MISSING_CATEGORY]));
      await loaded.predict([warmup]);
      const served: ServedModel = { model, version, sha256, loaded, inputNames: new Set(loaded.metadata.inputs.map((i) => i.name)), inFlight: 0, loadedAt: new Date().toISOString() };
      let byKey = this.sessions.get(model);
      if (!byKey) this.sessions.set(model, (byKey = new Map()));
      byKey.set(key, served);
      if (onThread) {
        // A thread that dies while its session is in use (not released) is loaded again now, not at the next poll.
        const sessions = byKey;
        (loaded as ThreadedModel).thread.once('exit', () => {
          if (sessions.get(key) !== served) return;
          this.refresh().catch((err: unknown) => this.logger.warn({ model, version, err: (err as Error).message }, 'could not reload a dead inference thread; the next poll will'));
        });
      }
      return served;
    } catch (err) {
      const permanent = err instanceof ArtifactIntegrityError || err instanceof ModelSignatureError;
      if (permanent) this.failedLoads.set(model, (this.failedLoads.get(model) ?? new Set()).add(key));
      this.logger.error(
        { model, version, err: (err as Error).message, permanent },
        permanent ? 'refusing to serve this version; routes keep their current sessions' : 'could not load version yet; will retry',
      );
      return undefined;
    }
  }

  /** Drains and releases sessions of `model` that its route no longer uses. */
  private releaseUnused(model: string): void {
    const route = this.routes.get(model);
    const byKey = this.sessions.get(model);
    if (!byKey) return;
    for (const [key, served] of byKey) {
      if (served === route?.production || served === route?.split?.candidate) continue;
      byKey.delete(key);
      void this.drainAndRelease(served);
    }
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
    // A refresh still running (and the one queued after it) finishes first; its failure is the poll's to report.
    await Promise.allSettled([this.refreshing, this.queued]);
    this.routes.clear();
    // Out of the map before they are released: a released thread's exit must not look like a death to reload.
    const all = [...this.sessions.values()].flatMap((byKey) => [...byKey.values()]);
    for (const byKey of this.sessions.values()) byKey.clear();
    for (const served of all) await this.drainAndRelease(served);
    this.sessions.clear();
  }
}
