import { proxyActivities } from '@temporalio/workflow';
import type { PipelineActivities } from '../activities/index.js';
import type { NotificationInput } from '../activities/notify.js';
import { notificationPreset } from './presets.js';

/**
 * Delivers one webhook, retrying durably. A workflow of its own (started by the
 * pipeline and abandoned when the pipeline closes), so a receiver that is down for
 * hours neither blocks the run nor loses the event.
 */
export async function deliverNotification(input: NotificationInput): Promise<{ status: number }> {
  const { sendNotification } = proxyActivities<PipelineActivities>(notificationPreset);
  return sendNotification(input);
}
