export { modelPipeline } from './model-pipeline.js';
export type { PipelineInput, PipelineResult } from './model-pipeline.js';
export { deliverNotification } from './notification.js';
export { rolloutWorkflow } from './rollout.js';
export type { RolloutInput, RolloutResult } from './rollout.js';
export { monitorModel, scheduledRetraining } from './monitor.js';
export { retrainingController } from './retraining.js';
