import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { CustomCheck } from './data/types.js';
import type { TypeScriptTrainer } from './training/types.js';

/** Code a pipeline refers to by name, registered on the worker: `conveyor worker --plugin file.ts`. */
export interface WorkerPlugins {
  trainers?: Record<string, TypeScriptTrainer>;
  checks?: Record<string, CustomCheck>;
}

export function defineWorkerPlugins(plugins: WorkerPlugins): WorkerPlugins {
  return plugins;
}

export async function loadWorkerPlugins(files: string[]): Promise<Required<WorkerPlugins>> {
  const merged: Required<WorkerPlugins> = { trainers: {}, checks: {} };
  const { tsImport } = await import('tsx/esm/api');
  for (const file of files) {
    const mod = (await tsImport(pathToFileURL(resolve(file)).href, import.meta.url)) as { default?: WorkerPlugins };
    const plugins = mod.default;
    if (!plugins || typeof plugins !== 'object') throw new Error(`${file}: export default defineWorkerPlugins({ trainers, checks })`);
    for (const [kind, entries] of Object.entries({ trainers: plugins.trainers ?? {}, checks: plugins.checks ?? {} }) as Array<['trainers' | 'checks', Record<string, never>]>) {
      for (const [name, value] of Object.entries(entries)) {
        if (name in merged[kind]) throw new Error(`${file}: ${kind.slice(0, -1)} "${name}" is registered twice`);
        (merged[kind] as Record<string, unknown>)[name] = value;
      }
    }
  }
  return merged;
}
