#!/usr/bin/env node
// Installs everything a fresh machine needs, idempotently, with no npm dependencies
// of its own (it runs before `npm ci`): npm packages, the pinned Temporal dev server
// and MinIO built with `go install` into a per-user cache keyed by version, and the
// Python venv for the example trainers. Safe to interrupt: results are moved into
// place only when complete.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
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

const VENV_MARKER = '.conveyor-complete';
const VENV_IMPORT_CHECK = 'import sklearn, skl2onnx, lightgbm, onnxmltools';

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

/** Removes `.build-venv-<pid>` directories of setups that died mid-build (an hour old, pid gone). */
function sweepStaleVenvBuilds() {
  for (const name of readdirSync(cacheDir)) {
    const match = /^\.(?:build|broken|stale)-venv-(\d+)$/.exec(name);
    if (!match || Number(match[1]) === process.pid) continue;
    const path = join(cacheDir, name);
    try {
      if (Date.now() - statSync(path).mtimeMs > 3600_000 && !pidAlive(Number(match[1]))) rmSync(path, { recursive: true, force: true });
    } catch {
      // another setup removed it first
    }
  }
}

/**
 * A venv without the completion marker at the target path is left by an interrupted build
 * of an older setup (which built in place). Moves it aside and deletes it; should it turn
 * out complete after all (another setup published it in between), it is put back.
 */
function discardIncompleteVenv(dir) {
  if (!existsSync(dir) || existsSync(join(dir, VENV_MARKER))) return;
  const aside = join(cacheDir, `.stale-venv-${process.pid}`);
  rmSync(aside, { recursive: true, force: true });
  try {
    renameSync(dir, aside);
  } catch {
    return; // gone or replaced meanwhile
  }
  if (existsSync(join(aside, VENV_MARKER))) {
    try {
      renameSync(aside, dir);
      return;
    } catch {
      // the target reappeared: it is complete too, ours is not needed
    }
  }
  rmSync(aside, { recursive: true, force: true });
}

/**
 * The venv is built in a staging directory private to this process and renamed into place
 * only when complete (marker included), so concurrent setups never share a half-built venv
 * and an interrupted one leaves only its staging directory; when another setup published the
 * venv first, ours is discarded. Moving a venv is safe for how Conveyor uses it: the
 * interpreter finds its prefix from the pyvenv.cfg next to bin/python wherever that lives,
 * and only bin/python is ever run (the console scripts in bin/, e.g. pip, keep the staging
 * path in their #! line and must not be used; run `bin/python -m pip` instead). The import
 * check after the move proves it on this machine; if it fails the venv is withdrawn again.
 */
async function buildVenv() {
  const dir = venvDir();
  if (existsSync(join(dir, VENV_MARKER))) return;
  const python = process.env.CONVEYOR_SETUP_PYTHON ?? 'python3';
  if (spawnSync(python, ['--version']).status !== 0) {
    throw new Error(`${python} was not found; Python 3.10+ is needed for the example trainers`);
  }
  sweepStaleVenvBuilds();
  discardIncompleteVenv(dir);
  const staging = join(cacheDir, `.build-venv-${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  try {
    await timed('creating the Python venv for the trainers', async () => {
      await run(python, ['-m', 'venv', staging]);
      await run(join(staging, 'bin/python'), ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '-q', '-r', join(root, toolchain.pythonRequirements)], {
        prefix: '[pip]',
      });
    });
    writeFileSync(join(staging, VENV_MARKER), new Date().toISOString());
    if (existsSync(join(dir, VENV_MARKER))) {
      say('another setup installed the Python venv meanwhile; using that one');
      return;
    }
    try {
      renameSync(staging, dir);
    } catch (err) {
      // ENOTEMPTY/EEXIST: another setup renamed its venv into place first.
      if (existsSync(join(dir, VENV_MARKER))) {
        say('another setup installed the Python venv meanwhile; using that one');
        return;
      }
      throw new Error(`could not move the Python venv into place at ${dir}: ${err.message}`);
    }
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  try {
    await run(join(dir, 'bin/python'), ['-c', VENV_IMPORT_CHECK]);
  } catch (err) {
    const broken = join(cacheDir, `.broken-venv-${process.pid}`);
    try {
      renameSync(dir, broken);
      rmSync(broken, { recursive: true, force: true });
    } catch {
      // already gone
    }
    throw new Error(`the Python venv does not work after moving it into place (${dir}); venvs may not be relocatable with ${python}:\n${err.message}`);
  }
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
