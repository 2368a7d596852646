"""PNG plots of a model: PR and ROC curves, confusion matrix, value curve, importance,
calibration; predicted vs actual and residuals for regression; the goal metric per round.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter
from sklearn.metrics import roc_auc_score

from include.lifecycle import report
from include.lifecycle.evaluate_model.arrays import _RATE_EPS, _binary_inputs, _descending_cuts, _floats

# Largest number of points drawn in a PR / ROC curve or a scatter plot.
_MAX_PLOT_POINTS = 2000
_MAX_SCATTER_POINTS = 20_000
_DPI = 90


def _message(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _thin(n: int, limit: int = _MAX_PLOT_POINTS) -> np.ndarray:
    """At most ``limit`` indices of a ranked curve to draw: half evenly spaced, half geometric.

    The geometric half keeps the top of the ranking (the low-alert-rate end, where thresholds
    are chosen) detailed even when the curve has a million points. First and last are kept.
    """
    if n <= limit:
        return np.arange(n)
    half = limit // 2
    linear = np.linspace(0, n - 1, half)
    geometric = np.geomspace(1, n, limit - half) - 1
    return np.unique(np.concatenate((linear, geometric)).round().astype(np.int64))


def _rank_curves(yb: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
    """TP/FP counts and thresholds at every distinct-score cut point, from one sort."""
    order, cut, s_sorted = _descending_cuts(s)
    cum_pos = np.concatenate(([0], np.cumsum(yb[order])))
    tp = cum_pos[cut].astype(np.float64)
    fp = cut - tp
    thr = np.where(cut > 0, s_sorted[np.maximum(cut - 1, 0)], np.inf)
    return {"tp": tp, "fp": fp, "cut": cut.astype(np.float64), "threshold": thr}


def importance_plot(importance: list[dict[str, Any]], title: str = "Feature importance", *, top: int = 25) -> bytes:
    """A horizontal bar chart of the ``top`` rows of an importance list, largest at the top.

    Rows of :func:`~include.lifecycle.evaluate_model.permutation_importance` (``mean`` and ``std``)
    are drawn with their spread as error bars, the axis naming the drop of the metric;
    rows of ``{"feature", "importance"}`` as plain bars.
    """
    rows = list(importance)[: max(top, 0)][::-1]  # largest at the top
    fig = Figure(figsize=(7, max(2.5, 0.28 * len(rows) + 1.2)), dpi=_DPI)
    ax = fig.add_subplot()
    if not rows:
        _message(ax, "no feature importance available for this model")
    elif "mean" in rows[0]:
        means = [r["mean"] for r in rows]
        colors = ["tab:blue" if m > 0 else "tab:grey" for m in means]
        ax.barh([r["feature"] for r in rows], means, xerr=[r.get("std", 0.0) for r in rows], color=colors, capsize=2)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("drop of the goal metric when the column is shuffled (mean +- sd over repeats)")
        ax.tick_params(axis="y", labelsize=8)
    else:
        ax.barh([r["feature"] for r in rows], [r["importance"] for r in rows], color="tab:blue")
        ax.set_xlabel("importance")
        ax.tick_params(axis="y", labelsize=8)
    ax.set_title(title)
    return report.fig_to_png(fig, dpi=_DPI)


def calibration_plot(calibration: dict[str, Any] | list[dict[str, Any]]) -> bytes:
    """Reliability diagram: observed positive rate against mean predicted score per quantile bin.

    ``calibration`` is the record of :func:`~include.lifecycle.evaluate_model.calibration_check`
    (the curve before and, when the model is calibrated, after; the Brier scores and mean
    predicted vs observed rate in the legend) or a bare :func:`calibration_table`.
    """
    fig = Figure(figsize=(6, 5), dpi=_DPI)
    ax = fig.add_subplot()
    if isinstance(calibration, list):
        curves = (
            [("model", {k: [r[k] for r in calibration] for k in ("mean_predicted", "observed_rate")})]
            if calibration
            else []
        )
    else:
        before, after = calibration.get("curve_before"), calibration.get("curve_after")
        brier_b, brier_a = calibration.get("brier_before"), calibration.get("brier_after")
        curves = []
        if before and before.get("mean_predicted"):
            label = "before calibration" if after else "model"
            curves.append((label + (f" (Brier {brier_b:.4g})" if brier_b is not None else ""), before))
        if after and after.get("mean_predicted"):
            method = calibration.get("method") or "calibrated"
            curves.append((f"after {method}" + (f" (Brier {brier_a:.4g})" if brier_a is not None else ""), after))
    if not curves:
        _message(ax, "no calibration table")
    else:
        hi = max(max(max(c["mean_predicted"]), max(c["observed_rate"])) for _, c in curves)
        hi = max(hi, 1e-6) * 1.05
        ax.plot([0, hi], [0, hi], color="grey", ls=":", label="perfectly calibrated")
        for (label, c), color in zip(curves, ("tab:blue", "tab:green"), strict=False):
            ax.plot(c["mean_predicted"], c["observed_rate"], "o-", color=color, label=label)
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_xlabel("mean predicted score (quantile bin)")
        ax.set_ylabel("observed positive rate")
        if isinstance(calibration, dict) and calibration.get("observed_rate") is not None:
            ax.text(
                0.98,
                0.02,
                f"mean predicted {calibration['mean_predicted']:.4g}\nobserved rate {calibration['observed_rate']:.4g}",
                ha="right",
                va="bottom",
                transform=ax.transAxes,
                fontsize=8,
            )
        ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Calibration (reliability diagram)")
    return report.fig_to_png(fig, dpi=_DPI)


def rounds_plot(rounds: list[dict[str, Any]], *, metric: str, target: float, higher_is_better: bool = True) -> bytes:
    """The goal metric on the test rows per round, with its interval, the target and the champion.

    Each row of ``rounds``: ``round``, ``value`` (None for a round that did not finish), optional
    ``low`` / ``high`` (the interval), ``validation`` (the validation score) and ``champion`` (the
    champion's score on that round's test rows).
    """
    fig = Figure(figsize=(7, 4), dpi=_DPI)
    ax = fig.add_subplot()
    done = [r for r in rounds if r.get("value") is not None]
    if not done:
        _message(ax, "no round was evaluated")
    else:
        x = np.array([r["round"] for r in done], dtype=np.float64)
        v = np.array([r["value"] for r in done], dtype=np.float64)
        low = np.array([r["low"] if r.get("low") is not None else r["value"] for r in done], dtype=np.float64)
        high = np.array([r["high"] if r.get("high") is not None else r["value"] for r in done], dtype=np.float64)
        has_ci = any(r.get("low") is not None for r in done)
        ax.errorbar(
            x,
            v,
            yerr=np.vstack((np.maximum(v - low, 0), np.maximum(high - v, 0))),
            fmt="o-",
            color="tab:blue",
            capsize=4,
            label="candidate on test rows" + (" (95% interval)" if has_ci else ""),
        )
        val = [(r["round"], r["validation"]) for r in done if r.get("validation") is not None]
        if val:
            ax.plot(*zip(*val, strict=True), "s", color="tab:purple", alpha=0.6, label="validation score")
        champ = [(r["round"], r["champion"]) for r in done if r.get("champion") is not None]
        if champ:
            ax.plot(*zip(*champ, strict=True), "D", color="tab:orange", label="champion on the same rows")
        ax.axhline(target, color="tab:red", ls="--", label=f"target {'>=' if higher_is_better else '<='} {target:g}")
        ax.set_xticks(x, [str(int(r)) for r in x])
        ax.set_xlabel("round")
        ax.set_ylabel(metric)
        ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{metric} per round vs the goal")
    return report.fig_to_png(fig, dpi=_DPI)


def _value_plot(value_curve: dict[str, Any], threshold: float, max_alert_rate: float | None) -> bytes:
    curve = value_curve.get("curve", value_curve)
    thr = np.asarray(curve.get("threshold", []), dtype=np.float64)
    val = np.asarray(curve.get("value", []), dtype=np.float64)
    rate = np.asarray(curve.get("alert_rate", []), dtype=np.float64)
    fig = Figure(figsize=(11, 4), dpi=_DPI)
    ax_rate, ax_thr = fig.subplots(1, 2)
    if val.size == 0:
        _message(ax_rate, "no value curve")
        _message(ax_thr, "no value curve")
        return report.fig_to_png(fig, dpi=_DPI)
    if "value" in value_curve and "alert_rate" in value_curve and "curve" in value_curve:
        chosen_rate, chosen_val = float(value_curve["alert_rate"]), float(value_curve["value"])
    else:
        i = int(np.argmin(np.abs(thr - threshold)))
        chosen_rate, chosen_val = float(rate[i]), float(val[i])
    ax_rate.plot(rate, val, color="tab:blue", lw=1.5)
    ax_rate.plot([chosen_rate], [chosen_val], "o", color="tab:red", label=f"chosen: {chosen_rate:.3%} flagged")
    shown = np.ones(rate.size, dtype=bool)
    if max_alert_rate is not None:
        ax_rate.axvline(max_alert_rate, color="tab:orange", ls="--", label=f"max alert rate {max_alert_rate:.3%}")
        x_max = min(1.0, max(4 * max_alert_rate, 1.5 * chosen_rate, 1e-6))
        ax_rate.set_xlim(0, x_max)
        shown = rate <= x_max
        if shown.any():
            lo, hi = float(val[shown].min()), float(val[shown].max())
            pad = 0.05 * (hi - lo) or 1.0
            ax_rate.set_ylim(lo - pad, hi + pad)
    ax_rate.xaxis.set_major_locator(MaxNLocator(5))
    ax_rate.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax_rate.set_xlabel("alert rate (share of rows flagged)")
    ax_rate.set_ylabel("total value")
    ax_rate.set_title("Value vs alert rate")
    ax_rate.legend(loc="best", fontsize=8)
    on_thr = shown & (rate > 0)  # the "flag nothing" point sits at 1 + max score, off the scale
    ax_thr.plot(thr[on_thr], val[on_thr], color="tab:blue", lw=1.5)
    ax_thr.plot([threshold], [chosen_val], "o", color="tab:red", label=f"chosen threshold {threshold:.4g}")
    if max_alert_rate is not None:
        feasible = on_thr & (rate <= max_alert_rate + _RATE_EPS)
        if feasible.any():
            ax_thr.axvline(float(thr[feasible].min()), color="tab:orange", ls="--", label="capacity limit (approx.)")
    ax_thr.set_xlabel("threshold (flag score >= threshold)")
    ax_thr.set_ylabel("total value")
    ax_thr.set_title("Value vs threshold")
    ax_thr.legend(loc="best", fontsize=8)
    return report.fig_to_png(fig, dpi=_DPI)


def _importance_title(importance: list[dict[str, Any]]) -> str:
    if importance and "mean" in importance[0]:
        return "Permutation importance on the test rows"
    return "Feature importance (the model's own)"


def plots_binary(
    y: np.ndarray,
    scores: np.ndarray,
    *,
    threshold: float,
    value_curve: dict[str, Any],
    importance: list[dict[str, Any]],
    calibration: dict[str, Any] | list[dict[str, Any]],
    max_alert_rate: float | None = None,
) -> dict[str, bytes]:
    """PNG plots of a binary model: name -> bytes.

    Keys: ``pr_curve`` (with the chosen threshold), ``roc_curve``, ``confusion_matrix`` (counts
    at the threshold), ``value_vs_threshold`` (value against alert rate and against threshold,
    chosen point and capacity line), ``feature_importance`` (:func:`importance_plot`: permutation
    importance or the model's own) and ``calibration`` (:func:`calibration_plot`: the record of
    ``calibration_check``, before / after, or a bare ``calibration_table``).

    ``value_curve`` is the whole dict returned by :func:`choose_threshold` (preferred: its
    chosen point and ``max_alert_rate`` are used) or just its ``"curve"``; ``max_alert_rate``
    overrides the one in ``value_curve``. Curves are thinned to a few thousand points, so a
    million rows plot quickly. Single-class data gives a placeholder instead of PR/ROC curves.
    """
    yb, s = _binary_inputs(y, scores)
    if max_alert_rate is None:
        max_alert_rate = value_curve.get("max_alert_rate")
    out: dict[str, bytes] = {}
    positives = int(yb.sum())
    negatives = int(yb.shape[0] - positives)
    curves = _rank_curves(yb, s)
    pred = s >= threshold
    tp_at = int((pred & yb).sum())
    fp_at = int((pred & ~yb).sum())

    # precision-recall
    fig = Figure(figsize=(6, 5), dpi=_DPI)
    ax = fig.add_subplot()
    if positives == 0:
        _message(ax, "no positives: precision-recall curve undefined")
    else:
        tp, fp = curves["tp"][1:], curves["fp"][1:]
        idx = _thin(tp.size)
        ax.plot(tp[idx] / positives, tp[idx] / (tp[idx] + fp[idx]), color="tab:blue", lw=1.5)
        ax.axhline(positives / yb.shape[0], color="grey", ls=":", label=f"base rate {positives / yb.shape[0]:.4f}")
        if tp_at + fp_at:
            ax.plot(
                [tp_at / positives], [tp_at / (tp_at + fp_at)], "o", color="tab:red", label=f"threshold {threshold:.4g}"
            )
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.legend(loc="best", fontsize=8)
    ax.set_title("Precision-recall curve")
    out["pr_curve"] = report.fig_to_png(fig, dpi=_DPI)

    # ROC
    fig = Figure(figsize=(6, 5), dpi=_DPI)
    ax = fig.add_subplot()
    if positives == 0 or negatives == 0:
        _message(ax, "one class only: ROC curve undefined")
    else:
        idx = _thin(curves["tp"].size)
        fpr, tpr = curves["fp"][idx] / negatives, curves["tp"][idx] / positives
        ax.plot(fpr, tpr, color="tab:blue", lw=1.5, label=f"AUC {roc_auc_score(yb, s):.4f}")
        ax.plot([0, 1], [0, 1], color="grey", ls=":")
        ax.plot([fp_at / negatives], [tp_at / positives], "o", color="tab:red", label=f"threshold {threshold:.4g}")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title("ROC curve")
    out["roc_curve"] = report.fig_to_png(fig, dpi=_DPI)

    # confusion matrix
    matrix = np.array([[negatives - fp_at, fp_at], [positives - tp_at, tp_at]])
    fig = Figure(figsize=(5, 4.5), dpi=_DPI)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    high = matrix.max() / 2 if matrix.max() else 1
    for (r, c), count in np.ndenumerate(matrix):
        share = count / max(int(matrix.sum()), 1)
        ax.text(c, r, f"{count:,}\n({share:.2%})", ha="center", va="center", color="white" if count > high else "black")
    ax.set_xticks([0, 1], ["not flagged", "flagged"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    ax.set_xlabel("prediction")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix at threshold {threshold:.4g}")
    out["confusion_matrix"] = report.fig_to_png(fig, dpi=_DPI)

    out["value_vs_threshold"] = _value_plot(value_curve, threshold, max_alert_rate)
    out["feature_importance"] = importance_plot(importance, _importance_title(importance))

    out["calibration"] = calibration_plot(calibration)
    return out


def plots_regression(y: np.ndarray, pred: np.ndarray, *, importance: list[dict[str, Any]]) -> dict[str, bytes]:
    """PNG plots of a regression model: ``predicted_vs_actual``, ``residuals``, ``feature_importance``.

    Scatter plots draw a fixed (seeded) sample of at most 20,000 rows.
    """
    yt = _floats(y, "y")
    p = _floats(pred, "pred", yt.shape[0])
    n = yt.shape[0]
    if n > _MAX_SCATTER_POINTS:
        sample = np.sort(np.random.default_rng(0).choice(n, _MAX_SCATTER_POINTS, replace=False))
        ys, ps = yt[sample], p[sample]
    else:
        ys, ps = yt, p
    out: dict[str, bytes] = {}

    fig = Figure(figsize=(6, 5), dpi=_DPI)
    ax = fig.add_subplot()
    if n == 0:
        _message(ax, "no rows")
    else:
        ax.scatter(ys, ps, s=6, alpha=0.4, color="tab:blue", linewidths=0)
        lo, hi = float(min(ys.min(), ps.min())), float(max(ys.max(), ps.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", ls=":", label="perfect prediction")
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Predicted vs actual")
    out["predicted_vs_actual"] = report.fig_to_png(fig, dpi=_DPI)

    fig = Figure(figsize=(11, 4), dpi=_DPI)
    ax_scatter, ax_hist = fig.subplots(1, 2)
    if n == 0:
        _message(ax_scatter, "no rows")
        _message(ax_hist, "no rows")
    else:
        resid = ps - ys
        ax_scatter.scatter(ps, resid, s=6, alpha=0.4, color="tab:blue", linewidths=0)
        ax_scatter.axhline(0, color="grey", ls=":")
        ax_scatter.set_xlabel("predicted")
        ax_scatter.set_ylabel("residual (predicted - actual)")
        ax_scatter.set_title("Residuals vs predicted")
        ax_hist.hist(p - yt, bins=50, color="tab:blue")
        ax_hist.set_xlabel("residual (predicted - actual)")
        ax_hist.set_ylabel("rows")
        ax_hist.set_title("Residual distribution")
    out["residuals"] = report.fig_to_png(fig, dpi=_DPI)
    out["feature_importance"] = importance_plot(importance, _importance_title(importance))
    return out
