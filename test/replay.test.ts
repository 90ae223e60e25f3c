import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Worker } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils.js';
import { installTemporalRuntime } from '../src/temporal/runtime.js';
import { testLogger, workflowBundle } from './helpers/stack.js';

installTemporalRuntime(testLogger);

const DIR = 'test/fixtures/histories';
const files = readdirSync(DIR).filter((f) => f.endsWith('.json'));

/** Replays saved histories through today's workflow code: a non-deterministic change fails here. */
describe('workflow replay over saved histories', () => {
  it('has histories to replay for every pipeline path, from each release of the workflow', () => {
    const paths = ['auto-deployed', 'data-invalid', 'gate-failed', 'manual-approved', 'manual-rejected'];
    // v1: before approval policies and the stage-upsert patch; v2: with them; v3: webhooks as child workflows, deadline closes the ballot;
    // v4: pre-deployment validation, and deployment through a rollout child workflow (the rollout's own history too);
    // v5: schedules set after deployment, a monitor run, the retraining controller and the retraining it started;
    // v6: schedules follow every deployment (ensureSchedules also for a spec without monitoring, removing stale ones);
    // a monitor that finds decay and asks for a retraining, with each outcome (sent, refused, none as before v6).
    expect(files).toEqual(
      expect.arrayContaining([
        ...paths.map((p) => `${p}.json`),
        ...paths.map((p) => `${p}.v2.json`),
        'quorum-escalated.v2.json',
        ...paths.map((p) => `${p}.v3.json`),
        'quorum-escalated.v3.json',
        'webhooks-approved.v3.json',
        'expired-reminded.v3.json',
        ...paths.map((p) => `${p}.v4.json`),
        'quorum-escalated.v4.json',
        'webhooks-approved.v4.json',
        'expired-reminded.v4.json',
        'canary-no-traffic.v4.json',
        'rollout-canary-no-traffic.v4.json',
        'monitored-deployed.v5.json',
        'monitor-insufficient.v5.json',
        'retrain-deployed.v5.json',
        'retraining-controller.v5.json',
        ...paths.map((p) => `${p}.v6.json`),
        'quorum-escalated.v6.json',
        'webhooks-approved.v6.json',
        'expired-reminded.v6.json',
        'canary-no-traffic.v6.json',
        'rollout-canary-no-traffic.v6.json',
        'monitor-decay-requested.v6.json',
        'monitor-decay-refused.v6.json',
        'monitor-decay-no-outcome.v6.json',
      ]),
    );
  });

  it.each(files)('%s replays deterministically', async (file) => {
    const history = historyFromJSON(JSON.parse(readFileSync(join(DIR, file), 'utf8')));
    await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, history, file);
  });
});
