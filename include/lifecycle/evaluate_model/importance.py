"""Feature importance of a fitted model (gain, impurity decrease or absolute coefficients)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np


def _final_estimator(model: Any) -> tuple[Any, Any]:
    """``(estimator, preprocessing)``: the last step of a Pipeline and the steps before it (or None)."""
    steps = getattr(model, "steps", None)
    if isinstance(steps, list) and steps:
        pre = model[:-1] if len(steps) > 1 else None
        return _final_estimator(steps[-1][1])[0], pre
    for attr in ("regressor_", "best_estimator_"):  # TransformedTargetRegressor, search CV
        inner = getattr(model, attr, None)
        if inner is not None:
            return _final_estimator(inner)
    return model, None


def _raw_importance(est: Any) -> np.ndarray | None:
    try:
        imp = getattr(est, "feature_importances_", None)  # xgboost: gain; random forest: impurity decrease
    except Exception:  # xgboost raises when not fitted / unusual boosters
        imp = None
    if imp is None:
        try:
            coef = getattr(est, "coef_", None)
        except Exception:
            coef = None
        if coef is None:
            return None
        imp = np.abs(np.asarray(coef, dtype=np.float64))
    arr = np.asarray(imp, dtype=np.float64)
    if arr.ndim == 2:  # multi-class linear models: (classes, features) in sklearn, (features, classes) in xgboost
        if arr.shape[0] == 1 or arr.shape[1] == 1:
            arr = arr.reshape(-1)
        else:
            n_in = getattr(est, "n_features_in_", arr.shape[1])
            arr = np.abs(arr).mean(axis=0 if arr.shape[1] == n_in else 1)
    return np.nan_to_num(arr.reshape(-1), nan=0.0)


def feature_importance(model: Any, feature_names: list[str], top: int = 25) -> list[dict[str, Any]]:
    """Top ``top`` features as ``[{"feature", "importance"}]`` sorted by importance, descending.

    * xgboost sklearn API: ``feature_importances_`` (gain, normalised to sum 1);
    * random forest / trees: ``feature_importances_`` (mean impurity decrease);
    * linear / logistic: absolute coefficients (mean over classes for multi-class), which are
      only comparable when the inputs are on the same scale.

    A ``Pipeline`` is unwrapped to its last step. When ``feature_names`` does not match the
    number of model inputs (e.g. one-hot encoding inside the pipeline), names come from the
    pipeline's ``get_feature_names_out()``, else the estimator's ``feature_names_in_``, else
    ``f0, f1, ...``. Returns ``[]`` for a model whose importance is unknown. Ties keep input order.
    """
    est, pre = _final_estimator(model)
    imp = _raw_importance(est)
    if imp is None or imp.size == 0:
        return []
    names: Sequence[str] = list(feature_names)
    if len(names) != imp.size:
        candidates: list[Sequence[str]] = []
        if pre is not None and hasattr(pre, "get_feature_names_out"):
            with contextlib.suppress(Exception):  # some transformers cannot name their outputs
                candidates.append([str(x) for x in pre.get_feature_names_out()])
        if getattr(est, "feature_names_in_", None) is not None:
            candidates.append([str(x) for x in est.feature_names_in_])
        names = next((c for c in candidates if len(c) == imp.size), [f"f{i}" for i in range(imp.size)])
    order = np.argsort(-imp, kind="stable")[: max(top, 0)]
    return [{"feature": str(names[i]), "importance": float(imp[i])} for i in order]
