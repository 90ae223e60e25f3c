import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { TrainerContext } from './types.js';

export class TrainerExitError extends Error {
  constructor(readonly exitCode: number | null, readonly signal: NodeJS.Signals | null, readonly stderrTail: string) {
    super(
      `trainer ${exitCode === null ? `was killed by ${signal}` : `exited with code ${exitCode}`}` +
        (stderrTail ? `; stderr tail:\n${stderrTail}` : ' (no stderr output)'),
    );
    this.name = 'TrainerExitError';
  }
}

export interface CommandRun {
  argv: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  stderrTailBytes?: number;
  /** Grace period between SIGTERM and SIGKILL when cancelled. */
  killGraceMs?: number;
}

/**
 * Runs a trainer command in its own process group. JSON lines on stdout of the
 * form {"event":"progress",...} become heartbeats; cancellation kills the whole
 * group, so grandchildren (e.g. joblib workers) do not outlive the activity.
 */
export async function runCommandTrainer(run: CommandRun, ctx: TrainerContext): Promise<void> {
  const [command, ...args] = run.argv;
  if (!command) throw new Error('trainer command is empty');
  // An abort that already happened never fires the listener below: do not start at all.
  if (ctx.signal.aborted) throw ctx.signal.reason instanceof Error ? ctx.signal.reason : new Error('trainer cancelled');
  const tailBytes = run.stderrTailBytes ?? 4000;
  const child = spawn(command, args, { cwd: run.cwd, env: run.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderrTail = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderrTail = (stderrTail + chunk).slice(-tailBytes);
  });
  createInterface({ input: child.stdout }).on('line', (line) => {
    const progress = parseProgress(line);
    if (progress) ctx.heartbeat(progress);
  });

  const killGroup = (signal: NodeJS.Signals): void => {
    // Not skipped once the leader has exited: the group (grandchildren) can outlive it.
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };
  let killTimer: NodeJS.Timeout | undefined;
  const onAbort = (): void => {
    ctx.log('cancelling trainer: killing its process group', { pid: child.pid });
    killGroup('SIGTERM');
    killTimer = setTimeout(() => killGroup('SIGKILL'), run.killGraceMs ?? 5000);
  };
  ctx.signal.addEventListener('abort', onAbort, { once: true });

  try {
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code, signal) => resolve({ code, signal }));
    });
    if (ctx.signal.aborted) throw ctx.signal.reason instanceof Error ? ctx.signal.reason : new Error('trainer cancelled');
    if (code !== 0) throw new TrainerExitError(code, signal, stderrTail.trim());
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
    if (killTimer) clearTimeout(killTimer);
    killGroup('SIGKILL');
  }
}

export function parseProgress(line: string): { step?: number; total?: number; message?: string } | null {
  const trimmed = line.trim();
  if (!trimmed.startsWith('{')) return null;
  try {
    const parsed = JSON.parse(trimmed) as Record<string, unknown>;
    if (parsed.event !== 'progress') return null;
    return {
      ...(typeof parsed.step === 'number' ? { step: parsed.step } : {}),
      ...(typeof parsed.total === 'number' ? { total: parsed.total } : {}),
      ...(typeof parsed.message === 'string' ? { message: parsed.message.slice(0, 500) } : {}),
    };
  } catch {
    return null;
  }
}
