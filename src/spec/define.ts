import { formatSpecIssues, pipelineSpecSchema, type PipelineSpec, type PipelineSpecInput } from './schema.js';

export class InvalidSpecError extends Error {
  constructor(readonly issues: string, source?: string) {
    super(`invalid pipeline spec${source ? ` in ${source}` : ''}:\n${issues}`);
    this.name = 'InvalidSpecError';
  }
}

/** Marks a validated pipeline so loaders can tell it from arbitrary exports. */
export interface PipelineDefinition {
  readonly kind: 'conveyor.pipeline';
  readonly spec: PipelineSpec;
}

/** Validates a pipeline spec; errors name every offending field. */
export function parsePipelineSpec(input: unknown, source?: string): PipelineSpec {
  const parsed = pipelineSpecSchema.safeParse(input);
  if (!parsed.success) throw new InvalidSpecError(formatSpecIssues(parsed.error), source);
  return parsed.data;
}

/** The entry point of a pipeline file: `export default definePipeline({...})`. */
export function definePipeline(spec: PipelineSpecInput): PipelineDefinition {
  return { kind: 'conveyor.pipeline', spec: parsePipelineSpec(spec) };
}
