"""Input checks shared by the metrics, the threshold choice and the plots: labels, scores and
per-row values as arrays, an alert rate as a number of rows, the cut points of a ranking.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Added before flooring ``rate * n`` so that e.g. 0.29 * 100 = 28.999999999999996 counts as 29 rows.
_RATE_EPS = 1e-9


def _labels(y: Any) -> np.ndarray:
    """Binary labels as a bool array; raise if anything other than 0/1 (or bool) is present."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.dtype == bool:
        return arr
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"binary labels must be 0/1 (or bool), found {bad.tolist()}")
    return arr.astype(bool)


def _floats(x: Any, name: str, n: int | None = None) -> np.ndarray:
    """A 1-d float64 array of finite values, optionally of length ``n``."""
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows, expected {n}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _per_row(value: Any, name: str, n: int) -> np.ndarray:
    """A scalar broadcast to ``n`` rows, or an array checked to have ``n`` rows."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        if not np.isfinite(arr):
            raise ValueError(f"{name} is not finite")
        return np.full(n, float(arr))
    return _floats(arr, name, n)


def _binary_inputs(y: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    yb = _labels(y)
    s = _floats(scores, "scores", yb.shape[0])
    return yb, s


def _k_for_rate(rate: float, n: int) -> int:
    """Number of rows an alert rate allows: floor(rate * n), robust to float rounding."""
    if rate < 0:
        raise ValueError(f"max_alert_rate must be >= 0, got {rate}")
    return int(min(n, math.floor(rate * n + _RATE_EPS)))


def _safe_div(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def _descending_cuts(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort once by descending score and find the cut points between distinct scores.

    Returns ``(order, cut, sorted_scores)``: ``order`` is the stable descending order, ``cut``
    the numbers of top rows ``i`` (0..n) after which a threshold can be placed, i.e. 0, n and
    every ``i`` with ``sorted_scores[i - 1] > sorted_scores[i]``. Flagging ``score >= t`` with
    ``t = sorted_scores[i - 1]`` flags exactly the top ``i`` rows.
    """
    n = scores.shape[0]
    order = np.argsort(-scores, kind="stable")
    s_sorted = scores[order]
    inner = np.flatnonzero(s_sorted[:-1] > s_sorted[1:]) + 1 if n > 1 else np.empty(0, dtype=np.int64)
    cut = np.concatenate(([0], inner, [n])) if n > 0 else np.array([0])
    return order, np.unique(cut), s_sorted
