"""Every path through the improvement loop can end in a deploy, with the right lineage; a run
that fails still explains itself.

Each test writes a small data set whose signal only the intended remedy can reach, and a spec
whose ``diagnosis`` settings pick that remedy, then runs the whole DAG with ``dag.test()``:

- ``tune_model``: an XOR signal that the logistic model of round 1 cannot express and the
  random forest that tuning adds can;
- ``augment_features``: round 1 sees only noise columns, round 2 adds the feature group that
  carries the signal;
- a fall-through: ``augment_features`` has no group left, so the plan applies ``tune_model``;
- ``augment_data``: daily partitions whose latest training days carry no signal; widening the
  lookback re-collects older days that do (the re-collection's lineage is what gets deployed);
- a failed run (a split that cannot be made): not retried, and the report says which task
  failed and why;
- ``champion_kept``: a candidate that meets the goal while the champion is better ends the run
  at once, without remedy rounds;
- a remedy that cannot change the candidate (a search grid whose every trial was trained) is not
  chosen, and when no remedy can, the loop ends before its last round;
- the best candidate across rounds: a later round made worse by a leaking feature does not replace
  the earlier round's model.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.integration.dagrun import read_json, run_dag, write_spec
from tests.registry_store import registry_of, version_file

pytestmark = pytest.mark.integration

LOGICAL_DATE = dt.datetime(2026, 10, 20, 2, 0, tzinfo=dt.UTC)  # a nightly run at 02:00


def signal_frame(n: int, rng: np.random.Generator, *, signal: bool = True) -> pd.DataFrame:
    """x1, x2 uniform; the label is the XOR of their signs (10 % flipped), unless ``signal`` is
    False (then the label is a coin toss); ``z = x1 * x2`` is that signal as one linear column;
    n1, n2 are noise."""
    x1, x2 = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    y = (x1 * x2 > 0).astype(int)
    y = np.where(rng.random(n) < 0.1, 1 - y, y) if signal else rng.integers(0, 2, n)
    return pd.DataFrame(
        {
            "x1": x1.round(5),
            "x2": x2.round(5),
            "z": (x1 * x2 + rng.normal(0, 0.05, n)).round(5),
            "n1": rng.normal(0, 1, n).round(5),
            "n2": rng.normal(0, 1, n).round(5),
            "label": y,
        }
    )


def base_spec(name: str, source: str, layout: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": f"Loop path test ({name})",
        "schedule": None,
        "max_rounds": 2,
        "goal": {"statement": "Rank positives first.", "metric": "roc_auc", "target": 0.7},
        "problem": {"type": "binary_classification", "target": "label", "positive_label": 1},
        "data": {"source": source, "format": "csv", "layout": layout, "key": "row_id"},
        "schema": {
            "columns": [
                {"name": "row_id", "dtype": "string", "nullable": False},
                {"name": "x1", "dtype": "float", "nullable": False},
                {"name": "x2", "dtype": "float", "nullable": False},
                {"name": "z", "dtype": "float", "nullable": False},
                {"name": "n1", "dtype": "float", "nullable": False},
                {"name": "n2", "dtype": "float", "nullable": False},
                {"name": "label", "dtype": "int", "nullable": False},
            ]
        },
        "quality": {"min_rows": 200, "min_positives": 20, "max_drift_psi": 50.0},
        "features": {
            "initial": ["xy"],
            "groups": [{"name": "xy", "kind": "raw", "columns": ["x1", "x2"]}],
        },
        "training": {
            "seed": 3,
            "trials_per_candidate": 1,
            "initial_candidates": ["logistic"],
            "candidates": [
                {"family": "logistic", "params": {"C": 1.0}, "search": {"C": [1.0]}},
                {"family": "random_forest", "params": {"n_estimators": 60, "max_depth": 6}},
            ],
        },
        # neither overfitting nor too few positives: the shortfall decides the remedy
        "diagnosis": {"max_gap": 1.0, "min_train_positives": 0},
    }


@pytest.fixture(scope="module")
def env(session_tmp: Path) -> dict[str, Path]:
    rng = np.random.default_rng(12)
    data = session_tmp / "data" / "loop_paths"
    static = signal_frame(1500, rng)
    static.insert(0, "row_id", [f"r{i}" for i in range(len(static))])
    (data / "static").mkdir(parents=True, exist_ok=True)
    static.to_csv(data / "static" / "rows.csv", index=False)
    # 40 days of 120 rows ending the day before the run; the 6 newest training days of a 12-day
    # window (the 3 validation and 3 test days come after them) carry no signal
    end = LOGICAL_DATE.date()
    for back in range(1, 41):
        day = end - dt.timedelta(days=back)
        frame = signal_frame(120, rng, signal=not 7 <= back <= 12)
        frame.insert(0, "row_id", [f"{day.isoformat()}-{i}" for i in range(len(frame))])
        seconds = np.sort(rng.integers(0, 86_400, len(frame)))
        frame.insert(
            1, "ts", [(dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=int(s))).isoformat() for s in seconds]
        )
        part = data / "daily" / f"ds={day.isoformat()}"
        part.mkdir(parents=True, exist_ok=True)
        frame.to_csv(part / "part-0.csv", index=False)
    # (own generators from here on, so the data sets above stay as they were)
    # the static rows with w: the XOR signal under more noise (AUC about 0.72 where z has 0.88)
    weak = static.assign(w=(static["x1"] * static["x2"] + np.random.default_rng(99).normal(0, 0.4, len(static))))
    (data / "static_w").mkdir(parents=True, exist_ok=True)
    weak.round(5).to_csv(data / "static_w" / "rows.csv", index=False)
    # 40 days with s: the label plus noise on the training days of a 12-day window (7 to 12 days
    # back), unrelated noise on the 6 newest (the validation and test days): a leaking feature
    leak_rng = np.random.default_rng(7)
    for back in range(1, 41):
        day = end - dt.timedelta(days=back)
        frame = signal_frame(120, leak_rng)
        leaks = back > 6
        frame["s"] = (
            frame["label"] + leak_rng.normal(0, 0.3, len(frame)) if leaks else leak_rng.normal(0.5, 0.58, len(frame))
        ).round(5)
        frame.insert(0, "row_id", [f"{day.isoformat()}-{i}" for i in range(len(frame))])
        seconds = np.sort(leak_rng.integers(0, 86_400, len(frame)))
        frame.insert(
            1, "ts", [(dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=int(s))).isoformat() for s in seconds]
        )
        part = data / "leaky" / f"ds={day.isoformat()}"
        part.mkdir(parents=True, exist_ok=True)
        frame.to_csv(part / "part-0.csv", index=False)
    return {"problems": session_tmp / "loop-problems", "data": data}


def _run(env: dict[str, Path], spec: dict[str, Any]) -> tuple[str, str, Path, dict[str, Any]]:
    write_spec(env["problems"], spec)
    state, run_id, run_dir = run_dag(spec["name"], LOGICAL_DATE, problems_dir=env["problems"])
    summary = read_json(run_dir / "run_summary.json")
    return state, run_id, run_dir, summary


def _assert_deployed_from_round_2(run_dir: Path, run_id: str, summary: dict[str, Any], remedy: str) -> dict:
    assert summary["decision"] == "deployed", summary["reason"]
    rounds = summary["rounds"]
    assert [r["meets_goal"] for r in rounds] == [False, True], [r["test_score"] for r in rounds]
    assert rounds[0]["diagnosis"]["remedy"] == remedy
    assert summary["model_version"] == 1 and summary["champion_after"] == 1
    lineage = registry_of(summary["problem"]).lineage(1)
    assert lineage["run_id"] == run_id and lineage["round"] == 2
    assert (run_dir / "report.html").stat().st_size > 5_000
    return lineage


def test_tune_model_round_deploys(airflow_db, env):
    spec = base_spec("loop_tune", "loop_paths/static/rows.csv", "single_file")
    spec["goal"]["near_goal"] = 1.0  # any shortfall counts as close: tune
    state, run_id, run_dir, s = _run(env, spec)
    assert state == "success"
    _assert_deployed_from_round_2(run_dir, run_id, s, "tune_model")
    plan2 = s["rounds"][1]["plan"]
    assert plan2["remedy"] == "tune_model" and plan2["wide_search"] is True
    assert set(plan2["families"]) == {"logistic", "random_forest"}
    assert s["rounds"][1]["family"] == "random_forest"


def test_augment_features_round_deploys(airflow_db, env):
    spec = base_spec("loop_features", "loop_paths/static/rows.csv", "single_file")
    spec["goal"]["near_goal"] = 0.0  # never "close": both scores low means add features
    spec["features"] = {
        "initial": ["noise"],
        "groups": [
            {"name": "noise", "kind": "raw", "columns": ["n1", "n2"]},
            {"name": "product", "kind": "raw", "columns": ["z"]},
        ],
    }
    state, run_id, run_dir, s = _run(env, spec)
    assert state == "success"
    lineage = _assert_deployed_from_round_2(run_dir, run_id, s, "augment_features")
    assert s["rounds"][1]["plan"]["feature_groups"] == ["noise", "product"]
    assert lineage["feature_groups"] == ["noise", "product"]


def test_exhausted_remedy_falls_through_and_deploys(airflow_db, env):
    spec = base_spec("loop_fallthrough", "loop_paths/static/rows.csv", "single_file")
    spec["goal"]["near_goal"] = 0.0  # augment_features is chosen, but there is no group left
    state, run_id, run_dir, s = _run(env, spec)
    assert state == "success"
    _assert_deployed_from_round_2(run_dir, run_id, s, "augment_features")
    plan2 = s["rounds"][1]["plan"]
    assert plan2["remedy"] == "augment_features"
    assert any("nothing left to give; applied tune_model" in c for c in plan2["changes"]), plan2["changes"]


def daily_spec(name: str) -> dict[str, Any]:
    spec = base_spec(name, "loop_paths/daily", "partitioned")
    spec["data"].update(time_column="ts", lookback_days=12, max_lookback_days=36)
    spec["schema"]["columns"].insert(1, {"name": "ts", "dtype": "timestamp", "nullable": False})
    spec["features"]["groups"][0]["columns"] = ["z"]
    spec["training"]["split"] = {"validation_days": 3, "test_days": 3}
    return spec


def test_augment_data_recollects_and_deploys_with_its_lineage(airflow_db, env):
    spec = daily_spec("loop_data")
    # the rule "too few positives in training -> augment_data" fires on round 1
    spec["diagnosis"]["min_train_positives"] = 100_000
    state, run_id, run_dir, s = _run(env, spec)
    assert state == "success", s.get("reason")
    lineage = _assert_deployed_from_round_2(run_dir, run_id, s, "augment_data")
    plan2 = s["rounds"][1]["plan"]
    assert plan2["lookback_days"] == 24
    # the deployed model's lineage is the re-collection's: 24 daily partitions, not the first 12
    recollected = read_json(run_dir / "round_2" / "collect_summary.json")
    assert lineage["window"] == recollected["window"]
    assert lineage["partitions"] == [p["ds"] for p in recollected["partitions"]]
    assert len(lineage["partitions"]) == 24
    assert lineage["dataset_uri"].endswith(recollected["dataset_rel"])
    assert lineage["rows"] == recollected["dataset_rows"]


def test_a_failed_run_is_not_retried_and_still_reports(airflow_db, env):
    spec = daily_spec("loop_failed")
    spec["data"]["lookback_days"] = 5  # 5 days cannot hold 3 validation + 3 test days + training
    state, run_id, run_dir, s = _run(env, spec)
    assert state == "failed"
    assert s["decision"] == "failed" and s["model_version"] is None
    assert s["failed_task"] == "round_1.feature_engineering"
    assert "train split" in s["error"] and "training.split" in s["error"], s["error"]
    record = read_json(run_dir / "failures" / "round_1.feature_engineering.json")
    assert record["try_number"] == 1  # deterministic: failed at once, no retry
    html = (run_dir / "report.html").read_text()
    assert "round_1.feature_engineering" in html and "training.split" in html
    # the failed run left the registry alone
    assert registry_of("loop_failed").champion() is None


def test_a_damaged_champion_is_reported_and_retraining_replaces_it(airflow_db, env):
    spec = base_spec("loop_damaged", "loop_paths/static/rows.csv", "single_file")
    spec["training"]["initial_candidates"] = ["random_forest"]  # meets the goal in round 1
    state, _, _, first = _run(env, spec)
    assert state == "success" and first["model_version"] == 1, first["reason"]
    registry = registry_of("loop_damaged")
    model_file = next(p for p in version_file(registry, 1).iterdir() if p.name.startswith("model"))
    model_file.write_bytes(b"not the registered model")  # corrupted on disk

    state, run_id, run_dir, second = _run(env, spec)
    assert state == "success", second.get("reason")
    assert second["decision"] == "deployed" and second["model_version"] == 2
    assert second["champion_before"] == 1 and second["champion_after"] == 2
    verdict = read_json(run_dir / "round_1" / "evaluation.json")["decision"]["reason"]
    assert "champion version(s) [1] are damaged" in verdict and "no intact champion" in verdict
    assert registry.versions() == [1, 2] and registry.champion_version() == 2  # no orphan


def test_a_run_dated_before_any_data_says_so(airflow_db, env):
    spec = daily_spec("loop_early")
    write_spec(env["problems"], spec)
    state, _, run_dir = run_dag("loop_early", dt.datetime(2025, 6, 1, tzinfo=dt.UTC), problems_dir=env["problems"])
    assert state == "failed"  # not a silent success that did nothing
    s = read_json(run_dir / "run_summary.json")
    assert s["failed_task"] == "formulate_problem"
    assert "data in window: 0 partitions" in s["error"], s["error"]


def _column(name: str) -> dict[str, Any]:
    return {"name": name, "dtype": "float", "nullable": False}


def test_goal_met_but_champion_better_keeps_the_champion_without_remedy_rounds(airflow_db, env):
    spec = base_spec("loop_kept", "loop_paths/static_w/rows.csv", "single_file")
    spec["schema"]["columns"].insert(-1, _column("w"))
    spec["goal"]["target"] = 0.6
    spec["features"] = {
        "initial": ["product"],
        "groups": [
            {"name": "product", "kind": "raw", "columns": ["z"]},
            {"name": "weak", "kind": "raw", "columns": ["w"]},
        ],
    }
    state, _, _, first = _run(env, spec)
    assert state == "success" and first["decision"] == "deployed" and first["model_version"] == 1, first["reason"]
    # the next run may only use the weaker feature: it meets the goal, the champion is better on the same rows
    spec["features"]["initial"] = ["weak"]
    state, _, run_dir, s = _run(env, spec)
    assert state == "success", s.get("reason")
    assert s["decision"] == "champion_kept", s["reason"]
    assert s["model_version"] is None and s["champion_before"] == 1 and s["champion_after"] == 1
    assert len(s["rounds"]) == 1 and s["rounds"][0]["meets_goal"] is True  # max_rounds is 2: no remedy round
    assert s["rounds"][0]["diagnosis"] is None and not (run_dir / "round_2").exists()
    assert "meets the goal but champion version 1 is better" in s["reason"]
    decision = read_json(run_dir / "round_1" / "evaluation.json")["decision"]
    assert decision["meets_goal"] is True and decision["no_worse_than_champion"] is False
    assert read_json(run_dir / "outcome.json")["decision"] == "champion_kept"
    assert "champion_kept" in (run_dir / "report.html").read_text()
    assert registry_of("loop_kept").versions() == [1]


def test_a_remedy_that_cannot_change_the_candidate_is_not_chosen_and_the_loop_ends(airflow_db, env):
    """Logistic regression over a grid its first round trains whole: tuning (the diagnosis) would
    train the same trials again, so round 2 adds the next feature group instead; in round 2 neither
    tuning, a feature group, more history (a single file) nor oversampling (balanced classes) can
    change the candidate, so the run ends there, one round before max_rounds."""
    spec = base_spec("loop_no_repeat", "loop_paths/static/rows.csv", "single_file")
    spec["max_rounds"] = 3
    spec["goal"]["near_goal"] = 1.0  # every shortfall is close: the diagnosis is tune_model
    spec["features"] = {
        "initial": ["xy"],
        "groups": [
            {"name": "xy", "kind": "raw", "columns": ["x1", "x2"]},
            {"name": "noise", "kind": "raw", "columns": ["n1", "n2"]},
        ],
    }
    spec["training"].update(
        trials_per_candidate=5,
        candidates=[{"family": "logistic", "params": {"C": 1.0}, "search": {"C": [0.03, 0.3, 1.0, 3.0, 30.0]}}],
    )
    state, _, run_dir, s = _run(env, spec)
    assert state == "success", s.get("reason")
    assert s["decision"] == "goal_not_met" and s["model_version"] is None
    assert [r["round"] for r in s["rounds"]] == [1, 2] and not (run_dir / "round_3").exists()
    first, second = (r["diagnosis"] for r in s["rounds"])
    assert first["remedy"] == "tune_model" and first["applied"] == "augment_features"
    assert first["skipped"][0].startswith("tune_model: every trial it plans was trained already in round(s) [1]")
    plan2 = s["rounds"][1]["plan"]
    assert plan2["remedy"] == "tune_model" and plan2["feature_groups"] == ["xy", "noise"]
    assert plan2["changes"][0] == "tune_model has nothing left to give; applied augment_features instead"
    assert plan2["trials_per_family"] == 5 and plan2["wide_search"] is False  # the same search as round 1
    assert second["stop"] is True and second["applied"] is None
    assert [x.split(":")[0] for x in second["skipped"]] == ["tune_model", "augment_features", "augment_data"]
    assert "oversampling adds no rows" in second["skipped"][2]
    assert s["reason"].startswith("after 2 round(s) the goal is not met: no remedy can change the candidate")
    # no two rounds ran the same plan
    keys = [
        tuple(json.dumps(r["plan"][k], sort_keys=True) for k in ("feature_groups", "families", "wide_search"))
        for r in s["rounds"]
    ]
    assert len(set(keys)) == len(keys)


def test_a_later_worse_round_does_not_replace_the_earlier_candidate(airflow_db, env):
    """Round 1 (z) misses a high target; round 2 adds s, which leaks the label on the training days
    only, so its trials are worse on the validation days. Round 2 selects round 1's trial: its
    evaluation is round 1's model on the same test rows, and the run ends with it, not with the
    leaking one."""
    spec = daily_spec("loop_best")
    spec["data"]["source"] = "loop_paths/leaky"
    spec["schema"]["columns"].insert(-1, _column("s"))
    spec["goal"].update(target=0.95, near_goal=0.0)  # short of the goal: add the next feature group
    spec["features"]["groups"].append({"name": "leak", "kind": "raw", "columns": ["s"]})
    state, _, run_dir, s = _run(env, spec)
    assert state == "success", s.get("reason")
    assert s["decision"] == "goal_not_met"
    first, second = s["rounds"]
    assert first["diagnosis"]["applied"] == "augment_features"
    assert second["plan"]["feature_groups"] == ["xy", "leak"]
    selection = read_json(run_dir / "round_2" / "selection.json")
    assert selection["compared_rounds"] == [1, 2] and selection["not_comparable"] == {}
    own = selection["round_best"]
    assert own["round"] == 2 and own["validation_score"] < first["validation_score"] - 0.1  # the leak hurts
    assert selection["best"]["round"] == 1 and selection["best"]["trial_id"] == first["best_trial"]
    ev2 = read_json(run_dir / "round_2" / "evaluation.json")
    assert ev2["origin_round"] == 1 and ev2["trial_id"] == first["best_trial"]
    assert second["best_trial"] == first["best_trial"] and second["test_score"] == first["test_score"]
    assert read_json(run_dir / "outcome.json")["test_score"] == first["test_score"]
