import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { binaryPath } from '../../scripts/setup.mjs';
import { SEARCH_ATTRIBUTES } from '../shared/constants.js';

export interface ServerProcess {
  name: 'temporal' | 'minio';
  pid: number;
  /** Absolute path of the executable, as passed to spawn (so it is argv[0] of the process). */
  bin: string;
  child: ChildProcess | undefined;
  stop(): Promise<void>;
}

export interface TemporalOptions {
  dbFile: string;
  port: number;
  uiPort: number;
  logFile: string;
  detached?: boolean;
}

export interface MinioOptions {
  dataDir: string;
  port: number;
  consolePort: number;
  accessKey: string;
  secretKey: string;
  logFile: string;
  detached?: boolean;
}

/** Where the server binary is expected (absolute), whether or not it exists. */
export function expectedBinary(name: 'temporal' | 'minio'): string {
  const override = name === 'temporal' ? process.env.CONVEYOR_TEMPORAL_BIN : process.env.CONVEYOR_MINIO_BIN;
  return resolve(override ?? binaryPath(name));
}

export function locateBinary(name: 'temporal' | 'minio'): string {
  const path = expectedBinary(name);
  if (!existsSync(path)) {
    throw new Error(`${name} binary not found at ${path}; run "node scripts/setup.mjs" to build it (needs Go), or use docker-compose.yml`);
  }
  return path;
}

function launch(name: ServerProcess['name'], bin: string, args: string[], env: NodeJS.ProcessEnv, logFile: string, detached: boolean): ServerProcess {
  const fd = openSync(logFile, 'a');
  const child = spawn(bin, args, { env, stdio: ['ignore', fd, fd], detached });
  closeSync(fd);
  if (detached) child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error(`failed to start ${name} (${bin})`);
  return {
    name,
    pid,
    bin,
    child: detached ? undefined : child,
    stop: () => stopPid(pid, child),
  };
}

export async function stopPid(pid: number, child?: ChildProcess, graceMs = 10_000): Promise<void> {
  if (!isAlive(pid)) return;
  const exited = child ? new Promise<void>((r) => child.once('exit', () => r())) : undefined;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < deadline) {
    if (exited) await Promise.race([exited, sleep(100)]);
    else await sleep(100);
  }
  if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  if (exited) await exited;
}

/**
 * Whether `pid` is a process started from the executable `bin` (its argv[0], as `launch`
 * spawns it). A PID from a state file may have been reused by an unrelated process after
 * a reboot or a crash; only a match may be signalled. Reads /proc/<pid>/cmdline on Linux,
 * otherwise asks `ps`; anything it cannot confirm counts as no match.
 */
export function runsBinary(pid: number, bin: string): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    const argv0 = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0];
    return argv0 === bin;
  } catch {
    // With /proc mounted, an unreadable entry means the process is gone.
    if (existsSync('/proc/self/cmdline')) return false;
  }
  const ps = spawnSync('ps', ['-o', 'command=', '-p', String(pid)], { encoding: 'utf8' });
  if (ps.status !== 0 || typeof ps.stdout !== 'string') return false;
  const command = ps.stdout.trim();
  return command === bin || command.startsWith(`${bin} `);
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function startTemporal(opts: TemporalOptions): ServerProcess {
  const args = [
    'server', 'start-dev',
    '--ip', '127.0.0.1',
    '--port', String(opts.port),
    '--ui-port', String(opts.uiPort),
    '--db-filename', opts.dbFile,
    '--log-level', 'warn',
    // Workflow tasks of the dev server are fast; 1s keeps replays of stuck tasks quick in tests.
    '--dynamic-config-value', 'frontend.enableUpdateWorkflowExecution=true',
  ];
  for (const key of Object.values(SEARCH_ATTRIBUTES)) args.push('--search-attribute', `${key}=Keyword`);
  return launch('temporal', locateBinary('temporal'), args, process.env, opts.logFile, opts.detached ?? false);
}

export function startMinio(opts: MinioOptions): ServerProcess {
  mkdirSync(opts.dataDir, { recursive: true });
  const env = {
    ...process.env,
    MINIO_ROOT_USER: opts.accessKey,
    MINIO_ROOT_PASSWORD: opts.secretKey,
    MINIO_BROWSER_REDIRECT: 'off',
    MINIO_UPDATE: 'off',
  };
  const args = ['server', opts.dataDir, '--quiet', '--address', `127.0.0.1:${opts.port}`, '--console-address', `127.0.0.1:${opts.consolePort}`];
  return launch('minio', locateBinary('minio'), args, env, opts.logFile, opts.detached ?? false);
}

export function tcpOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export async function minioHealthy(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/minio/health/ready`);
    return res.ok;
  } catch {
    return false;
  }
}

export async function temporalHealthy(port: number): Promise<boolean> {
  if (!(await tcpOpen(port))) return false;
  const { Connection } = await import('@temporalio/client');
  try {
    const connection = await Connection.connect({ address: `127.0.0.1:${port}`, connectTimeout: 1000 });
    try {
      await connection.workflowService.getSystemInfo({});
      return true;
    } finally {
      await connection.close();
    }
  } catch {
    return false;
  }
}

/** Whether a server process has exited (a child's exit code or signal; a detached one by its pid). */
export function hasExited(server: ServerProcess): boolean {
  if (server.child) return server.child.exitCode !== null || server.child.signalCode !== null;
  return !isAlive(server.pid);
}

/** The last `lines` lines of a log file, for an error message (the file may be in a directory about to be removed). */
export function logTail(logFile: string, lines = 20): string {
  try {
    return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch (err) {
    return `(log unreadable: ${(err as Error).message})`;
  }
}

/**
 * Polls `check` until it holds, for at most `timeoutMs`. Given the `server` it waits for, it
 * stops as soon as that process has exited. The error ends with the log's last lines.
 */
export async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number, logFile?: string, server?: ServerProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const tail = (): string => (logFile ? ` (see ${logFile}); its last lines:\n${logTail(logFile)}` : '');
  while (Date.now() < deadline) {
    const healthy = await check();
    // Exit is checked first: a server that died on a taken port must not pass for whatever answers on it.
    if (server && hasExited(server)) {
      const how = server.child ? (server.child.signalCode ?? `code ${server.child.exitCode}`) : 'gone';
      throw new ServerExitedError(`${what} exited (${how}) before it became healthy${tail()}`);
    }
    if (healthy) return;
    await sleep(200);
  }
  throw new Error(`${what} did not become healthy within ${timeoutMs / 1000}s${tail()}`);
}

/** A server process ended before it was healthy (a port taken between choosing and binding it, a bad data directory). */
export class ServerExitedError extends Error {
  override name = 'ServerExitedError';
}

/**
 * A free port that no outgoing connection can be given: below the ephemeral range (Linux:
 * /proc/sys/net/ipv4/ip_local_port_range), so a server restarted on it finds it still free.
 * A port from `freePort()` is in that range, and once its server stops, any client socket of a
 * busy test run may take it. Falls back to `freePort()` where the range is unknown. `taken`:
 * ports already chosen and not yet bound (a probe closes its socket, so it cannot see them).
 */
export async function stablePort(taken: readonly number[] = []): Promise<number> {
  let low: number;
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  } catch {
    return freePort();
  }
  const from = 10_000;
  if (!Number.isInteger(low) || low - from < 1000) return freePort();
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = from + Math.floor(Math.random() * (low - from));
    if (!taken.includes(port) && (await portFree(port))) return port;
  }
  return freePort();
}

function portFree(port: number): Promise<boolean> {
  return import('node:net').then(
    ({ createServer }) =>
      new Promise((resolve) => {
        const server = createServer();
        server.once('error', () => resolve(false));
        server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
      }),
  );
}

/** Ports free for a test run: asks the OS for ephemeral ones. */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export interface DevStack {
  temporalAddress: string;
  temporalUi: string;
  s3Endpoint: string;
  minioConsole: string;
  accessKey: string;
  secretKey: string;
  processes: ServerProcess[];
  stop(): Promise<void>;
}

/** Starts both servers as children of this process (tests, the demo) and waits until they are healthy. */
export async function startDevStack(opts: {
  dir: string;
  ports?: { temporal: number; temporalUi: number; minio: number; minioConsole: number };
  accessKey: string;
  secretKey: string;
  detached?: boolean;
}): Promise<DevStack> {
  mkdirSync(opts.dir, { recursive: true });
  const ports = opts.ports ?? {
    temporal: await freePort(),
    temporalUi: await freePort(),
    minio: await freePort(),
    minioConsole: await freePort(),
  };
  const temporalLog = join(opts.dir, 'temporal.log');
  const minioLog = join(opts.dir, 'minio.log');
  const temporal = startTemporal({
    dbFile: join(opts.dir, 'temporal.sqlite'),
    port: ports.temporal,
    uiPort: ports.temporalUi,
    logFile: temporalLog,
    detached: opts.detached ?? false,
  });
  const minio = startMinio({
    dataDir: join(opts.dir, 'minio-data'),
    port: ports.minio,
    consolePort: ports.minioConsole,
    accessKey: opts.accessKey,
    secretKey: opts.secretKey,
    logFile: minioLog,
    detached: opts.detached ?? false,
  });
  const stack: DevStack = {
    temporalAddress: `127.0.0.1:${ports.temporal}`,
    temporalUi: `http://127.0.0.1:${ports.temporalUi}`,
    s3Endpoint: `http://127.0.0.1:${ports.minio}`,
    minioConsole: `http://127.0.0.1:${ports.minioConsole}`,
    accessKey: opts.accessKey,
    secretKey: opts.secretKey,
    processes: [temporal, minio],
    stop: async () => {
      await Promise.all([temporal.stop(), minio.stop()]);
    },
  };
  try {
    await Promise.all([
      waitUntil('Temporal dev server', () => temporalHealthy(ports.temporal), 60_000, temporalLog, temporal),
      waitUntil('MinIO', () => minioHealthy(ports.minio), 60_000, minioLog, minio),
    ]);
  } catch (err) {
    await stack.stop();
    throw err;
  }
  return stack;
}
