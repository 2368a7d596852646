"""include/lifecycle/monitoring.py: matured labels joined to scored rows, the realised goal metric
per day and over the window with intervals, and the verdict that asks for retraining."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from include.lifecycle import monitoring
from include.lifecycle.spec import PROJECT_ROOT, Spec, parse_spec

CARD_FRAUD = PROJECT_ROOT / "include" / "problems" / "card_fraud.yaml"
AS_OF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _spec(**monitoring_fields: Any) -> Spec:
    d = yaml.safe_load(CARD_FRAUD.read_text())
    d["monitoring"] = {**d.get("monitoring", {}), **monitoring_fields}
    return parse_spec(d, source="card_fraud-monitoring")


def _scored(days: int, per_day: int, *, caught_until: int, seed: int = 0, fraud_rate: float = 0.05) -> tuple:
    """``days`` days of scored rows ending the day before AS_OF minus 10 days (all matured) and
    their label feed: the champion flags the frauds of the first ``caught_until`` days (recall 0.9)
    and then misses them (recall 0.2); the alert rate stays small."""
    rng = np.random.default_rng(seed)
    end = pd.Timestamp("2026-10-22")
    rows, labels = [], []
    for i in range(days):
        day = end - pd.Timedelta(days=days - i)
        n = per_day
        fraud = rng.random(n) < fraud_rate
        recall = 0.9 if i < caught_until else 0.2
        flagged = (fraud & (rng.random(n) < recall)) | (~fraud & (rng.random(n) < 0.002))
        keys = [f"tx{day:%Y%m%d}-{j:05d}" for j in range(n)]
        times = day + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s")
        rows.append(
            pd.DataFrame(
                {
                    "transaction_id": keys,
                    "ts": times.tz_localize("UTC"),
                    "amount": rng.lognormal(3.5, 0.8, n),
                    "score": np.where(flagged, 0.9, 0.1) + rng.normal(0, 0.01, n),
                    "decision": flagged.astype(int),
                    "model_version": 1,
                }
            )
        )
        labels.append(
            pd.DataFrame(
                {
                    "transaction_id": np.array(keys)[fraud],
                    "reported_at": (times[fraud] + pd.Timedelta(days=3)).tz_localize("UTC"),
                }
            )
        )
    return pd.concat(rows, ignore_index=True), pd.concat(labels, ignore_index=True)


def test_only_matured_rows_are_judged_and_only_labels_that_arrived_count():
    spec = _spec()
    scores, labels = _scored(5, 200, caught_until=5)
    young = scores.iloc[:50].copy()
    young["ts"] = pd.Timestamp(AS_OF) - pd.Timedelta(days=2)  # younger than the 10-day maturity
    late = labels.iloc[:3].copy()
    late["reported_at"] = pd.Timestamp(AS_OF) + pd.Timedelta(hours=1)  # arrives after the monitor's instant
    rows, counts = monitoring.matured_rows(
        pd.concat([scores, young], ignore_index=True), pd.concat([labels.iloc[3:], late]), spec, as_of=AS_OF
    )
    assert counts["rows_scored"] == 1050 and counts["rows_matured"] == 1000 and counts["rows_too_young"] == 50
    assert counts["maturity_days"] == spec.data.labels.maturity_days
    # the three labels that arrive after the instant are negatives now, not positives
    assert counts["positives"] == len(labels) - 3
    assert set(rows[monitoring.DAY].dt.date.astype(str)) == {f"2026-10-{d}" for d in range(17, 22)}


def test_a_sustained_drop_below_the_goal_asks_for_retraining_with_its_evidence():
    spec = _spec(window_days=7, min_positives=20)
    scores, labels = _scored(21, 1500, caught_until=14)
    rows, _ = monitoring.matured_rows(scores, labels, spec, as_of=AS_OF)
    s = monitoring.series(spec, rows, amount_column="amount", seed=3)
    assert len(s["per_day"]) == 21
    early, late = s["per_day"][:14], s["per_day"][14:]
    assert all(d["value"] > spec.goal.target for d in early)
    assert all(d["value"] < spec.goal.target for d in late)
    for d in s["per_day"]:
        assert d["low"] <= d["value"] <= d["high"] and d["model_versions"] == [1]
    w = s["window"]
    assert w["days"] == 7 and w["start"] == late[0]["day"] and w["end"] == late[-1]["day"]
    assert w["high"] < spec.goal.target  # below the goal with confidence
    v = monitoring.verdict(spec, s, drift=None)
    assert v["retrain"] and v["decayed"] and not v["drifted"]
    assert v["evidence"]["window"]["value"] == pytest.approx(w["value"])
    assert "decay" in v["reasons"][0] and spec.goal.metric in v["reasons"][0]
    # the same evidence, but the spec does not retrain on decay: reported, not requested
    quiet = _spec(window_days=7, min_positives=20, retrain_on_decay=False)
    assert not monitoring.verdict(quiet, s, drift=None)["retrain"]
    html = monitoring.render_report(
        "card_fraud",
        {"as_of": AS_OF.isoformat(), "verdict": v, "realised": s, "counts": _ | {}, "champion_version": 1},
        {"realised": monitoring.series_plot(s)},
    )
    assert "RETRAINING REQUESTED" in html and "data:image/png;base64," in html


def test_a_champion_that_meets_its_goal_is_left_alone():
    spec = _spec(window_days=7)
    scores, labels = _scored(14, 1500, caught_until=14, seed=1)
    rows, _ = monitoring.matured_rows(scores, labels, spec, as_of=AS_OF)
    s = monitoring.series(spec, rows, amount_column="amount")
    v = monitoring.verdict(spec, s, drift=None)
    assert s["window"]["low"] > spec.goal.target and not v["retrain"] and not v["decayed"]
    assert "meets the goal" in v["reasons"][0]


def test_too_few_positives_cannot_tell_and_never_triggers():
    spec = _spec(window_days=7, min_positives=500)
    scores, labels = _scored(10, 300, caught_until=0)
    rows, _ = monitoring.matured_rows(scores, labels, spec, as_of=AS_OF)
    s = monitoring.series(spec, rows, amount_column="amount")
    assert s["window"]["value"] is None and "cannot tell" in s["window"]["why"]
    assert all(d["value"] is None for d in s["per_day"])
    v = monitoring.verdict(spec, s, drift=None)
    assert not v["retrain"] and "cannot be judged yet" in v["reasons"][0] and "cannot tell" in v["reasons"][0]


def test_drift_past_the_limit_and_its_noise_triggers_only_when_the_spec_says_so():
    drift = {
        "columns": {"amount": 0.8, "channel": 0.3, "country": 0.05},
        "details": {"amount": {"noise": 0.01}, "channel": {"noise": 0.5}, "country": {"noise": 0.01}},
    }
    s = {"metric": "amount_recall_at_alert_rate", "target": 0.5, "per_day": [], "window": {"value": None}}
    v = monitoring.verdict(_spec(max_drift_psi=0.25, retrain_on_drift=True), s, drift)
    assert v["retrain"] and v["drifted"] == ["amount"]  # channel is above the limit but within its noise
    assert "amount 0.800" in v["reasons"][0]
    assert not monitoring.verdict(_spec(max_drift_psi=0.25), s, drift)["retrain"]  # default: report only


def test_only_the_newest_champion_is_judged_in_the_window():
    spec = _spec(window_days=14, min_positives=20)
    scores, labels = _scored(14, 1500, caught_until=7)
    scores.loc[scores["ts"] >= pd.Timestamp("2026-10-15", tz="UTC"), "model_version"] = 2
    rows, _ = monitoring.matured_rows(scores, labels, spec, as_of=AS_OF)
    s = monitoring.series(spec, rows, amount_column="amount")
    assert s["window"]["model_version"] == 2
    assert s["window"]["rows"] == int((rows["model_version"] == 2).sum())


def test_a_problem_without_a_time_column_cannot_be_monitored():
    spec = _spec()
    scores, labels = _scored(2, 50, caught_until=2)
    with pytest.raises(ValueError, match="time column"):
        monitoring.matured_rows(scores.drop(columns=["ts"]), labels, spec, as_of=AS_OF)


def test_scored_rows_keep_one_row_per_key_the_endpoint_answer_winning() -> None:
    spec = _spec()
    ts = pd.Timestamp("2026-10-01 12:00", tz="UTC")
    batch = pd.DataFrame(
        {
            "transaction_id": ["a", "b", "c"],
            "ts": [ts, ts + pd.Timedelta(hours=1), ts + pd.Timedelta(hours=2)],
            "score": [0.1, 0.2, 0.3],
            "decision": [0, 0, 0],
            "model_version": 1,
        }
    )
    at = pd.Timestamp("2026-10-01 12:00:05", tz="UTC")
    endpoint = pd.DataFrame(
        {
            "transaction_id": ["c", "d", "c", None],
            "ts": [ts + pd.Timedelta(hours=2), ts + pd.Timedelta(hours=3), ts + pd.Timedelta(hours=2), ts],
            "amount": [10.0, 20.0, 10.0, 5.0],
            "score": [0.9, 0.4, 0.8, 0.5],
            "decision": [1, 0, 1, 0],
            "model_version": 2,
            "captured_at": [at + pd.Timedelta(seconds=9), at, at, at],  # c answered twice: the later wins
        }
    )
    rows, counts = monitoring.scored_rows(batch, endpoint, spec)
    assert rows["transaction_id"].tolist() == ["a", "b", "c", "d"]  # in time order
    assert rows["_source"].tolist() == ["batch", "batch", "endpoint", "endpoint"]
    assert rows.set_index("transaction_id").loc["c", "score"] == 0.9
    assert counts == {"rows_batch": 3, "rows_endpoint": 4, "duplicates_dropped": 2, "rows_without_key": 1}
    # either source alone
    assert monitoring.scored_rows(batch, None, spec)[0]["transaction_id"].tolist() == ["a", "b", "c"]
    assert monitoring.scored_rows(None, endpoint, spec)[1]["duplicates_dropped"] == 1
    with pytest.raises(ValueError, match="no scored rows"):
        monitoring.scored_rows(None, None, spec)
