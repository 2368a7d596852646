"""Calibration: the reliability table of a binary model's scores over quantile bins."""

from __future__ import annotations

from typing import Any

import numpy as np

from include.lifecycle.evaluate_model.arrays import _binary_inputs


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
