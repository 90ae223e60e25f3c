/** The public API for pipeline files and embedding Conveyor. */
export { definePipeline, parsePipelineSpec, InvalidSpecError } from './spec/define.js';
export type { PipelineDefinition } from './spec/define.js';
export type { PipelineSpec, PipelineSpecInput } from './spec/schema.js';
export type { TypeScriptTrainer, TrainerJob, TrainerContext } from './training/types.js';
export type { CustomCheck } from './data/types.js';
export { defineWorkerPlugins } from './plugins.js';
export type { WorkerPlugins } from './plugins.js';
