import type { ActivityDeps } from './deps.js';
import { dataActivities } from './data.js';
import { trainingActivities } from './training.js';
import { evaluationActivities } from './evaluation.js';
import { registryActivities } from './registry.js';
import { notifyActivities } from './notify.js';
import { deploymentActivities } from './deployment.js';
import { monitoringActivities } from './monitoring.js';

export type { ActivityDeps } from './deps.js';

/** Builds every activity from injected dependencies; no module-level clients. */
export function createActivities(deps: ActivityDeps) {
  const { materialize: _materialize, ...data } = dataActivities(deps);
  return {
    ...data,
    ...trainingActivities(deps),
    ...evaluationActivities(deps),
    ...registryActivities(deps),
    ...notifyActivities(deps),
    ...deploymentActivities(deps),
    ...monitoringActivities(deps),
  };
}

export type PipelineActivities = ReturnType<typeof createActivities>;
