import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowUpdateFailedError, type WorkflowHandle } from '@temporalio/client';
import { expect } from 'vitest';
import { loadPipelineFile, specHash, type LoadedPipeline } from '../../src/spec/load.js';
import type { PipelineSpec, PipelineSpecInput } from '../../src/spec/schema.js';
import { parsePipelineSpec } from '../../src/spec/define.js';
import { runStatus } from '../../src/runs.js';
import type { PipelineStatus } from '../../workflows/messages.js';

export const EXAMPLE = 'examples/credit-risk/pipeline.ts';

/**
 * The example pipeline, patched and validated again (so defaults are filled in as for a user's
 * file), with the spec hash of the patched spec, as loading a file with that spec would give.
 */
export async function examplePipeline(patch: (spec: PipelineSpec) => PipelineSpecInput = (s) => s): Promise<LoadedPipeline> {
  const loaded = await loadPipelineFile(EXAMPLE);
  const spec = parsePipelineSpec(patch(loaded.spec));
  return { ...loaded, spec, code: { ...loaded.code, specHash: specHash(spec) } };
}

/** Polls the status query until `predicate` holds (bounded). */
export async function waitForStatus(handle: WorkflowHandle, predicate: (s: PipelineStatus) => boolean, timeoutMs = 60_000): Promise<PipelineStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: PipelineStatus | undefined;
  while (Date.now() < deadline) {
    last = await runStatus(handle).catch(() => undefined);
    if (last && predicate(last)) return last;
    await sleep(100);
  }
  throw new Error(`status condition not reached within ${timeoutMs}ms; last status: ${JSON.stringify(last)}`);
}

/** Awaits an update that must be refused by its validator; returns the refusal message. */
export async function refusal(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowUpdateFailedError);
  return String((err as WorkflowUpdateFailedError).cause?.message);
}
