import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import type { Config } from '../../src/config.js';
import type { MonitorResult } from '../../src/monitoring/results.js';
import { MinioArtifactStore } from '../../src/store/minio-store.js';
import { keys } from '../../src/store/keys.js';
import { deleteSchedule, getSchedule, retrainScheduleId, upsertSchedule, type ScheduleInfo } from '../../src/temporal/schedules.js';
import { configEnv, testConfig } from '../helpers/stack.js';

const run = promisify(execFile);

function result(model: string, version: number, windowEnd: string, over: Partial<MonitorResult>): MonitorResult {
  const end = new Date(windowEnd);
  return {
    model,
    version,
    sha256: 'a'.repeat(64),
    windowStart: new Date(end.getTime() - 3_600_000).toISOString(),
    windowEnd: end.toISOString(),
    computedAt: new Date(end.getTime() + 60_000).toISOString(),
    verdict: 'ok',
    decayKinds: [],
    sampleSize: 500,
    drift: null,
    performance: null,
    breaches: [],
    notes: [],
    resultKey: keys.monitorResult(model, version, end),
    ...over,
  };
}

describe('conveyor schedule and monitor commands', () => {
  let config: Config;
  let connection: Connection;
  let client: Client;
  const model = `clisched-${randomUUID().slice(0, 8)}`;
  const id = retrainScheduleId(model);
  const started = new Set<string>();

  const cli = async (args: string[]) => {
    try {
      const { stdout, stderr } = await run(process.execPath, [resolve('bin/conveyor.mjs'), ...args], {
        env: { ...process.env, ...configEnv(config), LOG_LEVEL: 'warn' },
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };

  beforeAll(async () => {
    config = testConfig('cli-schedules');
    connection = await Connection.connect({ address: config.temporal.address });
    client = new Client({ connection, namespace: config.temporal.namespace });
  });

  afterAll(async () => {
    await deleteSchedule(client, id).catch(() => undefined);
    for (const wid of started) await client.workflow.getHandle(wid).terminate('test cleanup').catch(() => undefined);
    await connection?.close();
  });

  it('schedule list / pause / unpause / trigger / backfill / delete', async () => {
    await upsertSchedule(client, {
      scheduleId: id,
      workflowType: 'conveyorTestNoSuchWorkflow',
      args: [{ model }],
      taskQueue: `${config.taskQueues.pipeline}-nobody`,
      workflowId: `retrain-run-${model}`,
      spec: { cron: ['0 3 * * *'] },
      note: 'nightly retraining',
    });
    let listed: ScheduleInfo[] = [];
    for (let i = 0; i < 60 && !listed.length; i++) {
      const r = await cli(['schedule', 'list', '--model', model, '--json']);
      expect(r.code).toBe(0);
      listed = JSON.parse(r.stdout) as ScheduleInfo[];
      if (!listed.length) await sleep(250);
    }
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ id, kind: 'retrain', model, paused: false, note: 'nightly retraining', spec: 'cron 0 3 * * *', running: 0 });
    expect(listed[0]!.nextActionTimes.map((t) => t.slice(11))).toEqual(['03:00:00.000Z', '03:00:00.000Z', '03:00:00.000Z']);

    const human = await cli(['schedule', 'list', '--model', model]);
    expect(human.stdout).toContain(`${id}  active  cron 0 3 * * *  (retrain of ${model}, starts conveyorTestNoSuchWorkflow)`);
    expect(human.stdout).toContain('  note      nightly retraining');

    const paused = await cli(['schedule', 'pause', id, '--note', 'data migration']);
    expect(paused).toMatchObject({ code: 0, stdout: `${id}: paused (data migration)\n` });
    expect((await getSchedule(client, id)).paused).toBe(true);
    expect((await cli(['schedule', 'unpause', id])).stdout).toBe(`${id}: active (unpaused with conveyor schedule unpause)\n`);

    expect((await cli(['schedule', 'trigger', id])).code).toBe(0);
    let info = await getSchedule(client, id);
    for (let i = 0; i < 60 && info.running !== 1; i++) {
      await sleep(250);
      info = await getSchedule(client, id);
    }
    expect(info.running).toBe(1);
    const triggered = info.recentActions[0]!.workflowId;
    started.add(triggered);
    expect(triggered.startsWith(`retrain-run-${model}-`)).toBe(true);
    await client.workflow.getHandle(triggered).terminate('test');

    const bad = await cli(['schedule', 'backfill', id, '--from', 'yesterday', '--to', '2026-01-02T00:00:00Z']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('--from "yesterday" is not an ISO 8601 time');
    const backfill = await cli(['schedule', 'backfill', id, '--from', '2026-01-01T00:00:00Z', '--to', '2026-01-01T12:00:00Z']);
    expect(backfill.stdout).toBe(`${id}: backfilling 2026-01-01T00:00:00.000Z → 2026-01-01T12:00:00.000Z (runs one at a time; see npx conveyor schedule list)\n`);
    for (let i = 0; i < 60 && !info.recentActions.some((a) => a.scheduledAt === '2026-01-01T03:00:00.000Z'); i++) {
      await sleep(250);
      info = await getSchedule(client, id);
    }
    const backfilled = info.recentActions.find((a) => a.scheduledAt === '2026-01-01T03:00:00.000Z');
    expect(backfilled?.workflowId).toBe(`retrain-run-${model}-2026-01-01T03:00:00Z`);
    started.add(backfilled!.workflowId);

    expect((await cli(['schedule', 'delete', id])).stdout).toBe(`${id}: deleted\n`);
    const gone = await cli(['schedule', 'pause', id]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toBe(`error: schedule "${id}" not found\n`);
    const invalid = await cli(['schedule', 'trigger', 'retrain-../x']);
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toContain('invalid schedule id "retrain-../x"');
  });

  it('monitor prints the latest verdict, its breaches and performance, then the history', async () => {
    const store = new MinioArtifactStore(config.s3);
    await store.ensureBucket();
    const older = result(model, 1, '2026-03-01T10:00:00.000Z', { verdict: 'ok', sampleSize: 480 });
    const latest = result(model, 2, '2026-03-01T11:00:00.000Z', {
      verdict: 'decay',
      decayKinds: ['drift', 'performance'],
      sampleSize: 612,
      breaches: [
        { kind: 'drift', feature: 'income', measure: 'psi', value: 0.41, threshold: 0.2, message: 'income drifted: psi 0.410 > 0.200' },
        { kind: 'performance', measure: 'roc_auc', value: 0.71, threshold: 0.05, message: 'roc_auc 0.7100 is 0.1100 below baseline 0.8200 (max drop 0.05)' },
      ],
      performance: { metric: 'roc_auc', baseline: 0.82, value: 0.71, labels: 75, drop: 0.11, breached: true, from: '2026-02-22T11:00:00.000Z' },
      notes: ['labels joined for 75 of 612 predictions'],
    });
    for (const r of [older, latest]) await store.put(keys.monitorResult(r.model, r.version, new Date(r.windowEnd)), JSON.stringify(r));

    const shown = await cli(['monitor', model]);
    expect(shown.stderr).toBe('');
    expect(shown.code).toBe(0);
    const lines = shown.stdout.split('\n');
    expect(lines[0]).toBe(`${model}: DECAY (drift, performance) — version 2`);
    expect(shown.stdout).toContain('  window       2026-03-01T10:00:00.000Z → 2026-03-01T11:00:00.000Z');
    expect(shown.stdout).toContain('  sample size  612');
    expect(shown.stdout).toContain('  breaches     [drift] income drifted: psi 0.410 > 0.200');
    expect(shown.stdout).toContain('               [performance] roc_auc 0.7100 is 0.1100 below baseline 0.8200 (max drop 0.05)');
    expect(shown.stdout).toContain('  performance  roc_auc 0.7100 vs baseline 0.8200, worse by 0.1100 — 75 labels since 2026-02-22T11:00:00.000Z; BREACHED');
    expect(shown.stdout).toContain('  note         labels joined for 75 of 612 predictions');
    const history = lines.slice(lines.indexOf('history (newest first, 2)') + 1).filter(Boolean);
    expect(history[0]).toMatch(/^ {2}window end\s+version\s+verdict\s+sample\s+breaches\s+top breach$/);
    expect(history[1]).toMatch(/^ {2}2026-03-01T11:00:00.000Z\s+v2\s+decay\s+612\s+2\s+income drifted: psi 0.410 > 0.200$/);
    expect(history[2]).toMatch(/^ {2}2026-03-01T10:00:00.000Z\s+v1\s+ok\s+480\s+0\s+-$/);

    const v1 = JSON.parse((await cli(['monitor', model, '--version', '1', '--json'])).stdout) as { latest: MonitorResult; history: MonitorResult[] };
    expect(v1.latest).toEqual(older);
    expect(v1.history).toHaveLength(1);
    const limited = JSON.parse((await cli(['monitor', model, '--limit', '1', '--json'])).stdout) as { latest: MonitorResult; history: MonitorResult[] };
    expect(limited.history.map((r) => r.version)).toEqual([2]);

    const none = await cli(['monitor', `${model}-other`]);
    expect(none.code).toBe(0);
    expect(none.stdout).toContain(`${model}-other: no monitor results yet — the monitor has not run.`);
    expect(none.stdout).toContain('Monitoring is enabled by a `monitoring` section in the pipeline spec');
    expect(none.stdout).toContain(`monitor-${model}-other`);
  });
});
