import type { ArtifactStore } from '../src/store/artifact-store.js';
import type { Registry } from '../src/registry/registry.js';
import type { Logger } from '../src/logger.js';
import type { TypeScriptTrainer } from '../src/training/types.js';
import type { CustomCheck } from '../src/data/types.js';

/** Everything activities touch, injected so tests can pass real or in-memory parts. */
export interface ActivityDeps {
  store: ArtifactStore;
  registry: Registry;
  logger: Logger;
  /** Local scratch and cache root on this worker. */
  workDir: string;
  /** Interpreter substituted for "{python}" in trainer commands. */
  python: string;
  /** Opens another bucket on the same endpoint, for s3:// dataset sources. */
  openBucket(bucket: string): ArtifactStore;
  tsTrainers?: Record<string, TypeScriptTrainer>;
  /** Webhook signing secret and the hosts webhooks may go to. */
  webhooks?: { secret: string | undefined; allowHosts: string[]; allowPrivate: boolean };
  customChecks?: Record<string, CustomCheck>;
}
