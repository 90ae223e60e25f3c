import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { STALE_SCRATCH_MS, sweepStaleScratch } from '../../src/worker.js';

const dir = mkdtempSync(join(tmpdir(), 'conveyor-scratch-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function age(path: string, ms: number): void {
  const t = new Date(Date.now() - ms);
  utimesSync(path, t, t);
}

describe('sweepStaleScratch', () => {
  it('removes run scratch directories untouched for a day and keeps recent or still-written ones', async () => {
    const scratch = join(dir, 'scratch');
    const old = join(scratch, 'wf-old');
    const fresh = join(scratch, 'wf-fresh');
    const active = join(scratch, 'wf-active');
    for (const d of [join(old, 'act-1'), join(fresh, 'act-1'), join(active, 'act-1')]) mkdirSync(d, { recursive: true });
    writeFileSync(join(old, 'act-1', 'train.csv'), 'x');
    writeFileSync(join(active, 'act-1', 'model.onnx'), 'x');
    const day = STALE_SCRATCH_MS + 60_000;
    for (const p of [join(old, 'act-1', 'train.csv'), join(old, 'act-1'), old]) age(p, day);
    // A long activity: its run directory is old, but a file inside was just written.
    for (const p of [join(active, 'act-1'), active]) age(p, day);

    const removed = await sweepStaleScratch(dir, createLogger({ level: 'silent', pretty: false }));
    expect(removed).toEqual([old]);
    expect(existsSync(old)).toBe(false);
    expect(existsSync(fresh) && existsSync(active)).toBe(true);
  });

  it('does nothing (and does not throw) without a scratch directory', async () => {
    expect(await sweepStaleScratch(join(dir, 'missing'), createLogger({ level: 'silent', pretty: false }))).toEqual([]);
  });
});
