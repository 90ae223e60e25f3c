import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { TrainerExitError, parseProgress, runCommandTrainer } from '../../src/training/command-trainer.js';
import type { TrainerContext, TrainerProgress } from '../../src/training/types.js';

const dir = mkdtempSync(join(tmpdir(), 'conveyor-command-trainer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Pids started by a test, killed afterwards whatever the outcome so nothing leaks. */
const started: number[] = [];
afterEach(() => {
  for (const pid of started.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

let scriptCount = 0;
function script(source: string): string {
  const file = join(dir, `script-${scriptCount++}.mjs`);
  writeFileSync(file, source);
  return file;
}

function context(signal: AbortSignal = new AbortController().signal) {
  const beats: TrainerProgress[] = [];
  const logs: string[] = [];
  const ctx: TrainerContext = { heartbeat: (p) => beats.push(p), signal, log: (m) => logs.push(m) };
  return { ctx, beats, logs };
}

const run = (file: string, extra: Partial<Parameters<typeof runCommandTrainer>[0]> = {}) => ({
  argv: [process.execPath, file],
  cwd: dir,
  env: { ...process.env },
  ...extra,
});

/** Alive = signalable and not a zombie (a reparented zombie may linger if nothing reaps it). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return true;
  }
}

async function waitGone(pid: number): Promise<boolean> {
  for (let i = 0; i < 300; i++) {
    if (!isAlive(pid)) return true;
    await sleep(20);
  }
  return false;
}

/** Waits (bounded) for a file the script writes once it is set up. */
async function waitForFile(file: string): Promise<string> {
  for (let i = 0; i < 500; i++) {
    if (existsSync(file)) {
      const text = readFileSync(file, 'utf8');
      if (text.endsWith('\n')) return text;
    }
    await sleep(20);
  }
  throw new Error(`${file} was never written`);
}

describe('parseProgress', () => {
  it('reads step, total and message from progress events', () => {
    expect(parseProgress('{"event":"progress","step":3,"total":10,"message":"epoch 3"}')).toEqual({ step: 3, total: 10, message: 'epoch 3' });
    expect(parseProgress('  {"event":"progress","step":1}  ')).toEqual({ step: 1 });
    expect(parseProgress('{"event":"progress"}')).toEqual({});
  });

  it('drops fields of the wrong type and extra fields', () => {
    expect(parseProgress('{"event":"progress","step":"3","total":null,"message":42,"loss":0.1}')).toEqual({});
  });

  it('truncates long messages to 500 characters', () => {
    const p = parseProgress(JSON.stringify({ event: 'progress', message: 'x'.repeat(2000) }));
    expect(p?.message).toHaveLength(500);
  });

  it.each([
    ['plain text', 'Epoch 1/10 loss=0.3'],
    ['empty line', ''],
    ['other event', '{"event":"metric","step":1}'],
    ['no event', '{"step":1,"total":2}'],
    ['broken JSON', '{"event":"progress",'],
    ['JSON array', '[{"event":"progress"}]'],
    ['JSON string', '"progress"'],
    ['text before JSON', 'INFO {"event":"progress","step":1}'],
  ])('ignores %s', (_label, line) => {
    expect(parseProgress(line)).toBeNull();
  });
});

describe('runCommandTrainer', () => {
  it('turns progress lines into heartbeats and ignores other stdout', async () => {
    const file = script(`
const out = (s) => process.stdout.write(s + '\\n');
out('starting up');
out(JSON.stringify({ event: 'progress', step: 1, total: 3, message: 'loading' }));
out('{ not json');
out(JSON.stringify({ event: 'log', message: 'ignored' }));
out(JSON.stringify({ event: 'progress', step: 2, total: 3 }));
process.stderr.write('warnings on stderr are fine\\n');
process.stdout.write(JSON.stringify({ event: 'progress', step: 3, total: 3, message: 'done' })); // no trailing newline
`);
    const { ctx, beats } = context();
    await runCommandTrainer(run(file), ctx);
    expect(beats).toEqual([
      { step: 1, total: 3, message: 'loading' },
      { step: 2, total: 3 },
      { step: 3, total: 3, message: 'done' },
    ]);
  });

  it('runs in the given cwd with the given env and arguments', async () => {
    const file = script(`
import { writeFileSync } from 'node:fs';
writeFileSync('seen.json', JSON.stringify({ cwd: process.cwd(), env: process.env.CONVEYOR_TEST_VALUE, args: process.argv.slice(2) }));
`);
    const { ctx } = context();
    await runCommandTrainer({ argv: [process.execPath, file, 'job.json'], cwd: dir, env: { ...process.env, CONVEYOR_TEST_VALUE: 'v42' } }, ctx);
    expect(JSON.parse(readFileSync(join(dir, 'seen.json'), 'utf8'))).toEqual({ cwd: dir, env: 'v42', args: ['job.json'] });
  });

  it('fails with TrainerExitError carrying the exit code and only the tail of stderr', async () => {
    const file = script(`
process.stderr.write('BEGIN-MARKER ' + 'a'.repeat(5000) + '\\n');
process.stderr.write('Traceback (most recent call last):\\nValueError: cannot converge\\n');
process.exit(7);
`);
    const { ctx } = context();
    const err = await runCommandTrainer({ ...run(file), stderrTailBytes: 100 }, ctx).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TrainerExitError);
    const exit = err as TrainerExitError;
    expect(exit.exitCode).toBe(7);
    expect(exit.signal).toBeNull();
    expect(exit.stderrTail.length).toBeLessThanOrEqual(100);
    expect(exit.stderrTail).toMatch(/ValueError: cannot converge$/);
    expect(exit.stderrTail).not.toContain('BEGIN-MARKER');
    expect(exit.message).toMatch(/^trainer exited with code 7; stderr tail:\n/);
  });

  it('says so when a failing trainer wrote nothing to stderr', async () => {
    const { ctx } = context();
    const err = await runCommandTrainer(run(script('process.exit(2);')), ctx).then(
      () => undefined,
      (e: unknown) => e as TrainerExitError,
    );
    expect(err).toBeInstanceOf(TrainerExitError);
    expect(err?.message).toBe('trainer exited with code 2 (no stderr output)');
  });

  it('reports a trainer killed by a signal', async () => {
    const { ctx } = context();
    const err = await runCommandTrainer(run(script(`process.kill(process.pid, 'SIGKILL');`)), ctx).then(
      () => undefined,
      (e: unknown) => e as TrainerExitError,
    );
    expect(err).toBeInstanceOf(TrainerExitError);
    expect(err?.exitCode).toBeNull();
    expect(err?.signal).toBe('SIGKILL');
    expect(err?.message).toMatch(/^trainer was killed by SIGKILL/);
  });

  it('rejects when the command cannot be started', async () => {
    const { ctx } = context();
    await expect(runCommandTrainer({ argv: [join(dir, 'no-such-binary')], cwd: dir, env: {} }, ctx)).rejects.toThrow(/ENOENT/);
    await expect(runCommandTrainer({ argv: [], cwd: dir, env: {} }, ctx)).rejects.toThrow('trainer command is empty');
  });

  /**
   * A trainer that starts a grandchild (like joblib or multiprocessing workers), writes
   * "<own pid> <grandchild pid>" into `pidFile`, reports progress and runs until killed.
   */
  function familyScript(pidFile: string, opts: { childIgnoresTerm?: boolean; grandchildIgnoresTerm?: boolean; grandchildInheritsStdio?: boolean } = {}): string {
    const grandchildCode = `${opts.grandchildIgnoresTerm ? "process.on('SIGTERM', () => {});" : ''} setInterval(() => {}, 1000);`;
    return script(`
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
${opts.childIgnoresTerm ? "process.on('SIGTERM', () => {});" : ''}
const grandchild = spawn(process.execPath, ['-e', ${JSON.stringify(grandchildCode)}], { stdio: ${opts.grandchildInheritsStdio ? "'inherit'" : "'ignore'"} });
grandchild.on('spawn', () => {
  // Give the grandchild time to install its SIGTERM handler before announcing readiness.
  setTimeout(() => writeFileSync(${JSON.stringify(pidFile)}, process.pid + ' ' + grandchild.pid + '\\n'), 300);
});
process.stdout.write(JSON.stringify({ event: 'progress', step: 1, total: 100, message: 'training' }) + '\\n');
setInterval(() => {}, 1000);
`);
  }

  async function abortFamily(opts: Parameters<typeof familyScript>[1], killGraceMs?: number) {
    const pidFile = join(dir, `pids-${scriptCount}.txt`);
    const file = familyScript(pidFile, opts);
    const controller = new AbortController();
    const { ctx, beats, logs } = context(controller.signal);
    const running = runCommandTrainer({ ...run(file), ...(killGraceMs === undefined ? {} : { killGraceMs }) }, ctx);
    const outcome = running.then(
      () => 'resolved' as const,
      (e: unknown) => e,
    );
    const [child, grandchild] = (await waitForFile(pidFile)).trim().split(' ').map(Number) as [number, number];
    started.push(grandchild, child);
    expect(isAlive(child)).toBe(true);
    expect(isAlive(grandchild)).toBe(true);

    const reason = new Error('cancelled by test');
    controller.abort(reason);
    expect(await outcome).toBe(reason);
    expect(beats).toEqual([{ step: 1, total: 100, message: 'training' }]);
    expect(logs).toContain('cancelling trainer: killing its process group');
    return { child, grandchild };
  }

  it('kills the whole process group, grandchildren included, when aborted', async () => {
    const { child, grandchild } = await abortFamily({});
    expect(await waitGone(child)).toBe(true);
    expect(await waitGone(grandchild)).toBe(true);
  });

  it('escalates to SIGKILL after the grace period when the trainer ignores SIGTERM', async () => {
    const { child, grandchild } = await abortFamily({ childIgnoresTerm: true, grandchildIgnoresTerm: true }, 200);
    expect(await waitGone(child)).toBe(true);
    expect(await waitGone(grandchild)).toBe(true);
  });

  it('kills a grandchild that ignores SIGTERM even when the trainer itself exits on SIGTERM', async () => {
    const { child, grandchild } = await abortFamily({ grandchildIgnoresTerm: true }, 200);
    expect(await waitGone(child)).toBe(true);
    expect(await waitGone(grandchild)).toBe(true);
  });

  it('settles when a SIGTERM-ignoring grandchild holds the trainer stdout open', async () => {
    // Python's subprocess and multiprocessing children inherit stdout by default; the
    // "close" event waits for them, so only the SIGKILL escalation can end the run.
    const { child, grandchild } = await abortFamily({ grandchildIgnoresTerm: true, grandchildInheritsStdio: true }, 200);
    expect(await waitGone(child)).toBe(true);
    expect(await waitGone(grandchild)).toBe(true);
  });

  it('leaves no background process of a trainer that exits successfully', async () => {
    const pidFile = join(dir, 'bg-pids.txt');
    const file = script(`
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
const bg = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
writeFileSync(${JSON.stringify(pidFile)}, process.pid + ' ' + bg.pid + '\\n');
process.exit(0);
`);
    const { ctx } = context();
    await runCommandTrainer(run(file), ctx);
    const [, bg] = readFileSync(pidFile, 'utf8').trim().split(' ').map(Number) as [number, number];
    started.push(bg);
    expect(await waitGone(bg)).toBe(true);
  });

  it('does not start a trainer when the signal is already aborted', async () => {
    // An abort listener never fires for an already-aborted signal, so without an explicit
    // check the trainer would run unkillable until its own end.
    const controller = new AbortController();
    controller.abort(new Error('already cancelled'));
    const { ctx } = context(controller.signal);
    const marker = join(dir, 'started-anyway.txt');
    const file = script(`import { writeFileSync } from 'node:fs'; writeFileSync(${JSON.stringify(marker)}, 'x'); setInterval(() => {}, 1000);`);
    await expect(runCommandTrainer(run(file), ctx)).rejects.toThrow('already cancelled');
    await sleep(300);
    expect(existsSync(marker)).toBe(false);
  });
});
