"""The business gate: the goal as the business runs it (at the deployed threshold, within the alert
capacity), the bootstrap intervals, the paired comparison with the champion on rows it never saw,
and the decision rule that uses them (include/lifecycle/assessment.py, uncertainty.py, decide.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import yaml

from include.lifecycle.assessment import (
    ChampionOnTest,
    compare_with_champion,
    goal_check,
    goal_value,
    resample_sets,
    unseen_rows,
)
from include.lifecycle.decide import goal_decision
from include.lifecycle.spec import PROJECT_ROOT, Spec, parse_spec
from include.lifecycle.uncertainty import interval, paired_difference, resamples

CARD_FRAUD = PROJECT_ROOT / "include" / "problems" / "card_fraud.yaml"


def _spec(**goal: Any) -> Spec:
    d = yaml.safe_load(CARD_FRAUD.read_text())
    d["goal"].update(goal)
    return parse_spec(d, source="card_fraud-gate")


def _rows(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (5 % positive), informative scores and amounts."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.05).astype(int)
    scores = np.clip(rng.normal(0.2 + 0.5 * y, 0.15), 0, 1)
    amount = rng.gamma(2.0, 50.0, n)
    return y, scores, amount


# --- uncertainty ------------------------------------------------------------------------------------
def test_stratified_resamples_keep_the_class_counts_and_are_seeded() -> None:
    y = np.array([1] * 7 + [0] * 93)
    sets = list(resamples(y, len(y), count=50, seed=3, stratify=True))
    assert len(sets) == 50 and all(r.shape == (100,) for r in sets)
    assert all(int(y[r].sum()) == 7 for r in sets)
    again = list(resamples(y, len(y), count=50, seed=3, stratify=True))
    assert all(np.array_equal(a, b) for a, b in zip(sets, again, strict=True))
    assert not np.array_equal(sets[0], next(iter(resamples(y, len(y), count=50, seed=4, stratify=True))))


def test_the_interval_of_a_mean_covers_it_and_narrows_with_more_rows() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 100), rng.normal(1.0, 1.0, 10_000)

    def ci(x: np.ndarray) -> dict[str, Any]:
        return interval(lambda r: float(x[r].mean()), resamples(None, len(x), count=500, seed=1, stratify=False))

    a, b = ci(small), ci(large)
    assert a["low"] < a["value"] < a["high"] and b["low"] < 1.0 < b["high"]
    assert (b["high"] - b["low"]) < (a["high"] - a["low"]) / 5  # ~ 1/sqrt(100) narrower
    assert a["method"] == "bootstrap" and a["resamples"] == 500 and a["level"] == 0.95


def test_a_paired_difference_sees_what_two_separate_intervals_hide() -> None:
    """Two models that differ by a little on the same rows: their own intervals overlap, the
    paired difference is clearly positive (the rows' variance cancels)."""
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, 2000)
    a, b = base + 0.05, base
    sets = resamples(None, 2000, count=400, seed=0, stratify=False)
    ia = interval(lambda r: float(a[r].mean()), sets)
    ib = interval(lambda r: float(b[r].mean()), sets)
    assert ia["low"] < ib["high"]  # overlapping
    diff = paired_difference(lambda r: float(a[r].mean()), lambda r: float(b[r].mean()), sets, higher_is_better=True)
    assert diff["low"] > 0.04 and diff["share_candidate_better"] == 1.0
    worse = paired_difference(lambda r: float(a[r].mean()), lambda r: float(b[r].mean()), sets, higher_is_better=False)
    assert worse["high"] < 0  # for a lower-is-better metric, a larger value is worse


# --- the goal as the business runs it ---------------------------------------------------------------
def test_the_goal_is_measured_at_the_deployed_threshold_not_at_an_ideal_top_k() -> None:
    spec = _spec(metric="amount_recall_at_alert_rate", target=0.5, max_alert_rate=0.05)
    y, scores, amount = _rows()
    threshold = float(np.quantile(scores, 0.9))  # flags 10 %: twice the capacity
    flagged = scores >= threshold
    expected = amount[flagged & (y == 1)].sum() / amount[y == 1].sum()
    assert goal_value(spec, y, scores, amount=amount, threshold=threshold) == pytest.approx(expected)
    check = goal_check(spec, y, scores, amount=amount, threshold=threshold, sets=resample_sets(spec, y))
    assert check["value"] >= 0.5 and spec.goal.met_by(check["value"])  # the metric alone would pass
    assert check["alert_rate"] == pytest.approx(flagged.mean()) and check["alert_rate"] > 0.05
    assert check["within_capacity"] is False and check["met"] is False  # over capacity: not met
    decision = goal_decision(spec, check=check, comparison=None)
    assert decision["deploy"] is False and "ABOVE the capacity" in decision["reason"]


def test_within_capacity_the_goal_is_met_and_reported_with_intervals() -> None:
    spec = _spec(metric="recall_at_alert_rate", target=0.3, max_alert_rate=0.05)
    y, scores, amount = _rows()
    threshold = float(np.quantile(scores, 0.97))  # flags 3 %
    check = goal_check(spec, y, scores, amount=amount, threshold=threshold, sets=resample_sets(spec, y))
    assert check["within_capacity"] is True and check["met"] is True
    ci, rate_ci = check["interval"], check["alert_rate_interval"]
    assert ci["low"] <= check["value"] <= ci["high"] and ci["high"] - ci["low"] > 0
    assert rate_ci["low"] <= check["alert_rate"] <= rate_ci["high"]
    assert ci["resamples"] == spec.goal.bootstrap_resamples


def test_resamples_shrink_on_very_large_test_sets_but_never_below_200() -> None:
    spec = _spec()
    assert len(resample_sets(spec, np.zeros(1000, dtype=int))) == 1000
    assert len(resample_sets(spec, np.zeros(400_000, dtype=int))) == 500
    assert len(resample_sets(spec, np.zeros(2_000_000, dtype=int))) == 200


# --- the champion on rows it never saw ----------------------------------------------------------------
def test_only_rows_after_the_champions_data_window_count() -> None:
    times = np.array(
        ["2026-10-27T10:00", "2026-10-28T23:59", "2026-10-29T00:00", "2026-10-31T12:00"], dtype="datetime64[m]"
    )
    unseen, basis = unseen_rows(4, times, champion_data_end="2026-10-29", same_held_out_rows=False)
    assert unseen.tolist() == [False, False, True, True] and "2026-10-29" in basis
    # the champion's own held-out rows (a run on the same window, or a static file with or without
    # a time column): all of them, though they lie before the end of its window
    same, why = unseen_rows(4, times, champion_data_end="2026-11-01", same_held_out_rows=True)
    assert same.tolist() == [True] * 4 and "same data, same split" in why
    static, _ = unseen_rows(3, None, champion_data_end=None, same_held_out_rows=True)
    assert static.tolist() == [True] * 3
    other, why = unseen_rows(3, None, champion_data_end=None, same_held_out_rows=False)
    assert not other.any() and "other rows" in why


def _champion(scores: np.ndarray, unseen: np.ndarray, *, newer: bool = False) -> ChampionOnTest:
    return ChampionOnTest(7, scores, 0.5, unseen, "rows after its data", newer)


def test_a_champion_whose_window_overlaps_the_test_rows_is_judged_on_the_other_rows_only() -> None:
    spec = _spec(metric="auprc", target=0.1, champion_margin=0.0)
    y, cand, _ = _rows(3000, seed=5)
    seen = np.arange(len(y)) < 2000  # the champion trained on these rows: it scores them perfectly
    champ = np.where(seen, y.astype(float), 1 - cand)  # ... and is useless on the rows it never saw
    comparison = compare_with_champion(
        spec, y=y, amount=None, candidate_scores=cand, candidate_threshold=0.5, champion=_champion(champ, ~seen)
    )
    assert comparison["fair"] is True and comparison["rows"] == 1000
    from sklearn.metrics import average_precision_score

    assert comparison["champion"] == pytest.approx(average_precision_score(y[~seen], champ[~seen]))
    assert comparison["champion"] < 0.2  # judged on all rows it would have scored ~1.0
    assert comparison["difference"]["low"] > 0
    decision = goal_decision(spec, check={"value": 0.6, "met": True}, comparison=comparison)
    assert decision["deploy"] is True and "rows it never saw" in decision["reason"]


def test_the_rule_promotes_when_the_lower_bound_of_the_paired_difference_clears_the_margin() -> None:
    def decide(low: float, margin: float) -> dict[str, Any]:
        spec = _spec(metric="auprc", target=0.1, champion_margin=margin)
        comparison = {
            "champion_version": 3,
            "fair": True,
            "rows": 500,
            "candidate": 0.6,
            "champion": 0.61,
            "difference": {"value": -0.01, "low": low, "high": 0.02},
        }
        return goal_decision(spec, check={"value": 0.6, "met": True}, comparison=comparison)

    assert decide(-0.02, 0.03)["deploy"] is True
    assert decide(-0.04, 0.03)["deploy"] is False
    assert decide(-0.0, 0.0)["deploy"] is True
    assert "worse: lower bound < -0.03" in decide(-0.04, 0.03)["reason"]


def test_no_unseen_row_means_no_fair_comparison_and_an_older_model_never_replaces_a_newer_one() -> None:
    spec = _spec(metric="auprc", target=0.1)
    y, cand, _ = _rows(500, seed=1)
    none_unseen = np.zeros(len(y), dtype=bool)
    older = compare_with_champion(
        spec,
        y=y,
        amount=None,
        candidate_scores=cand,
        candidate_threshold=0.5,
        champion=_champion(cand, none_unseen, newer=True),
    )
    assert older["fair"] is False and "no test row is unseen" in older["note"]
    kept = goal_decision(spec, check={"value": 0.9, "met": True}, comparison=older)
    assert kept["meets_goal"] is True and kept["deploy"] is False and "newer data" in kept["reason"]
    forced = goal_decision(spec, check={"value": 0.9, "met": True}, comparison=older, force=True)
    assert forced["deploy"] is True and forced["forced"] is True
    same_age = compare_with_champion(
        spec, y=y, amount=None, candidate_scores=cand, candidate_threshold=0.5, champion=_champion(cand, none_unseen)
    )
    decided = goal_decision(spec, check={"value": 0.9, "met": True}, comparison=same_age)
    assert decided["deploy"] is True and "no fair comparison" in decided["reason"]


def test_no_champion_and_a_missed_goal() -> None:
    spec = _spec(metric="auprc", target=0.5)
    first = goal_decision(spec, check={"value": 0.6, "met": True}, comparison={"champion_version": None})
    assert first["deploy"] is True and "no champion yet" in first["reason"]
    missed = goal_decision(spec, check={"value": 0.4, "met": False}, comparison=None)
    assert (missed["meets_goal"], missed["deploy"]) == (False, False) and "misses the goal" in missed["reason"]
