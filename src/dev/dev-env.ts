import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { s3EndpointUrl, type Config } from '../config.js';
import { createDevTokens } from '../auth/tokens.js';
import {
  expectedBinary,
  minioHealthy,
  runsBinary,
  startMinio,
  startTemporal,
  stopPid,
  tcpOpen,
  temporalHealthy,
  waitUntil,
} from './servers.js';

export const DEV_PORTS = { temporal: 7233, temporalUi: 8233, minio: 9000, minioConsole: 9001 } as const;

export interface DevPorts {
  temporal: number;
  temporalUi: number;
  minio: number;
  minioConsole: number;
}

interface ServerState {
  pid: number;
  port: number;
  /** The executable the pid was started from; absent in state files written before it was recorded. */
  bin?: string;
}

interface DevState {
  temporal: ServerState & { uiPort: number };
  minio: ServerState & { consolePort: number };
  startedAt: string;
}

function stateFile(config: Config): string {
  return join(config.home, 'dev', 'state.json');
}

function readState(config: Config): DevState | null {
  const file = stateFile(config);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as DevState) : null;
}

/** The port of a `host:port` (or `[v6]:port`) address; Temporal's default when there is none. */
function addressPort(address: string): number {
  const match = /:(\d+)$/.exec(address);
  return match ? Number(match[1]) : DEV_PORTS.temporal;
}

/**
 * The ports `dev up` serves on: those of the configured endpoints (TEMPORAL_ADDRESS,
 * CONVEYOR_S3_ENDPOINT), so the rest of Conveyor finds the servers it starts. The web UI
 * listens on the Temporal port + 1000 and the MinIO console on the MinIO port + 1, which for
 * the default endpoints are the usual 8233 and 9001.
 */
export function devPorts(config: Config): DevPorts {
  const temporal = addressPort(config.temporal.address);
  const minio = config.s3.port;
  const uiPort = (port: number, offset: number): number => (port + offset <= 65_535 ? port + offset : port - offset);
  return {
    temporal,
    temporalUi: temporal === DEV_PORTS.temporal ? DEV_PORTS.temporalUi : uiPort(temporal, 1000),
    minio,
    minioConsole: minio === DEV_PORTS.minio ? DEV_PORTS.minioConsole : uiPort(minio, 1),
  };
}

/** Whether the recorded pid still runs the recorded server binary (a reused pid does not). */
function stillOurs(name: 'temporal' | 'minio', server: ServerState): boolean {
  return runsBinary(server.pid, server.bin ?? expectedBinary(name));
}

export interface DevStatus {
  pids: { temporal: number | null; minio: number | null };
  temporal: { running: boolean; healthy: boolean; address: string; ui: string };
  minio: { running: boolean; healthy: boolean; endpoint: string; console: string };
}

export async function devStatus(config: Config): Promise<DevStatus> {
  const state = readState(config);
  const configured = devPorts(config);
  const tPort = state?.temporal.port ?? configured.temporal;
  const mPort = state?.minio.port ?? configured.minio;
  return {
    pids: { temporal: state?.temporal.pid ?? null, minio: state?.minio.pid ?? null },
    temporal: {
      running: state ? stillOurs('temporal', state.temporal) : false,
      healthy: await temporalHealthy(tPort),
      address: `127.0.0.1:${tPort}`,
      ui: `http://127.0.0.1:${state?.temporal.uiPort ?? configured.temporalUi}`,
    },
    minio: {
      running: state ? stillOurs('minio', state.minio) : false,
      healthy: await minioHealthy(mPort),
      endpoint: `http://127.0.0.1:${mPort}`,
      console: `http://127.0.0.1:${state?.minio.consolePort ?? configured.minioConsole}`,
    },
  };
}

/**
 * Starts the Temporal dev server (SQLite file) and MinIO as background processes
 * with their data under <home>/dev, on the ports of the configured endpoints (see
 * `devPorts`; `ports` overrides them), and waits until both answer. Idempotent.
 */
/** Development identities: a submitter, two reviewers, an admin (tokens in <home>/dev-tokens/<name>). */
export const DEV_PEOPLE = [
  { identity: 'alice', groups: ['ml-eng'] },
  { identity: 'bob', groups: ['risk-reviewers'] },
  { identity: 'carol', groups: ['risk-reviewers'] },
  { identity: 'dana', groups: ['admin'] },
];

export async function devUp(config: Config, say: (line: string) => void, ports: DevPorts = devPorts(config)): Promise<DevStatus> {
  const dir = join(config.home, 'dev');
  mkdirSync(dir, { recursive: true });
  createDevTokens(config.home, DEV_PEOPLE);
  const existing = readState(config);
  const status = await devStatus(config);
  if (existing && status.temporal.healthy && status.minio.healthy && status.temporal.running && status.minio.running) {
    if (existing.temporal.port !== ports.temporal || existing.minio.port !== ports.minio) {
      throw new Error(
        `dev servers are already running on ports ${existing.temporal.port}/${existing.minio.port}, not the configured ` +
          `${ports.temporal}/${ports.minio}; run "conveyor dev down" first to restart them on the configured ports`,
      );
    }
    say('dev servers already running');
    return status;
  }
  if (existing) await devDown(config, () => {});
  const busy = [
    (await tcpOpen(ports.temporal)) ? `Temporal's port ${ports.temporal} (TEMPORAL_ADDRESS=${config.temporal.address})` : undefined,
    (await tcpOpen(ports.minio)) ? `MinIO's port ${ports.minio} (CONVEYOR_S3_ENDPOINT=${s3EndpointUrl(config)})` : undefined,
  ].filter((b): b is string => b !== undefined);
  if (busy.length) {
    throw new Error(
      `${busy.join(' and ')} ${busy.length > 1 ? 'are' : 'is'} already served by another process, not one "conveyor dev up" started. ` +
        'If that is a Temporal / MinIO server you want to use, skip "dev up"; otherwise stop it, or make dev up use free ports ' +
        'by setting TEMPORAL_ADDRESS=127.0.0.1:<port> / CONVEYOR_S3_ENDPOINT=http://127.0.0.1:<port> (for every conveyor command)',
    );
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
    temporal: { pid: temporal.pid, port: ports.temporal, uiPort: ports.temporalUi, bin: temporal.bin },
    minio: { pid: minio.pid, port: ports.minio, consolePort: ports.minioConsole, bin: minio.bin },
    startedAt: new Date().toISOString(),
  };
  writeFileSync(stateFile(config), JSON.stringify(state, null, 2));
  await Promise.all([
    waitUntil('Temporal dev server', () => temporalHealthy(ports.temporal), 60_000, join(dir, 'temporal.log'), temporal),
    waitUntil('MinIO', () => minioHealthy(ports.minio), 60_000, join(dir, 'minio.log'), minio),
  ]);
  return devStatus(config);
}

/**
 * Stops the servers recorded in the state file. The file survives reboots and crashes, so
 * a recorded pid is signalled only while it still runs the recorded server binary; a stale
 * entry is just dropped.
 */
export async function devDown(config: Config, say: (line: string) => void): Promise<void> {
  const state = readState(config);
  if (!state) {
    say('no dev servers recorded as running');
    return;
  }
  const stop = async (name: 'temporal' | 'minio', server: ServerState): Promise<boolean> => {
    if (!stillOurs(name, server)) return false;
    await stopPid(server.pid);
    return true;
  };
  const [temporal, minio] = await Promise.all([stop('temporal', state.temporal), stop('minio', state.minio)]);
  rmSync(stateFile(config), { force: true });
  if (temporal || minio) say('dev servers stopped');
  for (const [name, stopped, pid] of [['Temporal', temporal, state.temporal.pid], ['MinIO', minio, state.minio.pid]] as const) {
    if (!stopped) say(`${name} (pid ${pid}) was no longer running; dropped its stale state`);
  }
}
