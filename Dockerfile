# syntax=docker/dockerfile:1
#
# One image for the Conveyor worker and the serving service (see docs/docker.md):
#   docker run --init conveyor:local worker [--role pipeline|training]
#   docker run --init conveyor:local serve
# TypeScript runs through tsx at start-up, so there is no build step. Trainer
# commands written as "{python}" run with the venv below (CONVEYOR_PYTHON).
#
# Layers are ordered from least to most often changed: OS packages, the Python
# venv (requirements only), npm packages (package*.json and .npmrc only), then
# the source. Editing code rebuilds only the last COPY.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- base: OS packages and the runtime user ---------------------------------
FROM ${NODE_IMAGE} AS base
# python3/python3-venv: Debian bookworm's CPython 3.11, which the trainer pins
# are frozen against. libgomp1: OpenMP runtime that LightGBM's wheel links to.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 conveyor \
 && useradd --system --uid 10001 --gid conveyor --home-dir /home/conveyor --create-home \
      --shell /usr/sbin/nologin conveyor

# ---- venv: trainer dependencies (rebuilt only when the requirements change) --
FROM base AS venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
COPY scripts/requirements-trainers.txt /tmp/requirements-trainers.txt
# The slim image has no compilers: wheels only. Bookworm's bundled pip (23.0) is
# upgraded first so current wheel metadata is understood.
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/conveyor-venv \
 && /opt/conveyor-venv/bin/pip install --upgrade pip==25.2 \
 && /opt/conveyor-venv/bin/pip install --only-binary=:all: -r /tmp/requirements-trainers.txt \
 && /opt/conveyor-venv/bin/python -c "import numpy, sklearn, skl2onnx, lightgbm, onnxmltools"

# ---- deps: npm packages (rebuilt only when package*.json or .npmrc change) ---
FROM base AS deps
WORKDIR /app
# .npmrc sets onnxruntime-node-install=skip: the CPU binaries ship inside the
# npm package; the skipped step would only download CUDA libraries.
COPY package.json package-lock.json .npmrc ./
RUN --mount=type=cache,target=/root/.npm \
    npm install --omit=dev --no-save --no-audit --no-fund
# Fail the build, not the first pipeline run, if a native module is missing for
# this platform (package-lock.json must list the platform's optional packages).
RUN node --input-type=module -e "for (const m of ['@duckdb/node-api', 'onnxruntime-node', '@temporalio/worker']) await import(m);" \
 || { echo "a native npm module failed to load on $(uname -m); see docs/docker.md (platforms)" >&2; exit 1; }

# ---- runtime -----------------------------------------------------------------
FROM base AS runtime
ENV NODE_ENV=production \
    CONVEYOR_PYTHON=/opt/conveyor-venv/bin/python \
    CONVEYOR_HOME=/var/lib/conveyor \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY --from=venv /opt/conveyor-venv /opt/conveyor-venv
COPY --from=deps /app/node_modules ./node_modules
COPY . .
# The code stays root-owned and read-only to the service user. Writable:
# CONVEYOR_HOME (scratch directories of activities) and /app/.tmp (where an
# in-memory DuckDB spills when a dataset does not fit in memory).
RUN install -d -o conveyor -g conveyor -m 0750 /var/lib/conveyor /app/.tmp
USER conveyor
EXPOSE 8080
ENTRYPOINT ["node", "bin/conveyor.mjs"]
CMD ["--help"]
