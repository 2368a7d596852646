"""Targets and the train/validation/test split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from include.lifecycle.dataset import TEST, TRAIN, VALIDATION, SplitError, assign_splits, target_vector
from include.lifecycle.spec import PROJECT_ROOT, parse_spec

CARD = yaml.safe_load((PROJECT_ROOT / "include" / "problems" / "card_fraud.yaml").read_text())
SPEC = parse_spec(CARD)  # time split: validation_days 5, test_days 5


def _frame(days: int, per_day: int = 4, tz: str | None = "UTC") -> pd.DataFrame:
    start = pd.Timestamp("2026-10-01", tz=tz)
    ts = [start + pd.Timedelta(days=d, hours=h * 5) for d in range(days) for h in range(per_day)]
    return pd.DataFrame({"ts": pd.Series(ts).astype(f"datetime64[us{', ' + tz if tz else ''}]")})


@pytest.mark.parametrize("tz", ["UTC", None])
def test_time_split_tests_on_the_latest_days_and_validates_on_the_days_before(tz):
    df = _frame(20, tz=tz)
    split = assign_splits(df, SPEC)
    day = df["ts"].dt.day.to_numpy()
    assert set(day[split == TEST]) == set(range(16, 21))  # Oct 16..20: the last 5 days
    assert set(day[split == VALIDATION]) == set(range(11, 16))
    assert set(day[split == TRAIN]) == set(range(1, 11))
    # the future never trains the past
    assert df["ts"][split == TRAIN].max() < df["ts"][split == VALIDATION].min()
    assert df["ts"][split == VALIDATION].max() < df["ts"][split == TEST].min()


def test_time_split_refuses_too_few_days():
    with pytest.raises(SplitError, match="covers 10 days; the split needs at least 11"):
        assign_splits(_frame(10), SPEC)


def test_random_split_is_seeded_and_stratified():
    data = {**CARD, "data": {k: v for k, v in CARD["data"].items() if k != "time_column"}}
    data["features"] = {"initial": ["transaction"], "groups": [CARD["features"]["groups"][0]]}
    spec = parse_spec(data)
    rng = np.random.default_rng(0)
    y = (rng.random(10_000) < 0.05).astype(int)
    df = pd.DataFrame({"x": rng.random(10_000)})
    a, b = assign_splits(df, spec, y), assign_splits(df, spec, y)
    assert (a == b).all()
    for part, share in ((TEST, spec.training.split.test_share), (VALIDATION, spec.training.split.validation_share)):
        assert abs((a == part).mean() - share) < 0.01
        assert abs(y[a == part].mean() - y.mean()) < 0.005  # same positive rate in every split


def test_target_vector_reads_string_labels():
    spec = parse_spec({**CARD, "problem": {**CARD["problem"], "positive_label": "Yes"}})
    assert target_vector(pd.Series(["Yes", " yes", "No", None]), spec).tolist() == [1, 1, 0, 0]
