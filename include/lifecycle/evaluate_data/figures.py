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


DRIFT_PLOT_PSI = 0.1
"""Columns whose PSI is above this (a moderate shift) or above the gate's limit get a figure."""
MAX_DRIFT_PLOTS = 12


def _psi_chart(drift_result: Mapping[str, Any], limit: float | None) -> bytes:
    details = drift_result.get("details") or {}
    cols = sorted(details, key=lambda c: details[c]["psi"] or 0.0)[-30:]
    fig = _new_fig(6.4, max(2.4, 0.28 * len(cols) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    values = [details[c]["psi"] or 0.0 for c in cols]
    lows = [details[c].get("low") for c in cols]
    highs = [details[c].get("high") for c in cols]
    colors = ["#e45756" if limit is not None and v > limit else "#4c78a8" for v in values]
    ax.barh(range(len(cols)), values, color=colors)
    for i, (lo, hi) in enumerate(zip(lows, highs, strict=True)):
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [i, i], color="black", linewidth=1)
    noise = [details[c].get("noise") for c in cols]
    ax.scatter([n if n is not None else np.nan for n in noise], range(len(cols)), marker="|", color="grey", s=80)
    if limit is not None:
        ax.axvline(limit, color="#e45756", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(cols)), cols, fontsize=8)
    ax.set_xlabel("PSI (black: 95% interval; grey tick: no-drift level; dashed: limit)")
    ax.set_title("Drift of the newest days against the champion's training rows")
    return report.fig_to_png(fig)


def _shares_chart(col: str, d: Mapping[str, Any]) -> bytes:
    labels = list(d["buckets"])
    n = len(labels)
    fig = _new_fig(6.4, max(2.6, 0.3 * n + 1.3))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(n)
    ax.barh(y - 0.2, d["reference_shares"], height=0.4, color="#4c78a8", label="champion's training rows")
    ax.barh(y + 0.2, d["current_shares"], height=0.4, color="#e45756", label="newest days")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of rows")
    ax.set_title(f"{col}: PSI {d['psi']:.3f}")
    ax.legend(fontsize=8)
    return report.fig_to_png(fig)


def drift_plots(drift_result: Mapping[str, Any] | None, limit: float | None = None) -> dict[str, bytes]:
    """``drift_psi`` (PSI per column with its interval, no-drift level and the limit) and
    ``drift_<col>`` (reference against newest shares per bucket) for each column whose PSI is
    above ``DRIFT_PLOT_PSI`` or the limit, the largest first (at most ``MAX_DRIFT_PLOTS``)."""
    details = (drift_result or {}).get("details") or {}
    if not details:
        return {}
    out = {"drift_psi": _psi_chart(drift_result or {}, limit)}
    floor = min(DRIFT_PLOT_PSI, limit) if limit is not None else DRIFT_PLOT_PSI
    shifted = sorted((c for c, d in details.items() if (d["psi"] or 0.0) > floor), key=lambda c: -details[c]["psi"])
    for col in shifted[:MAX_DRIFT_PLOTS]:
        out[_key("drift", col, out)] = _shares_chart(col, details[col])
    return out


def completeness_plot(cov: Mapping[str, Any]) -> bytes | None:
    """Curated rows per day of the window: missing days marked, low days coloured, the median dashed."""
    rows = cov.get("rows_by_day") or {}
    if not cov.get("applicable") or not rows:
        return None
    days = list(rows)
    counts = np.array([rows[d] for d in days], dtype="float64")
    low = {d["ds"] for d in cov.get("low_days") or []}
    colors = ["#e45756" if rows[d] == 0 else "#f2a93b" if d in low else "#9ecae9" for d in days]
    fig = _new_fig(8.0, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    x = pd.to_datetime(days)
    ax.bar(x, counts, width=0.8, color=colors)
    for d in cov.get("missing_days") or []:
        ax.axvspan(
            pd.Timestamp(d) - pd.Timedelta(hours=12),
            pd.Timestamp(d) + pd.Timedelta(hours=12),
            color="#e45756",
            alpha=0.15,
        )
    if cov.get("median_rows"):
        ax.axhline(cov["median_rows"], color="grey", linestyle="--", linewidth=1)
    ax.set_ylabel("curated rows")
    ax.set_title(
        f"Partitions of the window: {cov['present_days']} of {cov['expected_days']} days hold rows "
        "(red: missing, orange: far below the median)"
    )
    fig.autofmt_xdate()
    return report.fig_to_png(fig)


def label_delay_plot(view: Mapping[str, Any]) -> bytes | None:
    """Histogram of label delays (days) with the maturity line, and per event day the labels seen
    with the estimated share of the day's labels arrived by the interval end."""
    hist = view.get("histogram") or []
    if not hist:
        return None
    fig = _new_fig(10.0, 3.6)
    fig.subplots_adjust(wspace=0.35)
    ax = fig.add_subplot(1, 2, 1)
    ax.bar([h[0] for h in hist], [h[1] for h in hist], width=0.9, color="#4c78a8")
    ax.axvline(view["maturity_days"] - 0.5, color="#e45756", linestyle="--", linewidth=1)
    ax.set_xlabel(f"whole days from event to label\n(left of dashed: within maturity_days = {view['maturity_days']})")
    ax.set_ylabel("labels")
    ax.set_title("Label delay")
    by_day = view.get("by_day") or []
    ax2 = fig.add_subplot(1, 2, 2)
    x = pd.to_datetime([d["day"] for d in by_day])
    ax2.bar(x, [d["labels"] for d in by_day], width=0.8, color="#9ecae9")
    ax2.set_ylabel("labels seen")
    twin = ax2.twinx()
    twin.plot(x, [d["arrived_share"] for d in by_day], color="#e45756", marker="o", markersize=3)
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("est. share of labels arrived", color="#e45756")
    ax2.set_title("Labels per event day")
    for label in ax2.get_xticklabels():
        label.set_rotation(45)
        label.set_ha("right")
    return report.fig_to_png(fig)
