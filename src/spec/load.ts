import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { CodeVersion } from '../shared/registry-types.js';
import { InvalidSpecError, parsePipelineSpec, type PipelineDefinition } from './define.js';
import type { PipelineSpec } from './schema.js';
import { canonicalJson } from './canonical.js';

export { canonicalJson };

export interface LoadedPipeline {
  spec: PipelineSpec;
  code: CodeVersion;
  file: string;
}

export function specHash(spec: PipelineSpec): string {
  return createHash('sha256').update(canonicalJson(spec)).digest('hex');
}

/**
 * Relative paths in a spec are relative to the pipeline file, so the same file
 * runs from any working directory. Trainer arguments are resolved when such a
 * file exists; flags and interpreter names are left alone.
 */
export function resolveSpecPaths(spec: PipelineSpec, baseDir: string): PipelineSpec {
  const source = spec.dataset.source;
  const resolvedSource = source.startsWith('s3://') || isAbsolute(source) ? source : resolve(baseDir, source);
  const trainer =
    spec.trainer.kind === 'command'
      ? {
          ...spec.trainer,
          command: spec.trainer.command.map((arg) =>
            arg.startsWith('-') || arg.startsWith('{') || isAbsolute(arg) || !existsSync(resolve(baseDir, arg)) ? arg : resolve(baseDir, arg),
          ),
        }
      : spec.trainer;
  return { ...spec, dataset: { ...spec.dataset, source: resolvedSource }, trainer };
}

function git(args: string[], cwd: string): string | null {
  try {
    return execFileSync('git', args, { cwd, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return null;
  }
}

export function codeVersion(spec: PipelineSpec, file: string | null): CodeVersion {
  const dir = file ? dirname(file) : process.cwd();
  const commit = git(['rev-parse', 'HEAD'], dir);
  const dirty = commit !== null && (git(['status', '--porcelain', '--', '.'], dir) ?? '') !== '';
  return { specHash: specHash(spec), gitCommit: commit, gitDirty: dirty, pipelineFile: file };
}

/** Imports a pipeline .ts/.js file (TypeScript through tsx) and validates its default export. */
export async function loadPipelineFile(path: string): Promise<LoadedPipeline> {
  const file = resolve(path);
  if (!existsSync(file)) throw new InvalidSpecError(`file not found: ${file}`);
  const { tsImport } = await import('tsx/esm/api');
  let mod: Record<string, unknown>;
  try {
    mod = (await tsImport(pathToFileURL(file).href, import.meta.url)) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof InvalidSpecError || (err as Error)?.name === 'InvalidSpecError') {
      throw new InvalidSpecError((err as InvalidSpecError).issues ?? (err as Error).message, file);
    }
    throw err;
  }
  const exported = (mod.default ?? mod.pipeline) as PipelineDefinition | Record<string, unknown> | undefined;
  if (!exported) throw new InvalidSpecError('(file): no default export; write `export default definePipeline({...})`', file);
  const raw = (exported as PipelineDefinition).kind === 'conveyor.pipeline' ? (exported as PipelineDefinition).spec : exported;
  const spec = resolveSpecPaths(parsePipelineSpec(raw, file), dirname(file));
  return { spec, code: codeVersion(spec, file), file };
}
