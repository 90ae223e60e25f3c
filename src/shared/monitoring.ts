/** Names shared by the activities that start monitoring and retraining workflows and by the workflows themselves. */
export const MONITOR_WORKFLOW = 'monitorModel';
export const SCHEDULED_RETRAIN_WORKFLOW = 'scheduledRetraining';
export const RETRAINING_CONTROLLER = 'retrainingController';
export const RETRAIN_SIGNAL = 'retrainRequested';
export const RETRAINING_STATE_QUERY = 'retrainingState';
/** One controller per model decides every retraining of it. */
export const retrainingControllerId = (model: string): string => `retraining-${model}`;
/** Identity a retraining run is submitted as (so its own approval may still be given by people). */
export const RETRAINING_SUBMITTER = 'conveyor-retraining';
