import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { devDown, devPorts } from '../../src/dev/dev-env.js';
import { isAlive, runsBinary, ServerExitedError, stablePort, waitUntil, type ServerProcess } from '../../src/dev/servers.js';

const home = mkdtempSync(join(tmpdir(), 'conveyor-dev-state-'));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(home, { recursive: true, force: true });
});

/** A live process that is not a dev server: what a recorded pid may be after a reboot. */
function bystander(): ChildProcess {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
  children.push(child);
  return child;
}

describe('dev state safety', () => {
  it('runsBinary matches a pid only against the executable it was started from', () => {
    const child = bystander();
    expect(runsBinary(child.pid!, process.execPath)).toBe(true);
    expect(runsBinary(child.pid!, '/nonexistent/temporal')).toBe(false);
    expect(runsBinary(2 ** 22 + 12345, process.execPath)).toBe(false);
  });

  it('dev down drops state whose pids were reused, without signalling them', async () => {
    const config = loadConfig({ CONVEYOR_HOME: home });
    const other = bystander();
    mkdirSync(join(home, 'dev'), { recursive: true });
    const state = join(home, 'dev', 'state.json');
    writeFileSync(
      state,
      JSON.stringify({
        temporal: { pid: other.pid, port: 7233, uiPort: 8233, bin: '/opt/cache/temporal-v1/temporal' },
        minio: { pid: other.pid, port: 9000, consolePort: 9001, bin: '/opt/cache/minio-v1/minio' },
        startedAt: new Date().toISOString(),
      }),
    );
    const lines: string[] = [];
    await devDown(config, (l) => lines.push(l));
    expect(isAlive(other.pid!)).toBe(true);
    expect(existsSync(state)).toBe(false);
    expect(lines.join('\n')).toContain('no longer running');
  });

  it('derives the dev server ports from the configured endpoints', () => {
    expect(devPorts(loadConfig({}))).toEqual({ temporal: 7233, temporalUi: 8233, minio: 9000, minioConsole: 9001 });
    expect(devPorts(loadConfig({ TEMPORAL_ADDRESS: 'localhost:17233', CONVEYOR_S3_ENDPOINT: 'http://localhost:19000' }))).toEqual({
      temporal: 17233,
      temporalUi: 18233,
      minio: 19000,
      minioConsole: 19001,
    });
  });
});

describe('waitUntil', () => {
  it('stops waiting when the server it waits for exits, with the end of its log in the error', async () => {
    const logFile = join(home, 'exiting.log');
    writeFileSync(logFile, `${Array.from({ length: 30 }, (_, i) => `line ${i}`).join('\n')}\nlisten tcp 127.0.0.1:40001: bind: address already in use\n`);
    const child = spawn(process.execPath, ['-e', 'process.exit(3)'], { stdio: 'ignore' });
    children.push(child);
    const server: ServerProcess = { name: 'temporal', pid: child.pid!, bin: process.execPath, child, stop: async () => {} };
    const err = await waitUntil('Temporal', () => Promise.resolve(false), 60_000, logFile, server).catch((e: unknown) => e);
    // The exit is what ended the wait (a timeout is a plain Error saying "did not become healthy").
    expect(err).toBeInstanceOf(ServerExitedError);
    expect((err as Error).message).toMatch(/^Temporal exited \(code 3\) before it became healthy \(see .*exiting\.log\); its last lines:\n/);
    expect((err as Error).message).toContain('bind: address already in use');
    expect((err as Error).message).toContain('line 11');
    expect((err as Error).message).not.toContain('line 10\n');
  });

  it('times out naming what it waited for, with the log tail', async () => {
    const logFile = join(home, 'slow.log');
    writeFileSync(logFile, 'still starting\n');
    const err = await waitUntil('MinIO', () => Promise.resolve(false), 300, logFile).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(ServerExitedError);
    expect((err as Error).message).toMatch(/^MinIO did not become healthy within 0\.3s \(see .*slow\.log\); its last lines:\nstill starting$/);
  });
});

describe('waitUntil, exited server', () => {
  it('a server that exited is not taken for healthy because something else answers its health check', async () => {
    const child = spawn(process.execPath, ['-e', 'process.exit(1)'], { stdio: 'ignore' });
    children.push(child);
    await new Promise((resolve) => child.once('exit', resolve));
    const server: ServerProcess = { name: 'minio', pid: child.pid!, bin: process.execPath, child, stop: async () => {} };
    const err = await waitUntil('MinIO', () => Promise.resolve(true), 60_000, undefined, server).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServerExitedError);
    expect((err as Error).message).toBe('MinIO exited (code 1) before it became healthy');
  });
});

describe('stablePort', () => {
  it('never gives a port it was told is taken', async () => {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    const below = Array.from({ length: low - 10_000 }, (_, i) => 10_000 + i);
    // Every port below the range taken: only the fallback (an ephemeral port) is left.
    expect(await stablePort(below)).toBeGreaterThanOrEqual(low);
    const one = below.pop()!;
    const port = await stablePort(below);
    expect(port === one || port >= low).toBe(true);
  });

  it('gives a free port below the ephemeral range, so no client socket can take it while its server restarts', async () => {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    const port = await stablePort();
    expect(port).toBeGreaterThanOrEqual(10_000);
    expect(port).toBeLessThan(low);
    // Free: a server can listen on it.
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
});
