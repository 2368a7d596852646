"""Drift: quantile bins, their shares and the population stability index (PSI) between the
profile of the data compared (the newest days of a run's window) and a reference profile (the
champion's training rows).

PSI is written here (``sum((a - e) * ln(a / e))`` over the reference's buckets): a drift library
would add nothing the gate needs. Of those tried with the pinned stack, nannyml and frouros do
not install (their pins conflict with it) and evidently installs 22 more packages (a web server,
telemetry, plotly, nltk, statsmodels) for the same formula and HTML charts of its own.

Every PSI comes with its sampling noise, by a seeded parametric bootstrap over the buckets'
multinomial counts: a 95 % interval (both samples redrawn from their own shares) and the
no-drift level (the 99th percentile of PSI when both samples are drawn from the reference's
shares at their sizes). A few hundred rows give a PSI of several hundredths by chance alone; a
column is *drifted* only when its PSI is above the limit and above that level.
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


def _num(v: float) -> str:
    return f"{v:.4g}"


def numeric_bucket_labels(edges: Sequence[float]) -> list[str]:
    """Names of the buckets :func:`drift` compares for a numeric column: missing, then the bins."""
    e = [float(x) for x in edges]
    if len(e) < 3:
        return ["missing", "all values"]
    inner = [f"[{_num(a)}, {_num(b)})" for a, b in zip(e[1:-2], e[2:-1], strict=True)]
    return ["missing", f"< {_num(e[1])}", *inner, f">= {_num(e[-2])}"]


NOISE_QUANTILE = 0.99
INTERVAL = 0.95
DRAWS = 400


def _psi_rows(e: np.ndarray, a: np.ndarray, eps: float = PSI_EPS) -> np.ndarray:
    """PSI of each row of two (draws, buckets) share matrices, as :func:`psi` computes one."""
    e = np.clip(e, eps, None)
    a = np.clip(a, eps, None)
    e = e / e.sum(axis=1, keepdims=True)
    a = a / a.sum(axis=1, keepdims=True)
    return np.sum((a - e) * np.log(a / e), axis=1)


def psi_noise(
    expected: Sequence[float],
    actual: Sequence[float],
    n_expected: int,
    n_actual: int,
    rng: np.random.Generator,
    draws: int = DRAWS,
) -> dict[str, float | None]:
    """The sampling noise of a PSI between samples of ``n_expected`` and ``n_actual`` rows.

    ``interval``: the central 95 % of PSI when each sample is redrawn from its own shares
    (multinomial); ``noise``: the 99th percentile of PSI when both are drawn from ``expected``
    (what the PSI of two samples of one population reaches by chance)."""
    e = np.clip(np.asarray(expected, dtype="float64"), 0.0, None)
    a = np.clip(np.asarray(actual, dtype="float64"), 0.0, None)
    if n_expected < 1 or n_actual < 1 or e.size == 0 or e.size != a.size or e.sum() <= 0 or a.sum() <= 0:
        return {"low": None, "high": None, "noise": None}
    e, a = e / e.sum(), a / a.sum()
    re = rng.multinomial(n_expected, e, size=draws) / n_expected
    ra = rng.multinomial(n_actual, a, size=draws) / n_actual
    lo, hi = np.quantile(_psi_rows(re, ra), [(1 - INTERVAL) / 2, (1 + INTERVAL) / 2])
    null = _psi_rows(
        rng.multinomial(n_expected, e, size=draws) / n_expected, rng.multinomial(n_actual, e, size=draws) / n_actual
    )
    return {"low": float(lo), "high": float(hi), "noise": float(np.quantile(null, NOISE_QUANTILE))}


def drift(
    current: Mapping[str, Any],
    reference: Mapping[str, Any] | None,
    *,
    reference_name: str = "reference",
    seed: int = 0,
) -> dict[str, Any]:
    """PSI per column between the profile of the data compared and a reference profile.

    Numeric columns: the reference's ``bin_shares`` in its ``bin_edges`` against the current
    shares in those same edges (exact when the current profile was built with
    ``**reference_bins(reference)``, else approximated), with missing values as one more bucket.
    Categorical columns: the reference's top categories plus an "other" and a missing bucket.
    Columns in only one of the profiles are skipped (the schema check of the gate sees them).

    Returns ``{"columns": {col: psi}, "details": {col: {kind, buckets, reference_shares,
    current_shares, psi, low, high, noise}}, "max_psi", "max_column", "approximate": [cols],
    "reference": reference_name, "reference_rows", "current_rows"}``; ``reference`` is ``None``
    when there is no reference profile. ``low``/``high``/``noise``: see :func:`psi_noise`
    (seeded by ``seed``).
    """
    empty = {"columns": {}, "details": {}, "max_psi": 0.0, "max_column": None, "approximate": []}
    if not reference:
        return {**empty, "reference": None}
    n_ref = int((reference.get("overall") or {}).get("rows") or 0)
    n_cur = int((current.get("overall") or {}).get("rows") or 0)
    sizes = {"reference": reference_name, "reference_rows": n_ref, "current_rows": n_cur}
    if not n_cur:  # an empty window has no distribution to compare
        return {**empty, **sizes}
    rng = np.random.default_rng(seed)
    details: dict[str, dict[str, Any]] = {}
    approx: list[str] = []

    def add(col: str, kind: str, labels: list[str], expected: list[float], actual: list[float]) -> None:
        value = psi(expected, actual)
        details[col] = {
            "kind": kind,
            "buckets": labels,
            "reference_shares": expected,
            "current_shares": actual,
            "psi": value,
            **psi_noise(expected, actual, n_ref, n_cur, rng),
        }

    ref_num = reference.get("numeric") or {}
    for col, cur in (current.get("numeric") or {}).items():
        ref = ref_num.get(col)
        if not ref or not ref.get("bin_edges") or not ref.get("count"):
            continue
        edges, shares = ref["bin_edges"], ref["bin_shares"]
        cur_edges = cur.get("reference_edges")
        if not cur.get("count"):  # every value missing now: all mass in the missing bucket
            actual = [0.0] * len(shares)
        elif cur_edges is not None and [float(e) for e in cur_edges] == [float(e) for e in edges]:
            actual = cur["reference_shares"]
        else:
            actual = _reproject(cur["bin_edges"], cur["bin_shares"], edges)
            approx.append(col)
        add(
            col,
            "numeric",
            numeric_bucket_labels(edges),
            _with_missing(shares, ref.get("missing_share")),
            _with_missing(actual, cur.get("missing_share")),
        )

    ref_cat = reference.get("categorical") or {}
    for col, cur in (current.get("categorical") or {}).items():
        ref = ref_cat.get(col)
        if not ref or not ref.get("count"):
            continue
        ref_shares = {str(k): float(v) for k, v in ref.get("top") or []}
        ref_keys = list(ref_shares)
        if cur.get("reference_categories") == ref_keys and "reference_shares" in cur:
            keys = ref_keys
            cur_shares = {str(k): float(v) for k, v in cur["reference_shares"]}
        else:
            cur_shares = {str(k): float(v) for k, v in cur.get("top") or []}
            keys = [k for k in ref_keys if k in cur_shares]
            approx.append(col)
        add(
            col,
            "categorical",
            ["missing", *keys, "other"],
            _with_missing(_cat_buckets(ref_shares, keys), ref.get("missing_share")),
            _with_missing(_cat_buckets(cur_shares, keys), cur.get("missing_share")),
        )

    cols = {c: d["psi"] for c, d in details.items()}
    max_col = max(cols, key=cols.__getitem__) if cols else None
    return _clean(
        {
            "columns": cols,
            "details": details,
            "max_psi": cols[max_col] if max_col else 0.0,
            "max_column": max_col,
            "approximate": approx,
            **sizes,
        }
    )


def drifted(drift_result: Mapping[str, Any], limit: float) -> dict[str, float]:
    """The drifted columns and their PSI: above ``limit`` and above their no-drift level."""
    details = drift_result.get("details") or {}
    out = {}
    for col, value in (drift_result.get("columns") or {}).items():
        if value is None or value <= limit:
            continue
        noise = (details.get(col) or {}).get("noise")
        if noise is None or value > noise:
            out[col] = float(value)
    return out
