"""Uncertainty of the figures a decision is made on: seeded bootstrap intervals of a metric, and
the paired comparison of two models on the same rows.

The bootstrap resamples the test rows with replacement, stratified by class for a binary target
(every resample keeps the test split's positives and negatives, so a metric stays defined), and
reports the percentile interval. A paired comparison scores both models on the *same* resample
each time, so the interval of their difference is not widened by the rows' own variance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

LEVEL = 0.95
DEFAULT_RESAMPLES = 1000

Metric = Callable[[np.ndarray], float]
"""A metric of a set of row indices (the caller closes over its labels, scores and amounts)."""


@dataclass(frozen=True)
class Resamples:
    """``count`` seeded bootstrap resamples of ``n`` rows, drawn one at a time (never all in
    memory); iterating twice gives the same resamples. With ``stratify`` each resample draws the
    positives and the negatives of ``y`` separately."""

    y: np.ndarray | None
    n: int
    count: int
    seed: int
    stratify: bool

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        classes = (
            [np.flatnonzero(self.y == c) for c in np.unique(self.y)] if self.stratify and self.y is not None else None
        )
        for _ in range(self.count):
            if classes is None:
                yield rng.integers(0, self.n, size=self.n)
            else:
                yield np.concatenate([idx[rng.integers(0, idx.size, size=idx.size)] for idx in classes])

    def head(self, count: int) -> Resamples:
        """The first ``count`` of these resamples."""
        return replace(self, count=min(count, self.count))


def resamples(y: np.ndarray | None, n: int, *, count: int, seed: int, stratify: bool) -> Resamples:
    return Resamples(None if y is None else np.asarray(y), n, count, seed, stratify)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def interval(
    metric: Metric, index_sets: Resamples, *, value: float | None = None, level: float = LEVEL
) -> dict[str, Any]:
    """The percentile interval of ``metric`` over the resamples; ``value`` is the metric on all
    rows (computed when not given). Resamples on which the metric is undefined are counted, not used."""
    point = metric(np.arange(index_sets.n)) if value is None else value
    values, undefined = [], 0
    for rows in index_sets:
        try:
            values.append(metric(rows))
        except ValueError:  # e.g. MetricUndefined: no positive amount in this resample
            undefined += 1
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    low, high = _percentiles(arr, level) if arr.size else (float("nan"), float("nan"))
    out = {
        "value": float(point),
        "low": low,
        "high": high,
        "level": level,
        "method": "bootstrap",
        "resamples": len(index_sets),
    }
    if undefined:
        out["undefined_resamples"] = undefined
    return out


def paired_difference(
    candidate: Metric, champion: Metric, index_sets: Resamples, *, higher_is_better: bool, level: float = LEVEL
) -> dict[str, Any]:
    """How much better the candidate is than the champion on the same rows (positive = better,
    whatever the metric's direction), with the percentile interval over paired resamples."""
    sign = 1.0 if higher_is_better else -1.0
    every = np.arange(index_sets.n)
    point = sign * (candidate(every) - champion(every))
    diffs = []
    for rows in index_sets:
        try:
            diffs.append(sign * (candidate(rows) - champion(rows)))
        except ValueError:
            continue
    arr = np.asarray(diffs, dtype=float)
    arr = arr[np.isfinite(arr)]
    low, high = _percentiles(arr, level) if arr.size else (float("nan"), float("nan"))
    return {
        "value": float(point),
        "low": low,
        "high": high,
        "level": level,
        "method": "paired bootstrap",
        "resamples": len(index_sets),
        "share_candidate_better": float((arr > 0).mean()) if arr.size else None,
    }
