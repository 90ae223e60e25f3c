#!/usr/bin/env node
// Installs everything a fresh machine needs, idempotently, with no npm dependencies
// of its own (it runs before `npm ci`): npm packages, the pinned Temporal dev server
// and MinIO built with `go install` into a per-user cache keyed by version, and the
// Python venv for the example trainers. Safe to interrupt: results are moved into
// place only when complete.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const toolchain = JSON.parse(readFileSync(join(root, 'scripts/toolchain.json'), 'utf8'));
const cacheDir =
  process.env.CONVEYOR_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'conveyor');
const args = new Set(process.argv.slice(2));
const quiet = args.has('--quiet');

function say(message) {
  if (!quiet) process.stderr.write(`[setup] ${message}\n`);
}

function run(cmd, cmdArgs, opts = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, cmdArgs, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let tail = '';
    const onData = (chunk) => {
      const text = chunk.toString();
      tail = (tail + text).slice(-4000);
      if (opts.prefix) for (const line of text.split('\n')) if (line.trim()) say(`${opts.prefix} ${line.trim()}`);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} ${cmdArgs.join(' ')} exited with ${code}\n${tail}`)),
    );
  });
}

async function timed(label, fn) {
  const start = Date.now();
  const ticker = setInterval(() => say(`${label}: still working (${Math.round((Date.now() - start) / 1000)}s)`), 30_000);
  try {
    await fn();
    say(`${label}: done in ${((Date.now() - start) / 1000).toFixed(1)}s`);
  } finally {
    clearInterval(ticker);
  }
}

function npmPackagesCurrent() {
  const installed = join(root, 'node_modules/.package-lock.json');
  if (!existsSync(installed)) return false;
  return statSync(installed).mtimeMs >= statSync(join(root, 'package-lock.json')).mtimeMs;
}

export function binaryPath(name) {
  const tool = toolchain[name];
  return join(cacheDir, `${name}-${tool.version}`, tool.binary);
}

async function buildGoBinary(name) {
  const tool = toolchain[name];
  const target = binaryPath(name);
  if (existsSync(target)) return;
  if (spawnSync('go', ['version']).status !== 0) {
    throw new Error(
      `Go is not installed, so the pinned ${name} server cannot be built.\n` +
        `Install Go (https://go.dev/dl/) and rerun, or run the whole system with Docker: docker compose up (see docker-compose.yml),\n` +
        `or point Conveyor at running servers with TEMPORAL_ADDRESS and CONVEYOR_S3_ENDPOINT.`,
    );
  }
  const staging = join(cacheDir, `.build-${name}-${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  await timed(`building ${name} ${tool.version} with go install (first time only, a few minutes)`, () =>
    run('go', ['install', `${tool.module}@${tool.version}`], {
      env: { ...process.env, GOBIN: staging, CGO_ENABLED: process.env.CGO_ENABLED ?? '0', GOFLAGS: '-mod=mod' },
      prefix: `[${name}]`,
    }),
  );
  mkdirSync(dirname(target), { recursive: true });
  renameSync(join(staging, tool.binary), target);
  rmSync(staging, { recursive: true, force: true });
}

export function venvDir() {
  const requirements = readFileSync(join(root, toolchain.pythonRequirements));
  const key = createHash('sha256').update(requirements).digest('hex').slice(0, 12);
  return join(cacheDir, `venv-${key}`);
}

async function buildVenv() {
  const dir = venvDir();
  const marker = join(dir, '.conveyor-complete');
  if (existsSync(marker)) return;
  const python = process.env.CONVEYOR_SETUP_PYTHON ?? 'python3';
  if (spawnSync(python, ['--version']).status !== 0) {
    throw new Error(`${python} was not found; Python 3.10+ is needed for the example trainers`);
  }
  rmSync(dir, { recursive: true, force: true });
  await timed('creating the Python venv for the trainers', async () => {
    await run(python, ['-m', 'venv', dir]);
    await run(join(dir, 'bin/pip'), ['install', '--disable-pip-version-check', '--no-input', '-q', '-r', join(root, toolchain.pythonRequirements)], {
      prefix: '[pip]',
    });
  });
  writeFileSync(marker, new Date().toISOString());
}

async function main() {
  if (!npmPackagesCurrent()) {
    // Not `npm ci`: the registry mirror lacks some other platforms' optional binaries,
    // which npm ci demands in the lockfile; `install --no-save` honours the lockfile's
    // versions without rewriting it.
    await timed('installing npm packages', () =>
      run('npm', ['install', '--no-save', '--no-audit', '--no-fund'], { cwd: root, prefix: '[npm]' }),
    );
  }
  mkdirSync(cacheDir, { recursive: true });
  const needServers = !args.has('--no-servers');
  await Promise.all([
    needServers ? buildGoBinary('temporal') : undefined,
    needServers ? buildGoBinary('minio') : undefined,
    args.has('--no-python') ? undefined : buildVenv(),
  ]);
  say(`ready (cache: ${cacheDir})`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err) => {
    process.stderr.write(`[setup] failed: ${err.message}\n`);
    process.exit(1);
  });
}
