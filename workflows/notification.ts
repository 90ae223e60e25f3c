import { ParentClosePolicy, log, proxyActivities, startChild } from '@temporalio/workflow';
import type { PipelineActivities } from '../activities/index.js';
import type { NotificationInput } from '../activities/notify.js';
import type { WebhookEventKind } from '../src/notify/webhooks.js';
import type { WebhookSpec } from '../src/spec/schema.js';
import { notificationPreset } from './presets.js';

/**
 * Sends one event to every webhook of a spec that wants its kind: one delivery workflow per
 * receiver, abandoned when the caller closes, so a retry never re-sends to a receiver that
 * has it and a receiver that is down never holds the caller up. `eventId` must be unique
 * per event (it names the delivery workflows). Resolves when every delivery has started.
 */
export function sendToWebhooks(webhooks: readonly WebhookSpec[], kind: WebhookEventKind, eventId: string, data: Record<string, unknown>): Array<Promise<unknown>> {
  const event = { id: eventId, kind, occurredAt: new Date().toISOString(), data };
  return webhooks
    .filter((w) => !w.events || w.events.includes(kind))
    .map((target, i) =>
      startChild(deliverNotification, {
        args: [{ url: target.url, event }],
        workflowId: `notify-${event.id}-${i}`,
        parentClosePolicy: ParentClosePolicy.ABANDON,
      }).catch((err: unknown) => log.warn('webhook delivery not started', { kind, error: String(err) })),
    );
}

/**
 * Delivers one webhook, retrying durably. A workflow of its own (started by the
 * pipeline and abandoned when the pipeline closes), so a receiver that is down for
 * hours neither blocks the run nor loses the event.
 */
export async function deliverNotification(input: NotificationInput): Promise<{ status: number }> {
  const { sendNotification } = proxyActivities<PipelineActivities>(notificationPreset);
  return sendNotification(input);
}
