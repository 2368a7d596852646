"""Unit tests of include/lifecycle/decide.py: the business-goal gate, the diagnosis rules that pick
a remedy from the evidence of a round, and the plan of the next round (with fall-through)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from include.lifecycle.decide import (
    AUGMENT_DATA,
    AUGMENT_FEATURES,
    NO_REMEDY,
    TUNE,
    diagnose,
    initial_plan,
    next_plan,
    oversampling_adds_rows,
    plan_key,
    planned_trials,
    rows_mismatch,
    select_across_rounds,
)
from include.lifecycle.spec import PROJECT_ROOT, Spec, load_spec, parse_spec

CARD_FRAUD = PROJECT_ROOT / "include" / "problems" / "card_fraud.yaml"


# --------------------------------------------------------------------------------------
# specs: the flagship file and variants derived from its YAML dict
# --------------------------------------------------------------------------------------
def _card_dict() -> dict[str, Any]:
    return yaml.safe_load(CARD_FRAUD.read_text())


def _variant(edit: Any) -> Spec:
    """card_fraud.yaml with ``edit(d)`` applied to its dict, validated like a file."""
    d = _card_dict()
    edit(d)
    return parse_spec(d, source="card_fraud-variant")


def _as_regression(d: dict[str, Any], *, layout: str = "partitioned") -> None:
    """Turn the card fraud spec into an rmse regression of the amount (lower is better)."""
    d["problem"] = {"type": "regression", "target": "amount"}
    d["goal"].update(metric="rmse", target=50.0, champion_margin=2.0, near_goal=0.12)
    d["diagnosis"] = {"max_gap": 15.0, "min_train_positives": 60}
    d["data"]["layout"] = layout
    for cand in d["training"]["candidates"]:
        if cand["family"] == "logistic":
            cand["family"], cand["params"], cand["search"] = "linear", {"alpha": 1.0}, {"alpha": [0.1, 1.0]}
    d["training"]["initial_candidates"] = ["linear", "xgboost"]


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(CARD_FRAUD)


@pytest.fixture(scope="module")
def rmse_spec() -> Spec:
    return _variant(_as_regression)


def _plan(spec: Spec, **overrides: Any) -> dict[str, Any]:
    plan = initial_plan(spec, dataset_rel="runs/r1/dataset.parquet", lookback_days=spec.data.lookback_days)
    plan.update(overrides)
    return plan


def test_flagship_spec_has_the_values_these_tests_rely_on(spec: Spec) -> None:
    # The expectations below are derived from these numbers; fail loudly if the YAML moves.
    assert spec.goal.higher_is_better
    assert spec.goal.target == 0.75
    assert spec.goal.champion_margin == 0.01
    assert spec.goal.near_goal == 0.12
    assert spec.diagnosis.max_gap == 0.2
    assert spec.diagnosis.min_train_positives == 60
    assert spec.features.initial == ["transaction"]
    assert spec.features.augment_order == ["card_velocity", "card_history", "merchant_risk", "time_of_day"]
    assert spec.data.layout == "partitioned"
    assert (spec.data.lookback_days, spec.data.max_lookback_days) == (35, 70)


def test_rmse_variant_is_lower_is_better(rmse_spec: Spec) -> None:
    assert not rmse_spec.goal.higher_is_better
    assert not rmse_spec.is_binary
    assert [c.family for c in rmse_spec.training.candidates] == ["linear", "random_forest", "xgboost"]


# --------------------------------------------------------------------------------------
# diagnose
# --------------------------------------------------------------------------------------
def test_too_few_positives_means_more_data_first(spec: Spec) -> None:
    # The scores alone would say "tune" (small gap, close to the goal); the positives rule wins.
    d = diagnose(spec, train_score=0.72, validation_score=0.70, train_positives=10)
    assert d["remedy"] == AUGMENT_DATA
    assert "only 10 positives" in d["reason"] and "60" in d["reason"]
    assert d["evidence"]["train_positives"] == 10


def test_enough_or_unknown_positives_skip_the_positives_rule(spec: Spec) -> None:
    for positives in (60, 5000, None):
        d = diagnose(spec, train_score=0.72, validation_score=0.70, train_positives=positives)
        assert d["remedy"] == TUNE, positives


def test_regression_ignores_the_positives_rule(rmse_spec: Spec) -> None:
    d = diagnose(rmse_spec, train_score=52.0, validation_score=54.0, train_positives=0)
    assert d["remedy"] == TUNE


def test_large_train_validation_gap_means_more_data(spec: Spec) -> None:
    d = diagnose(spec, train_score=0.99, validation_score=0.60, train_positives=500)
    assert d["remedy"] == AUGMENT_DATA
    assert d["evidence"]["gap"] == pytest.approx(0.39)
    assert "gap 0.390 > 0.2" in d["reason"]


def test_gap_equal_to_max_gap_is_not_overfitting() -> None:
    s = _variant(lambda d: d["diagnosis"].update(max_gap=0.25))
    d = diagnose(s, train_score=0.75, validation_score=0.5, train_positives=500)
    assert d["evidence"]["gap"] == 0.25
    assert d["remedy"] == AUGMENT_FEATURES  # short by a third of the goal: both low


def test_validation_meets_goal_but_test_misses_means_more_data(spec: Spec) -> None:
    d = diagnose(spec, train_score=0.85, validation_score=0.80, train_positives=500, test_score=0.70)
    assert d["remedy"] == AUGMENT_DATA
    assert "does not hold on unseen data" in d["reason"]
    assert d["evidence"]["test_score"] == 0.70


def test_validation_meets_goal_without_test_score_is_not_a_data_problem(spec: Spec) -> None:
    d = diagnose(spec, train_score=0.85, validation_score=0.80, train_positives=500)
    assert d["remedy"] == TUNE
    assert d["evidence"]["relative_shortfall"] < 0


def test_close_to_goal_means_tune(spec: Spec) -> None:
    d = diagnose(spec, train_score=0.72, validation_score=0.70, train_positives=500, test_score=0.69)
    assert d["remedy"] == TUNE
    assert d["evidence"]["relative_shortfall"] == pytest.approx(0.05 / 0.75)
    assert "within 12% of the goal" in d["reason"]


def test_near_goal_boundary(spec: Spec) -> None:
    # near_goal 0.12 of target 0.75 is a shortfall of 0.09: validation 0.66 is the edge.
    assert diagnose(spec, train_score=0.70, validation_score=0.6601, train_positives=500)["remedy"] == TUNE
    assert diagnose(spec, train_score=0.70, validation_score=0.6599, train_positives=500)["remedy"] == AUGMENT_FEATURES


def test_both_scores_low_means_more_features(spec: Spec) -> None:
    d = diagnose(spec, train_score=0.40, validation_score=0.35, train_positives=500)
    assert d["remedy"] == AUGMENT_FEATURES
    assert d["evidence"]["relative_shortfall"] == pytest.approx(0.40 / 0.75)
    assert "both low" in d["reason"]


@pytest.mark.parametrize(
    ("train", "validation", "test", "remedy"),
    [
        (20.0, 60.0, None, AUGMENT_DATA),  # validation rmse 40 above train: gap > 15
        (48.0, 49.0, 60.0, AUGMENT_DATA),  # validation meets (<= 50), test misses
        (50.0, 54.0, None, TUNE),  # 8% above the target
        (85.0, 90.0, None, AUGMENT_FEATURES),  # 80% above the target, small gap
    ],
)
def test_diagnose_lower_is_better(
    rmse_spec: Spec, train: float, validation: float, test: float | None, remedy: str
) -> None:
    d = diagnose(rmse_spec, train_score=train, validation_score=validation, train_positives=None, test_score=test)
    assert d["remedy"] == remedy
    assert d["evidence"]["gap"] == pytest.approx(validation - train)
    assert d["evidence"]["relative_shortfall"] == pytest.approx((validation - 50.0) / 50.0)


def test_rmse_train_worse_than_validation_is_not_a_gap(rmse_spec: Spec) -> None:
    # Lower is better: a validation rmse below the train rmse is a negative gap, not overfitting.
    d = diagnose(rmse_spec, train_score=90.0, validation_score=52.0, train_positives=None)
    assert d["evidence"]["gap"] == pytest.approx(-38.0)
    assert d["remedy"] == TUNE


# --------------------------------------------------------------------------------------
# next_plan
# --------------------------------------------------------------------------------------
def test_initial_plan_follows_the_spec(spec: Spec) -> None:
    plan = _plan(spec)
    assert plan["round"] == 1
    assert plan["feature_groups"] == ["transaction"]
    assert plan["families"] == ["logistic", "xgboost"]
    assert plan["trials_per_family"] == 2
    assert plan["resample"] == "none" and plan["wide_search"] is False
    assert plan["lookback_days"] == 35


def test_augment_features_adds_groups_in_spec_order_then_falls_through_to_tune(spec: Spec) -> None:
    plan = _plan(spec)
    for k, group in enumerate(spec.features.augment_order, start=1):
        plan = next_plan(spec, plan, AUGMENT_FEATURES, f"round {k} features low")
        assert plan["round"] == k + 1
        assert plan["feature_groups"] == ["transaction", *spec.features.augment_order[:k]]
        assert plan["feature_groups"][-1] == group
        assert plan["applied"] == AUGMENT_FEATURES
        assert plan["changes"] == [f"feature groups + {group}"]
        assert plan["reason"] == f"round {k} features low"
        assert plan["remedy"] == AUGMENT_FEATURES
        assert plan["needs_new_data"] is False
        assert plan["lookback_days"] == 35 and plan["resample"] == "none"
    exhausted = next_plan(spec, plan, AUGMENT_FEATURES, "still low")
    assert exhausted["feature_groups"] == plan["feature_groups"]
    assert exhausted["remedy"] == AUGMENT_FEATURES
    assert exhausted["applied"] == TUNE
    assert exhausted["changes"][0] == "augment_features has nothing left to give; applied tune_model instead"
    assert exhausted["families"] == ["logistic", "random_forest", "xgboost"]
    assert exhausted["wide_search"] is True


def test_augment_data_doubles_lookback_and_oversamples(spec: Spec) -> None:
    plan = next_plan(spec, _plan(spec), AUGMENT_DATA, "gap")
    assert plan["applied"] == AUGMENT_DATA
    assert plan["lookback_days"] == 70
    assert plan["needs_new_data"] is True
    assert plan["resample"] == "oversample"
    assert plan["feature_groups"] == ["transaction"]
    assert plan["changes"] == ["lookback 35 -> 70 days", "oversample the minority class"]


def test_lookback_doubling_is_capped_at_the_maximum(spec: Spec) -> None:
    plan = next_plan(spec, _plan(spec, lookback_days=50, resample="oversample"), AUGMENT_DATA, "gap")
    assert plan["lookback_days"] == 70
    assert plan["changes"] == ["lookback 50 -> 70 days"]
    assert plan["needs_new_data"] is True


def test_exhausted_data_remedy_falls_through_to_features(spec: Spec) -> None:
    first = next_plan(spec, _plan(spec), AUGMENT_DATA, "gap")
    second = next_plan(spec, first, AUGMENT_DATA, "gap again")
    assert second["lookback_days"] == 70 and second["resample"] == "oversample"
    assert second["needs_new_data"] is False  # nothing new to collect
    assert second["applied"] == AUGMENT_FEATURES
    assert second["feature_groups"] == ["transaction", "card_velocity"]
    assert second["changes"][0] == "augment_data has nothing left to give; applied augment_features instead"


def test_everything_exhausted_falls_through_to_tune(spec: Spec) -> None:
    full = ["transaction", *spec.features.augment_order]
    plan = _plan(spec, lookback_days=70, resample="oversample", feature_groups=full)
    nxt = next_plan(spec, plan, AUGMENT_DATA, "gap")
    assert nxt["applied"] == TUNE
    assert nxt["trials_per_family"] == 4
    assert nxt["feature_groups"] == full


def test_single_file_data_only_oversamples(spec: Spec) -> None:
    s = _variant(lambda d: d["data"].update(layout="single_file"))
    plan = next_plan(s, _plan(s), AUGMENT_DATA, "gap")
    assert plan["lookback_days"] == 35
    assert plan["needs_new_data"] is False
    assert plan["resample"] == "oversample"
    assert plan["applied"] == AUGMENT_DATA


def test_regression_partitioned_data_gets_history_but_no_oversampling(rmse_spec: Spec) -> None:
    plan = next_plan(rmse_spec, _plan(rmse_spec), AUGMENT_DATA, "gap")
    assert plan["lookback_days"] == 70
    assert plan["resample"] == "none"
    assert plan["applied"] == AUGMENT_DATA


def test_regression_single_file_has_no_data_remedy() -> None:
    s = _variant(lambda d: _as_regression(d, layout="single_file"))
    plan = next_plan(s, _plan(s), AUGMENT_DATA, "gap")
    assert plan["applied"] == AUGMENT_FEATURES
    assert plan["resample"] == "none" and plan["lookback_days"] == 35
    assert plan["changes"][0].startswith("augment_data has nothing left to give")


def test_tune_widens_the_search_and_doubles_trials_up_to_the_maximum(spec: Spec) -> None:
    plan = _plan(spec)
    seen = []
    for _ in range(3):
        plan = next_plan(spec, plan, TUNE, "close")
        assert plan["applied"] == TUNE
        assert plan["wide_search"] is True
        assert plan["families"] == ["logistic", "random_forest", "xgboost"]
        assert plan["feature_groups"] == ["transaction"]
        seen.append(plan["trials_per_family"])
    assert seen == [4, 8, 12]  # max_trials is 12
    assert "12 trials per family" in plan["changes"][0]
    # the search is at its widest: tuning again would change nothing, so the next remedy applies
    after = next_plan(spec, plan, TUNE, "close")
    assert after["applied"] == AUGMENT_FEATURES
    assert after["changes"][0] == "tune_model has nothing left to give; applied augment_features instead"
    assert after["feature_groups"] == ["transaction", "card_velocity"]


def test_next_plan_does_not_modify_the_previous_plan(spec: Spec) -> None:
    plan = _plan(spec)
    before = copy.deepcopy(plan)
    for remedy in (AUGMENT_FEATURES, AUGMENT_DATA, TUNE):
        next_plan(spec, plan, remedy, "why")
    assert plan == before


def test_unknown_remedy_is_refused(spec: Spec) -> None:
    with pytest.raises(KeyError):
        next_plan(spec, _plan(spec), "deploy_anyway", "no")


def test_tune_is_exhausted_once_the_search_is_at_its_widest():
    spec = load_spec(CARD_FRAUD)
    plan = initial_plan(spec, dataset_rel="runs/r1/dataset.parquet", lookback_days=spec.data.max_lookback_days)
    plan.update(
        feature_groups=[g.name for g in spec.features.groups],
        families=[c.family for c in spec.training.candidates],
        trials_per_family=spec.training.max_trials,
        wide_search=True,
        resample="oversample",
    )
    nxt = next_plan(spec, plan, TUNE, "close")
    assert nxt["applied"] is None and nxt["stop"] is True
    assert nxt["changes"] == [f"{NO_REMEDY}: " + "; ".join(nxt["skipped"])]
    assert [s.split(":")[0] for s in nxt["skipped"]] == [TUNE, AUGMENT_FEATURES, AUGMENT_DATA]
    assert "the search is at its widest" in nxt["skipped"][0]
    assert "every feature group" in nxt["skipped"][1]
    assert "max_lookback_days (70)" in nxt["skipped"][2] and "oversampled already" in nxt["skipped"][2]


# --------------------------------------------------------------------------------------
# a remedy that cannot change the candidate is not chosen; no round repeats a plan
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("positives", "rows", "adds"),
    [
        (10, 1000, True),  # 1 % of the majority: raised to 10 %
        (50, 1000, True),  # 50 < ceil(0.1 * 950) = 95
        (91, 1001, False),  # 91 of 910: exactly ceil(0.1 * 910), nothing to add
        (100, 1000, False),  # 100 of 900, above the ratio
        (500, 1000, False),  # balanced
        (990, 1000, True),  # the negatives are the minority
        (0, 1000, False),  # one class only: apply_resampling leaves it alone
    ],
)
def test_oversampling_adds_rows_only_below_the_resampling_ratio(positives: int, rows: int, adds: bool) -> None:
    import numpy as np

    from include.lifecycle.features import apply_resampling

    assert oversampling_adds_rows(positives, rows) is adds
    # the rule is the one apply_resampling follows (ratio 0.1, the training job's default)
    y = np.array([1] * positives + [0] * (rows - positives))
    _, y_fit = apply_resampling(np.zeros((rows, 1)), y, method="oversample", seed=0, ratio=0.1)
    assert (len(y_fit) > rows) is adds


def test_oversampling_that_adds_no_rows_is_not_a_remedy(spec: Spec) -> None:
    s = _variant(lambda d: d["data"].update(layout="single_file"))
    nxt = next_plan(s, _plan(s), AUGMENT_DATA, "gap", train_counts=(400, 1000))  # 40 % positives
    assert nxt["applied"] == AUGMENT_FEATURES and nxt["resample"] == "none"
    assert nxt["changes"] == [
        "augment_data has nothing left to give; applied augment_features instead",
        "feature groups + card_velocity",
    ]
    assert nxt["skipped"] == [
        "augment_data: a single file has no more history; the minority class is 66.7% of the majority in training "
        "(>= the resampling ratio 10%): oversampling adds no rows"
    ]
    # with a rare minority the same remedy oversamples
    rare = next_plan(s, _plan(s), AUGMENT_DATA, "gap", train_counts=(20, 1000))
    assert rare["applied"] == AUGMENT_DATA and rare["resample"] == "oversample" and rare["skipped"] == []


def test_no_older_partition_means_no_more_history(spec: Spec) -> None:
    nxt = next_plan(spec, _plan(spec), AUGMENT_DATA, "gap", train_counts=(20, 1000), more_history=False)
    assert nxt["applied"] == AUGMENT_DATA
    assert nxt["lookback_days"] == 35 and nxt["needs_new_data"] is False
    assert nxt["changes"] == ["oversample the minority class"]
    neither = next_plan(spec, _plan(spec), AUGMENT_DATA, "gap", train_counts=(500, 1000), more_history=False)
    assert neither["applied"] == AUGMENT_FEATURES
    assert "no partition outside the window" in neither["skipped"][0]


def _one_family_spec(**training: Any) -> Spec:
    """card_fraud with logistic regression only, over a grid the wide search does not widen."""

    def edit(d: dict[str, Any]) -> None:
        d["data"]["layout"] = "single_file"
        d["training"].update(
            candidates=[{"family": "logistic", "params": {"C": 1.0}, "search": {"C": [0.03, 0.3, 1.0, 3.0, 30.0]}}],
            initial_candidates=["logistic"],
            **training,
        )

    return _variant(edit)


def test_a_search_grid_whose_trials_were_all_trained_is_not_tuned_again() -> None:
    s = _one_family_spec(trials_per_candidate=5)
    plan = _plan(s)
    assert len(planned_trials(s, plan)) == 5  # round 1 trains the whole grid
    nxt = next_plan(s, plan, TUNE, "close", train_counts=(500, 1000))
    assert nxt["applied"] == AUGMENT_FEATURES
    assert nxt["skipped"][0].startswith("tune_model: every trial it plans was trained already in round(s) [1]")
    assert "search grid is exhausted" in nxt["skipped"][0]
    # a grid larger than the trials trained so far still has something to give
    bigger = _one_family_spec(trials_per_candidate=2)
    assert next_plan(bigger, _plan(bigger), TUNE, "close")["applied"] == TUNE


def test_when_no_remedy_can_change_the_candidate_the_loop_stops() -> None:
    s = _one_family_spec(trials_per_candidate=5)
    full = [*s.features.initial, *s.features.augment_order]
    nxt = next_plan(s, _plan(s, feature_groups=full), TUNE, "close", train_counts=(500, 1000))
    assert nxt["applied"] is None and nxt["stop"] is True and nxt["round"] == 2
    assert nxt["changes"][0].startswith(f"{NO_REMEDY}: tune_model: every trial it plans was trained already")
    assert [x.split(":")[0] for x in nxt["skipped"]] == [TUNE, AUGMENT_FEATURES, AUGMENT_DATA]


def test_a_plan_equal_to_an_earlier_round_is_never_run_again(spec: Spec) -> None:
    # round 2 added card_velocity; round 3 went back to the initial groups with a wider search (as
    # a hand-made plan might): adding the next group would be round 2's plan again
    r1 = _plan(spec)
    r2 = {**_plan(spec, feature_groups=["transaction", "card_velocity"]), "round": 2}
    r3 = {**_plan(spec), "round": 3}
    assert plan_key(r2) != plan_key(r3)
    nxt = next_plan(spec, r3, AUGMENT_FEATURES, "low", earlier=[r1, r2], train_counts=(20, 1000))
    assert nxt["skipped"] == ["augment_features: its plan would repeat round 2's"]
    assert nxt["applied"] == TUNE and nxt["round"] == 4
    # the order of the feature groups does not make a plan new
    assert plan_key({**r2, "feature_groups": ["card_velocity", "transaction"]}) == plan_key(r2)


def test_a_stopped_plan_does_not_carry_its_stop_into_the_next_round(spec: Spec) -> None:
    plan = {**_plan(spec), "stop": True}
    assert "stop" not in next_plan(spec, plan, AUGMENT_FEATURES, "low")


# --------------------------------------------------------------------------------------
# select_across_rounds: the best candidate over the rounds scored on the same rows
# --------------------------------------------------------------------------------------
def _time_split(train_start: str, *, validation_rows: int = 200, test_rows: int = 200) -> dict[str, Any]:
    return {
        "kind": "time",
        "train": {"start": train_start, "end": "2026-03-10T00:00:00+00:00", "rows": 800, "positives": 40},
        "validation": {
            "start": "2026-03-10T00:00:00+00:00",
            "end": "2026-03-13T00:00:00+00:00",
            "rows": validation_rows,
            "positives": 10,
        },
        "test": {
            "start": "2026-03-13T00:00:00+00:00",
            "end": "2026-03-16T00:00:00+00:00",
            "rows": test_rows,
            "positives": 9,
        },
    }


def _trial(k: int, name: str, validation: float, family: str = "logistic", **extra: Any) -> dict[str, Any]:
    return {
        "trial_id": f"r{k}-{family}-{name}",
        "family": family,
        "round": k,
        "train_score": 0.9,
        "validation_score": validation,
        **extra,
    }


def _round(k: int, split: dict[str, Any] | None, trials: list[dict[str, Any]], dataset: str = "d1") -> dict[str, Any]:
    return {"round": k, "plan": {"dataset_rel": dataset}, "splits": split, "trials": trials}


def test_rows_mismatch_of_time_splits_compares_validation_and_test_windows() -> None:
    r1 = _round(1, _time_split("2026-02-26T00:00:00+00:00"), [_trial(1, "0", 0.7)])
    # a re-collection of more history: a longer training window, the same validation and test rows
    r2 = _round(2, _time_split("2026-02-12T00:00:00+00:00"), [_trial(2, "0", 0.6)], dataset="d2")
    assert rows_mismatch(r2, r1) is None
    widened = _round(2, _time_split("2026-02-12T00:00:00+00:00", test_rows=260), [_trial(2, "0", 0.6)])
    assert rows_mismatch(widened, r1) == "the test windows differ in rows"
    # trials compared by cross-validation also score the training rows
    cv1 = _round(1, r1["splits"], [_trial(1, "0", 0.7, selection="cv-5")])
    cv2 = _round(2, r2["splits"], [_trial(2, "0", 0.6, selection="cv-5")])
    assert rows_mismatch(cv2, cv1) == "the train windows differ in start"
    assert rows_mismatch(cv2, r1) == "its trials were compared by ['None'], these by ['cv-5']"
    assert rows_mismatch(_round(2, None, []), r1) == "a round has no split record"


def test_rows_mismatch_of_random_splits_needs_the_same_data_set() -> None:
    split = {"kind": "random", "seed": 42, "validation": {"share": 0.15, "rows": 225, "positives": 110}}
    r1 = _round(1, split, [_trial(1, "0", 0.7)])
    assert rows_mismatch(_round(2, dict(split), [_trial(2, "0", 0.6)]), r1) is None
    mine = [_trial(2, "0", 0.6)]
    assert rows_mismatch(_round(2, dict(split), mine, dataset="other"), r1) == "another data set"
    assert rows_mismatch(_round(2, {**split, "seed": 1}, mine), r1) == "the splits differ"
    assert (
        rows_mismatch(_round(2, dict(split), [], dataset="d1"), r1)
        == "its trials were compared by ['None'], these by []"
    )
    assert (
        rows_mismatch(_round(2, {**split, "kind": "time"}, mine), r1)
        == "the split kinds differ (random there, time here)"
    )


def test_a_later_worse_round_keeps_the_earlier_rounds_best() -> None:
    split = _time_split("2026-02-26T00:00:00+00:00")
    r1 = _round(1, split, [_trial(1, "0", 0.70), _trial(1, "1", 0.74)])
    r3 = [_trial(3, "0", 0.72), _trial(3, "1", 0.71)]
    r2 = _round(2, split, [_trial(2, "0", 0.73)])
    got = select_across_rounds(3, r3, this=_round(3, split, r3), earlier=[r1, r2], higher_is_better=True)
    assert got["best"]["trial_id"] == "r1-logistic-1" and got["best"]["round"] == 1
    assert got["round_best"]["trial_id"] == "r3-logistic-0"
    assert got["compared_rounds"] == [1, 2, 3] and got["not_comparable"] == {}
    # lower is better (rmse): the smallest validation score wins across rounds
    low = select_across_rounds(3, r3, this=_round(3, split, r3), earlier=[r1, r2], higher_is_better=False)
    assert low["best"]["trial_id"] == "r1-logistic-0"


def test_rounds_on_other_rows_are_not_compared_and_say_why() -> None:
    r1 = _round(1, _time_split("2026-02-26T00:00:00+00:00", validation_rows=150), [_trial(1, "0", 0.9)])
    mine = [_trial(2, "0", 0.6)]
    got = select_across_rounds(
        2, mine, this=_round(2, _time_split("2026-02-26T00:00:00+00:00"), mine), earlier=[r1], higher_is_better=True
    )
    assert got["best"]["trial_id"] == "r2-logistic-0" and got["best"]["round"] == 2
    assert got["compared_rounds"] == [2]
    assert got["not_comparable"] == {"1": "the validation windows differ in rows"}


def test_an_exact_tie_across_rounds_goes_to_the_earlier_round() -> None:
    # the same trial trained again (a tune round re-runs the defaults on the same data): identical scores
    split = _time_split("2026-02-26T00:00:00+00:00")
    same = {"validation_auprc": 0.5, "validation_log_loss": 0.3}
    r1 = _round(1, split, [_trial(1, "0", 0.8, **same)])
    mine = [_trial(2, "0", 0.8, **same)]
    got = select_across_rounds(2, mine, this=_round(2, split, mine), earlier=[r1], higher_is_better=True)
    assert got["best"]["trial_id"] == "r1-logistic-0" and got["best"]["round"] == 1
    # a trial without a round (an old record) takes the round it is listed under
    bare = {k: v for k, v in mine[0].items() if k != "round"}
    assert (
        select_across_rounds(2, [bare], this=_round(2, split, [bare]), earlier=[], higher_is_better=True)["best"][
            "round"
        ]
        == 2
    )
