import { proxyActivities, upsertSearchAttributes } from '@temporalio/workflow';
import { stageSearchAttribute } from '../src/shared/search-attributes.js';
import type { BareActivities } from './stub-activities.js';
export { modelPipeline } from '../workflows/index.js';
export { bareWorkflow } from './workflows.js';
export { modelPipelineVariant } from './_variant-pipeline.js';

const { echo } = proxyActivities<BareActivities & { echo(p: unknown): Promise<unknown> }>({ startToCloseTimeout: '30s' });
/** Bare + extras: `upserts` SA upserts spread over the calls, `payloads[i]` sent to call i, `results[i]` returned. */
export async function bareExtra(n: number, upserts: number, payloads: unknown[]): Promise<number> {
  for (let i = 0; i < n; i++) {
    if (i < upserts) upsertSearchAttributes([{ key: stageSearchAttribute, value: `s${i}` }]);
    await echo(payloads[i] ?? null);
  }
  return n;
}

const { sized } = proxyActivities<{ sized(p: { pad: string; out: number }): Promise<string> }>({ startToCloseTimeout: '30s' });
/** Bare + pipeline-like payloads: call i sends sizes[i][0] bytes and gets sizes[i][1] back. */
export async function barePayload(sizes: [number, number][], upserts: number): Promise<number> {
  for (let i = 0; i < sizes.length; i++) {
    if (i < upserts) upsertSearchAttributes([{ key: stageSearchAttribute, value: `s${i}` }]);
    await sized({ pad: 'x'.repeat(sizes[i]![0]), out: sizes[i]![1] });
  }
  return sizes.length;
}
