"""PNG plots of the data: distributions, correlations, target balance and rates, rows per day."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from include.lifecycle import report
from include.lifecycle.evaluate_data.columns import TOP_CATEGORIES, _as_datetime, _as_float, _target_info

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
