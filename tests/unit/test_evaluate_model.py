"""Unit tests for section 7, "Evaluate model" (include/lifecycle/evaluate_model/)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

from include.lifecycle.evaluate_model import (
    Calibrator,
    MetricUndefined,
    ResampledBinaryMetrics,
    binary_metrics,
    brier_score,
    calibration_check,
    calibration_plot,
    calibration_table,
    choose_threshold,
    fit_calibrator,
    goal_metric,
    importance_plot,
    metric_at_alert_rate,
    outcome_values,
    permutation_importance,
    plots_binary,
    plots_regression,
    raw_column_groups,
    regression_metrics,
    rounds_plot,
)
from include.lifecycle.spec import FeatureGroupSpec, ValueSpec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _reference_at_rate(y, scores, rate, weights=None):
    """Stable descending sort, flag the first floor(rate * n) rows."""
    y = np.asarray(y).astype(bool)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    k = int(np.floor(rate * len(y) + 1e-9))
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    flagged = np.zeros(len(y), dtype=bool)
    flagged[order[:k]] = True
    total = w[y].sum()
    return 0.0 if total <= 0 else w[flagged & y].sum() / total


def _brute_force_best(y, scores, tp, fp, fn, max_alert_rate):
    """Best total value over every distinct threshold (and 'flag nothing'), by a plain loop."""
    y = np.asarray(y).astype(bool)
    best = None
    for t in [np.inf, *np.unique(scores)]:
        flagged = scores >= t
        if max_alert_rate is not None and flagged.sum() > np.floor(max_alert_rate * len(y) + 1e-9):
            continue
        value = tp[flagged & y].sum() + fp[flagged & ~y].sum() + fn[~flagged & y].sum()
        best = value if best is None else max(best, value)
    return best


# --------------------------------------------------------------------------------------
# outcome_values
# --------------------------------------------------------------------------------------
def test_outcome_values_broadcasts_numbers_and_reads_columns():
    amount = np.array([10.0, 20.0, 30.0])
    tp, fp, fn = outcome_values(
        ValueSpec(true_positive="amount", false_positive=-4.0, false_negative=0.0), 3, {"amount": amount}
    )
    np.testing.assert_array_equal(tp, amount)
    np.testing.assert_array_equal(fp, [-4.0, -4.0, -4.0])
    np.testing.assert_array_equal(fn, [0.0, 0.0, 0.0])
    assert tp.dtype == np.float64


def test_outcome_values_rejects_missing_or_wrong_length_column():
    with pytest.raises(ValueError, match="amount"):
        outcome_values(ValueSpec(true_positive="amount"), 3, {})
    with pytest.raises(ValueError, match="rows"):
        outcome_values(ValueSpec(false_negative="amount"), 3, {"amount": np.ones(2)})


# --------------------------------------------------------------------------------------
# metric_at_alert_rate
# --------------------------------------------------------------------------------------
Y10 = np.array([1, 0, 1, 0, 0, 1, 0, 0, 0, 0])
S10 = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
W10 = np.array([100.0, 5, 50, 5, 5, 250, 5, 5, 5, 5])


def test_metric_at_alert_rate_hand_example():
    # k = floor(0.2 * 10) = 2 -> rows 0 and 1 are flagged; only row 0 is positive (amount 100 of 400)
    assert metric_at_alert_rate(Y10, S10, max_alert_rate=0.2, weights=W10) == pytest.approx(100 / 400)
    assert metric_at_alert_rate(Y10, S10, max_alert_rate=0.2) == pytest.approx(1 / 3)
    # k = 3 catches rows 0 and 2: 150 of 400
    assert metric_at_alert_rate(Y10, S10, max_alert_rate=0.3, weights=W10) == pytest.approx(150 / 400)
    # the same rows in another order give the same answer
    perm = np.random.default_rng(1).permutation(10)
    assert metric_at_alert_rate(Y10[perm], S10[perm], max_alert_rate=0.2, weights=W10[perm]) == pytest.approx(0.25)


def test_metric_at_alert_rate_ties_are_broken_by_row_order():
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    y = np.array([0, 0, 1, 1, 0])
    # k = 2: row 0, then the first of the tied rows (row 1, a negative)
    assert metric_at_alert_rate(y, scores, max_alert_rate=0.4) == 0.0
    # k = 3: rows 0, 1, 2 -> one of the two positives
    assert metric_at_alert_rate(y, scores, max_alert_rate=0.6) == pytest.approx(0.5)
    # deterministic and equal to a stable sort, on random data with many ties
    rng = np.random.default_rng(7)
    s = rng.integers(0, 5, 500) / 4
    yy = rng.random(500) < 0.2
    w = rng.uniform(1, 100, 500)
    for rate in (0.01, 0.05, 0.13, 0.5, 1.0):
        got = metric_at_alert_rate(yy, s, max_alert_rate=rate, weights=w)
        assert got == pytest.approx(_reference_at_rate(yy, s, rate, w))
        assert got == metric_at_alert_rate(yy, s, max_alert_rate=rate, weights=w)


def test_metric_at_alert_rate_perfect_ranking_and_edge_cases():
    y = np.array([0, 1, 0, 1, 0, 0, 0, 0, 0, 0])
    perfect = y + np.linspace(0, 0.5, 10)  # positives score above every negative
    assert metric_at_alert_rate(y, perfect, max_alert_rate=0.2) == 1.0
    assert metric_at_alert_rate(y, perfect, max_alert_rate=0.5, weights=np.arange(1.0, 11)) == 1.0
    assert metric_at_alert_rate(y, perfect, max_alert_rate=0.1) == 0.5
    with pytest.raises(MetricUndefined, match="recall_at_alert_rate is undefined on 10 rows with 0 positives"):
        metric_at_alert_rate(np.zeros(10), perfect, max_alert_rate=0.5)  # no positives: not a score of 0.0
    assert metric_at_alert_rate(y, perfect, max_alert_rate=0.05) == 0.0  # k = 0
    # 0.29 * 100 = 28.999999999999996 must still allow 29 rows
    yy = np.zeros(100)
    yy[:29] = 1
    assert metric_at_alert_rate(yy, -np.arange(100.0), max_alert_rate=0.29) == 1.0


def test_metric_at_alert_rate_rejects_bad_input():
    with pytest.raises(ValueError):
        metric_at_alert_rate([0, 2, 1], [0.1, 0.2, 0.3], max_alert_rate=0.5)
    with pytest.raises(ValueError):
        metric_at_alert_rate([0, 1, 1], [0.1, np.nan, 0.3], max_alert_rate=0.5)


# --------------------------------------------------------------------------------------
# choose_threshold
# --------------------------------------------------------------------------------------
def test_choose_threshold_hand_example():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    y = np.array([1, 0, 1, 0, 0])
    amount = np.array([100.0, 1, 30, 1, 1])
    # values of flagging the top 0..5 rows: 0, 100, 90, 120, 110, 100
    res = choose_threshold(y, scores, tp_value=amount, fp_value=-10.0, fn_value=0.0, max_alert_rate=None)
    assert res["threshold"] == 0.7
    assert res["value"] == pytest.approx(120.0)
    assert res["alert_rate"] == pytest.approx(0.6)
    assert res["flagged"] == 3
    assert res["caught"] == 2
    assert res["value_none"] == 0.0
    assert res["curve"]["value"] == pytest.approx([0, 100, 90, 120, 110, 100])
    assert res["curve"]["alert_rate"] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    json.dumps(res)  # JSON-safe

    # capacity of 40% (2 rows) changes the choice to the top row only
    capped = choose_threshold(y, scores, tp_value=amount, fp_value=-10.0, fn_value=0.0, max_alert_rate=0.4)
    assert capped["threshold"] == 0.9
    assert capped["value"] == pytest.approx(100.0)
    assert capped["flagged"] == 1
    assert capped["max_alert_rate"] == 0.4

    # a missed fraud costing its amount shifts every value by -130 but not the choice
    lost = choose_threshold(y, scores, tp_value=amount, fp_value=-10.0, fn_value=-amount, max_alert_rate=None)
    assert lost["threshold"] == 0.7
    assert lost["value"] == pytest.approx(120.0)
    assert lost["value_none"] == pytest.approx(-130.0)


def test_choose_threshold_flags_nothing_when_nothing_is_worth_it():
    res = choose_threshold([0, 1, 0], [0.9, 0.8, 0.1], tp_value=1.0, fp_value=-10.0, fn_value=0.0, max_alert_rate=None)
    assert res["flagged"] == 0
    assert res["value"] == 0.0
    assert res["alert_rate"] == 0.0
    assert res["threshold"] == pytest.approx(1.9)
    assert not (np.array([0.9, 0.8, 0.1]) >= res["threshold"]).any()


def test_choose_threshold_only_cuts_between_distinct_scores():
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    y = np.array([1, 1, 0, 0])
    # flagging both 0.5 rows is worth 10 + 10 - 1 = 19
    res = choose_threshold(y, scores, tp_value=10.0, fp_value=-1.0, fn_value=0.0, max_alert_rate=None)
    assert (res["threshold"], res["flagged"], res["value"]) == (0.5, 3, 19.0)
    # 50% capacity allows 2 rows, but the tie cannot be split: only the top row is flagged
    res = choose_threshold(y, scores, tp_value=10.0, fp_value=-1.0, fn_value=0.0, max_alert_rate=0.5)
    assert (res["threshold"], res["flagged"], res["value"]) == (0.9, 1, 10.0)


@pytest.mark.parametrize("max_alert_rate", [None, 0.01, 0.05, 0.3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_choose_threshold_matches_brute_force(seed, max_alert_rate):
    rng = np.random.default_rng(seed)
    n = 400
    y = rng.random(n) < 0.1
    scores = np.round(np.clip(0.4 * y + rng.normal(0.3, 0.2, n), 0, 1), 2)  # rounding makes ties
    amount = rng.lognormal(3, 1, n)
    fp = np.full(n, -4.0)
    fn = -0.1 * amount
    res = choose_threshold(y, scores, tp_value=amount, fp_value=fp, fn_value=fn, max_alert_rate=max_alert_rate)
    expected = _brute_force_best(y, scores, amount, fp, fn, max_alert_rate)
    assert res["value"] == pytest.approx(expected)
    # the reported value is the value at the reported threshold
    flagged = scores >= res["threshold"]
    direct = amount[flagged & y].sum() + fp[flagged & ~y].sum() + fn[~flagged & y].sum()
    assert res["value"] == pytest.approx(direct)
    assert res["flagged"] == flagged.sum()
    if max_alert_rate is not None:
        assert res["alert_rate"] <= max_alert_rate


def test_choose_threshold_curve_is_downsampled_and_keeps_the_choice():
    rng = np.random.default_rng(3)
    n = 20_000
    y = rng.random(n) < 0.02
    scores = rng.random(n) + 0.5 * y
    res = choose_threshold(y, scores, tp_value=50.0, fp_value=-1.0, fn_value=0.0, max_alert_rate=0.005)
    curve = res["curve"]
    assert len(curve["threshold"]) <= 200
    assert len(curve["threshold"]) == len(curve["value"]) == len(curve["alert_rate"])
    assert res["threshold"] in curve["threshold"]
    assert sum(r <= 0.01 for r in curve["alert_rate"]) >= 50  # the feasible region is well covered
    assert res["flagged"] <= 100


@pytest.fixture
def binary_data():
    rng = np.random.default_rng(11)
    n = 1000
    y = (rng.random(n) < 0.15).astype(int)
    scores = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)
    amount = rng.lognormal(3, 1, n)
    return y, scores, amount


def test_goal_metric_dispatches_every_binary_metric(binary_data):
    y, scores, amount = binary_data
    thr = 0.5
    pred = scores >= thr
    assert goal_metric("auprc", y, scores) == pytest.approx(average_precision_score(y, scores))
    assert goal_metric("roc_auc", y, scores) == pytest.approx(roc_auc_score(y, scores))
    assert goal_metric("f1", y, scores, threshold=thr) == pytest.approx(f1_score(y, pred))
    assert goal_metric("precision", y, scores, threshold=thr) == pytest.approx(precision_score(y, pred))
    assert goal_metric("recall", y, scores, threshold=thr) == pytest.approx(recall_score(y, pred))
    assert goal_metric("recall_at_alert_rate", y, scores, max_alert_rate=0.05) == pytest.approx(
        _reference_at_rate(y, scores, 0.05)
    )
    assert goal_metric("amount_recall_at_alert_rate", y, scores, amount=amount, max_alert_rate=0.05) == pytest.approx(
        _reference_at_rate(y, scores, 0.05, amount)
    )


def test_goal_metric_dispatches_every_regression_metric():
    rng = np.random.default_rng(5)
    y = rng.normal(10, 3, 200)
    pred = y + rng.normal(0, 1, 200)
    assert goal_metric("rmse", y, pred) == pytest.approx(np.sqrt(mean_squared_error(y, pred)))
    assert goal_metric("mae", y, pred) == pytest.approx(mean_absolute_error(y, pred))
    assert goal_metric("r2", y, pred) == pytest.approx(r2_score(y, pred))
    assert regression_metrics(y, pred) == {
        "rmse": pytest.approx(np.sqrt(mean_squared_error(y, pred))),
        "mae": pytest.approx(mean_absolute_error(y, pred)),
        "r2": pytest.approx(r2_score(y, pred)),
        "bias": pytest.approx(np.mean(pred - y)),
        "n": 200,
    }


def test_goal_metric_errors_and_degenerate_cases(binary_data):
    y, scores, _ = binary_data
    with pytest.raises(ValueError, match="unknown metric"):
        goal_metric("accuracy", y, scores)
    with pytest.raises(ValueError, match="max_alert_rate"):
        goal_metric("recall_at_alert_rate", y, scores)
    with pytest.raises(ValueError, match="amount"):
        goal_metric("amount_recall_at_alert_rate", y, scores, max_alert_rate=0.1)
    with pytest.raises(ValueError, match="threshold"):
        goal_metric("f1", y, scores)


@pytest.mark.parametrize(
    "metric", ["auprc", "roc_auc", "recall_at_alert_rate", "amount_recall_at_alert_rate", "f1", "precision", "recall"]
)
def test_a_binary_goal_metric_without_positives_is_undefined_not_zero(metric):
    y, scores = np.array([0, 0, 0]), np.array([0.2, 0.9, 0.5])
    with pytest.raises(MetricUndefined, match=f"metric {metric} is undefined on 3 rows with 0 positives") as err:
        goal_metric(metric, y, scores, amount=np.ones(3), max_alert_rate=0.5, threshold=0.5)
    assert isinstance(err.value, ValueError)
    assert (err.value.metric, err.value.rows, err.value.positives) == (metric, 3, 0)


@pytest.mark.parametrize("metric", ["auprc", "roc_auc"])
def test_a_ranking_metric_without_negatives_is_undefined(metric):
    with pytest.raises(MetricUndefined, match=f"metric {metric} is undefined on 3 rows with 3 positives"):
        goal_metric(metric, np.ones(3), np.array([0.2, 0.9, 0.5]))


def test_metrics_defined_on_one_class_keep_their_value():
    y, scores = np.ones(4), np.array([0.1, 0.4, 0.8, 0.0])
    assert goal_metric("recall", y, scores, threshold=0.5) == 0.25
    assert goal_metric("precision", y, scores, threshold=0.5) == 1.0
    assert goal_metric("recall_at_alert_rate", y, scores, max_alert_rate=0.5) == 0.5
    # "flag nothing" on a split with positives: recall 0, precision 0 (nothing flagged), a real score
    y = np.array([0, 1, 0])
    assert goal_metric("recall", y, np.zeros(3), threshold=0.5) == 0.0
    assert goal_metric("precision", y, np.zeros(3), threshold=0.5) == 0.0


def test_amount_recall_without_positive_amount_is_undefined():
    with pytest.raises(MetricUndefined, match="total weight is 0, not positive"):
        goal_metric("amount_recall_at_alert_rate", [0, 1], [0.1, 0.9], amount=np.array([5.0, 0.0]), max_alert_rate=0.5)


def test_regression_metrics_on_too_few_rows_are_undefined():
    with pytest.raises(MetricUndefined, match="metric r2 is undefined on 1 rows: r2 needs at least 2 rows"):
        goal_metric("r2", [1.0], [2.0])
    with pytest.raises(MetricUndefined, match="zero rows"):
        goal_metric("rmse", [], [])
    assert goal_metric("rmse", [1.0], [3.0]) == 2.0


def test_binary_metrics_match_sklearn(binary_data):
    y, scores, amount = binary_data
    thr = 0.6
    pred = scores >= thr
    m = binary_metrics(y, scores, threshold=thr, amount=amount)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, scores))
    assert m["auprc"] == pytest.approx(average_precision_score(y, scores))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["alert_rate"] == pytest.approx(pred.mean())
    assert m["brier"] == pytest.approx(brier_score_loss(y, scores))
    assert m["log_loss"] == pytest.approx(log_loss(y, np.clip(scores, 1e-15, 1 - 1e-15)))
    assert m["positives"] == y.sum()
    assert m["n"] == len(y)
    assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == len(y)
    assert m["amount_caught_share"] == pytest.approx(amount[pred & (y == 1)].sum() / amount[y == 1].sum())
    json.dumps(m)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rounded", [False, True])  # True: many tied scores
def test_resampled_binary_metrics_equal_binary_metrics_on_the_resampled_rows(seed, rounded):
    rng = np.random.default_rng(seed)
    n = 400
    y = (rng.random(n) < 0.1).astype(int)
    scores = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1)
    if rounded:
        scores = np.round(scores, 1)
    amount = rng.gamma(2.0, 50.0, n)
    fast = ResampledBinaryMetrics(y, scores, threshold=0.5, amount=amount)
    sets = [rng.integers(0, n, n) for _ in range(20)]
    sets += [np.flatnonzero(y == 0)[:50], np.flatnonzero(y == 1)[:5], np.r_[np.flatnonzero(y == 1)[:1], 0, 0]]
    for rows in sets:
        want = binary_metrics(y[rows], scores[rows], threshold=0.5, amount=amount[rows])
        got = fast(rows)
        assert set(got) == set(want)
        for key, value in want.items():
            assert got[key] == (None if value is None else pytest.approx(value, rel=1e-12, abs=1e-12)), key
    # not probabilities: no brier or log loss, as binary_metrics
    assert ResampledBinaryMetrics([0, 1], [-2.0, 3.0], threshold=0.0)(np.array([0, 1, 1]))["brier"] is None


def test_binary_metrics_single_class_does_not_raise():
    scores = np.array([0.1, 0.4, 0.8, 0.0])
    m = binary_metrics(np.zeros(4), scores, threshold=0.5, amount=np.ones(4))
    assert m["roc_auc"] is None and m["auprc"] is None
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, None, None)  # recall and f1 undefined, not 0.0
    assert m["alert_rate"] == 0.25
    assert m["positives"] == 0
    assert m["amount_caught_share"] is None
    assert m["log_loss"] > 0 and np.isfinite(m["log_loss"])  # a score of 0.0 is clipped
    m = binary_metrics(np.ones(4), scores, threshold=0.5)
    assert m["roc_auc"] is None and m["auprc"] is None
    assert m["recall"] == 0.25
    # scores outside [0, 1] are not probabilities
    assert binary_metrics([0, 1], [-2.0, 3.0], threshold=0.0)["brier"] is None


def test_calibration_table_quantile_bins():
    scores = np.arange(100) / 100
    y = (np.arange(100) % 2 == 0).astype(int)
    table = calibration_table(y, scores, bins=10)
    assert len(table) == 10
    assert [r["count"] for r in table] == [10] * 10
    assert table[0]["mean_predicted"] == pytest.approx(np.mean(scores[:10]))
    assert all(r["observed_rate"] == pytest.approx(0.5) for r in table)
    # heavily tied scores merge bins instead of producing empty ones
    tied = np.r_[np.zeros(90), np.linspace(0.5, 1, 10)]
    table = calibration_table(np.r_[np.zeros(90), np.ones(10)], tied, bins=10)
    assert sum(r["count"] for r in table) == 100
    assert table[0]["observed_rate"] == 0.0 and table[0]["count"] == 90
    assert table[-1]["observed_rate"] == 1.0


# --------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------
def test_plots_binary_return_png_bytes(binary_data):
    y, scores, amount = binary_data
    choice = choose_threshold(y, scores, tp_value=amount, fp_value=-4.0, fn_value=0.0, max_alert_rate=0.05)
    importance = [{"feature": "amount", "importance": 0.7}, {"feature": "hour", "importance": 0.3}]
    plots = plots_binary(
        y,
        scores,
        threshold=choice["threshold"],
        value_curve=choice,
        importance=importance,
        calibration=calibration_table(y, scores),
    )
    assert set(plots) == {
        "pr_curve",
        "roc_curve",
        "confusion_matrix",
        "value_vs_threshold",
        "feature_importance",
        "calibration",
    }
    assert all(isinstance(b, bytes) and b.startswith(PNG_MAGIC) for b in plots.values())
    # the bare curve is accepted too, and degenerate inputs draw placeholders instead of raising
    single = plots_binary(
        np.zeros(len(y)),
        scores,
        threshold=0.5,
        value_curve=choice["curve"],
        importance=[],
        calibration=[],
        max_alert_rate=0.05,
    )
    assert all(b.startswith(PNG_MAGIC) for b in single.values())


def test_plots_regression_return_png_bytes():
    rng = np.random.default_rng(2)
    y = rng.normal(size=300)
    plots = plots_regression(y, y + rng.normal(0, 0.2, 300), importance=[{"feature": "x", "importance": 1.0}])
    assert set(plots) == {"predicted_vs_actual", "residuals", "feature_importance"}
    assert all(b.startswith(PNG_MAGIC) for b in plots.values())


def test_plots_binary_draws_permutation_importance_and_a_calibration_record(binary_data):
    y, scores, amount = binary_data
    choice = choose_threshold(y, scores, tp_value=amount, fp_value=-4.0, fn_value=0.0, max_alert_rate=0.05)
    importance = [
        {"feature": "amount", "mean": 0.3, "std": 0.02, "columns": 4},
        {"feature": "channel", "mean": -0.01, "std": 0.01, "columns": 4},
    ]
    calibration = calibration_check(y, np.clip(scores, 0, 1))
    plots = plots_binary(
        y, scores, threshold=choice["threshold"], value_curve=choice, importance=importance, calibration=calibration
    )
    assert plots["feature_importance"].startswith(PNG_MAGIC) and plots["calibration"].startswith(PNG_MAGIC)
    assert (
        plots["feature_importance"]
        != plots_binary(
            y, scores, threshold=choice["threshold"], value_curve=choice, importance=[], calibration=calibration
        )["feature_importance"]
    )


# --------------------------------------------------------------------------------------
# permutation importance
# --------------------------------------------------------------------------------------
def _auc(y, s):
    return goal_metric("roc_auc", y, s)


def test_permutation_importance_ranks_the_column_that_carries_the_signal_first():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    y = (X[:, 1] + 0.1 * rng.normal(size=500) > 0).astype(int)
    result = permutation_importance(
        lambda M: M[:, 1], X, y, groups={"a": [0], "signal": [1], "c": [2]}, metric=_auc, n_repeats=4, seed=3
    )
    assert [r["feature"] for r in result] == ["signal", "a", "c"]  # ties (0.0) by name
    top = result[0]
    assert 0.4 < top["mean"] < 0.55  # AUC about 0.98 -> about 0.5 once the column is noise
    assert top["std"] > 0 and top["columns"] == 1
    # columns the model does not read lose nothing, exactly
    assert [(r["mean"], r["std"]) for r in result[1:]] == [(0.0, 0.0), (0.0, 0.0)]
    assert set(result[0]) == {"feature", "mean", "std", "columns"}
    again = permutation_importance(
        lambda M: M[:, 1], X, y, groups={"a": [0], "signal": [1], "c": [2]}, metric=_auc, n_repeats=4, seed=3
    )
    assert again == result  # seeded


def test_permutation_importance_shuffles_a_group_jointly():
    rng = np.random.default_rng(1)
    z = rng.normal(size=400)
    X = np.column_stack([z, z, z])  # columns 1 and 2 are one-hot-like siblings: always equal
    y = (z > 0).astype(int)

    def score(M):  # a model that only works when the siblings agree
        return np.where(M[:, 1] == M[:, 2], M[:, 0], 0.0)

    joint = permutation_importance(score, X, y, groups={"pair": [1, 2]}, metric=_auc, n_repeats=3, seed=0)
    assert joint[0]["mean"] == 0.0 and joint[0]["columns"] == 2  # rows moved together: nothing broken
    apart = permutation_importance(score, X, y, groups={"one": [1]}, metric=_auc, n_repeats=3, seed=0)
    assert apart[0]["mean"] > 0.4  # shuffled apart from its sibling, the model breaks


def test_permutation_importance_known_answer_and_direction_of_lower_is_better_metrics():
    X = np.arange(8, dtype=float).reshape(-1, 1)
    y = X[:, 0].copy()
    rmse = lambda t, p: goal_metric("rmse", t, p)  # noqa: E731
    result = permutation_importance(lambda M: M[:, 0], X, y, groups={"x": [0]}, metric=rmse, higher_is_better=False)
    rng = np.random.default_rng(0)  # the permutations of seed 0, the same for every group
    perms = [rng.permutation(8) for _ in range(5)]
    drops = [float(np.sqrt(np.mean((X[p, 0] - y) ** 2))) for p in perms]  # baseline rmse is 0
    assert result[0]["mean"] == pytest.approx(np.mean(drops))
    assert result[0]["std"] == pytest.approx(np.std(drops))
    assert result[0]["mean"] > 0  # a larger error is a positive drop


def test_permutation_importance_with_a_fitted_model_sample_of_rows_and_bad_input():
    rng = np.random.default_rng(4)
    n = 2000
    X = np.column_stack([rng.normal(size=n), rng.normal(size=n), rng.integers(0, 2, n), 1 - rng.integers(0, 2, n)])
    y = (1.5 * X[:, 0] + rng.normal(0, 0.5, n) > 1.0).astype(int)
    model = LogisticRegression().fit(X[:1000], y[:1000])
    groups = {"amount": [0], "noise": [1], "channel": [2, 3]}
    result = permutation_importance(
        lambda M: model.predict_proba(M)[:, 1], X[1000:], y[1000:], groups=groups, metric=_auc, seed=1, max_rows=500
    )
    assert result[0]["feature"] == "amount" and result[0]["mean"] > 0.2
    assert all(abs(r["mean"]) < 0.02 for r in result[1:])
    with pytest.raises(ValueError, match="outside the 4 columns"):
        permutation_importance(lambda M: M[:, 0], X, y, groups={"x": [4]}, metric=_auc)
    with pytest.raises(ValueError, match="n_repeats"):
        permutation_importance(lambda M: M[:, 0], X, y, groups={"x": [0]}, metric=_auc, n_repeats=0)
    with pytest.raises(MetricUndefined):  # the metric's own errors propagate
        permutation_importance(lambda M: M[:, 0], X, np.zeros(n), groups={"x": [0]}, metric=_auc)
    assert permutation_importance(lambda M: M[:, 0], X, y, groups={"none": []}, metric=_auc)[0]["mean"] == 0.0


def _fitted_features_json(groups, df, *, time_column="ts", entity_column="card"):
    from include.lifecycle.bundle import features_config
    from include.lifecycle.features import FeaturePipeline
    from include.lifecycle.preprocess import make_preprocessor

    exclude = ("card", "ts", "target")
    pipeline = FeaturePipeline(tuple(groups), time_column, entity_column, exclude)
    frame, columns = pipeline.engineer(df)
    pre = make_preprocessor(columns, problem_type="binary_classification", min_frequency=1)
    pre.fit_transform(frame, df["target"])
    return features_config(
        pipeline=pipeline,
        columns=columns.to_dict(),
        names=[str(n) for n in pre.get_feature_names_out()],
        problem_type="binary_classification",
        input_columns=[c for c in df.columns if c != "target"],
    )


@pytest.fixture
def transactions():
    rng = np.random.default_rng(5)
    n = 300
    return pd.DataFrame(
        {
            "ts": pd.Timestamp("2026-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 86400 * 20, n)), unit="s"),
            "card": rng.choice(["c1", "c2", "c3", "c4"], n),
            "amount": rng.gamma(2.0, 30.0, n),
            "fee": rng.normal(1.0, 0.1, n),
            "category": rng.choice(["grocery", "fuel", "travel"], n),
            "channel_type": rng.choice(["pos", "ecom"], n),
            "merchant": rng.choice(["m1", "m2", "m3", "m4", "m5"], n),
            "target": rng.integers(0, 2, n),
        }
    )


def test_raw_column_groups_trace_every_preprocessed_column_to_the_declared_columns(transactions):
    groups = [
        FeatureGroupSpec(name="txn", kind="raw", columns=["amount", "category", "channel_type"]),
        FeatureGroupSpec(name="vel", kind="velocity", columns=["amount"], params={"windows": ["1h", "7d"]}),
        FeatureGroupSpec(name="hist", kind="history", columns=["amount", "category"]),
        FeatureGroupSpec(name="risk", kind="target_encoding", columns=["merchant"]),
        FeatureGroupSpec(name="tod", kind="time_parts"),
        FeatureGroupSpec(name="mix", kind="interactions", columns=["amount", "fee"]),
    ]
    features = _fitted_features_json(groups, transactions)
    names = features["feature_names"]
    result = raw_column_groups(features)
    by_name = {raw: sorted(names[i] for i in idx) for raw, idx in result.items()}
    assert by_name == {
        "amount": sorted(["amount", "vel_sum_1h", "vel_sum_7d", "hist_amount_ratio", "amount_x_fee"]),
        "category": ["category_fuel", "category_grocery", "category_travel", "hist_new_category"],
        "channel_type": ["channel_type_ecom", "channel_type_pos"],
        "card": sorted(["vel_cnt_1h", "vel_cnt_7d", "vel_log_secs_since_prev", "hist_n_prior"]),
        "merchant": ["te_merchant"],
        "ts": sorted(["time_hour_sin", "time_hour_cos", "time_day_of_week", "time_is_night"]),
        "fee": ["amount_x_fee"],
    }
    covered = sorted({i for idx in result.values() for i in idx})
    assert covered == list(range(len(names)))  # every column of the matrix is in a group


def test_raw_column_groups_without_column_lists_and_with_a_category_prefixing_another(transactions):
    df = transactions.rename(columns={"channel_type": "category_code"})
    groups = [
        FeatureGroupSpec(name="all", kind="raw"),  # every column not excluded, as it is
        FeatureGroupSpec(name="mix", kind="interactions", params={"max_columns": 2}),
    ]
    features = _fitted_features_json(groups, df, time_column=None, entity_column=None)
    names = features["feature_names"]
    by_name = {raw: sorted(names[i] for i in idx) for raw, idx in raw_column_groups(features).items()}
    assert by_name["category"] == ["category_fuel", "category_grocery", "category_travel"]
    assert by_name["category_code"] == ["category_code_ecom", "category_code_pos"]
    assert by_name["amount"] == ["amount", "amount_x_fee"] and by_name["fee"] == ["amount_x_fee", "fee"]
    assert by_name["merchant"] == [f"merchant_m{i}" for i in range(1, 6)]
    # an output nothing explains is a group of its own, never dropped
    odd = {**features, "feature_names": [*names, "mystery"]}
    assert raw_column_groups(odd)["mystery"] == [len(names)]


# --------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------
@pytest.fixture
def overconfident():
    """True probabilities p in (0, 0.2); the scores say sqrt(p): ranked right, far too high."""
    rng = np.random.default_rng(6)
    n = 8000
    p = rng.uniform(0.0, 0.2, n)
    y = (rng.uniform(size=n) < p).astype(int)
    return y, np.sqrt(p), p


def test_isotonic_and_platt_calibration_lower_the_brier_score(overconfident):
    y, s, p = overconfident
    val, test = slice(0, 4000), slice(4000, None)
    before = brier_score(y[test], s[test])
    assert before == pytest.approx(brier_score_loss(y[test], s[test]))
    for method in ("isotonic", "sigmoid"):
        cal = fit_calibrator(y[val], s[val], method)
        assert isinstance(cal, Calibrator) and cal.method == method
        after = cal.transform(s[test])
        assert after.min() >= 0 and after.max() <= 1
        assert np.all(np.diff(after[np.argsort(s[test])]) >= -1e-12)  # monotone: the ranking is kept
        assert brier_score(y[test], after) < before - 0.01
        assert abs(after.mean() - y[test].mean()) < 0.01
        again = pickle.loads(pickle.dumps(cal))
        np.testing.assert_array_equal(again.transform(s[test]), after)


def test_calibration_check_says_when_scores_are_not_probabilities(overconfident):
    y, s, p = overconfident
    cal = fit_calibrator(y[:4000], s[:4000], "isotonic")
    check = calibration_check(y[4000:], s[4000:], calibrated=cal.transform(s[4000:]), method="isotonic")
    assert check["method"] == "isotonic" and check["rows"] == 4000
    assert check["calibrated_before"] is False and check["calibrated_after"] is True
    assert check["brier_after"] < check["brier_before"]
    assert check["observed_rate"] == pytest.approx(y[4000:].mean())
    assert check["mean_predicted"] == pytest.approx(cal.transform(s[4000:]).mean())  # the scores used
    assert len(check["curve_before"]["mean_predicted"]) == 10 and sum(check["curve_after"]["count"]) == 4000
    assert (
        "before: scores are not calibrated" in check["note"]
        and "after isotonic: scores are consistent with calibrated probabilities" in (check["note"])
    )
    json.dumps(check)  # JSON-ready
    # the true probabilities are calibrated; no calibrator: no "after"
    honest = calibration_check(y, p)
    assert honest["calibrated_before"] is True and honest["method"] is None
    assert honest["brier_after"] is None and honest["curve_after"] is None


def test_class_weight_balanced_scores_are_reported_as_not_calibrated():
    rng = np.random.default_rng(7)
    n = 6000
    X = rng.normal(size=(n, 2))
    y = (X[:, 0] + rng.normal(0, 1.0, n) > 2.3).astype(int)  # about 5 % positives
    model = LogisticRegression(class_weight="balanced").fit(X[:3000], y[:3000])
    s = model.predict_proba(X[3000:])[:, 1]
    check = calibration_check(y[3000:], s)
    assert check["mean_predicted"] > 5 * check["observed_rate"]
    assert check["calibrated_before"] is False
    assert "not calibrated probabilities: mean predicted" in check["note"]
    assert "read them as a ranking" in check["note"]
    # margins are not probabilities at all
    margins = calibration_check(y[3000:], model.decision_function(X[3000:]))
    assert margins["brier_before"] is None and margins["calibrated_before"] is None
    assert "not probabilities" in margins["note"]
    # Platt on margins works as it does on probabilities
    assert brier_score(
        y[3000:],
        fit_calibrator(y[3000:], model.decision_function(X[3000:]), "sigmoid").transform(
            model.decision_function(X[3000:])
        ),
    ) < brier_score(y[3000:], s)


def test_fit_calibrator_rejects_unknown_methods_and_one_class():
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibrator([0, 1], [0.1, 0.9], "beta")
    with pytest.raises(ValueError, match="both classes"):
        fit_calibrator([0, 0, 0], [0.1, 0.2, 0.3], "isotonic")


def test_calibration_importance_and_rounds_figures():
    check = calibration_check([0, 0, 1, 1, 0, 1] * 20, np.linspace(0.05, 0.95, 120))
    assert calibration_plot(check).startswith(PNG_MAGIC)
    assert calibration_plot({}).startswith(PNG_MAGIC)  # nothing to draw: a placeholder
    assert importance_plot([{"feature": "a", "mean": 0.1, "std": 0.01}]).startswith(PNG_MAGIC)
    rounds = [
        {"round": 1, "value": 0.6, "low": 0.5, "high": 0.7, "validation": 0.65, "champion": 0.7},
        {"round": 2, "value": None},
        {"round": 3, "value": 0.8, "validation": 0.8},
    ]
    assert rounds_plot(rounds, metric="auprc", target=0.75).startswith(PNG_MAGIC)
    assert rounds_plot([], metric="rmse", target=3.0, higher_is_better=False).startswith(PNG_MAGIC)
