"""The data profile: descriptive statistics of a frame as a JSON-serialisable dict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from include.lifecycle.evaluate_data.columns import (
    TOP_CATEGORIES,
    _as_datetime,
    _as_float,
    _clean,
    _share,
    _target_info,
)
from include.lifecycle.evaluate_data.stability import bin_shares, quantile_edges

_QUANTILES = {"p01": 0.01, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p99": 0.99}


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
