"""Section 3 of the lifecycle, "evaluate data": profile, drift, quality gate, plots and the data report.

Pure Python (pandas, numpy, matplotlib): nothing here imports airflow, so the same code runs in
a DAG task, a Glue job or a notebook.

The pieces fit together like this::

    prev = <the previous run's profile dict, or None>
    prof = profile(df, target=..., time_column=..., numeric=..., categorical=..., **reference_bins(prev))
    dr = drift(prof, prev)
    verdict = quality_gate(prof, quality=spec.quality, expected_columns=spec.schema_.names,
                           drift_result=dr, quarantine_share=q, max_quarantine_share=spec.schema_.max_quarantine_share)
    pngs = plots(df, target=..., time_column=..., numeric=..., categorical=...)
    html = render_eda_html("Card fraud - data report", prof, pngs, verdict, dr, etl_counts)
    raise_if_unfit(verdict)

Drift needs the previous run's *profile* (a JSON-serialisable dict, store it with every run).
Each numeric column of a profile keeps its own quantile ``bin_edges`` and ``bin_shares``;
passing ``reference_bins(prev)`` to :func:`profile` also records the current data's shares in the
previous run's edges (``reference_edges`` / ``reference_shares``) and the current shares of the
previous run's top categories (``reference_categories``), so :func:`drift` computes an exact PSI.
Without them :func:`drift` still works, approximately (it re-projects the current quantile bins
onto the previous edges and merges categories not in both top lists into "other") and lists
such columns under ``approximate``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from include.lifecycle import report
from include.lifecycle.dataset import positive_mask
from include.lifecycle.spec import QualitySpec

__all__ = [
    "DataQualityError",
    "bin_shares",
    "drift",
    "drift_psi",
    "eda_sections",
    "plots",
    "profile",
    "psi",
    "quality_gate",
    "quantile_edges",
    "raise_if_unfit",
    "reference_bins",
    "render_eda_html",
    "render_eda_section",
]

TOP_CATEGORIES = 15
PSI_EPS = 1e-4
OTHER = "__other__"
MISSING = "__missing__"
_QUANTILES = {"p01": 0.01, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p99": 0.99}


class DataQualityError(Exception):
    """Raised by the gate; message lists every failed check."""


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _clean(obj: Any) -> Any:
    """Make a value JSON-serialisable: numpy scalars to Python, NaN/inf to None, keys to str."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_clean(v) for v in obj]
    if isinstance(obj, pd.Timestamp):
        return None if pd.isna(obj) else obj.isoformat()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)


def _share(part: float, whole: float) -> float | None:
    return float(part) / float(whole) if whole else None


def _as_float(s: pd.Series) -> np.ndarray:
    """A float64 array of a column; anything not a finite number (NaN, NA, inf, text) is NaN."""
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        arr = s.to_numpy(dtype="float64", na_value=np.nan)
    else:
        arr = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    if not np.isfinite(arr).all():
        arr = np.where(np.isfinite(arr), arr, np.nan)
    return arr


def _as_datetime(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        return s
    try:
        return pd.to_datetime(s, errors="coerce", format="ISO8601")
    except (ValueError, TypeError):
        return pd.to_datetime(s, errors="coerce", format="mixed")


def _target_info(
    df: pd.DataFrame, target: str | None, positive_label: Any, target_type: str | None
) -> tuple[str | None, np.ndarray | None]:
    """(type, values): binary -> 1.0/0.0/NaN indicator of the positive label; continuous -> floats."""
    if not target or target not in df.columns:
        return None, None
    s = df[target]
    present = s.notna().to_numpy()
    numeric = pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
    kind = target_type
    if kind is None:
        kind = "continuous" if numeric and not pd.api.types.is_bool_dtype(s) and s.nunique() > 2 else "binary"
    if kind == "continuous":
        return kind, _as_float(s)
    # the one label rule of the project (numbers as numbers, text without case or blanks)
    pos = positive_mask(s, positive_label)
    return "binary", np.where(present, pos.astype("float64"), np.nan)


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


def drift_psi(
    values: pd.Series | np.ndarray,
    edges: Sequence[float],
    ref_shares: Sequence[float],
    *,
    ref_missing_share: float | None = None,
) -> float:
    """PSI of raw values against a reference histogram (``edges`` and ``ref_shares`` from an older profile).

    With ``ref_missing_share`` the missing values form one more bucket, so a jump in missingness
    counts as drift too.
    """
    arr = _as_float(values) if isinstance(values, pd.Series) else np.asarray(values, dtype="float64")
    finite = np.isfinite(arr)
    cur = bin_shares(arr, edges)
    if ref_missing_share is None:
        return psi(ref_shares, cur)
    cur_missing = 1.0 - finite.mean() if arr.size else 0.0
    return psi(_with_missing(ref_shares, ref_missing_share), _with_missing(cur, cur_missing))


def reference_bins(previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments for :func:`profile` that make :func:`drift` against ``previous`` exact.

    ``profile(df, ..., **reference_bins(previous_profile))``; an empty dict when there is no previous profile.
    """
    if not previous:
        return {}
    edges = {c: list(p["bin_edges"]) for c, p in (previous.get("numeric") or {}).items() if p.get("bin_edges")}
    cats = {c: [v for v, _ in p.get("top") or []] for c, p in (previous.get("categorical") or {}).items()}
    return {"reference_edges": edges, "reference_categories": cats}


# --------------------------------------------------------------------------------------------
# profile
# --------------------------------------------------------------------------------------------
def _numeric_profile(values: np.ndarray, n_rows: int, bins: int, ref_edges: Sequence[float] | None) -> dict[str, Any]:
    finite = np.isfinite(values)
    v = values[finite]
    out: dict[str, Any] = {"count": int(v.size), "missing_share": _share(n_rows - v.size, n_rows)}
    if v.size:
        qs = np.quantile(v, list(_QUANTILES.values()))
        out.update(
            mean=float(v.mean()),
            std=float(v.std(ddof=1)) if v.size > 1 else None,
            min=float(v.min()),
            **{k: float(q) for k, q in zip(_QUANTILES, qs, strict=True)},
            max=float(v.max()),
            zeros_share=float((v == 0).mean()),
        )
    else:
        out.update(mean=None, std=None, min=None, **dict.fromkeys(_QUANTILES), max=None, zeros_share=None)
    edges = quantile_edges(v, bins)
    out["bin_edges"] = edges
    out["bin_shares"] = bin_shares(v, edges) if edges else []
    if ref_edges:
        out["reference_edges"] = [float(e) for e in ref_edges]
        out["reference_shares"] = bin_shares(v, ref_edges)
    return out


def _categorical_profile(
    s: pd.Series,
    y: np.ndarray | None,
    y_type: str | None,
    ref_categories: Sequence[str] | None,
) -> dict[str, Any]:
    n_rows = len(s)
    missing = int(s.isna().sum())
    count = n_rows - missing
    vc = s.value_counts(dropna=True, sort=True)
    top = vc.head(TOP_CATEGORIES)
    out: dict[str, Any] = {
        "count": count,
        "missing_share": _share(missing, n_rows),
        "n_unique": int(vc.size),
        "top": [[str(k), float(c) / count] for k, c in top.items()] if count else [],
    }
    if y is not None and count:
        grouped = pd.Series(y, index=s.index).groupby(s, observed=True, dropna=True).mean()
        key = "target_rate" if y_type == "binary" else "target_mean"
        out[key] = [[str(k), _clean(grouped.get(k))] for k in top.index]
    if ref_categories is not None:
        by_str = {str(k): float(c) / count for k, c in vc.items()} if count else {}
        out["reference_categories"] = [str(c) for c in ref_categories]
        out["reference_shares"] = [[str(c), by_str.get(str(c), 0.0)] for c in ref_categories]
    return out


def profile(
    df: pd.DataFrame,
    *,
    target: str | None,
    time_column: str | None,
    numeric: list[str],
    categorical: list[str],
    positive_label: Any = 1,
    bins: int = 10,
    reference_edges: Mapping[str, Sequence[float]] | None = None,
    reference_categories: Mapping[str, Sequence[str]] | None = None,
    target_type: Literal["binary", "continuous"] | None = None,
) -> dict[str, Any]:
    """Descriptive statistics of a frame as a JSON-serialisable dict (NaN -> None).

    Keys: ``overall``, ``dtypes``, ``numeric``, ``categorical``, ``target``, ``correlations``,
    ``missingness`` and ``by_day`` (empty without a time column). Listed columns that are not in
    the frame are skipped (the gate reports them as missing). The target type is inferred (more
    than two distinct numeric values -> continuous) unless ``target_type`` is given.

    ``reference_edges`` / ``reference_categories`` (usually ``**reference_bins(previous_profile)``)
    add, per column, the current data's shares in the previous run's bins, used by :func:`drift`.
    """
    n_rows, n_cols = int(len(df)), int(df.shape[1])
    numeric = [c for c in numeric if c in df.columns and c != target]
    categorical = [c for c in categorical if c in df.columns and c != target]
    y_type, y = _target_info(df, target, positive_label, target_type)

    # overall ------------------------------------------------------------------------------
    missing_per_col = df.isna().sum() if n_cols else pd.Series(dtype="int64")
    try:
        dup = int(df.duplicated().sum()) if n_rows and n_cols else 0
    except TypeError:  # unhashable cells (lists, dicts)
        dup = None
    overall: dict[str, Any] = {
        "rows": n_rows,
        "columns": n_cols,
        "memory_mb": float(df.memory_usage(deep=True, index=True).sum()) / 2**20,
        "duplicate_rows_share": _share(dup, n_rows) if dup is not None else None,
        "missing_cells_share": _share(int(missing_per_col.sum()), n_rows * n_cols),
    }
    t_days: pd.Series | None = None
    if time_column and time_column in df.columns:
        ts = _as_datetime(df[time_column])
        overall["time_column"] = time_column
        overall["time_min"] = _clean(ts.min()) if n_rows else None
        overall["time_max"] = _clean(ts.max()) if n_rows else None
        overall["time_missing_share"] = _share(int(ts.isna().sum()), n_rows)
        t_days = ts.dt.floor("D")
        overall["days"] = int(t_days.nunique())

    # per attribute ------------------------------------------------------------------------
    ref_edges = reference_edges or {}
    num_prof = {c: _numeric_profile(_as_float(df[c]), n_rows, bins, ref_edges.get(c)) for c in numeric}
    ref_cats = reference_categories or {}
    cat_prof = {c: _categorical_profile(df[c], y, y_type, ref_cats.get(c)) for c in categorical}

    # target -------------------------------------------------------------------------------
    tgt: dict[str, Any] = {"column": target, "present": y is not None, "type": y_type}
    if y is not None:
        labelled = np.isfinite(y)
        n_lab = int(labelled.sum())
        tgt.update(count=n_lab, missing_share=_share(n_rows - n_lab, n_rows))
        if y_type == "binary":
            pos = int(np.nansum(y))
            tgt.update(positive_label=_clean(positive_label), positives=pos, negatives=n_lab - pos)
            tgt["base_rate"] = _share(pos, n_lab)
        else:
            yv = y[labelled]
            tgt.update(
                mean=float(yv.mean()) if yv.size else None,
                std=float(yv.std(ddof=1)) if yv.size > 1 else None,
                min=float(yv.min()) if yv.size else None,
                max=float(yv.max()) if yv.size else None,
            )

    # correlations (pearson, numeric columns + target) -------------------------------------
    corr: dict[str, Any] = {}
    corr_cols = {c: _as_float(df[c]) for c in numeric}
    if y is not None and target not in corr_cols:
        corr_cols[target] = y  # type: ignore[index]
    if corr_cols and n_rows:
        cm = pd.DataFrame(corr_cols).corr(method="pearson", min_periods=2)
        corr = {str(a): {str(b): cm.at[a, b] for b in cm.columns} for a in cm.index}

    # by day -------------------------------------------------------------------------------
    by_day: list[dict[str, Any]] = []
    if t_days is not None and n_rows:
        yser = pd.Series(y if y is not None else np.full(n_rows, np.nan), index=t_days.index)
        g = yser.groupby(t_days, dropna=True)
        agg = pd.DataFrame({"rows": g.size(), "labelled": g.count(), "ysum": g.sum(min_count=1)}).sort_index()
        for day, r in agg.iterrows():
            item: dict[str, Any] = {"day": pd.Timestamp(day).strftime("%Y-%m-%d"), "rows": int(r["rows"])}
            if y_type == "binary":
                pos = int(r["ysum"]) if pd.notna(r["ysum"]) else 0
                item.update(positives=pos, rate=_share(pos, r["labelled"]))
            elif y_type == "continuous":
                item.update(positives=None, rate=None, mean=_share(r["ysum"], r["labelled"]))
            else:
                item.update(positives=None, rate=None)
            by_day.append(item)

    return _clean(
        {
            "overall": overall,
            "dtypes": {str(c): str(t) for c, t in df.dtypes.items()},
            "numeric": num_prof,
            "categorical": cat_prof,
            "target": tgt,
            "correlations": corr,
            "missingness": {str(c): _share(int(m), n_rows) if n_rows else 0.0 for c, m in missing_per_col.items()},
            "by_day": by_day,
        }
    )


# --------------------------------------------------------------------------------------------
# drift
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# quality gate
# --------------------------------------------------------------------------------------------
def _check(name: str, passed: bool, detail: str, value: Any = None, limit: Any = None) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "detail": detail, "value": _clean(value), "limit": _clean(limit)}


def quality_gate(
    prof: Mapping[str, Any],
    *,
    quality: QualitySpec,
    expected_columns: list[str],
    drift_result: Mapping[str, Any] | None,
    quarantine_share: float,
    max_quarantine_share: float,
    ignore_columns: Iterable[str] = (),
) -> dict[str, Any]:
    """Decide whether the data is fit for training; every check is evaluated (no short-circuit).

    Checks (by name): ``min_rows``, ``target_present``, ``min_positives`` (binary targets only),
    ``max_missing_share``, ``schema_columns`` (expected columns missing, or columns that are not
    expected; the target column and ``ignore_columns`` are never "unexpected"),
    ``quarantine_share`` and ``drift``. Returns ``{"passed", "verdict": "fit"|"unfit", "checks",
    "failed": [names]}``.
    """
    overall = prof.get("overall") or {}
    tgt = prof.get("target") or {}
    rows = int(overall.get("rows") or 0)
    checks: list[dict[str, Any]] = []

    checks.append(
        _check(
            "min_rows",
            rows >= quality.min_rows,
            f"{rows:,} rows (minimum {quality.min_rows:,})",
            rows,
            quality.min_rows,
        )
    )

    t_name = tgt.get("column")
    if not t_name:
        checks.append(_check("target_present", False, "no target column configured"))
    elif not tgt.get("present"):
        checks.append(_check("target_present", False, f"target column {t_name!r} is not in the data"))
    else:
        labelled = int(tgt.get("count") or 0)
        ok = labelled > 0 or rows == 0
        share = tgt.get("missing_share")
        detail = f"target {t_name!r}: {labelled:,} labelled rows" + (
            f", {share:.1%} missing" if share is not None else ""
        )
        checks.append(_check("target_present", ok, detail if ok else f"target {t_name!r} is missing in every row"))

    if tgt.get("type") == "binary":
        pos = int(tgt.get("positives") or 0)
        rate = tgt.get("base_rate")
        rate_txt = f", base rate {rate:.4%}" if rate is not None else ""
        checks.append(
            _check(
                "min_positives",
                pos >= quality.min_positives,
                f"{pos:,} positives (minimum {quality.min_positives:,}){rate_txt}",
                pos,
                quality.min_positives,
            )
        )

    missing = prof.get("missingness") or {}
    too_missing = {c: s for c, s in missing.items() if s is not None and s > quality.max_missing_share}
    if too_missing:
        worst = ", ".join(f"{c} {s:.1%}" for c, s in sorted(too_missing.items(), key=lambda kv: -kv[1]))
        detail = f"columns above {quality.max_missing_share:.1%} missing: {worst}"
    else:
        top = max((s for s in missing.values() if s is not None), default=0.0)
        detail = f"highest missing share {top:.1%} (maximum {quality.max_missing_share:.1%})"
    top_share = max((s for s in missing.values() if s is not None), default=0.0)
    checks.append(_check("max_missing_share", not too_missing, detail, top_share, quality.max_missing_share))

    actual = list((prof.get("dtypes") or {}).keys())
    allowed_extra = set(ignore_columns) | ({t_name} if t_name else set())
    absent = [c for c in expected_columns if c not in actual]
    unexpected = [c for c in actual if c not in expected_columns and c not in allowed_extra]
    parts = []
    if absent:
        parts.append(f"missing columns: {', '.join(absent)}")
    if unexpected:
        parts.append(f"unexpected columns: {', '.join(unexpected)}")
    checks.append(
        _check(
            "schema_columns",
            not parts,
            "; ".join(parts) if parts else f"all {len(expected_columns)} expected columns present",
        )
    )

    q = float(quarantine_share or 0.0)
    checks.append(
        _check(
            "quarantine_share",
            q <= max_quarantine_share,
            f"{q:.2%} of rows quarantined (maximum {max_quarantine_share:.2%})",
            q,
            max_quarantine_share,
        )
    )

    if not drift_result or not drift_result.get("reference"):
        checks.append(_check("drift", True, "no previous run to compare with", None, quality.max_drift_psi))
    else:
        mp = float(drift_result.get("max_psi") or 0.0)
        over = {
            c: v for c, v in (drift_result.get("columns") or {}).items() if v is not None and v > quality.max_drift_psi
        }
        detail = f"max PSI {mp:.3f} (maximum {quality.max_drift_psi:g})"
        if over:
            detail += "; drifted: " + ", ".join(f"{c} {v:.3f}" for c, v in sorted(over.items(), key=lambda kv: -kv[1]))
        elif drift_result.get("max_column"):
            detail += f" on {drift_result['max_column']}"
        checks.append(_check("drift", mp <= quality.max_drift_psi, detail, mp, quality.max_drift_psi))

    failed = [c["name"] for c in checks if not c["passed"]]
    return {"passed": not failed, "verdict": "unfit" if failed else "fit", "checks": checks, "failed": failed}


def raise_if_unfit(verdict: Mapping[str, Any]) -> None:
    """Raise :class:`DataQualityError` naming each failed check and its numbers; no-op when fit."""
    failed = [c for c in verdict.get("checks") or [] if not c.get("passed")]
    if verdict.get("passed") and not failed:
        return
    total = len(verdict.get("checks") or [])
    lines = [f"data is unfit for training: {len(failed)} of {total} quality checks failed"]
    lines += [f"  - {c['name']}: {c['detail']}" for c in failed]
    raise DataQualityError("\n".join(lines))


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
_KEY_UNSAFE = re.compile(r"[^0-9A-Za-z_]+")


def _key(prefix: str, col: str, taken: Mapping[str, Any]) -> str:
    base = f"{prefix}_{_KEY_UNSAFE.sub('_', str(col)).strip('_') or 'col'}"
    key, i = base, 2
    while key in taken:
        key, i = f"{base}_{i}", i + 1
    return key


def _new_fig(w: float = 6.4, h: float = 3.8) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def _empty(ax: Any, title: str, text: str = "no values") -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _is_skewed(v: np.ndarray) -> bool:
    if v.size < 3:
        return False
    sd = v.std()
    if sd == 0:
        return False
    skew = float(np.mean(((v - v.mean()) / sd) ** 3))
    p50, p99 = np.quantile(v, [0.5, 0.99])
    return skew > 2 or (p50 > 0 and p99 / p50 > 20)


def _dist_plot(col: str, v: np.ndarray, y: np.ndarray | None, y_type: str | None) -> bytes:
    fig = _new_fig()
    ax = fig.add_subplot(1, 1, 1)
    finite = np.isfinite(v)
    vals = v[finite]
    if vals.size == 0:
        _empty(ax, f"{col}")
        return report.fig_to_png(fig)
    log = bool(vals.min() >= 0 and (vals > 0).any() and _is_skewed(vals))
    note = ""
    if log:
        pos = vals[vals > 0]
        lo, hi = float(pos.min()), float(pos.max())
        edges = np.geomspace(lo, hi if hi > lo else lo * 10, 50)
        n_zero = int((vals == 0).sum())
        note = f" ({n_zero:,} zeros not shown)" if n_zero else ""
    else:
        lo, hi = np.quantile(vals, [0.001, 0.999])
        if hi <= lo:
            lo, hi = float(vals.min()) - 0.5, float(vals.max()) + 0.5
        edges = np.linspace(lo, hi, 50)
    groups: list[tuple[str, np.ndarray]]
    if y is not None and y_type == "binary":
        yy = y[finite]
        groups = [
            (f"negative (n={int((yy == 0).sum()):,})", vals[yy == 0]),
            (f"positive (n={int((yy == 1).sum()):,})", vals[yy == 1]),
        ]
        groups = [(lbl, g) for lbl, g in groups if g.size]
    else:
        groups = [(f"all (n={vals.size:,})", vals)]
    for (label, g), color in zip(groups, ["#4c78a8", "#e45756"], strict=False):
        gv = np.clip(g, edges[0], edges[-1])
        if log:
            gv = gv[g > 0]
        ax.hist(gv, bins=edges, weights=np.full(gv.size, 1.0 / max(g.size, 1)), alpha=0.55, label=label, color=color)
    if log:
        ax.set_xscale("log")
    ax.set_ylabel("share of rows" + (" per class" if len(groups) > 1 else ""))
    ax.set_xlabel(col + (" (log scale)" if log else ""))
    ax.set_title(f"Distribution of {col}{note}")
    ax.legend(fontsize=8)
    return report.fig_to_png(fig)


def _heatmap(corr: pd.DataFrame) -> bytes:
    n = len(corr.columns)
    size = min(3.0 + 0.5 * n, 14.0)
    fig = _new_fig(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(corr.to_numpy(dtype="float64"), cmap="coolwarm", vmin=-1, vmax=1)
    labels = [str(c) for c in corr.columns]
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                val = corr.iat[i, j]
                if pd.notna(val):
                    ax.text(j, i, f"{val:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8, label="Pearson r")
    ax.set_title("Correlations")
    return report.fig_to_png(fig)


def _rate_by_category(col: str, s: pd.Series, y: np.ndarray, y_type: str) -> bytes:
    g = pd.Series(y, index=s.index).groupby(s, dropna=True, observed=True)
    agg = pd.DataFrame({"n": g.size(), "rate": g.mean()}).sort_values("n", ascending=False).head(TOP_CATEGORIES)
    agg = agg.iloc[::-1]
    fig = _new_fig(6.4, max(2.5, 0.32 * len(agg) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    what = "positive rate" if y_type == "binary" else "mean target"
    if agg.empty:
        _empty(ax, f"{what} by {col}")
        return report.fig_to_png(fig)
    labels = [f"{k} (n={n:,})" for k, n in zip(agg.index, agg["n"], strict=True)]
    ax.barh(range(len(agg)), agg["rate"].to_numpy(dtype="float64", na_value=np.nan), color="#4c78a8")
    ax.set_yticks(range(len(agg)), labels, fontsize=8)
    overall = float(np.nanmean(y)) if np.isfinite(y).any() else None
    if overall is not None:
        ax.axvline(overall, color="#e45756", linestyle="--", linewidth=1)
        ax.set_xlabel(f"{what} (dashed line: overall {overall:.4g})")
    else:
        ax.set_xlabel(what)
    ax.set_title(f"{what.capitalize()} by {col} (top {len(agg)} by rows)")
    return report.fig_to_png(fig)


def _time_trend(days: pd.Series, y: np.ndarray | None, y_type: str | None) -> bytes:
    g = pd.Series(y if y is not None else np.full(len(days), np.nan), index=days.index).groupby(days, dropna=True)
    agg = pd.DataFrame({"rows": g.size(), "rate": g.mean()}).sort_index()
    fig = _new_fig(8.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    if agg.empty:
        _empty(ax, "Rows per day")
        return report.fig_to_png(fig)
    x = pd.to_datetime(agg.index).tz_localize(None) if getattr(agg.index, "tz", None) else agg.index
    ax.bar(x, agg["rows"].to_numpy(), width=0.8, color="#9ecae9", label="rows")
    ax.set_ylabel("rows per day")
    if y is not None and y_type:
        ax2 = ax.twinx()
        ax2.plot(x, agg["rate"].to_numpy(dtype="float64"), color="#e45756", marker="o", markersize=3)
        ax2.set_ylabel("positive rate" if y_type == "binary" else "mean target", color="#e45756")
        if y_type == "binary":
            ax2.set_ylim(bottom=0)
        what = "positive rate" if y_type == "binary" else "mean target"
        ax.set_title(f"Rows and {what} per day")
    else:
        ax.set_title("Rows per day")
    fig.autofmt_xdate()
    return report.fig_to_png(fig)


def _target_plot(y: np.ndarray, y_type: str) -> bytes:
    fig = _new_fig(5.0, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    v = y[np.isfinite(y)]
    if v.size == 0:
        _empty(ax, "Target")
    elif y_type == "binary":
        counts = [int((v == 0).sum()), int((v == 1).sum())]
        bars = ax.bar(["negative", "positive"], counts, color=["#4c78a8", "#e45756"])
        for b, c in zip(bars, counts, strict=True):
            ax.annotate(
                f"{c:,} ({c / v.size:.2%})", (b.get_x() + b.get_width() / 2, c), ha="center", va="bottom", fontsize=8
            )
        ax.set_ylabel("rows")
        ax.set_title("Class balance")
    else:
        ax.hist(v, bins=50, color="#4c78a8")
        ax.set_xlabel("target")
        ax.set_ylabel("rows")
        ax.set_title("Target distribution")
    return report.fig_to_png(fig)


def plots(
    df: pd.DataFrame,
    *,
    target: str | None,
    time_column: str | None,
    numeric: list[str],
    categorical: list[str],
    positive_label: Any = 1,
    max_rows: int = 200_000,
    seed: int = 0,
    target_type: Literal["binary", "continuous"] | None = None,
) -> dict[str, bytes]:
    """PNG plots of the data, by name.

    ``dist_<col>`` (histogram per numeric column, log scale when skewed, one per class for a
    binary target), ``correlation_heatmap`` (two or more numeric columns incl. the target),
    ``target_distribution`` (class balance or target histogram), ``target_rate_by_<col>``
    (positive rate or mean target of the top categories) and ``time_trend`` (rows and positive
    rate per day). Histograms and correlations use a random sample of at most ``max_rows`` rows;
    per-category and per-day aggregates use the whole frame (one vectorised group-by each).
    Column names are reduced to ``[0-9A-Za-z_]`` in the keys.
    """
    numeric = [c for c in numeric if c in df.columns and c != target]
    categorical = [c for c in categorical if c in df.columns and c != target]
    y_type, y = _target_info(df, target, positive_label, target_type)
    sample_idx = None
    if len(df) > max_rows:
        sample_idx = np.sort(np.random.default_rng(seed).choice(len(df), size=max_rows, replace=False))
    ys = None if y is None else (y if sample_idx is None else y[sample_idx])

    out: dict[str, bytes] = {}
    cols_s: dict[str, np.ndarray] = {}
    for c in numeric:
        v = _as_float(df[c])
        cols_s[c] = v if sample_idx is None else v[sample_idx]
        out[_key("dist", c, out)] = _dist_plot(c, cols_s[c], ys, y_type)
    if y is not None and y_type:
        out["target_distribution"] = _target_plot(y, y_type)
    heat = dict(cols_s)
    if ys is not None and target not in heat:
        heat[str(target)] = ys
    if len(heat) >= 2 and len(df) >= 2:
        out["correlation_heatmap"] = _heatmap(pd.DataFrame(heat).corr(method="pearson", min_periods=2))
    if y is not None and y_type:
        for c in categorical:
            out[_key("target_rate_by", c, out)] = _rate_by_category(c, df[c], y, y_type)
    if time_column and time_column in df.columns:
        out["time_trend"] = _time_trend(_as_datetime(df[time_column]).dt.floor("D"), y, y_type)
    return out


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------
_NUM_STATS = ["count", "missing_share", "mean", "std", "min", "p01", "p25", "p50", "p75", "p99", "max", "zeros_share"]


def _pct(v: Any, digits: int = 2) -> str | None:
    return None if v is None else f"{float(v):.{digits}%}"


def _figures(pngs: Mapping[str, bytes], names: Iterable[str], used: set[str]) -> str:
    parts = []
    for n in names:
        if n in pngs and n not in used:
            used.add(n)
            parts.append(f"<figure>{report.png_to_img(pngs[n], n)}<figcaption>{report.escape(n)}</figcaption></figure>")
    return "".join(parts)


def _corr_cell(v: Any) -> report.Markup:
    if v is None:
        return report.raw("")
    a = min(abs(float(v)), 1.0) * 0.6
    rgb = "214,39,40" if v > 0 else "31,119,180"
    return report.raw(f'<span style="background:rgba({rgb},{a:.2f});padding:0 4px">{float(v):.2f}</span>')


def _psi_status(v: float | None, limit: float | None) -> report.Markup:
    if v is None:
        return report.badge(None)
    if limit is not None and v > limit:
        return report.badge(False, "drifted")
    if v > 0.1:
        return report.badge(None, "moderate")
    return report.badge(True, "stable")


def eda_sections(
    prof: Mapping[str, Any],
    pngs: Mapping[str, bytes],
    verdict: Mapping[str, Any],
    drift_result: Mapping[str, Any] | None,
    etl_counts: Mapping[str, Any] | None,
    *,
    max_drift_psi: float | None = None,
) -> list[tuple[str, str]]:
    """The data report as ``(heading, html)`` sections (shared by the fragment and the page)."""
    used: set[str] = set()
    secs: list[tuple[str, str]] = []
    overall = prof.get("overall") or {}
    tgt = prof.get("target") or {}

    # verdict
    ok = bool(verdict.get("passed"))
    head = f'<p><span class="verdict {"ok" if ok else "bad"}">Data is {report.escape(verdict.get("verdict", "?"))}</span></p>'
    rows = [
        {"check": c["name"], "result": report.badge(c["passed"]), "detail": c["detail"]}
        for c in verdict.get("checks") or []
    ]
    secs.append(("Data quality verdict", head + report.table(rows, ["check", "result", "detail"])))

    if etl_counts:
        secs.append(("ETL counts", report.kv_table(etl_counts)))

    ov = dict(overall)
    for k in ("duplicate_rows_share", "missing_cells_share", "time_missing_share"):
        if k in ov:
            ov[k] = _pct(ov[k])
    if ov.get("memory_mb") is not None:
        ov["memory_mb"] = round(float(ov["memory_mb"]), 2)
    secs.append(("Overview", report.kv_table(ov)))

    # target
    if tgt.get("column"):
        t = dict(tgt)
        for k in ("base_rate", "missing_share"):
            if t.get(k) is not None:
                t[k] = _pct(t[k], 4 if k == "base_rate" else 2)
        title = "Class balance" if tgt.get("type") == "binary" else "Target"
        secs.append((title, report.kv_table(t) + _figures(pngs, ["target_distribution"], used)))

    # dtypes
    miss = prof.get("missingness") or {}
    role = {c: "numeric" for c in prof.get("numeric") or {}} | {c: "categorical" for c in prof.get("categorical") or {}}
    if tgt.get("column"):
        role[tgt["column"]] = "target"
    if overall.get("time_column"):
        role[overall["time_column"]] = "time"
    dt_rows = [
        {"column": c, "dtype": t, "role": role.get(c, ""), "missing": _pct(miss.get(c))}
        for c, t in (prof.get("dtypes") or {}).items()
    ]
    secs.append(("Columns and types", report.table(dt_rows, ["column", "dtype", "role", "missing"])))

    # numeric
    num = prof.get("numeric") or {}
    if num:
        n_rows = [{"column": c, **{k: p.get(k) for k in _NUM_STATS}} for c, p in num.items()]
        for r in n_rows:
            r["missing_share"], r["zeros_share"] = _pct(r["missing_share"]), _pct(r["zeros_share"])
        dist = [k for k in pngs if k.startswith("dist_")]
        html = f'<div class="scroll">{report.table(n_rows, ["column", *_NUM_STATS])}</div>' + _figures(pngs, dist, used)
        secs.append(("Numeric attributes", html))

    # categorical
    cat = prof.get("categorical") or {}
    if cat:
        c_rows = [
            {
                "column": c,
                "count": p.get("count"),
                "missing_share": _pct(p.get("missing_share")),
                "n_unique": p.get("n_unique"),
                "top values": ", ".join(f"{v} ({s:.2%})" for v, s in (p.get("top") or [])[:5]),
            }
            for c, p in cat.items()
        ]
        parts = [report.table(c_rows, ["column", "count", "missing_share", "n_unique", "top values"])]
        for c, p in cat.items():
            rate_key = "target_rate" if "target_rate" in p else ("target_mean" if "target_mean" in p else None)
            rates = dict(map(tuple, p.get(rate_key) or [])) if rate_key else {}
            top_rows = []
            for v, s in p.get("top") or []:
                row: dict[str, Any] = {"value": v, "share": _pct(s)}
                if rate_key:
                    r = rates.get(v)
                    row[rate_key.replace("_", " ")] = _pct(r, 3) if rate_key == "target_rate" else r
                top_rows.append(row)
            parts.append(f"<h3>{report.escape(c)}</h3>" + report.table(top_rows))
            parts.append(_figures(pngs, [k for k in pngs if k == _key("target_rate_by", c, {})], used))
        parts.append(_figures(pngs, [k for k in pngs if k.startswith("target_rate_by_")], used))
        secs.append(("Categorical attributes", "".join(parts)))

    # missingness
    m_rows = [{"column": c, "missing share": _pct(s)} for c, s in sorted(miss.items(), key=lambda kv: -(kv[1] or 0))]
    secs.append(("Missing values", report.table(m_rows, ["column", "missing share"])))

    # correlations
    corr = prof.get("correlations") or {}
    if corr:
        cols = list(corr)
        c_rows = [{"": a, **{b: _corr_cell(corr[a].get(b)) for b in cols}} for a in cols]
        html = f'<div class="scroll">{report.table(c_rows, ["", *cols])}</div>'
        secs.append(("Correlations", html + _figures(pngs, ["correlation_heatmap"], used)))

    # drift
    if drift_result is not None:
        if not drift_result.get("reference"):
            html = '<p class="note">No previous run to compare with: drift is not measured on the first run.</p>'
        else:
            approx = set(drift_result.get("approximate") or [])
            d_rows = [
                {"column": c, "PSI": v, "status": _psi_status(v, max_drift_psi), "exact": c not in approx}
                for c, v in sorted((drift_result.get("columns") or {}).items(), key=lambda kv: -(kv[1] or 0))
            ]
            html = (
                f"<p>Reference: {report.escape(drift_result['reference'])}; max PSI "
                f"{report.fmt(drift_result.get('max_psi'))}. PSI &lt; 0.1 stable, 0.1-0.25 moderate, "
                "&gt; 0.25 major shift.</p>" + report.table(d_rows, ["column", "PSI", "status", "exact"])
            )
        secs.append(("Drift against the previous run", html))

    # time
    by_day = prof.get("by_day") or []
    if by_day or "time_trend" in pngs:
        cols = ["day", "rows", "positives", "rate"] if tgt.get("type") == "binary" else ["day", "rows", "mean"]
        if not tgt.get("type"):
            cols = ["day", "rows"]
        html = _figures(pngs, ["time_trend"], used) + f'<div class="scroll">{report.table(list(by_day), cols)}</div>'
        secs.append(("Over time", html))

    rest = [k for k in pngs if k not in used]
    if rest:
        secs.append(("Other plots", _figures(pngs, rest, used)))
    return secs


def render_eda_section(
    prof: Mapping[str, Any],
    pngs: Mapping[str, bytes],
    verdict: Mapping[str, Any],
    drift_result: Mapping[str, Any] | None,
    etl_counts: Mapping[str, Any] | None,
) -> str:
    """The data report as one HTML fragment (``<div class="eda">``) to embed in a bigger report."""
    parts = []
    for heading, body in eda_sections(prof, pngs, verdict, drift_result, etl_counts, max_drift_psi=_limit(verdict)):
        anchor = "eda-" + report.slug(heading)
        parts.append(f'<h3 id="{anchor}">{report.escape(heading)}<a class="anchor" href="#{anchor}">#</a></h3>\n{body}')
    return '<div class="eda">\n' + "\n".join(parts) + "\n</div>"


def _limit(verdict: Mapping[str, Any]) -> float | None:
    """The drift limit the gate used (to colour the drift table), if the verdict has a drift check."""
    for c in verdict.get("checks") or []:
        if c.get("name") == "drift" and c.get("limit") is not None:
            return float(c["limit"])
    return None


def render_eda_html(
    title: str,
    prof: Mapping[str, Any],
    pngs: Mapping[str, bytes],
    verdict: Mapping[str, Any],
    drift_result: Mapping[str, Any] | None,
    etl_counts: Mapping[str, Any] | None,
) -> str:
    """A standalone HTML page of the data report (:func:`report.page` around the same sections)."""
    overall = prof.get("overall") or {}
    sub = (
        f"{overall.get('rows', 0):,} rows x {overall.get('columns', 0)} columns - data is {verdict.get('verdict', '?')}"
    )
    if overall.get("time_min") and overall.get("time_max"):
        sub += f" - {str(overall['time_min'])[:10]} to {str(overall['time_max'])[:10]}"
    return report.page(
        title, eda_sections(prof, pngs, verdict, drift_result, etl_counts, max_drift_psi=_limit(verdict)), subtitle=sub
    )
