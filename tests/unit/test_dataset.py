"""Targets and the train/validation/test split."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from include.lifecycle.dataset import (
    TEST,
    TRAIN,
    VALIDATION,
    MissingTargetError,
    SplitError,
    TargetError,
    TargetTransformError,
    assign_splits,
    describe_values,
    inverse_target,
    label_key,
    make_split,
    positive_mask,
    target_vector,
    transform_target,
)
from include.lifecycle.spec import PROJECT_ROOT, SpecError, parse_spec

CARD = yaml.safe_load((PROJECT_ROOT / "include" / "problems" / "card_fraud.yaml").read_text())
SPEC = parse_spec(CARD)  # time split: validation_days 5, test_days 5, labels maturity 10 days
MATURITY = CARD["data"]["labels"]["maturity_days"]
DAY = pd.Timedelta(days=1)


def _spec(**split: object) -> object:
    """card_fraud with other split / diagnosis settings (``diagnosis__min_train_positives=...``)."""
    data = json.loads(json.dumps(CARD))
    for k, v in split.items():
        section, _, field = k.partition("__")
        if section == "diagnosis":
            data["diagnosis"][field] = v
        else:
            data["training"]["split"][k] = v
    return parse_spec(data)


def _random_spec(problem_type: str = "binary_classification") -> object:
    data = {**CARD, "data": {k: v for k, v in CARD["data"].items() if k != "time_column"}}
    data["features"] = {"initial": ["transaction"], "groups": [CARD["features"]["groups"][0]]}
    if problem_type == "regression":
        data["problem"] = {"type": "regression", "target": "amount"}
        data["goal"] = {**CARD["goal"], "metric": "r2", "target": 0.5}
        data["goal"].pop("max_alert_rate")
        data["goal"]["value"] = {}
        data["training"] = {**CARD["training"], "initial_candidates": None}
        data["training"]["candidates"] = [{"family": "linear"}]
        data["data"] = {**data["data"], "labels": None}
        data["data"].pop("labels")
    return parse_spec(data)


def _frame(days: int, per_day: int = 4, tz: str | None = "UTC") -> pd.DataFrame:
    start = pd.Timestamp("2026-10-01", tz=tz)
    ts = [start + pd.Timedelta(days=d, hours=h * 5) for d in range(days) for h in range(per_day)]
    return pd.DataFrame({"ts": pd.Series(ts).astype(f"datetime64[us{', ' + tz if tz else ''}]")})


def _hourly(as_of: pd.Timestamp, days: int = 30) -> pd.DataFrame:
    """What collect leaves of hourly rows for a run at ``as_of``: the mature rows of the lookback."""
    end = as_of - pd.Timedelta(days=MATURITY)
    start = as_of.normalize() - pd.Timedelta(days=days)
    ts = pd.date_range(start, end, freq="h", inclusive="left", unit="us")
    return pd.DataFrame({"ts": ts[ts < end]})


# --- time split -----------------------------------------------------------------------------------
@pytest.mark.parametrize("tz", ["UTC", None])
def test_time_split_tests_on_the_latest_days_and_validates_on_the_days_before(tz):
    df = _frame(20, tz=tz)
    # a run at 2026-10-31 00:00 with 10 days of label maturity: the labelled data ends Oct 21 00:00
    split = assign_splits(df, SPEC, as_of=dt.datetime(2026, 10, 31, tzinfo=dt.UTC))
    day = df["ts"].dt.day.to_numpy()
    assert set(day[split == TEST]) == set(range(16, 21))  # Oct 16..20: the last 5 days
    assert set(day[split == VALIDATION]) == set(range(11, 16))
    assert set(day[split == TRAIN]) == set(range(1, 11))
    # the future never trains the past
    assert df["ts"][split == TRAIN].max() < df["ts"][split == VALIDATION].min()
    assert df["ts"][split == VALIDATION].max() < df["ts"][split == TEST].min()


@pytest.mark.parametrize("clock", ["00:00", "00:01", "02:00", "23:59"])
def test_windows_are_durations_from_the_end_of_the_labelled_data_whatever_the_hour(clock):
    as_of = pd.Timestamp(f"2026-11-01T{clock}:00", tz="UTC")
    df = _hourly(as_of)
    y = np.zeros(len(df), dtype="int8")
    y[::7] = 1
    split = make_split(df, SPEC, y, as_of=as_of.to_pydatetime())
    w = split.windows
    end = as_of - pd.Timedelta(days=MATURITY)
    assert w["end"] == end.isoformat()
    assert (w[TEST]["start"], w[TEST]["end"]) == ((end - 5 * DAY).isoformat(), end.isoformat())
    assert (w[VALIDATION]["start"], w[VALIDATION]["end"]) == ((end - 10 * DAY).isoformat(), (end - 5 * DAY).isoformat())
    assert w[TRAIN]["end"] == (end - 10 * DAY).isoformat()
    # five whole days of hourly rows in test and in validation, whenever the run starts
    assert w[TEST]["rows"] == (split.assignment == TEST).sum() == 5 * 24
    assert w[VALIDATION]["rows"] == (split.assignment == VALIDATION).sum() == 5 * 24
    assert w[TEST]["widened_by_days"] == w[VALIDATION]["widened_by_days"] == 0
    assert w[TEST]["positives"] == int(y[split.assignment == TEST].sum())
    json.dumps(w)  # recorded as it is


def test_a_naive_as_of_is_utc():
    df = _hourly(pd.Timestamp("2026-11-01T02:00", tz="UTC"))
    aware = make_split(df, SPEC, as_of=dt.datetime(2026, 11, 1, 2, tzinfo=dt.UTC))
    naive = make_split(df, SPEC, as_of=dt.datetime(2026, 11, 1, 2))
    assert (aware.assignment == naive.assignment).all() and aware.windows == naive.windows


def test_without_as_of_the_split_ends_just_after_the_latest_row():
    df = _frame(20)
    w = make_split(df, SPEC).windows
    latest = df["ts"].max()
    assert w["end"] == (latest + pd.Timedelta(microseconds=1)).isoformat()
    assert "latest row" in w["end_from"]
    split = assign_splits(df, SPEC)
    assert split[df["ts"].to_numpy().argmax()] == TEST
    assert (df["ts"][split == TEST] >= latest - 5 * DAY).all()


def test_rows_after_the_end_of_the_labelled_data_are_an_error():
    df = _hourly(pd.Timestamp("2026-11-01", tz="UTC"))
    with pytest.raises(SplitError, match="1 rows are at or after the end of the labelled data"):
        assign_splits(df, SPEC, as_of=dt.datetime(2026, 10, 31, 23, tzinfo=dt.UTC))


def test_time_split_refuses_too_few_days():
    with pytest.raises(SplitError, match=r"train split \(rows before .*\) holds 0 rows: .*validation 5 \+ test 5 days"):
        assign_splits(_frame(10), SPEC, as_of=dt.datetime(2026, 10, 21, tzinfo=dt.UTC))


def _sparse_positives(as_of: pd.Timestamp, positive_days_back: list[int], train_positives: int = 100):
    """Hourly rows; one positive at noon on each of the given days back from E, many in training."""
    df = _hourly(as_of, days=40)
    end = as_of - pd.Timedelta(days=MATURITY)
    y = np.zeros(len(df), dtype="int8")
    back = ((end - df["ts"]) / DAY).to_numpy()
    for d in positive_days_back:
        y[np.flatnonzero((back > d) & (back <= d + 1))[:1]] = 1
    train = np.flatnonzero(back > 20)
    y[train[:train_positives]] = 1
    return df, y


def test_a_test_window_short_of_positives_is_widened_back_a_day_at_a_time():
    as_of = pd.Timestamp("2026-11-11T02:00", tz="UTC")
    # test days 0..4 hold 3 positives, day 5 and 6 one each; validation then needs its own 5
    df, y = _sparse_positives(as_of, [0, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13])
    split = make_split(df, _spec(min_positives=5), y, as_of=as_of.to_pydatetime())
    w = split.windows
    assert w[TEST]["days"] == 7 and w[TEST]["widened_by_days"] == 2 and w[TEST]["positives"] == 5
    assert "held 120 rows and 3 positives" in w[TEST]["widened_because"]
    assert "min_positives asks for 5" in w[TEST]["widened_because"]
    # validation moved back behind the wider test window and kept its 5 days
    assert w[VALIDATION]["days"] == 5 and w[VALIDATION]["positives"] == 5 and w[VALIDATION]["widened_because"] is None
    end = as_of - pd.Timedelta(days=MATURITY)
    assert w[TEST]["start"] == (end - 7 * DAY).isoformat() == w[VALIDATION]["end"]
    assert w[VALIDATION]["start"] == (end - 12 * DAY).isoformat() == w[TRAIN]["end"]
    assert int(y[split.assignment == TEST].sum()) == 5


def test_a_validation_window_short_of_positives_is_widened_behind_the_test_window():
    as_of = pd.Timestamp("2026-11-11T00:00", tz="UTC")
    df, y = _sparse_positives(as_of, [0, 1, 2, 3, 4, 5, 7, 9, 11, 13])  # validation days 5..9: 3 positives
    w = make_split(df, _spec(min_positives=5), y, as_of=as_of.to_pydatetime()).windows
    assert w[TEST]["days"] == 5 and w[TEST]["widened_because"] is None
    assert w[VALIDATION]["days"] == 9 and w[VALIDATION]["positives"] == 5
    assert "3 positives" in w[VALIDATION]["widened_because"]


def test_a_window_that_cannot_be_widened_enough_is_an_error_naming_it():
    as_of = pd.Timestamp("2026-11-11T00:00", tz="UTC")
    df, y = _sparse_positives(as_of, [1], train_positives=3)  # widening would take training below 60
    with pytest.raises(SplitError) as err:
        make_split(df, SPEC, y, as_of=as_of.to_pydatetime())
    msg = str(err.value)
    end = as_of - pd.Timedelta(days=MATURITY)
    assert msg.startswith(
        f"test split [{(end - 5 * DAY).isoformat()}, {end.isoformat()}) holds 120 rows and 1 positives"
    )
    assert "training.split.min_positives asks for at least 5 positives" in msg
    assert "diagnosis.min_train_positives" in msg


def test_healthy_windows_are_not_widened():
    as_of = pd.Timestamp("2026-11-11T02:00", tz="UTC")
    df = _hourly(as_of, days=40)
    y = (np.arange(len(df)) % 10 == 0).astype("int8")
    w = make_split(df, SPEC, y, as_of=as_of.to_pydatetime()).windows
    assert w[TEST]["widened_by_days"] == w[VALIDATION]["widened_by_days"] == 0
    assert w[TEST]["positives"] >= 5 and w[VALIDATION]["positives"] >= 5


def test_a_training_part_of_one_class_is_an_error():
    df = _frame(20)
    y = np.zeros(len(df), dtype="int8")
    y[-40:] = 1  # positives only in the last 10 days
    y[-1] = 0
    y[-21] = 0
    with pytest.raises(SplitError, match=r"train split .* 0 positives .*cannot learn from one class"):
        make_split(df, _spec(min_positives=1, diagnosis__min_train_positives=0), y)


# --- random split ---------------------------------------------------------------------------------
def test_random_split_is_seeded_and_stratified():
    spec = _random_spec()
    rng = np.random.default_rng(0)
    y = (rng.random(10_000) < 0.05).astype(int)
    df = pd.DataFrame({"x": rng.random(10_000)})
    a, b = assign_splits(df, spec, y), assign_splits(df, spec, y)
    assert (a == b).all()
    for part, share in ((TEST, spec.training.split.test_share), (VALIDATION, spec.training.split.validation_share)):
        assert abs((a == part).mean() - share) < 0.01
        assert abs(y[a == part].mean() - y.mean()) < 0.005  # same positive rate in every split
    w = make_split(df, spec, y).windows
    assert w["kind"] == "random" and w[TEST]["rows"] == (a == TEST).sum() and w[TEST]["positives"] > 0


def test_a_random_split_is_a_property_of_the_rows_not_of_the_training_seed():
    """The test rows are the same whatever ``training.seed`` is, in whatever order the rows come,
    and mostly the same when rows are added; ``training.split.seed`` draws another split; identical
    rows land in one part."""
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.normal(size=2_000).round(3), "c": rng.choice(["a", "b", None], 2_000)})
    y = (rng.random(2_000) < 0.1).astype(int)
    df["target"] = y
    spec = _random_spec()
    base = assign_splits(df, spec, y)
    other_seed = spec.model_copy(update={"training": spec.training.model_copy(update={"seed": spec.training.seed + 1})})
    assert (assign_splits(df, other_seed, y) == base).all()
    # the same rows shuffled: each row keeps its part
    perm = rng.permutation(len(df))
    shuffled = assign_splits(df.iloc[perm].reset_index(drop=True), spec, y[perm])
    assert (shuffled == base[perm]).all()
    # 5 % more rows: the old rows' parts barely move (only rows at a boundary)
    more = pd.concat([df, df.sample(100, random_state=3).assign(x=lambda d: d["x"] + 1000)], ignore_index=True)
    grown = assign_splits(more, spec, more["target"].to_numpy())[: len(df)]
    assert (grown != base).mean() < 0.06
    # another split seed: another split, still stratified
    split2 = spec.training.split.model_copy(update={"seed": 5})
    reseeded = spec.model_copy(update={"training": spec.training.model_copy(update={"split": split2})})
    again = assign_splits(df, reseeded, y)
    assert (again != base).mean() > 0.2 and abs(y[again == TEST].mean() - y.mean()) < 0.01
    # duplicated rows are never split across parts away from a boundary
    dup = pd.concat([df.iloc[:300], df.iloc[:300]], ignore_index=True)
    parts = assign_splits(dup, _random_spec("regression"), np.arange(600.0))
    assert (parts[:300] != parts[300:]).sum() <= 2


def test_a_random_split_without_positives_in_a_part_is_an_error():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])  # 2 positives: 0.2 of them rounds to none
    with pytest.raises(SplitError, match=r"validation split \(random by row values, share 0.2 of 10 rows.*0 positives"):
        assign_splits(pd.DataFrame({"x": range(10)}), _random_spec(), y)


def test_a_random_regression_split_needs_two_rows_per_part():
    spec = _random_spec("regression")
    with pytest.raises(SplitError, match="would hold 1 rows: a regression metric needs at least 2"):
        assign_splits(pd.DataFrame({"x": range(3)}), spec, np.array([1.0, 2.0, 3.0]))
    assert (assign_splits(pd.DataFrame({"x": range(10)}), spec, np.arange(10.0)) == TEST).sum() == 2


# --- labels ---------------------------------------------------------------------------------------
def test_target_vector_reads_string_labels():
    spec = parse_spec({**CARD, "problem": {**CARD["problem"], "positive_label": "Yes"}})
    assert target_vector(pd.Series(["Yes", " yes", "No", "YES "]), spec).tolist() == [1, 1, 0, 1]


def test_target_vector_refuses_missing_labels():
    spec = parse_spec({**CARD, "problem": {**CARD["problem"], "positive_label": "Yes"}})
    with pytest.raises(MissingTargetError, match="2 of 3 rows have no value in target column 'churn'"):
        target_vector(pd.Series(["Yes", None, "  "], name="churn"), spec)


@pytest.mark.parametrize(
    ("values", "label", "expected"),
    [
        ([1, 0, 1], 1, [True, False, True]),
        ([1.0, 0.0, np.nan], "1", [True, False, False]),
        (["1", "0", "1.0"], 1, [True, False, True]),
        ([True, False, True], 1, [True, False, True]),
        (pd.array([True, None, False], dtype="boolean"), True, [True, False, False]),
        (["true", "False", " TRUE "], True, [True, False, True]),
        (["1", "0", "x"], True, [True, False, False]),
        (["Yes", " yes ", "no"], "yes", [True, True, False]),
        ([1, 0, 1], "yes", [False, False, False]),
        (["Y", "N", None], "Y", [True, False, False]),
    ],
)
def test_positive_label_is_compared_one_way(values, label, expected):
    assert positive_mask(pd.Series(values), label).tolist() == expected


def test_label_key_forms():
    assert label_key(1) == label_key("1") == label_key(" 1.0 ") == label_key(True) == label_key("true") == 1.0
    assert label_key("Yes") == label_key(" yES ") == "yes"
    assert label_key(None) is label_key(np.nan) is label_key("  ") is label_key(pd.NA) is None


def test_describe_values_lists_the_most_frequent_with_counts():
    s = pd.Series(["N"] * 880 + ["Y"] * 120 + [None] * 3)
    assert describe_values(s) == "'N' (880), 'Y' (120)"
    assert describe_values(pd.Series(np.arange(12) % 12), limit=2).endswith("... (10 more)")
    assert describe_values(pd.Series([1, 1, 0])) == "1 (2), 0 (1)"


# --- regression target transforms -----------------------------------------------------------------
DIABETES = yaml.safe_load((PROJECT_ROOT / "include" / "problems" / "diabetes.yaml").read_text())


def _diabetes(transform: str) -> object:
    data = json.loads(json.dumps(DIABETES))
    data["problem"]["target_transform"] = transform
    return parse_spec(data)


def test_transform_and_inverse_are_one_pair() -> None:
    y = np.array([0.5, 1.0, 10.0, 3e5])
    for name, forward in (("log", np.log), ("log1p", np.log1p), ("none", lambda v: v)):
        z = transform_target(y, name)
        np.testing.assert_allclose(z, forward(y))
        np.testing.assert_allclose(inverse_target(z, name), y, rtol=1e-12)
    assert np.isfinite(inverse_target(np.array([1e6]), "log")).all()  # capped, not inf
    np.testing.assert_allclose(transform_target(np.array([-0.5, 0.0]), "log1p"), np.log1p([-0.5, 0.0]))


@pytest.mark.parametrize(
    ("transform", "values", "rule"),
    [
        ("log", [3.0, 0.0, -2.0, 5.0], "log needs every value > 0"),
        ("log1p", [3.0, -1.0, 5.0, -4.0], "log1p needs every value > -1"),
        ("log", [3.0, np.inf, 5.0, 1.0], "log needs every value > 0 (and finite)"),
    ],
)
def test_a_target_outside_its_transform_is_a_clear_error(transform: str, values: list[float], rule: str) -> None:
    spec = _diabetes(transform)
    with pytest.raises(
        TargetTransformError, match=re.escape(f"target column 'target': problem.target_transform {rule}")
    ):
        target_vector(pd.Series(values, name="target"), spec)
    assert issubclass(TargetTransformError, TargetError) and issubclass(MissingTargetError, TargetError)


def test_target_vector_keeps_the_original_scale_under_a_transform() -> None:
    y = target_vector(pd.Series([1.0, 20.0, 300.0], name="target"), _diabetes("log"))
    np.testing.assert_array_equal(y, [1.0, 20.0, 300.0])  # the job transforms; the channels keep the truth
    target_vector(pd.Series([0.0, -0.5], name="target"), _diabetes("log1p"))  # log1p admits 0 and > -1


def test_a_binary_problem_has_no_target_transform() -> None:
    data = json.loads(json.dumps(CARD))
    data["problem"]["target_transform"] = "log"
    with pytest.raises(SpecError, match="problem.target_transform log applies to regression targets only"):
        parse_spec(data)
    with pytest.raises(SpecError, match="problem.target_transform"):
        _diabetes("sqrt")
