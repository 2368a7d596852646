"""Section 7 of the lifecycle: evaluate a trained model against the business goal.

Everything here is plain numpy / scikit-learn / matplotlib and never imports airflow, so the
same code runs in a DAG task, a Glue job or a SageMaker processing script.

Conventions used throughout:

* ``y`` for binary problems holds 0/1 (or bool) labels, 1 being the positive class;
  ``scores`` are finite model scores where higher means "more likely positive"
  (usually ``predict_proba(X)[:, 1]``).
* A row is *flagged* when ``score >= threshold``.
* Every metric is computed from one sort (or one partition) plus cumulative sums, so a
  million rows take well under a second; nothing loops over thresholds in Python.
* Every returned number is a plain Python ``float`` / ``int`` / ``None`` so results can be
  written to JSON as they are.
* A score that cannot be judged on the rows given (no positives, one class only for ROC AUC /
  AUPRC, fewer than 2 rows for r2) is never reported as 0.0: the scoring functions raise
  :class:`MetricUndefined`; :func:`binary_metrics` and :func:`regression_metrics` (descriptive
  tables) give None for it.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

from include.lifecycle.spec import BINARY_METRICS, LOWER_IS_BETTER, GoalSpec, ValueSpec

__all__ = [
    "MetricUndefined",
    "binary_metrics",
    "calibration_table",
    "choose_threshold",
    "compare_with_champion",
    "feature_importance",
    "goal_metric",
    "meets_goal",
    "metric_at_alert_rate",
    "outcome_values",
    "plots_binary",
    "plots_regression",
    "regression_metrics",
]

# Added before flooring ``rate * n`` so that e.g. 0.29 * 100 = 28.999999999999996 counts as 29 rows.
_RATE_EPS = 1e-9
# Largest number of points kept in a curve returned for plotting / JSON.
_MAX_CURVE_POINTS = 200
# Largest number of points drawn in a PR / ROC curve or a scatter plot.
_MAX_PLOT_POINTS = 2000
_MAX_SCATTER_POINTS = 20_000
_LOG_LOSS_EPS = 1e-15
_DPI = 90


class MetricUndefined(ValueError):
    """A metric has no value on these rows (e.g. recall without positives): it is not a score of 0.0."""

    def __init__(self, metric: str, rows: int, positives: int | None, why: str) -> None:
        self.metric, self.rows, self.positives = metric, rows, positives
        counts = f"{rows} rows" + ("" if positives is None else f" with {positives} positives")
        super().__init__(f"metric {metric} is undefined on {counts}: {why}")


# --------------------------------------------------------------------------------------
# input helpers
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# business value and capacity metrics
# --------------------------------------------------------------------------------------
def outcome_values(
    goal_value: ValueSpec, n: int, columns: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row value of a true positive, a false positive and a false negative.

    A number in the spec is broadcast to ``n`` rows; a string names a column (e.g. ``"amount"``)
    that is read from ``columns`` (any mapping of name to array, a DataFrame works too).
    Raises ``ValueError`` when a named column is missing, has the wrong length or holds
    NaN/inf values.
    """
    out = []
    for outcome in ("true_positive", "false_positive", "false_negative"):
        spec_value = getattr(goal_value, outcome)
        if isinstance(spec_value, str):
            if spec_value not in columns:
                raise ValueError(
                    f"goal.value.{outcome} names column {spec_value!r}, which is not among the columns given"
                )
            out.append(_floats(np.asarray(columns[spec_value]), f"column {spec_value!r}", n))
        else:
            out.append(np.full(n, float(spec_value)))
    return out[0], out[1], out[2]


def metric_at_alert_rate(
    y: np.ndarray, scores: np.ndarray, *, max_alert_rate: float, weights: np.ndarray | None = None
) -> float:
    """Share of the positive weight caught when only the top ``max_alert_rate`` of rows can be reviewed.

    Flags the top ``k = floor(max_alert_rate * n)`` rows by score and returns
    ``sum(w[flagged & y == 1]) / sum(w[y == 1])``; with ``weights=None`` every row weighs 1, so
    this is recall at the alert rate ("recall_at_alert_rate"); with ``weights=amount`` it is the
    share of the positive amount caught ("amount_recall_at_alert_rate").

    Exactly ``k`` rows are flagged: rows tied on score at the boundary are taken in row order
    (earlier row first), i.e. the same result as a stable descending sort. Runs in O(n) with a
    partition, no full sort.

    Raises :class:`MetricUndefined` when there are no positives (or their total weight is not
    positive): nothing can be shown to be caught, and 0.0 would read as a score.
    """
    yb, s = _binary_inputs(y, scores)
    n = yb.shape[0]
    w = np.ones(n) if weights is None else _floats(weights, "weights", n)
    total = float(w[yb].sum())
    if n == 0 or total <= 0:
        name = "recall_at_alert_rate" if weights is None else "amount_recall_at_alert_rate"
        positives = int(yb.sum())
        why = (
            "no positives, so nothing can be caught"
            if positives == 0
            else f"the positives' total weight is {total:g}, not positive"
        )
        raise MetricUndefined(name, n, positives, why)
    k = _k_for_rate(max_alert_rate, n)
    if k == 0:
        return 0.0
    if k >= n:
        flagged = np.ones(n, dtype=bool)
    else:
        kth = np.partition(s, n - k)[n - k]  # k-th largest score
        flagged = s > kth
        need = k - int(flagged.sum())
        if need > 0:
            flagged[np.flatnonzero(s == kth)[:need]] = True
    return _safe_div(float(w[flagged & yb].sum()), total)


def _downsample_indices(n_points: int, focus_end: int | None, best: int) -> np.ndarray:
    """At most ``_MAX_CURVE_POINTS`` indices into a curve of ``n_points``, always keeping ``best``.

    When ``focus_end`` is given, half of the budget is spent on indices ``<= focus_end`` (the
    feasible low-alert-rate region that otherwise gets one or two points out of a million).
    """
    if n_points <= _MAX_CURVE_POINTS:
        return np.arange(n_points)
    budget = _MAX_CURVE_POINTS - 1
    parts = [np.array([best])]
    if focus_end is not None and 0 < focus_end < n_points - 1:
        half = budget // 2
        parts.append(np.linspace(0, focus_end, half).round().astype(np.int64))
        budget -= half
    parts.append(np.linspace(0, n_points - 1, budget).round().astype(np.int64))
    return np.unique(np.concatenate(parts))


def choose_threshold(
    y: np.ndarray,
    scores: np.ndarray,
    *,
    tp_value: np.ndarray | float,
    fp_value: np.ndarray | float,
    fn_value: np.ndarray | float,
    max_alert_rate: float | None,
) -> dict[str, Any]:
    """Pick the score cut-off that maximises total business value, within the review capacity.

    Rows with ``score >= threshold`` are flagged. Total value is
    ``sum(tp_value[caught positives]) + sum(fp_value[flagged negatives]) + sum(fn_value[missed positives])``;
    true negatives are worth 0. Values are per row (arrays from :func:`outcome_values`) or scalars.

    Only cut points between distinct scores are considered (all rows tied on a score are
    flagged together), plus "flag nothing". With ``max_alert_rate`` the share of flagged rows
    must be ``<= max_alert_rate`` (at most ``floor(max_alert_rate * n)`` rows), so with ties at
    the boundary fewer rows than the capacity may be flagged. When several cut points give the
    same best value, the one flagging the fewest rows wins.

    Returns::

        {"threshold": float, "value": float, "alert_rate": float, "flagged": int,
         "caught": int, "positives": int, "n": int, "value_none": float,
         "max_alert_rate": float | None,
         "curve": {"threshold": [...], "value": [...], "alert_rate": [...]}}

    If nothing is worth flagging, ``threshold`` is ``1.0 + max(scores)`` (flags no row, JSON-safe)
    and ``value`` is the value of flagging none (``value_none``). ``curve`` holds at most 200
    points over all cut points (not only feasible ones), half of them in the region up to twice
    the capacity when ``max_alert_rate`` is given, always including the chosen point; its first
    point is "flag nothing".
    """
    yb, s = _binary_inputs(y, scores)
    n = yb.shape[0]
    tp = _per_row(tp_value, "tp_value", n)
    fp = _per_row(fp_value, "fp_value", n)
    fn = _per_row(fn_value, "fn_value", n)
    none_threshold = float(s.max()) + 1.0 if n else 1.0

    order, cut, s_sorted = _descending_cuts(s)
    y_sorted = yb[order]
    zero = np.zeros(1)
    cum_tp = np.concatenate((zero, np.cumsum(np.where(y_sorted, tp[order], 0.0))))
    cum_fp = np.concatenate((zero, np.cumsum(np.where(y_sorted, 0.0, fp[order]))))
    cum_fn = np.concatenate((zero, np.cumsum(np.where(y_sorted, fn[order], 0.0))))
    cum_pos = np.concatenate(([0], np.cumsum(y_sorted)))
    fn_total = cum_fn[-1]

    value = cum_tp[cut] + cum_fp[cut] + (fn_total - cum_fn[cut])
    alert_rate = cut / n if n else np.zeros_like(cut, dtype=np.float64)
    thresholds = np.where(cut > 0, s_sorted[np.maximum(cut - 1, 0)] if n else none_threshold, none_threshold)

    if max_alert_rate is None:
        feasible_end = len(cut) - 1
    else:
        k_max = _k_for_rate(max_alert_rate, n)
        feasible_end = int(np.searchsorted(cut, k_max, side="right")) - 1  # cut[0] == 0 is always feasible
    best = int(np.argmax(value[: feasible_end + 1]))

    focus_end = None
    if max_alert_rate is not None and n:
        focus_end = int(np.searchsorted(cut, _k_for_rate(min(1.0, 2 * max_alert_rate), n), side="right")) - 1
    keep = _downsample_indices(len(cut), focus_end, best)
    flagged = int(cut[best])
    return {
        "threshold": float(thresholds[best]),
        "value": float(value[best]),
        "alert_rate": float(alert_rate[best]),
        "flagged": flagged,
        "caught": int(cum_pos[flagged]),
        "positives": int(cum_pos[-1]),
        "n": int(n),
        "value_none": float(value[0]),
        "max_alert_rate": None if max_alert_rate is None else float(max_alert_rate),
        "curve": {
            "threshold": [float(v) for v in thresholds[keep]],
            "value": [float(v) for v in value[keep]],
            "alert_rate": [float(v) for v in alert_rate[keep]],
        },
    }


# --------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------
def goal_metric(
    metric: str,
    y: np.ndarray,
    scores_or_pred: np.ndarray,
    *,
    amount: np.ndarray | None = None,
    max_alert_rate: float | None = None,
    threshold: float | None = None,
) -> float:
    """Value of the goal metric named in the spec (``GoalSpec.metric``).

    * ``amount_recall_at_alert_rate``: needs ``amount`` and ``max_alert_rate``
      (see :func:`metric_at_alert_rate`).
    * ``recall_at_alert_rate``: needs ``max_alert_rate``.
    * ``auprc`` (average precision) and ``roc_auc``: threshold-free, on scores.
    * ``f1``, ``precision``, ``recall``: at ``threshold`` (flag ``score >= threshold``), needed;
      precision is 0.0 when nothing is flagged (e.g. the "flag nothing" baseline).
    * ``rmse``, ``mae``, ``r2``: regression, on predictions.

    Raises :class:`MetricUndefined` (a ``ValueError``) when the metric has no value on these
    rows instead of reporting 0.0: any binary metric without positives (or with zero positive
    amount), ``roc_auc`` and ``auprc`` without negatives too, a regression metric on zero rows,
    ``r2`` on fewer than 2 rows. Where the metric is defined the value is as before.
    Raises ``ValueError`` for an unknown metric or a missing argument.
    """
    if metric in ("rmse", "mae", "r2"):
        yt = _floats(y, "y")
        pred = _floats(scores_or_pred, "pred", yt.shape[0])
        if yt.shape[0] == 0:
            raise MetricUndefined(metric, 0, None, "cannot compute a regression metric on zero rows")
        if metric == "rmse":
            return float(np.sqrt(mean_squared_error(yt, pred)))
        if metric == "mae":
            return float(mean_absolute_error(yt, pred))
        if yt.shape[0] < 2:
            raise MetricUndefined(metric, int(yt.shape[0]), None, "r2 needs at least 2 rows")
        return float(r2_score(yt, pred))

    if metric not in BINARY_METRICS:
        raise ValueError(f"unknown metric {metric!r}")
    if metric.endswith("_at_alert_rate") and max_alert_rate is None:
        raise ValueError(f"metric {metric} needs max_alert_rate")
    if metric == "amount_recall_at_alert_rate" and amount is None:
        raise ValueError("metric amount_recall_at_alert_rate needs amount")
    if metric in ("f1", "precision", "recall") and threshold is None:
        raise ValueError(f"metric {metric} needs a threshold")
    yb, s = _binary_inputs(y, scores_or_pred)
    n, positives = int(yb.shape[0]), int(yb.sum())
    if positives == 0:
        raise MetricUndefined(metric, n, 0, "no positives, so nothing can be shown to be caught")
    if metric == "amount_recall_at_alert_rate":
        return metric_at_alert_rate(yb, s, max_alert_rate=max_alert_rate, weights=amount)  # type: ignore[arg-type]
    if metric == "recall_at_alert_rate":
        return metric_at_alert_rate(yb, s, max_alert_rate=max_alert_rate)  # type: ignore[arg-type]
    if metric in ("auprc", "roc_auc"):
        if positives == n:
            raise MetricUndefined(metric, n, positives, "no negatives, so the ranking cannot be judged")
        return float((average_precision_score if metric == "auprc" else roc_auc_score)(yb, s))
    pred = s >= threshold  # type: ignore[operator]
    fn = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[metric]
    return float(fn(yb, pred, zero_division=0))


def binary_metrics(
    y: np.ndarray, scores: np.ndarray, *, threshold: float, amount: np.ndarray | None = None
) -> dict[str, Any]:
    """Standard binary classification metrics at a decision threshold (flag ``score >= threshold``).

    Keys: ``roc_auc``, ``auprc`` (None when ``y`` holds one class only), ``precision`` (0.0
    when nothing is flagged), ``recall``, ``f1`` (None without positives: undefined, not 0.0),
    ``alert_rate``, ``brier``, ``log_loss`` (scores clipped to [1e-15, 1 - 1e-15]; both None
    when scores are not probabilities in [0, 1]), ``threshold``, ``tp``, ``fp``, ``fn``, ``tn``,
    ``positives``, ``n`` and, when ``amount`` is given, ``amount_caught_share`` (share of the
    positive amount flagged at this threshold, None when the positives' amount is not positive).
    """
    yb, s = _binary_inputs(y, scores)
    n = yb.shape[0]
    pred = s >= threshold
    tp = int((pred & yb).sum())
    fp = int((pred & ~yb).sum())
    fn = int((~pred & yb).sum())
    tn = n - tp - fp - fn
    positives = tp + fn
    one_class = positives == 0 or positives == n
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, positives)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    out: dict[str, Any] = {
        "roc_auc": None if one_class else float(roc_auc_score(yb, s)),
        "auprc": None if one_class else float(average_precision_score(yb, s)),
        "precision": precision,
        "recall": recall if positives else None,
        "f1": f1 if positives else None,
        "alert_rate": _safe_div(tp + fp, n),
        "brier": None,
        "log_loss": None,
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "positives": positives,
        "n": int(n),
    }
    if n and s.min() >= 0.0 and s.max() <= 1.0:
        yf = yb.astype(np.float64)
        out["brier"] = float(np.mean((s - yf) ** 2))
        p = np.clip(s, _LOG_LOSS_EPS, 1.0 - _LOG_LOSS_EPS)
        out["log_loss"] = float(-np.mean(yf * np.log(p) + (1.0 - yf) * np.log1p(-p)))
    if amount is not None:
        a = _floats(amount, "amount", n)
        total = float(a[yb].sum())
        out["amount_caught_share"] = _safe_div(float(a[pred & yb].sum()), total) if total > 0 else None
    return out


def calibration_table(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Reliability table over quantile bins of the scores.

    Bin edges are the score quantiles; duplicate edges (many tied scores) merge bins, so fewer
    than ``bins`` rows may come back. Each row: ``bin``, ``lower``, ``upper`` (score range),
    ``mean_predicted``, ``observed_rate`` and ``count``; empty bins are left out.
    """
    yb, s = _binary_inputs(y, scores)
    if yb.shape[0] == 0:
        return []
    if bins < 1:
        raise ValueError("bins must be >= 1")
    edges = np.unique(np.quantile(s, np.linspace(0.0, 1.0, bins + 1)))
    n_bins = max(len(edges) - 1, 1)
    idx = np.clip(np.searchsorted(edges[1:-1], s, side="right"), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sum_s = np.bincount(idx, weights=s, minlength=n_bins)
    sum_y = np.bincount(idx, weights=yb.astype(np.float64), minlength=n_bins)
    lower = edges[:-1] if len(edges) > 1 else edges
    upper = edges[1:] if len(edges) > 1 else edges
    rows = []
    for b in np.flatnonzero(counts):
        rows.append(
            {
                "bin": int(b),
                "lower": float(lower[b]),
                "upper": float(upper[b]),
                "mean_predicted": float(sum_s[b] / counts[b]),
                "observed_rate": float(sum_y[b] / counts[b]),
                "count": int(counts[b]),
            }
        )
    return rows


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """``rmse``, ``mae``, ``r2`` (None with fewer than 2 rows), ``bias`` (mean of pred - y) and ``n``."""
    yt = _floats(y, "y")
    p = _floats(pred, "pred", yt.shape[0])
    n = yt.shape[0]
    if n == 0:
        return {"rmse": None, "mae": None, "r2": None, "bias": None, "n": 0}
    return {
        "rmse": float(np.sqrt(mean_squared_error(yt, p))),
        "mae": float(mean_absolute_error(yt, p)),
        "r2": float(r2_score(yt, p)) if n >= 2 else None,
        "bias": float(np.mean(p - yt)),
        "n": int(n),
    }


# --------------------------------------------------------------------------------------
# goal and champion decisions
# --------------------------------------------------------------------------------------
def _is_number(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def meets_goal(value: float, goal: GoalSpec) -> bool:
    """True when ``value`` reaches ``goal.target`` (``<=`` for rmse/mae, ``>=`` otherwise); False for None/NaN."""
    if not _is_number(value):
        return False
    if goal.metric in LOWER_IS_BETTER:
        return bool(value <= goal.target)
    return bool(value >= goal.target)


def compare_with_champion(candidate: float, champion: float | None, goal: GoalSpec) -> dict[str, Any]:
    """Is the candidate no worse than the serving champion, within ``goal.champion_margin``?

    Returns ``{"champion", "candidate", "no_worse", "delta", "margin", "higher_is_better"}``;
    ``delta`` is ``candidate - champion`` (raw, not sign-adjusted; 0.0 when there is no
    champion). ``no_worse`` is True without a champion, else
    ``candidate >= champion - margin`` (higher is better) or ``candidate <= champion + margin``
    (rmse/mae). A None/NaN candidate is never no_worse.
    """
    margin = float(goal.champion_margin)
    higher = goal.metric not in LOWER_IS_BETTER
    if champion is None or not _is_number(champion):
        no_worse = _is_number(candidate)
        delta = 0.0
    elif not _is_number(candidate):
        no_worse, delta = False, float("nan")
    else:
        delta = float(candidate) - float(champion)
        no_worse = candidate >= champion - margin if higher else candidate <= champion + margin
    return {
        "champion": None if champion is None else float(champion),
        "candidate": None if candidate is None else float(candidate),
        "no_worse": bool(no_worse),
        "delta": delta,
        "margin": margin,
        "higher_is_better": higher,
    }


# --------------------------------------------------------------------------------------
# feature importance
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------
def _png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes and release it."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    finally:
        fig.clear()
    return buf.getvalue()


def _message(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _thin(n: int, limit: int = _MAX_PLOT_POINTS) -> np.ndarray:
    """At most ``limit`` indices of a ranked curve to draw: half evenly spaced, half geometric.

    The geometric half keeps the top of the ranking (the low-alert-rate end, where thresholds
    are chosen) detailed even when the curve has a million points. First and last are kept.
    """
    if n <= limit:
        return np.arange(n)
    half = limit // 2
    linear = np.linspace(0, n - 1, half)
    geometric = np.geomspace(1, n, limit - half) - 1
    return np.unique(np.concatenate((linear, geometric)).round().astype(np.int64))


def _rank_curves(yb: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
    """TP/FP counts and thresholds at every distinct-score cut point, from one sort."""
    order, cut, s_sorted = _descending_cuts(s)
    cum_pos = np.concatenate(([0], np.cumsum(yb[order])))
    tp = cum_pos[cut].astype(np.float64)
    fp = cut - tp
    thr = np.where(cut > 0, s_sorted[np.maximum(cut - 1, 0)], np.inf)
    return {"tp": tp, "fp": fp, "cut": cut.astype(np.float64), "threshold": thr}


def _importance_plot(importance: list[dict[str, Any]], title: str) -> bytes:
    rows = list(importance)[::-1]  # largest at the top
    fig = Figure(figsize=(7, max(2.5, 0.28 * len(rows) + 1.2)), dpi=_DPI)
    ax = fig.add_subplot()
    if not rows:
        _message(ax, "no feature importance available for this model")
    else:
        ax.barh([r["feature"] for r in rows], [r["importance"] for r in rows], color="tab:blue")
        ax.set_xlabel("importance")
        ax.tick_params(axis="y", labelsize=8)
    ax.set_title(title)
    return _png(fig)


def _value_plot(value_curve: dict[str, Any], threshold: float, max_alert_rate: float | None) -> bytes:
    curve = value_curve.get("curve", value_curve)
    thr = np.asarray(curve.get("threshold", []), dtype=np.float64)
    val = np.asarray(curve.get("value", []), dtype=np.float64)
    rate = np.asarray(curve.get("alert_rate", []), dtype=np.float64)
    fig = Figure(figsize=(11, 4), dpi=_DPI)
    ax_rate, ax_thr = fig.subplots(1, 2)
    if val.size == 0:
        _message(ax_rate, "no value curve")
        _message(ax_thr, "no value curve")
        return _png(fig)
    if "value" in value_curve and "alert_rate" in value_curve and "curve" in value_curve:
        chosen_rate, chosen_val = float(value_curve["alert_rate"]), float(value_curve["value"])
    else:
        i = int(np.argmin(np.abs(thr - threshold)))
        chosen_rate, chosen_val = float(rate[i]), float(val[i])
    ax_rate.plot(rate, val, color="tab:blue", lw=1.5)
    ax_rate.plot([chosen_rate], [chosen_val], "o", color="tab:red", label=f"chosen: {chosen_rate:.3%} flagged")
    shown = np.ones(rate.size, dtype=bool)
    if max_alert_rate is not None:
        ax_rate.axvline(max_alert_rate, color="tab:orange", ls="--", label=f"max alert rate {max_alert_rate:.3%}")
        x_max = min(1.0, max(4 * max_alert_rate, 1.5 * chosen_rate, 1e-6))
        ax_rate.set_xlim(0, x_max)
        shown = rate <= x_max
        if shown.any():
            lo, hi = float(val[shown].min()), float(val[shown].max())
            pad = 0.05 * (hi - lo) or 1.0
            ax_rate.set_ylim(lo - pad, hi + pad)
    ax_rate.xaxis.set_major_locator(MaxNLocator(5))
    ax_rate.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax_rate.set_xlabel("alert rate (share of rows flagged)")
    ax_rate.set_ylabel("total value")
    ax_rate.set_title("Value vs alert rate")
    ax_rate.legend(loc="best", fontsize=8)
    on_thr = shown & (rate > 0)  # the "flag nothing" point sits at 1 + max score, off the scale
    ax_thr.plot(thr[on_thr], val[on_thr], color="tab:blue", lw=1.5)
    ax_thr.plot([threshold], [chosen_val], "o", color="tab:red", label=f"chosen threshold {threshold:.4g}")
    if max_alert_rate is not None:
        feasible = on_thr & (rate <= max_alert_rate + _RATE_EPS)
        if feasible.any():
            ax_thr.axvline(float(thr[feasible].min()), color="tab:orange", ls="--", label="capacity limit (approx.)")
    ax_thr.set_xlabel("threshold (flag score >= threshold)")
    ax_thr.set_ylabel("total value")
    ax_thr.set_title("Value vs threshold")
    ax_thr.legend(loc="best", fontsize=8)
    return _png(fig)


def plots_binary(
    y: np.ndarray,
    scores: np.ndarray,
    *,
    threshold: float,
    value_curve: dict[str, Any],
    importance: list[dict[str, Any]],
    calibration: list[dict[str, Any]],
    max_alert_rate: float | None = None,
) -> dict[str, bytes]:
    """PNG plots of a binary model: name -> bytes.

    Keys: ``pr_curve`` (with the chosen threshold), ``roc_curve``, ``confusion_matrix`` (counts
    at the threshold), ``value_vs_threshold`` (value against alert rate and against threshold,
    chosen point and capacity line), ``feature_importance`` and ``calibration``.

    ``value_curve`` is the whole dict returned by :func:`choose_threshold` (preferred: its
    chosen point and ``max_alert_rate`` are used) or just its ``"curve"``; ``max_alert_rate``
    overrides the one in ``value_curve``. Curves are thinned to a few thousand points, so a
    million rows plot quickly. Single-class data gives a placeholder instead of PR/ROC curves.
    """
    yb, s = _binary_inputs(y, scores)
    if max_alert_rate is None:
        max_alert_rate = value_curve.get("max_alert_rate")
    out: dict[str, bytes] = {}
    positives = int(yb.sum())
    negatives = int(yb.shape[0] - positives)
    curves = _rank_curves(yb, s)
    pred = s >= threshold
    tp_at = int((pred & yb).sum())
    fp_at = int((pred & ~yb).sum())

    # precision-recall
    fig = Figure(figsize=(6, 5), dpi=_DPI)
    ax = fig.add_subplot()
    if positives == 0:
        _message(ax, "no positives: precision-recall curve undefined")
    else:
        tp, fp = curves["tp"][1:], curves["fp"][1:]
        idx = _thin(tp.size)
        ax.plot(tp[idx] / positives, tp[idx] / (tp[idx] + fp[idx]), color="tab:blue", lw=1.5)
        ax.axhline(positives / yb.shape[0], color="grey", ls=":", label=f"base rate {positives / yb.shape[0]:.4f}")
        if tp_at + fp_at:
            ax.plot(
                [tp_at / positives], [tp_at / (tp_at + fp_at)], "o", color="tab:red", label=f"threshold {threshold:.4g}"
            )
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.legend(loc="best", fontsize=8)
    ax.set_title("Precision-recall curve")
    out["pr_curve"] = _png(fig)

    # ROC
    fig = Figure(figsize=(6, 5), dpi=_DPI)
    ax = fig.add_subplot()
    if positives == 0 or negatives == 0:
        _message(ax, "one class only: ROC curve undefined")
    else:
        idx = _thin(curves["tp"].size)
        fpr, tpr = curves["fp"][idx] / negatives, curves["tp"][idx] / positives
        ax.plot(fpr, tpr, color="tab:blue", lw=1.5, label=f"AUC {roc_auc_score(yb, s):.4f}")
        ax.plot([0, 1], [0, 1], color="grey", ls=":")
        ax.plot([fp_at / negatives], [tp_at / positives], "o", color="tab:red", label=f"threshold {threshold:.4g}")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title("ROC curve")
    out["roc_curve"] = _png(fig)

    # confusion matrix
    matrix = np.array([[negatives - fp_at, fp_at], [positives - tp_at, tp_at]])
    fig = Figure(figsize=(5, 4.5), dpi=_DPI)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    high = matrix.max() / 2 if matrix.max() else 1
    for (r, c), count in np.ndenumerate(matrix):
        share = count / max(int(matrix.sum()), 1)
        ax.text(c, r, f"{count:,}\n({share:.2%})", ha="center", va="center", color="white" if count > high else "black")
    ax.set_xticks([0, 1], ["not flagged", "flagged"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    ax.set_xlabel("prediction")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix at threshold {threshold:.4g}")
    out["confusion_matrix"] = _png(fig)

    out["value_vs_threshold"] = _value_plot(value_curve, threshold, max_alert_rate)
    out["feature_importance"] = _importance_plot(importance, "Feature importance")

    # calibration
    fig = Figure(figsize=(6, 5), dpi=_DPI)
    ax = fig.add_subplot()
    if not calibration:
        _message(ax, "no calibration table")
    else:
        mp = [r["mean_predicted"] for r in calibration]
        obs = [r["observed_rate"] for r in calibration]
        hi = max(max(mp), max(obs), 1e-6) * 1.05
        ax.plot([0, hi], [0, hi], color="grey", ls=":", label="perfectly calibrated")
        ax.plot(mp, obs, "o-", color="tab:blue", label="model")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_xlabel("mean predicted score (quantile bin)")
        ax.set_ylabel("observed positive rate")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Calibration (reliability diagram)")
    out["calibration"] = _png(fig)
    return out


def plots_regression(y: np.ndarray, pred: np.ndarray, *, importance: list[dict[str, Any]]) -> dict[str, bytes]:
    """PNG plots of a regression model: ``predicted_vs_actual``, ``residuals``, ``feature_importance``.

    Scatter plots draw a fixed (seeded) sample of at most 20,000 rows.
    """
    yt = _floats(y, "y")
    p = _floats(pred, "pred", yt.shape[0])
    n = yt.shape[0]
    if n > _MAX_SCATTER_POINTS:
        sample = np.sort(np.random.default_rng(0).choice(n, _MAX_SCATTER_POINTS, replace=False))
        ys, ps = yt[sample], p[sample]
    else:
        ys, ps = yt, p
    out: dict[str, bytes] = {}

    fig = Figure(figsize=(6, 5), dpi=_DPI)
    ax = fig.add_subplot()
    if n == 0:
        _message(ax, "no rows")
    else:
        ax.scatter(ys, ps, s=6, alpha=0.4, color="tab:blue", linewidths=0)
        lo, hi = float(min(ys.min(), ps.min())), float(max(ys.max(), ps.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", ls=":", label="perfect prediction")
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Predicted vs actual")
    out["predicted_vs_actual"] = _png(fig)

    fig = Figure(figsize=(11, 4), dpi=_DPI)
    ax_scatter, ax_hist = fig.subplots(1, 2)
    if n == 0:
        _message(ax_scatter, "no rows")
        _message(ax_hist, "no rows")
    else:
        resid = ps - ys
        ax_scatter.scatter(ps, resid, s=6, alpha=0.4, color="tab:blue", linewidths=0)
        ax_scatter.axhline(0, color="grey", ls=":")
        ax_scatter.set_xlabel("predicted")
        ax_scatter.set_ylabel("residual (predicted - actual)")
        ax_scatter.set_title("Residuals vs predicted")
        ax_hist.hist(p - yt, bins=50, color="tab:blue")
        ax_hist.set_xlabel("residual (predicted - actual)")
        ax_hist.set_ylabel("rows")
        ax_hist.set_title("Residual distribution")
    out["residuals"] = _png(fig)
    out["feature_importance"] = _importance_plot(importance, "Feature importance")
    return out
