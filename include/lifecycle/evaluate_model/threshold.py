"""Business value: the value of each outcome per row and the decision threshold that maximises
total value within the review capacity.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from include.lifecycle.evaluate_model.arrays import _binary_inputs, _descending_cuts, _floats, _k_for_rate, _per_row
from include.lifecycle.spec import ValueSpec

# Largest number of points kept in a curve returned for plotting / JSON.
_MAX_CURVE_POINTS = 200


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
