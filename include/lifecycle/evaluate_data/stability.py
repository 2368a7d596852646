"""Drift: quantile bins, their shares and the population stability index (PSI) between this
run's profile and the previous run's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from include.lifecycle.evaluate_data.columns import _clean

PSI_EPS = 1e-4


def quantile_edges(values: np.ndarray, bins: int = 10) -> list[float]:
    """Unique quantile-based bin edges of the finite values (``[c, c]`` for a constant column)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return []
    edges = np.unique(np.quantile(v, np.linspace(0.0, 1.0, max(int(bins), 1) + 1)))
    if edges.size == 1:
        edges = np.array([edges[0], edges[0]])
    return [float(e) for e in edges]


def bin_shares(values: np.ndarray, edges: Sequence[float]) -> list[float]:
    """Shares of the finite values in the bins of ``edges``.

    The bins are ``(-inf, e1), [e1, e2), ..., [e_k-1, +inf)``: the outer edges are open so values
    outside the reference range of an older run still land in the first or last bin.
    """
    v = values[np.isfinite(values)]
    n_bins = max(len(edges) - 1, 1)
    if v.size == 0:
        return [0.0] * n_bins
    inner = np.asarray(edges[1:-1], dtype="float64")
    idx = np.searchsorted(inner, v, side="right")
    counts = np.bincount(idx, minlength=n_bins)[:n_bins]
    return [float(c) / v.size for c in counts]


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = PSI_EPS) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` over matching buckets (shares floored at eps)."""
    e = np.clip(np.asarray(expected, dtype="float64"), eps, None)
    a = np.clip(np.asarray(actual, dtype="float64"), eps, None)
    if e.size == 0 or e.size != a.size:
        return 0.0
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def _with_missing(shares: Sequence[float], missing_share: float | None) -> list[float]:
    m = float(missing_share or 0.0)
    return [m] + [(1.0 - m) * float(s) for s in shares]


def reference_bins(previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments for :func:`profile` that make :func:`drift` against ``previous`` exact.

    ``profile(df, ..., **reference_bins(previous_profile))``; an empty dict when there is no previous profile.
    """
    if not previous:
        return {}
    edges = {c: list(p["bin_edges"]) for c, p in (previous.get("numeric") or {}).items() if p.get("bin_edges")}
    cats = {c: [v for v, _ in p.get("top") or []] for c, p in (previous.get("categorical") or {}).items()}
    return {"reference_edges": edges, "reference_categories": cats}


def _reproject(edges: Sequence[float], shares: Sequence[float], new_edges: Sequence[float]) -> list[float]:
    """Approximate shares in ``new_edges`` from a quantile histogram, assuming a piecewise linear CDF."""
    e = np.asarray(edges, dtype="float64")
    inner = np.asarray(new_edges[1:-1], dtype="float64")
    if e.size < 2 or e[0] == e[-1]:
        cdf = (inner > (e[0] if e.size else 0.0)).astype("float64")
    else:
        cum = np.concatenate([[0.0], np.cumsum(shares)])
        cdf = np.interp(inner, e, cum / cum[-1] if cum[-1] else cum)
    return [float(x) for x in np.diff(np.concatenate([[0.0], cdf, [1.0]]))]


def _cat_buckets(shares: Mapping[str, float], keys: Sequence[str]) -> list[float]:
    vals = [float(shares.get(k, 0.0)) for k in keys]
    return [*vals, max(0.0, 1.0 - sum(vals))]


def drift(current: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """PSI per column between this run's profile and the previous run's profile.

    Numeric columns: the previous run's ``bin_shares`` in its ``bin_edges`` against the current
    shares in those same edges (exact when the current profile was built with
    ``**reference_bins(previous)``, else approximated), with missing values as one more bucket.
    Categorical columns: the previous top categories plus an "other" and a missing bucket.
    Columns in only one of the profiles are skipped (the schema check of the gate sees them).

    Returns ``{"columns": {col: psi}, "max_psi", "max_column", "approximate": [cols], "reference"}``;
    ``reference`` is ``"previous run"`` or ``None`` when there is no previous profile.
    """
    if not previous:
        return {"columns": {}, "max_psi": 0.0, "max_column": None, "approximate": [], "reference": None}
    cols: dict[str, float] = {}
    approx: list[str] = []
    if not (current.get("overall") or {}).get("rows"):  # an empty window has no distribution to compare
        return {"columns": {}, "max_psi": 0.0, "max_column": None, "approximate": [], "reference": "previous run"}
    prev_num = previous.get("numeric") or {}
    for col, cur in (current.get("numeric") or {}).items():
        prev = prev_num.get(col)
        if not prev or not prev.get("bin_edges") or not prev.get("count"):
            continue
        edges, ref = prev["bin_edges"], prev["bin_shares"]
        cur_edges = cur.get("reference_edges")
        if not cur.get("count"):  # every value missing now: all mass in the missing bucket
            actual = [0.0] * len(ref)
        elif cur_edges is not None and [float(e) for e in cur_edges] == [float(e) for e in edges]:
            actual = cur["reference_shares"]
        else:
            actual = _reproject(cur["bin_edges"], cur["bin_shares"], edges)
            approx.append(col)
        cols[col] = psi(_with_missing(ref, prev.get("missing_share")), _with_missing(actual, cur.get("missing_share")))

    prev_cat = previous.get("categorical") or {}
    for col, cur in (current.get("categorical") or {}).items():
        prev = prev_cat.get(col)
        if not prev or not prev.get("count"):
            continue
        prev_shares = {str(k): float(v) for k, v in prev.get("top") or []}
        prev_keys = list(prev_shares)
        if cur.get("reference_categories") == prev_keys and "reference_shares" in cur:
            keys = prev_keys
            cur_shares = {str(k): float(v) for k, v in cur["reference_shares"]}
        else:
            cur_shares = {str(k): float(v) for k, v in cur.get("top") or []}
            keys = [k for k in prev_keys if k in cur_shares]
            approx.append(col)
        cols[col] = psi(
            _with_missing(_cat_buckets(prev_shares, keys), prev.get("missing_share")),
            _with_missing(_cat_buckets(cur_shares, keys), cur.get("missing_share")),
        )

    max_col = max(cols, key=cols.__getitem__) if cols else None
    return _clean(
        {
            "columns": cols,
            "max_psi": cols[max_col] if max_col else 0.0,
            "max_column": max_col,
            "approximate": approx,
            "reference": "previous run",
        }
    )
