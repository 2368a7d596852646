"""Calibration: whether a binary model's scores are probabilities, and a calibrator that makes them so.

* :func:`calibration_table`: the reliability table over quantile bins;
* :func:`fit_calibrator`: isotonic regression or Platt scaling fitted on the validation rows,
  a picklable :class:`Calibrator` whose ``transform`` maps scores to probabilities;
* :func:`calibration_check`: the Brier score, the mean predicted against the observed rate and a
  test of calibration (Spiegelhalter's z), before and (when a calibrator is used) after.

The reliability table is ours, not ``sklearn.calibration.calibration_curve``: the curve gives
neither the count nor the score range of a bin, which the report shows, and with a rare positive
class the quantile bins must merge tied edges rather than fail. The figure is drawn by
:mod:`.figures` on a ``Figure`` (``CalibrationDisplay`` draws through pyplot's global state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from include.lifecycle.evaluate_model.arrays import _binary_inputs

CalibrationMethod = Literal["isotonic", "sigmoid"]
CALIBRATION_METHODS: tuple[str, ...] = ("isotonic", "sigmoid")

# Two-sided significance level under which scores are reported as not calibrated.
NOT_CALIBRATED_P = 0.01
_LOGIT_EPS = 1e-6


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


def brier_score(y: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Mean squared difference between probability and outcome; None when a score is outside [0, 1]
    (a margin, not a probability) or there are no rows."""
    yb, p = _binary_inputs(y, probabilities)
    if yb.shape[0] == 0 or p.min() < 0.0 or p.max() > 1.0:
        return None
    return float(np.mean((p - yb) ** 2))


def _logit(scores: np.ndarray) -> np.ndarray:
    """The log-odds of scores in [0, 1] (clipped away from 0 and 1); other scores (margins) as they are."""
    if scores.size and (scores.min() < 0.0 or scores.max() > 1.0):
        return scores
    p = np.clip(scores, _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


@dataclass
class Calibrator:
    """A fitted map from model scores to probabilities (picklable: plain scikit-learn estimators).

    ``method`` is ``"isotonic"`` (a non-decreasing step function, ``IsotonicRegression`` clipped
    to the validation range) or ``"sigmoid"`` (Platt scaling: a logistic regression on the
    score's log-odds). Both are monotone, so the ranking of rows is kept; isotonic ties rows whose
    scores fall on the same step, which can change a metric that cuts the ranking at a fixed
    number of rows.
    """

    method: str
    model: Any

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for ``scores`` (float64, in [0, 1])."""
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if self.method == "isotonic":
            return np.clip(self.model.predict(s), 0.0, 1.0).astype(np.float64)
        return self.model.predict_proba(_logit(s).reshape(-1, 1))[:, 1].astype(np.float64)


def fit_calibrator(y_val: np.ndarray, s_val: np.ndarray, method: str) -> Calibrator:
    """Fit a :class:`Calibrator` on validation labels and scores (never on the test rows).

    ``method``: ``"isotonic"`` (flexible, needs a few hundred positives to be smooth) or
    ``"sigmoid"`` (Platt: two parameters, fine with few positives). Raises ``ValueError`` for
    another method or when the validation rows hold one class only.
    """
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}: use one of {list(CALIBRATION_METHODS)}")
    yb, s = _binary_inputs(y_val, s_val)
    positives = int(yb.sum())
    if positives == 0 or positives == yb.shape[0]:
        raise ValueError(f"calibration needs both classes in the validation rows ({positives} of {yb.shape[0]})")
    if method == "isotonic":
        model: Any = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        model.fit(s, yb.astype(np.float64))
    else:
        model = LogisticRegression(C=1e6, max_iter=1000)  # (almost) unpenalised, as Platt's fit
        model.fit(_logit(s).reshape(-1, 1), yb.astype(int))
    return Calibrator(method=method, model=model)


def _spiegelhalter(yb: np.ndarray, p: np.ndarray) -> tuple[float | None, float | None]:
    """Spiegelhalter's z (1986) that the probabilities ``p`` are calibrated, and its two-sided p-value.

    ``z = sum((y - p)(1 - 2p)) / sqrt(sum((1 - 2p)^2 p (1 - p)))`` is standard normal when every
    row's outcome is Bernoulli(p); None when the variance is 0 (every p is 0, 1/2 or 1)."""
    var = float(np.sum((1.0 - 2.0 * p) ** 2 * p * (1.0 - p)))
    if var <= 0.0:
        return None, None
    z = float(np.sum((yb - p) * (1.0 - 2.0 * p)) / math.sqrt(var))
    return z, float(math.erfc(abs(z) / math.sqrt(2.0)))


def _in_the_large(yb: np.ndarray, p: np.ndarray) -> tuple[float | None, float | None]:
    """z and two-sided p-value that the number of positives matches the sum of the probabilities:
    ``(sum(y) - sum(p)) / sqrt(sum(p (1 - p)))`` (calibration in the large)."""
    var = float(np.sum(p * (1.0 - p)))
    if var <= 0.0:
        return None, None
    z = float((yb.sum() - p.sum()) / math.sqrt(var))
    return z, float(math.erfc(abs(z) / math.sqrt(2.0)))


def _check(yb: np.ndarray, p: np.ndarray, bins: int) -> dict[str, Any]:
    table = calibration_table(yb, p, bins=bins)
    z_large, p_large = _in_the_large(yb, p) if p.min() >= 0.0 and p.max() <= 1.0 else (None, None)
    z, p_value = _spiegelhalter(yb, p) if p.min() >= 0.0 and p.max() <= 1.0 else (None, None)
    tests = [v for v in (p_large, p_value) if v is not None]
    return {
        "brier": brier_score(yb, p),
        "mean_predicted": float(p.mean()),
        "z_in_the_large": z_large,
        "z_spiegelhalter": z,
        "p_value": min(tests) if tests else None,
        "calibrated": (min(tests) >= NOT_CALIBRATED_P) if tests else None,
        "curve": {
            "mean_predicted": [r["mean_predicted"] for r in table],
            "observed_rate": [r["observed_rate"] for r in table],
            "count": [r["count"] for r in table],
        },
    }


def calibration_check(
    y: np.ndarray,
    scores: np.ndarray,
    *,
    calibrated: np.ndarray | None = None,
    method: str | None = None,
    bins: int = 10,
) -> dict[str, Any]:
    """Are the scores on these (test) rows probabilities? Before and, with ``calibrated``, after calibration.

    Returns the ``calibration`` record of ``evaluation.json``::

        {"method": str | None, "brier_before": float | None, "brier_after": float | None,
         "mean_predicted": float, "observed_rate": float, "rows": int,
         "calibrated_before": bool | None, "calibrated_after": bool | None,
         "before": {...}, "after": {...} | None,
         "curve_before": {"mean_predicted": [...], "observed_rate": [...], "count": [...]},
         "curve_after": {...} | None, "note": str}

    ``mean_predicted`` is of the scores the model will be used with (after calibration when
    there is one). Scores are *calibrated* unless calibration in the large (the count of
    positives against the sum of the probabilities) or Spiegelhalter's z rejects at the 1 % level
    (``NOT_CALIBRATED_P``); both are z tests, ``before`` / ``after`` hold their z and the smaller
    p-value. ``calibrated_*`` is None for scores outside [0, 1]. ``note`` says it in words, e.g.
    "scores are not calibrated probabilities: mean predicted 0.37 vs observed rate 0.045 ...".
    """
    yb, s = _binary_inputs(y, scores)
    if yb.shape[0] == 0:
        raise ValueError("calibration_check needs at least one row")
    before = _check(yb, s, bins)
    after = None
    if calibrated is not None:
        _, c = _binary_inputs(yb, calibrated)
        after = _check(yb, c, bins)
    used = after or before
    observed = float(yb.mean())
    note = _calibration_note(before, after, observed, method)
    return {
        "method": method if calibrated is not None else None,
        "brier_before": before["brier"],
        "brier_after": after["brier"] if after else None,
        "mean_predicted": used["mean_predicted"],
        "observed_rate": observed,
        "rows": int(yb.shape[0]),
        "calibrated_before": before["calibrated"],
        "calibrated_after": after["calibrated"] if after else None,
        "before": {k: v for k, v in before.items() if k != "curve"},
        "after": {k: v for k, v in after.items() if k != "curve"} if after else None,
        "curve_before": before["curve"],
        "curve_after": after["curve"] if after else None,
        "note": note,
    }


def _calibration_note(before: dict[str, Any], after: dict[str, Any] | None, observed: float, method: str | None) -> str:
    def says(c: dict[str, Any]) -> str:
        if c["calibrated"] is None:
            return "scores are not probabilities (outside [0, 1])"
        verdict = "consistent with calibrated probabilities" if c["calibrated"] else "not calibrated probabilities"
        return f"scores are {verdict}: mean predicted {c['mean_predicted']:.4g} vs observed rate {observed:.4g}" + (
            " (p < 0.001)" if c["p_value"] < 0.001 else f" (p = {c['p_value']:.2g})"
        )

    if after is None:
        text = says(before)
        if before["calibrated"] is False:
            text += (
                "; read them as a ranking, not as probabilities (class weights or resampling move the"
                " base rate the model learnt); a calibrator fitted on the validation rows would fix that"
            )
        return text
    return f"before: {says(before)}; after {method or 'calibration'}: {says(after)}"
