"""Conveyor trainer: LightGBM in a scikit-learn pipeline, exported to ONNX.

Usage: python train_lightgbm.py <job.json>   (contract: see conveyor_trainer.py)

params.algorithm is optional and must be "lightgbm"; every other key is passed to
LGBMClassifier / LGBMRegressor (only their scikit-learn constructor parameters
are accepted, e.g. n_estimators, learning_rate, num_leaves, min_child_samples).

The whole pipeline goes through skl2onnx, with onnxmltools' LightGBM converter
registered for the final step (the documented skl2onnx "LightGBM in a pipeline"
approach).
"""

from __future__ import annotations

from typing import Any

import lightgbm
from lightgbm import LGBMClassifier, LGBMRegressor
from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
from skl2onnx import update_registered_converter
from skl2onnx.common.shape_calculator import (
    calculate_linear_classifier_output_shapes,
    calculate_linear_regressor_output_shapes,
)

import conveyor_trainer as ct
import train_sklearn

# n_jobs=1 + deterministic: identical trees for a seed regardless of core count;
# at this data size a single thread is as fast anyway.
_COMMON = {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 20, "n_jobs": 1}
ALGORITHMS: dict[str, dict[str, tuple[type, dict[str, Any]]]] = {
    "classification": {"lightgbm": (LGBMClassifier, _COMMON)},
    "regression": {"lightgbm": (LGBMRegressor, _COMMON)},
}
DEFAULT_ALGORITHM = {"classification": "lightgbm", "regression": "lightgbm"}
# Not constructor parameters, so not user-settable here; passed through to LightGBM.
FIXED = {"deterministic": True, "force_col_wise": True, "verbose": -1}

update_registered_converter(
    LGBMClassifier,
    "LightGbmLGBMClassifier",
    calculate_linear_classifier_output_shapes,
    convert_lightgbm,
    options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
)
update_registered_converter(
    LGBMRegressor,
    "LightGbmLGBMRegressor",
    calculate_linear_regressor_output_shapes,
    convert_lightgbm,
    options={"split": None},
)


def main(job: dict[str, Any]) -> None:
    algorithm, estimator, params = train_sklearn.make_estimator(job, ALGORITHMS, DEFAULT_ALGORITHM)
    estimator.set_params(**FIXED)
    train_sklearn.train(job, f"lightgbm {lightgbm.__version__}", algorithm, estimator, {**params, **FIXED})


if __name__ == "__main__":
    ct.run(main)
