/**
 * Workflows bundled for the pipeline-overhead benchmark: Conveyor's real
 * `modelPipeline`, unchanged, next to a bare baseline that makes the same number
 * of activity calls with no stages, search attributes, handlers or payloads.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { BareActivities } from './stub-activities.js';

export { modelPipeline } from '../workflows/index.js';

const { noop } = proxyActivities<BareActivities>({ startToCloseTimeout: '30s' });

/** Calls `noop` `activities` times, one after the other. */
export async function bareWorkflow(activities: number): Promise<number> {
  for (let i = 0; i < activities; i++) await noop(i);
  return activities;
}
