"""The decision does not hang on the seed: the whole lifecycle run twice with different
``training.seed`` values, for the shipped static specs (breast_cancer, diabetes: the seed draws
the models, the cross-validation folds and the bootstrap; the test rows are drawn from the rows'
values, not from the seed, so both runs are judged on the same rows) and for the flagship
(card_fraud on the demo data `make run` uses: the seed draws the models, the trials and the
bootstrap), reaches the same decision, and the goal metric's intervals of the two runs overlap.

diabetes with seeds 42 and 3 is the pair that used to end ``goal_not_met`` while seeds 7 and 1
deployed, when the seed also reshuffled which 88 patients were the test rows.

Each run is its own problem (``<name>_seed<seed>``, the shipped spec with only the name and the
seed changed) so that neither run meets the other's champion: a champion would make the second
run a different question (candidate against champion) from the first (candidate alone)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import yaml

from include.lifecycle import synth
from tests.integration.dagrun import ROOT, read_json, run_dag, write_spec

pytestmark = pytest.mark.integration

LOGICAL_DATE = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _shipped(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "include" / "problems" / f"{name}.yaml").read_text())


def _run_with_seed(problems, base: str, seed: int) -> dict[str, Any]:
    """The shipped spec ``base`` run end to end with ``training.seed = seed`` under its own name;
    its run_summary.json with, under ``test_rows_digests``, the digest of each round's test rows."""
    spec = _shipped(base)
    spec["name"] = f"{base}_seed{seed}"
    spec["training"]["seed"] = seed
    folder = problems / spec["name"]
    write_spec(folder, spec)
    state, _, run_dir = run_dag(spec["name"], LOGICAL_DATE, problems_dir=folder)
    assert state == "success", f"{spec['name']}: run state {state}"
    summary = read_json(run_dir / "run_summary.json")
    summary["test_rows_digests"] = sorted(
        {read_json(p).get("test_rows_digest") for p in run_dir.glob("round_*/evaluation.json")}
    )
    return summary


def _decisive(summary: dict[str, Any]) -> dict[str, Any]:
    """The round whose gate ended the run (the last one evaluated)."""
    return [r for r in summary["rounds"] if r.get("goal_check")][-1]


def _account(summary: dict[str, Any]) -> str:
    """Both runs' rounds, goal checks and comparisons, to say what differs when the decisions do."""
    rounds = [
        {
            "round": r["round"],
            "plan": {
                k: r["plan"].get(k) for k in ("remedy", "feature_groups", "lookback_days", "resample", "families")
            },
            "best_trial": r.get("best_trial"),
            "origin_round": r.get("origin_round"),
            "scores": {k: r.get(k) for k in ("train_score", "validation_score", "test_score")},
            "goal_check": r.get("goal_check"),
            "comparison": r.get("comparison"),
            "verdict": r.get("verdict"),
            "diagnosis": (r.get("diagnosis") or {}).get("reason"),
        }
        for r in summary["rounds"]
    ]
    head = {k: summary.get(k) for k in ("problem", "decision", "reason", "model_version")}
    return json.dumps({**head, "rounds": rounds}, indent=1, default=str)


def _assert_same_decision(a: dict[str, Any], b: dict[str, Any]) -> None:
    accounts = f"\n--- {a['problem']}\n{_account(a)}\n--- {b['problem']}\n{_account(b)}"
    assert a["decision"] != "failed" and b["decision"] != "failed", accounts
    assert a["decision"] == b["decision"], accounts
    ca, cb = _decisive(a)["goal_check"], _decisive(b)["goal_check"]
    ia, ib = ca["interval"], cb["interval"]
    assert ia["low"] <= ca["value"] <= ia["high"] and ib["low"] <= cb["value"] <= ib["high"], accounts
    # the goal metric of the two runs is the same quantity up to noise: the intervals overlap
    assert ia["low"] <= ib["high"] and ib["low"] <= ia["high"], accounts
    assert ca["met"] == cb["met"], accounts


@pytest.mark.parametrize(("base", "seeds"), [("breast_cancer", (42, 7)), ("diabetes", (42, 3))])
def test_a_static_spec_reaches_the_same_decision_with_another_seed(airflow_db, session_tmp, base, seeds):
    problems = session_tmp / "seed-problems"
    a, b = (_run_with_seed(problems, base, seed) for seed in seeds)
    # the training seed is not the split's: both runs were judged on the very same test rows
    assert a["splits"]["1"]["seed"] == b["splits"]["1"]["seed"] == 0
    assert a["test_rows_digests"] == b["test_rows_digests"] and len(a["test_rows_digests"]) == 1
    assert None not in a["test_rows_digests"]
    _assert_same_decision(a, b)


@pytest.fixture(scope="module")
def flagship_landing(session_tmp):
    """The demo data of `make run` and test_flagship_run (the data's own seed stays 7)."""
    root = session_tmp / "data" / "data" / "card_fraud" / "landing"
    synth.generate(root, end=LOGICAL_DATE.date(), days=90, tx_per_day=4000, seed=7)
    return root


def test_the_flagship_reaches_the_same_decision_with_another_seed(airflow_db, session_tmp, flagship_landing):
    problems = session_tmp / "seed-problems"
    a = _run_with_seed(problems, "card_fraud", 42)
    b = _run_with_seed(problems, "card_fraud", 1)
    _assert_same_decision(a, b)
