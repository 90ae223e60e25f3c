import type { Client } from '@temporalio/client';
import type { TokenStore } from '../auth/tokens.js';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import type { Registry } from '../registry/registry.js';
import type { ArtifactStore } from '../store/artifact-store.js';
import type { ApiPolicy } from './policy.js';

export interface ApiDeps {
  /** Temporal client of the namespace the pipeline workers use. */
  client: Client;
  config: Config;
  registry: Registry;
  store: ArtifactStore;
  tokens: TokenStore;
  logger: Logger;
  /**
   * Per-model read/operate/approve rights and production rules. Undefined: development
   * mode, every authenticated identity may read, operate and decide every model, and
   * there is no production rule (members of "admin" may always read, operate and decide).
   */
  authz?: ApiPolicy;
  /** Bound on each status query (a run whose worker is down would otherwise hang the request). Default 5000. */
  queryTimeoutMs?: number;
}
