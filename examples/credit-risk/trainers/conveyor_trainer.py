"""Helpers for Conveyor trainer scripts (stdlib + numpy only).

Trainer file contract, in short:
  * invoked as ``<python> train_x.py <job.json>`` (path also in $CONVEYOR_JOB_FILE);
  * progress goes to stdout as JSON lines ``{"event":"progress",...}``;
  * results are ``<outputDir>/model.onnx`` and ``<outputDir>/metadata.json``;
  * errors go to stderr with a non-zero exit code:
      - 2 (``EXIT_INVALID_JOB``): bad params or an invalid job file. This means
        "do not retry": the same job fails the same way on every attempt, so the
        worker reports it as a non-retryable failure. Raise ``BadParams`` /
        ``InvalidJob`` (``run`` maps them to 2) rather than exiting with 2 for
        transient problems;
      - any other non-zero code (1 for an unexpected exception) is an ordinary
        failure that Temporal retries per the pipeline's retry policy;
  * a trainer whose worker dies exits on its own (see ``run``): it must not keep
    training as an orphan while another worker retries the job.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import threading
import time
from typing import Any

import numpy as np

MISSING_CATEGORY = "__missing__"
# Exit code for bad params / an invalid job: do not retry (see the module docstring).
EXIT_INVALID_JOB = 2
PARENT_POLL_SECONDS = 0.5


class InvalidJob(Exception):
    """A malformed job file; `run` exits with code 2 (retrying cannot help)."""


class BadParams(InvalidJob):
    """Invalid job params; the message should name the offending param."""


def load_job(path: str | None = None) -> dict[str, Any]:
    path = path or (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CONVEYOR_JOB_FILE"))
    if not path:
        raise InvalidJob("no job file: pass it as argv[1] or set CONVEYOR_JOB_FILE")
    with open(path, encoding="utf-8") as f:
        job = json.load(f)
    if job.get("schemaVersion") != 1:
        raise InvalidJob(f"unsupported schemaVersion {job.get('schemaVersion')!r}")
    if job.get("task") not in ("classification", "regression"):
        raise InvalidJob(f"task must be 'classification' or 'regression', got {job.get('task')!r}")
    for key in ("target", "trainPath", "outputDir"):
        if not isinstance(job.get(key), str) or not job[key]:
            raise InvalidJob(f"{key} must be a non-empty string")
    features = job.get("features")
    if not isinstance(features, list) or not features:
        raise InvalidJob("features must be a non-empty list")
    for f in features:
        if not isinstance(f, dict) or f.get("type") not in ("numeric", "categorical"):
            raise InvalidJob(f"feature {f!r}: type must be 'numeric' or 'categorical'")
    if not isinstance(job.setdefault("params", {}), dict):
        raise BadParams("params must be an object")
    job.setdefault("seed", 0)
    return job


def numeric_indices(job: dict[str, Any]) -> list[int]:
    """Positions of the numeric features in job["features"] (and in feature_matrix)."""
    return [i for i, f in enumerate(job["features"]) if f["type"] == "numeric"]


def categorical_indices(job: dict[str, Any]) -> list[int]:
    return [i for i, f in enumerate(job["features"]) if f["type"] == "categorical"]


def read_csv(job: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Read job["trainPath"] into per-feature column arrays and the target.

    Numeric columns are float64 with NaN for empty cells; categorical columns are
    object arrays of str with "__missing__" for empty cells. Classification targets
    are int64, regression targets float64.
    """
    names = [f["name"] for f in job["features"]]
    types = {f["name"]: f["type"] for f in job["features"]}
    target = job["target"]
    with open(job["trainPath"], newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in [*names, target] if c not in header]
        if missing:
            raise ValueError(f"{job['trainPath']}: missing columns {missing}")
        raw: dict[str, list[str]] = {c: [] for c in [*names, target]}
        for row in reader:
            for c, values in raw.items():
                values.append(row[c])

    columns: dict[str, np.ndarray] = {}
    for name in names:
        if types[name] == "numeric":
            columns[name] = np.array([float(v) if v != "" else np.nan for v in raw[name]], dtype=np.float64)
        else:
            columns[name] = np.array([v if v != "" else MISSING_CATEGORY for v in raw[name]], dtype=object)

    if any(v == "" for v in raw[target]):
        raise ValueError(f"target column {target!r} has empty cells")
    if job["task"] == "classification":
        y = np.array([int(float(v)) for v in raw[target]], dtype=np.int64)
    else:
        y = np.array([float(v) for v in raw[target]], dtype=np.float64)
    return columns, y


def feature_matrix(job: dict[str, Any], columns: dict[str, np.ndarray]) -> np.ndarray:
    """Stack the feature columns, in job["features"] order, into a 2-D object array.

    Trainers address columns by position in this order; the ONNX export then maps
    position i to input i, which is what yields one ONNX input per feature.
    """
    return np.column_stack([columns[f["name"]].astype(object) for f in job["features"]])


def progress(step: int, total: int, message: str) -> None:
    try:
        print(json.dumps({"event": "progress", "step": step, "total": total, "message": message}), flush=True)
    except BrokenPipeError:
        # The worker that spawned us is gone; stop quietly instead of training on.
        _silence_stdout()
        sys.exit(1)


def _silence_stdout() -> None:
    # Python flushes stdout again at exit, which would raise a second time.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def write_outputs(job: dict[str, Any], onnx_model_bytes: bytes, metadata: dict[str, Any]) -> None:
    out = job["outputDir"]
    os.makedirs(out, exist_ok=True)
    # Write-then-rename so a reader never sees a half-written file.
    for name, data in (
        ("model.onnx", onnx_model_bytes),
        ("metadata.json", (json.dumps(metadata, indent=2) + "\n").encode("utf-8")),
    ):
        tmp = os.path.join(out, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(out, name))


def watch_parent(poll_seconds: float = PARENT_POLL_SECONDS) -> None:
    """Exit at once when the process that started us (the worker) goes away.

    A long ``fit`` prints no progress, so the broken pipe at the next progress line
    may come minutes later; meanwhile the orphan competes for CPU with the retry on
    another worker. When the parent dies we are re-parented, so ``os.getppid()``
    changes; a daemon thread polls it. ``os._exit`` because ``sys.exit`` in a thread
    only ends that thread (and the main thread may be deep inside native code).
    """
    parent = os.getppid()

    def poll() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent:
                try:
                    print(f"trainer: parent process {parent} exited; stopping", file=sys.stderr, flush=True)
                except Exception:  # noqa: BLE001 - stderr may be gone with the parent
                    pass
                os._exit(1)

    threading.Thread(target=poll, name="conveyor-parent-watch", daemon=True).start()


def run(main: Any) -> None:
    """Run a trainer's main(job) with the contract's error reporting and exit codes.

    Exit codes: 0 success; 2 (EXIT_INVALID_JOB) bad params or invalid job, do not
    retry; 1 anything else (retryable). Also exits with 1 as soon as the parent
    (the worker) is gone, see ``watch_parent``.
    """
    watch_parent()
    try:
        main(load_job())
    except BadParams as e:
        print(f"bad params: {e}", file=sys.stderr)
        sys.exit(EXIT_INVALID_JOB)
    except InvalidJob as e:
        print(f"invalid job: {e}", file=sys.stderr)
        sys.exit(EXIT_INVALID_JOB)
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - anything else is a plain failure
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
