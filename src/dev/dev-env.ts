import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { isAlive, minioHealthy, startMinio, startTemporal, stopPid, temporalHealthy, waitUntil } from './servers.js';

export const DEV_PORTS = { temporal: 7233, temporalUi: 8233, minio: 9000, minioConsole: 9001 } as const;

interface DevState {
  temporal: { pid: number; port: number; uiPort: number };
  minio: { pid: number; port: number; consolePort: number };
  startedAt: string;
}

function stateFile(config: Config): string {
  return join(config.home, 'dev', 'state.json');
}

function readState(config: Config): DevState | null {
  const file = stateFile(config);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as DevState) : null;
}

export interface DevStatus {
  pids: { temporal: number | null; minio: number | null };
  temporal: { running: boolean; healthy: boolean; address: string; ui: string };
  minio: { running: boolean; healthy: boolean; endpoint: string; console: string };
}

export async function devStatus(config: Config): Promise<DevStatus> {
  const state = readState(config);
  const tPort = state?.temporal.port ?? Number(config.temporal.address.split(':').at(-1) ?? DEV_PORTS.temporal);
  const mPort = state?.minio.port ?? config.s3.port;
  return {
    pids: { temporal: state?.temporal.pid ?? null, minio: state?.minio.pid ?? null },
    temporal: {
      running: state ? isAlive(state.temporal.pid) : false,
      healthy: await temporalHealthy(tPort),
      address: `127.0.0.1:${tPort}`,
      ui: `http://127.0.0.1:${state?.temporal.uiPort ?? DEV_PORTS.temporalUi}`,
    },
    minio: {
      running: state ? isAlive(state.minio.pid) : false,
      healthy: await minioHealthy(mPort),
      endpoint: `http://127.0.0.1:${mPort}`,
      console: `http://127.0.0.1:${state?.minio.consolePort ?? DEV_PORTS.minioConsole}`,
    },
  };
}

/**
 * Starts the Temporal dev server (SQLite file) and MinIO as background processes
 * with their data under <home>/dev, and waits until both answer. Idempotent.
 */
export async function devUp(
  config: Config,
  say: (line: string) => void,
  ports: { temporal: number; temporalUi: number; minio: number; minioConsole: number } = DEV_PORTS,
): Promise<DevStatus> {
  const dir = join(config.home, 'dev');
  mkdirSync(dir, { recursive: true });
  const existing = readState(config);
  const status = await devStatus(config);
  if (existing && status.temporal.healthy && status.minio.healthy) {
    say('dev servers already running');
    return status;
  }
  if (existing) await devDown(config, () => {});
  if ((await temporalHealthy(ports.temporal)) || (await minioHealthy(ports.minio))) {
    throw new Error(`ports ${ports.temporal}/${ports.minio} are already served by another process; stop it or set TEMPORAL_ADDRESS / CONVEYOR_S3_ENDPOINT to use it`);
  }
  say('starting Temporal dev server and MinIO');
  const temporal = startTemporal({
    dbFile: join(dir, 'temporal.sqlite'),
    port: ports.temporal,
    uiPort: ports.temporalUi,
    logFile: join(dir, 'temporal.log'),
    detached: true,
  });
  const minio = startMinio({
    dataDir: join(dir, 'minio'),
    port: ports.minio,
    consolePort: ports.minioConsole,
    accessKey: config.s3.accessKey,
    secretKey: config.s3.secretKey,
    logFile: join(dir, 'minio.log'),
    detached: true,
  });
  const state: DevState = {
    temporal: { pid: temporal.pid, port: ports.temporal, uiPort: ports.temporalUi },
    minio: { pid: minio.pid, port: ports.minio, consolePort: ports.minioConsole },
    startedAt: new Date().toISOString(),
  };
  writeFileSync(stateFile(config), JSON.stringify(state, null, 2));
  await Promise.all([
    waitUntil('Temporal dev server', () => temporalHealthy(ports.temporal), 60_000, join(dir, 'temporal.log')),
    waitUntil('MinIO', () => minioHealthy(ports.minio), 60_000, join(dir, 'minio.log')),
  ]);
  return devStatus(config);
}

export async function devDown(config: Config, say: (line: string) => void): Promise<void> {
  const state = readState(config);
  if (!state) {
    say('no dev servers recorded as running');
    return;
  }
  await Promise.all([stopPid(state.temporal.pid), stopPid(state.minio.pid)]);
  rmSync(stateFile(config), { force: true });
  say('dev servers stopped');
}
