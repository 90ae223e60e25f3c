import { ApplicationFailure } from '@temporalio/activity';
import { WebhookDeliveryError, WebhookUrlError, sendWebhook, type WebhookEvent } from '../src/notify/webhooks.js';
import type { ActivityDeps } from './deps.js';
import { activityLogger } from './context.js';

export interface NotificationInput {
  url: string;
  event: WebhookEvent;
}

/** A receiver Conveyor must never call (not allow-listed, private address, no secret): retrying cannot help. */
export const WEBHOOK_REFUSED = 'WebhookRefusedError';

export function notifyActivities(deps: ActivityDeps) {
  return {
    /** Delivers one signed webhook; the activity's retry policy makes delivery durable. */
    async sendNotification(input: NotificationInput): Promise<{ status: number }> {
      const log = activityLogger(deps.logger);
      const config = deps.webhooks;
      if (!config?.secret) {
        throw ApplicationFailure.create({ type: WEBHOOK_REFUSED, nonRetryable: true, message: 'CONVEYOR_WEBHOOK_SECRET is not set on this worker; webhooks are not sent unsigned' });
      }
      try {
        const sent = await sendWebhook({ url: input.url, secret: config.secret, event: input.event, policy: { allowHosts: config.allowHosts, allowPrivate: config.allowPrivate } });
        log.info({ kind: input.event.kind, deliveryId: sent.deliveryId, status: sent.status }, 'webhook delivered');
        return { status: sent.status };
      } catch (err) {
        if (err instanceof WebhookUrlError) throw ApplicationFailure.create({ type: WEBHOOK_REFUSED, nonRetryable: true, message: err.message });
        if (err instanceof WebhookDeliveryError && !err.retryable) throw ApplicationFailure.create({ type: WEBHOOK_REFUSED, nonRetryable: true, message: err.message });
        throw err;
      }
    },
  };
}
