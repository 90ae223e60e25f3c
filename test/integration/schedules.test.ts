import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { modelSearchAttribute } from '../../src/shared/search-attributes.js';
import {
  backfillSchedule,
  deleteSchedule,
  describeSchedule,
  getSchedule,
  listSchedules,
  monitorScheduleId,
  parseScheduleId,
  pauseSchedule,
  retrainScheduleId,
  triggerSchedule,
  unpauseSchedule,
  upsertSchedule,
  type ScheduleInfo,
} from '../../src/temporal/schedules.js';
import { testConfig } from '../helpers/stack.js';

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

describe('Temporal schedules', () => {
  let connection: Connection;
  let client: Client;
  // A model name private to this run; a workflow type no worker knows and a task queue nobody polls: started runs just wait.
  const model = `sched-${randomUUID().slice(0, 8)}`;
  const id = monitorScheduleId(model);
  const workflowId = `monitor-run-${model}`;
  let taskQueue: string;
  const started = new Set<string>();

  beforeAll(async () => {
    const config = testConfig('schedules');
    taskQueue = `${config.taskQueues.pipeline}-nobody`;
    connection = await Connection.connect({ address: config.temporal.address });
    client = new Client({ connection, namespace: config.temporal.namespace });
  });

  afterAll(async () => {
    await deleteSchedule(client, id).catch(() => undefined);
    await deleteSchedule(client, retrainScheduleId(model)).catch(() => undefined);
    for (const wid of started) await client.workflow.getHandle(wid).terminate('test cleanup').catch(() => undefined);
    await connection?.close();
  });

  const upsert = (args: unknown[]) =>
    upsertSchedule(client, { scheduleId: id, workflowType: 'conveyorTestNoSuchWorkflow', args, taskQueue, workflowId, spec: { every: '1h' }, memo: { by: 'test' }, note: 'monitoring test' });

  async function running(): Promise<ScheduleInfo> {
    const info = await getSchedule(client, id);
    for (const a of info.recentActions) started.add(a.workflowId);
    return info;
  }

  it('ids: monitor-/retrain- plus a model name, or a safe pattern', () => {
    expect(monitorScheduleId('credit-risk')).toBe('monitor-credit-risk');
    expect(retrainScheduleId('credit-risk')).toBe('retrain-credit-risk');
    expect(parseScheduleId('retrain-credit-risk')).toEqual({ kind: 'retrain', model: 'credit-risk' });
    expect(parseScheduleId('nightly.report_1')).toEqual({ kind: 'other', model: null });
    expect(() => parseScheduleId('monitor-Bad Model')).toThrow(/invalid schedule id "monitor-Bad Model"/);
    expect(() => parseScheduleId('../etc')).toThrow(/invalid schedule id/);
    expect(() => monitorScheduleId('UPPER')).toThrow(/not a valid model name/);
  });

  it('upsert creates, list shows kind, model and next times; upsert again updates args and keeps paused', async () => {
    expect(await upsert([{ model, round: 1 }])).toEqual({ created: true });
    const listed = await until('the schedule in list', async () => (await listSchedules(client, { model })).find((s) => s.id === id));
    expect(listed).toMatchObject({ kind: 'monitor', model, paused: false, note: 'monitoring test', spec: 'every 1h', workflowType: 'conveyorTestNoSuchWorkflow', running: 0 });
    expect(listed.nextActionTimes).toHaveLength(3);
    const [t0, t1] = listed.nextActionTimes.map((t) => Date.parse(t));
    expect(t1! - t0!).toBe(3_600_000);
    expect(await listSchedules(client, { model: `${model}-other` })).toEqual([]);

    const desc = await describeSchedule(client, id);
    expect(desc.policies).toMatchObject({ overlap: 'SKIP', catchupWindow: 3_600_000 });
    expect(desc.typedSearchAttributes.get(modelSearchAttribute)).toBe(model);
    const actionAttrs = desc.action.typedSearchAttributes;
    const actionModel = Array.isArray(actionAttrs) ? actionAttrs.find((p) => p.key.name === modelSearchAttribute.name)?.value : actionAttrs?.get(modelSearchAttribute);
    expect(actionModel).toBe(model);
    expect(desc.memo).toEqual({ by: 'test' });

    await pauseSchedule(client, id, 'maintenance window');
    expect(await getSchedule(client, id)).toMatchObject({ paused: true, note: 'maintenance window' });
    const paused = await until('paused in list', async () => (await listSchedules(client, { model })).find((s) => s.id === id && s.paused));
    expect(paused.note).toBe('maintenance window');

    // Two deploys upserting at once: both succeed, the schedule stays paused, the args are one of theirs.
    const both = await Promise.all([upsert([{ model, round: 2 }]), upsert([{ model, round: 2 }])]);
    expect(both).toEqual([{ created: false }, { created: false }]);
    const updated = await describeSchedule(client, id);
    expect(updated.action.args).toEqual([{ model, round: 2 }]);
    expect(updated.state).toMatchObject({ paused: true, note: 'maintenance window' });

    await unpauseSchedule(client, id, 'back');
    expect(await getSchedule(client, id)).toMatchObject({ paused: false, note: 'back' });
  });

  it('trigger starts one run, even when paused; a second trigger is skipped while it runs (SKIP)', async () => {
    await pauseSchedule(client, id, 'paused for the trigger test');
    await triggerSchedule(client, id);
    const first = await until('a triggered run', async () => {
      const info = await running();
      return info.running === 1 && info.recentActions.length === 1 ? info : undefined;
    });
    const action = first.recentActions[0]!;
    expect(action.workflowId.startsWith(`${workflowId}-`)).toBe(true);
    const run = await client.workflow.getHandle(action.workflowId).describe();
    expect(run.status.name).toBe('RUNNING');
    expect(run.type).toBe('conveyorTestNoSuchWorkflow');
    expect(run.typedSearchAttributes.get(modelSearchAttribute)).toBe(model);

    await triggerSchedule(client, id);
    const skipped = await until('the skip counted', async () => {
      const info = await running();
      return info.skippedOverlap >= 1 ? info : undefined;
    });
    expect(skipped.running).toBe(1);
    expect(skipped.actionsTaken).toBe(1);
    await client.workflow.getHandle(action.workflowId).terminate('test');
    await until('no run', async () => (await running()).running === 0);
    await unpauseSchedule(client, id, 'back');
  });

  it('backfill over three hours runs three actions, one at a time (BUFFER_ALL), even when paused', async () => {
    await pauseSchedule(client, id, 'paused for the backfill test');
    const hour = 3_600_000;
    const base = Math.floor(Date.now() / hour) * hour - 10 * hour;
    // Both ends are included: [base+1h, base+3h] holds the hourly times base+1h, base+2h and base+3h.
    await backfillSchedule(client, id, new Date(base + hour), new Date(base + 3 * hour));
    const seen: string[] = [];
    for (let i = 1; i <= 3; i++) {
      const info = await until(`backfilled action ${i}`, async () => {
        const x = await running();
        const fresh = x.recentActions.filter((a) => Date.parse(a.scheduledAt) < base + 4 * hour && !seen.includes(a.workflowId));
        return x.running === 1 && fresh.length === 1 ? { x, a: fresh[0]! } : undefined;
      });
      // Never two at once: the rest wait in the buffer behind the running one.
      expect(info.x.running).toBe(1);
      expect(info.x.buffered).toBe(3 - i);
      expect(Date.parse(info.a.scheduledAt)).toBe(base + i * hour);
      expect(info.a.workflowId).toBe(`${workflowId}-${new Date(base + i * hour).toISOString().replace('.000Z', 'Z')}`);
      seen.push(info.a.workflowId);
      await client.workflow.getHandle(info.a.workflowId).terminate('test');
    }
    await until('no run', async () => (await running()).running === 0);
    expect((await getSchedule(client, id)).buffered).toBe(0);
    await unpauseSchedule(client, id, 'back');
  });

  it('cron spec reads back as cron; delete then describe names the id; unknown ids error', async () => {
    const rid = retrainScheduleId(model);
    const retrain = () =>
      upsertSchedule(client, { scheduleId: rid, workflowType: 'conveyorTestNoSuchWorkflow', args: [], taskQueue, workflowId: `retrain-run-${model}`, spec: { cron: ['0 3 * * *'] }, note: 'nightly' });
    // Two first deploys at once: one creates, the other finds it and updates; neither fails.
    const created = (await Promise.all([retrain(), retrain()])).map((r) => r.created).sort();
    expect(created).toEqual([false, true]);
    expect(await getSchedule(client, rid)).toMatchObject({ kind: 'retrain', model, spec: 'cron 0 3 * * *' });
    await deleteSchedule(client, rid);

    await deleteSchedule(client, id);
    await expect(describeSchedule(client, id)).rejects.toThrow(`schedule "${id}" not found`);
    await expect(pauseSchedule(client, 'monitor-nope-nope', 'x')).rejects.toThrow('schedule "monitor-nope-nope" not found');
    await expect(triggerSchedule(client, 'retrain-nope-nope')).rejects.toThrow('schedule "retrain-nope-nope" not found');
    await expect(deleteSchedule(client, 'bad id!')).rejects.toThrow(/invalid schedule id "bad id!"/);
    await until('gone from list', async () => !(await listSchedules(client, { model })).length);
  });
});
