"""Conveyor trainer: scikit-learn pipeline exported to ONNX with skl2onnx.

Usage: python train_sklearn.py <job.json>   (contract: see conveyor_trainer.py)

params.algorithm picks the estimator; every other key in params is passed to it
as a hyperparameter (unknown keys are rejected with exit code 2):
  classification: "logistic_regression" (default) | "gradient_boosting"
  regression:     "ridge" (default)               | "gradient_boosting"

The preprocessing, export and metadata helpers here are shared with
train_lightgbm.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn
from onnx.helper import make_opsetid
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, r2_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import conveyor_trainer as ct

# Runs on onnxruntime >= 1.14 (Python 1.24 here, onnxruntime-node 1.30 in Conveyor).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
PROGRESS_STEPS = 5
# Rows of the training set re-scored through onnxruntime as a conversion self-check.
SELF_CHECK_ROWS = 500

# algorithm -> (estimator class, default hyperparameters)
ALGORITHMS: dict[str, dict[str, tuple[type, dict[str, Any]]]] = {
    "classification": {
        "logistic_regression": (LogisticRegression, {"C": 1.0, "max_iter": 1000}),
        "gradient_boosting": (
            GradientBoostingClassifier,
            {"n_estimators": 150, "learning_rate": 0.1, "max_depth": 3, "subsample": 1.0},
        ),
    },
    "regression": {
        "ridge": (Ridge, {"alpha": 1.0}),
        "gradient_boosting": (
            GradientBoostingRegressor,
            {"n_estimators": 150, "learning_rate": 0.1, "max_depth": 3, "subsample": 1.0},
        ),
    },
}
DEFAULT_ALGORITHM = {"classification": "logistic_regression", "regression": "ridge"}

try:  # private in scikit-learn, so only used to classify the error when present
    from sklearn.utils._param_validation import InvalidParameterError
except ImportError:  # pragma: no cover
    InvalidParameterError = ()  # type: ignore[assignment,misc]


def make_estimator(
    job: dict[str, Any],
    algorithms: dict[str, dict[str, tuple[type, dict[str, Any]]]],
    default_algorithm: dict[str, str],
) -> tuple[str, Any, dict[str, Any]]:
    """Returns (algorithm, unfitted estimator, effective params incl. algorithm)."""
    params = dict(job["params"])
    task = job["task"]
    algorithm = params.pop("algorithm", default_algorithm[task])
    choices = algorithms[task]
    if algorithm not in choices:
        raise ct.BadParams(
            f"params.algorithm: unknown algorithm {algorithm!r} for task {task!r}; expected one of {sorted(choices)}"
        )
    cls, defaults = choices[algorithm]
    known = cls().get_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ct.BadParams(f"params.{unknown[0]}: not a hyperparameter of {cls.__name__} ({algorithm})")
    effective = {**defaults, **params}
    if "random_state" in known and "random_state" not in effective:
        effective["random_state"] = job["seed"]
    return algorithm, cls(**effective), {"algorithm": algorithm, **effective}


def build_pipeline(job: dict[str, Any], estimator: Any) -> Pipeline:
    # Columns are addressed by position in job["features"]; skl2onnx maps position
    # i to ONNX input i, giving one input per feature.
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    # read_csv already turns empty cells into "__missing__"; the imputer makes the
    # exported model do the same for "" at inference time.
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", missing_values="", fill_value=ct.MISSING_CATEGORY)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    transformers = []
    if ct.numeric_indices(job):
        transformers.append(("numeric", numeric, ct.numeric_indices(job)))
    if ct.categorical_indices(job):
        transformers.append(("categorical", categorical, ct.categorical_indices(job)))
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("model", estimator)])


def fit(pipeline: Pipeline, X: np.ndarray, y: np.ndarray) -> None:
    try:
        pipeline.fit(X, y)
    except InvalidParameterError as e:
        raise ct.BadParams(str(e)) from e


def check_target(job: dict[str, Any], y: np.ndarray) -> None:
    if job["task"] == "classification" and len(np.unique(y)) < 2:
        raise ValueError(f"target {job['target']!r} has a single class; classification needs at least two")


def train_metrics(job: dict[str, Any], pipeline: Pipeline, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    if job["task"] == "classification":
        proba = pipeline.predict_proba(X)
        metrics = {
            "accuracy": accuracy_score(y, pipeline.classes_[proba.argmax(axis=1)]),
            "log_loss": log_loss(y, proba, labels=pipeline.classes_),
        }
        if len(pipeline.classes_) == 2:
            metrics["roc_auc"] = roc_auc_score(y, proba[:, 1])
    else:
        pred = pipeline.predict(X)
        metrics = {
            "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
            "mae": mean_absolute_error(y, pred),
            "r2": r2_score(y, pred),
        }
    return {k: round(float(v), 6) for k, v in metrics.items()}


def onnx_inputs(job: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        (f["name"], FloatTensorType([None, 1]) if f["type"] == "numeric" else StringTensorType([None, 1]))
        for f in job["features"]
    ]


def export_onnx(job: dict[str, Any], pipeline: Pipeline, options: dict[Any, Any] | None = None) -> bytes:
    if job["task"] == "classification":
        n_classes = len(pipeline.classes_)
        outputs = [("label", Int64TensorType([None])), ("probabilities", FloatTensorType([None, n_classes]))]
        options = {**(options or {}), id(pipeline.steps[-1][1]): {"zipmap": False}}
    else:
        outputs = [("variable", FloatTensorType([None, 1]))]
    onx = convert_sklearn(
        pipeline,
        name=f"conveyor-{job['task']}",
        initial_types=onnx_inputs(job),
        final_types=outputs,
        target_opset=TARGET_OPSET,
        options=options,
    )
    # skl2onnx emits opset imports in set order (varies with PYTHONHASHSEED);
    # sort them so the same seed gives byte-identical models.
    imports = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    onx.opset_import.extend(make_opsetid(domain, version) for domain, version in imports)
    return onx.SerializeToString()


def onnx_feeds(job: dict[str, Any], X: np.ndarray) -> dict[str, np.ndarray]:
    feeds = {}
    for i, f in enumerate(job["features"]):
        col = X[:, i : i + 1]
        feeds[f["name"]] = col.astype(np.float32) if f["type"] == "numeric" else col.astype(str)
    return feeds


def onnx_self_check(job: dict[str, Any], model: bytes, pipeline: Pipeline, X: np.ndarray) -> float | None:
    """Max abs difference between onnxruntime and scikit-learn on some training rows.

    Regression differences are relative to the prediction spread. Returns None when
    onnxruntime is not installed (it is optional for trainers).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    X = X[:SELF_CHECK_ROWS]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    if job["task"] == "classification":
        _, proba = session.run(["label", "probabilities"], onnx_feeds(job, X))
        diff = float(np.max(np.abs(proba - pipeline.predict_proba(X))))
    else:
        (value,) = session.run(["variable"], onnx_feeds(job, X))
        expected = pipeline.predict(X)
        diff = float(np.max(np.abs(value[:, 0] - expected)) / (np.std(expected) or 1.0))
    # Float32 inputs can flip a tree split now and then; a large gap means a broken export.
    if diff > 0.05:
        raise RuntimeError(f"ONNX model disagrees with the fitted pipeline (max diff {diff:.4g})")
    return round(diff, 8)


def build_metadata(
    job: dict[str, Any],
    framework: str,
    algorithm: str,
    params: dict[str, Any],
    pipeline: Pipeline,
    train_rows: int,
    metrics: dict[str, float],
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "framework": framework,
        "algorithm": algorithm,
        "task": job["task"],
        "inputs": [
            {"name": f["name"], "type": "float" if f["type"] == "numeric" else "string"} for f in job["features"]
        ],
        "outputs": (
            {"label": "label", "probabilities": "probabilities"}
            if job["task"] == "classification"
            else {"value": "variable"}
        ),
    }
    if job["task"] == "classification":
        meta["classes"] = [c.item() if isinstance(c, np.generic) else c for c in pipeline.classes_]
    meta.update({"params": params, "trainRows": train_rows, "trainMetrics": metrics})
    return meta


def train(
    job: dict[str, Any],
    framework: str,
    algorithm: str,
    estimator: Any,
    params: dict[str, Any],
    onnx_options: dict[Any, Any] | None = None,
) -> None:
    """The common trainer flow: read, fit, evaluate, export, self-check, write."""
    ct.progress(1, PROGRESS_STEPS, f"reading {job['trainPath']}")
    columns, y = ct.read_csv(job)
    check_target(job, y)
    X = ct.feature_matrix(job, columns)

    ct.progress(2, PROGRESS_STEPS, f"fitting {algorithm} on {len(y)} rows")
    pipeline = build_pipeline(job, estimator)
    fit(pipeline, X, y)

    ct.progress(3, PROGRESS_STEPS, "computing training metrics")
    metrics = train_metrics(job, pipeline, X, y)

    ct.progress(4, PROGRESS_STEPS, "converting to ONNX")
    model = export_onnx(job, pipeline, onnx_options)
    diff = onnx_self_check(job, model, pipeline, X)
    if diff is not None:
        metrics["onnx_max_abs_diff"] = diff

    ct.progress(5, PROGRESS_STEPS, f"writing {job['outputDir']}")
    ct.write_outputs(job, model, build_metadata(job, framework, algorithm, params, pipeline, len(y), metrics))


def main(job: dict[str, Any]) -> None:
    algorithm, estimator, params = make_estimator(job, ALGORITHMS, DEFAULT_ALGORITHM)
    train(job, f"scikit-learn {sklearn.__version__}", algorithm, estimator, params)


if __name__ == "__main__":
    ct.run(main)
