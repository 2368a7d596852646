"""Metrics: the goal metric named in the spec, recall at an alert rate, and the descriptive
binary and regression tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np
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

from include.lifecycle.evaluate_model.arrays import _binary_inputs, _floats, _k_for_rate, _safe_div
from include.lifecycle.spec import BINARY_METRICS

_LOG_LOSS_EPS = 1e-15


class MetricUndefined(ValueError):
    """A metric has no value on these rows (e.g. recall without positives): it is not a score of 0.0."""

    def __init__(self, metric: str, rows: int, positives: int | None, why: str) -> None:
        self.metric, self.rows, self.positives = metric, rows, positives
        counts = f"{rows} rows" + ("" if positives is None else f" with {positives} positives")
        super().__init__(f"metric {metric} is undefined on {counts}: {why}")


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
    positives = tp + fn
    one_class = positives == 0 or positives == n
    out = _binary_table(
        n=int(n),
        tp=tp,
        fp=fp,
        positives=positives,
        threshold=threshold,
        roc_auc=None if one_class else float(roc_auc_score(yb, s)),
        auprc=None if one_class else float(average_precision_score(yb, s)),
    )
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


def _binary_table(
    *, n: int, tp: int, fp: int, positives: int, threshold: float, roc_auc: float | None, auprc: float | None
) -> dict[str, Any]:
    """The keys :func:`binary_metrics` and :class:`ResampledBinaryMetrics` share, from the counts at
    the threshold (brier and log loss None until the caller sets them)."""
    fn = positives - tp
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, positives)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {
        "roc_auc": roc_auc,
        "auprc": auprc,
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
        "tn": n - tp - fp - fn,
        "positives": positives,
        "n": n,
    }


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


class ResampledBinaryMetrics:
    """:func:`binary_metrics` of bootstrap resamples of one ``(y, scores)``, without a sort per
    resample: ``self(rows)`` equals ``binary_metrics(y[rows], scores[rows], ...)`` (to rounding).

    The scores are grouped once by distinct value (descending). A resample is a count per row
    (``np.bincount(rows)``: a row drawn twice weighs 2, exactly as when it is repeated), and ROC
    AUC and average precision come from the counts of positives and negatives per score group in
    O(n): AUC = sum over groups of negatives x (positives in higher groups + half the tied ones) /
    (P x N), AP = sum over groups of (positives / P) x precision at that group's threshold (what
    scikit-learn computes from its curves, ties included). The rest are weighted sums. On 130k test
    rows one resample takes about 12 ms instead of 66 ms.
    """

    def __init__(
        self, y: np.ndarray, scores: np.ndarray, *, threshold: float, amount: np.ndarray | None = None
    ) -> None:
        yb, s = _binary_inputs(y, scores)
        self.n = int(yb.shape[0])
        self.threshold = float(threshold)
        _, self._group = np.unique(-s, return_inverse=True)  # 0 = the highest score
        self._groups = int(self._group.max()) + 1 if self.n else 0
        self._pos = yb.astype(np.float64)
        self._pred = s >= threshold
        self._prob = bool(self.n and s.min() >= 0.0 and s.max() <= 1.0)
        if self._prob:
            p = np.clip(s, _LOG_LOSS_EPS, 1.0 - _LOG_LOSS_EPS)
            self._sq = (s - self._pos) ** 2
            self._ll = -(self._pos * np.log(p) + (1.0 - self._pos) * np.log1p(-p))
        self._amount = None if amount is None else _floats(amount, "amount", self.n) * self._pos

    def __call__(self, rows: np.ndarray) -> dict[str, Any]:
        w = np.bincount(rows, minlength=self.n).astype(np.float64)
        n = int(rows.shape[0])
        wp = w * self._pos
        pos_g = np.bincount(self._group, weights=wp, minlength=self._groups)
        all_g = np.bincount(self._group, weights=w, minlength=self._groups)
        neg_g = all_g - pos_g
        positives = int(round(pos_g.sum()))
        tp = int(round(wp[self._pred].sum()))
        flagged = int(round(w[self._pred].sum()))
        one_class = positives == 0 or positives == n
        auc = ap = None
        if not one_class:
            cum_pos = np.cumsum(pos_g)
            above = cum_pos - pos_g  # positives with a higher score than the group
            auc = float(np.sum(neg_g * (above + 0.5 * pos_g)) / (positives * (n - positives)))
            seen = np.cumsum(all_g)
            has = pos_g > 0
            ap = float(np.sum(pos_g[has] / positives * (cum_pos[has] / seen[has])))
        out = _binary_table(
            n=n, tp=tp, fp=flagged - tp, positives=positives, threshold=self.threshold, roc_auc=auc, auprc=ap
        )
        if self._prob and n:
            out["brier"], out["log_loss"] = float(w @ self._sq / n), float(w @ self._ll / n)
        if self._amount is not None:
            caught = w * self._amount
            total = float(caught.sum())
            out["amount_caught_share"] = _safe_div(float(caught[self._pred].sum()), total) if total > 0 else None
        return out
