"""Generality with no code: the extra shipped specs on scikit-learn's bundled data sets, and a
messy customer CSV (mixed types, missing values, "Yes"/"No" labels, bad rows) declared only in
YAML; plus the two ways a run must refuse to deploy: a goal that cannot be met, and a
candidate that meets the goal but is worse than the champion."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pandas as pd
import pytest

from include.lifecycle.spec import load_spec
from tests.integration.dagrun import ROOT, artifacts, read_json, run_dag, write_spec

pytestmark = pytest.mark.integration

LOGICAL_DATE = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _check_consistent(summary: dict, spec) -> None:
    """The decision follows from the recorded evidence, whatever the numbers are."""
    rounds = summary["rounds"]
    assert 1 <= len(rounds) <= spec.max_rounds
    for r in rounds:
        assert r["meets_goal"] == spec.goal.met_by(r["test_score"])
    if summary["decision"] == "deployed":
        assert rounds[-1]["meets_goal"]
        assert summary["champion_after"] == summary["model_version"]
    else:
        assert summary["decision"] == "goal_not_met"
        assert len(rounds) == spec.max_rounds or not rounds[-1]["meets_goal"] or rounds[-1].get("deploy") is False
        assert summary["champion_after"] == summary["champion_before"]
    for later in rounds[1:]:
        assert later["plan"]["remedy"] in {"tune_model", "augment_features", "augment_data"}


@pytest.mark.parametrize("problem", ["breast_cancer", "diabetes"])
def test_shipped_extra_specs_run_end_to_end(airflow_db, problem):
    spec = load_spec(ROOT / "include" / "problems" / f"{problem}.yaml")
    state, _, run_dir = run_dag(problem, LOGICAL_DATE)
    assert state == "success"
    s = read_json(run_dir / "run_summary.json")
    _check_consistent(s, spec)
    assert s["problem"] == problem
    assert (run_dir / "report.html").stat().st_size > 10_000
    c = read_json(run_dir / "collect_summary.json")
    assert c["rows_in"] == {"breast_cancer": 569, "diabetes": 442}[problem] == c["rows_curated"]
    ev = read_json(run_dir / "round_1" / "evaluation.json")
    if spec.is_binary:
        assert {"roc_auc", "auprc", "precision", "recall", "f1"} <= set(ev["test_metrics"])
        assert ev["test_metrics"]["roc_auc"] > 0.9  # a real model, not a constant
    else:
        assert {"rmse", "mae", "r2"} <= set(ev["test_metrics"])
        assert ev["test_metrics"]["r2"] > 0.2
        assert ev["test_score"] > ev["baselines"]["predict the training mean"]


# --- a messy CSV declared only in YAML ---------------------------------------------------------
def make_customers(n: int = 4000, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    contract = rng.choice(["month-to-month", "one_year", "two_year"], n, p=[0.5, 0.3, 0.2])
    tenure = rng.integers(0, 72, n).astype("float")
    charges = np.round(rng.uniform(20, 120, n), 2)
    internet = rng.choice(["dsl", "fiber", "none"], n)
    calls = rng.poisson(1.5, n)
    logit = (
        -1.2
        + 2.2 * (contract == "month-to-month")
        - 0.05 * tenure
        + 0.012 * (charges - 70)
        + 0.6 * calls
        + 0.9 * (internet == "fiber")
    )
    churned = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "Yes", "No")
    df = pd.DataFrame(
        {
            "customer_id": [f"C{100000 + i}" for i in range(n)],
            "tenure_months": tenure,
            "monthly_charges": charges,
            "contract": contract,
            "internet": internet,
            "support_calls": calls,
            "churned": churned,
        }
    )
    # missing values in numeric and categorical columns
    for col, share in (("tenure_months", 0.03), ("monthly_charges", 0.05), ("internet", 0.04)):
        df.loc[rng.random(n) < share, col] = None
    # rows that break the declared schema: quarantined with their rule
    df.loc[5, "tenure_months"] = -3
    df.loc[6, "contract"] = "weekly"
    df.loc[7, "churned"] = None
    return df


CHURN_SPEC = {
    "name": "churn",
    "title": "Customer churn (messy CSV)",
    "owner": "growth-ml",
    "tags": ["churn", "test"],
    "schedule": None,
    "max_rounds": 2,
    "goal": {
        "statement": "Find customers about to leave so retention can call them first.",
        "metric": "roc_auc",
        "target": 0.62,
        "champion_margin": 0.01,
    },
    "problem": {"type": "binary_classification", "target": "churned", "positive_label": "Yes"},
    "data": {"source": "customers/customers.csv", "format": "csv", "layout": "single_file", "key": "customer_id"},
    "schema": {
        "max_quarantine_share": 0.01,
        "columns": [
            {"name": "customer_id", "dtype": "string", "nullable": False, "pii": True},
            {"name": "tenure_months", "dtype": "int", "min": 0, "max": 120},
            {"name": "monthly_charges", "dtype": "float", "min": 0},
            {
                "name": "contract",
                "dtype": "category",
                "nullable": False,
                "allowed": ["month-to-month", "one_year", "two_year"],
            },
            {"name": "internet", "dtype": "category"},
            {"name": "support_calls", "dtype": "int", "nullable": False, "min": 0},
            {"name": "churned", "dtype": "string", "nullable": False, "allowed": ["Yes", "No"]},
        ],
    },
    "quality": {"min_rows": 500, "min_positives": 50},
    "features": {
        "initial": ["service", "account"],
        "groups": [
            {"name": "service", "kind": "raw", "columns": ["internet", "support_calls"]},
            {"name": "account", "kind": "raw", "columns": ["tenure_months", "monthly_charges", "contract"]},
        ],
    },
    "training": {
        "seed": 1,
        "trials_per_candidate": 1,
        "split": {"validation_share": 0.2, "test_share": 0.25},
        "candidates": [
            {"family": "logistic", "params": {"C": 1.0}},
            {"family": "xgboost", "params": {"n_estimators": 150, "max_depth": 3, "learning_rate": 0.1}},
        ],
    },
    "diagnosis": {"max_gap": 0.2, "min_train_positives": 20},
}


@pytest.fixture(scope="module")
def churn_env(session_tmp):
    csv = session_tmp / "data" / "customers" / "customers.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    make_customers().to_csv(csv, index=False)
    return {"csv": csv, "problems": session_tmp / "churn-problems"}


def test_messy_csv_runs_with_yaml_only_and_becomes_champion(airflow_db, churn_env):
    before = churn_env["csv"].read_bytes()
    write_spec(churn_env["problems"], CHURN_SPEC)
    state, run_id, run_dir = run_dag("churn", LOGICAL_DATE, problems_dir=churn_env["problems"])
    assert state == "success"
    assert churn_env["csv"].read_bytes() == before  # input never modified

    c = read_json(run_dir / "collect_summary.json")
    assert c["rows_in"] == 4000 == c["rows_curated"] + c["rows_quarantined"]
    assert c["rows_quarantined"] == 3
    # the row without a label is quarantined as such, never trained on as a "No"
    assert c["by_rule"] == {"min:0": 1, "allowed": 1, "target_missing": 1}, c["by_rule"]
    ds = pd.read_parquet(run_dir / "dataset.parquet")
    assert not ds["customer_id"].str.startswith("C1").any()  # PII tokenised
    assert ds["tenure_months"].isna().sum() > 0  # missing values kept for the imputer, not dropped

    s = read_json(run_dir / "run_summary.json")
    assert s["decision"] == "deployed", s["reason"]
    assert s["model_version"] == 1 and s["champion_after"] == 1
    ev = read_json(run_dir / "round_1" / "evaluation.json")
    assert ev["test_score"] >= CHURN_SPEC["goal"]["target"]
    assert 0 < ev["test_metrics"]["precision"] <= 1

    # a retried deploy_model (same run) re-uses its version: no duplicate, champion unchanged
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.store import Store
    from ml_lifecycle import sections

    os.environ["ML_PROBLEMS_DIR"] = str(churn_env["problems"])
    try:
        again = sections.deploy_model("churn", run_id=run_id, data_interval_end=LOGICAL_DATE, params={})
    finally:
        os.environ.pop("ML_PROBLEMS_DIR", None)
    assert again["decision"] == "deployed" and again["version"] == 1
    reg = ModelRegistry(Store.from_uri(artifacts("churn").as_uri()), "churn")
    assert reg.versions() == [1]
    assert reg.champion()["version"] == 1 and reg.champion()["previous"] is None


def test_candidate_worse_than_champion_is_not_deployed(airflow_db, churn_env):
    # same problem, but this run may only use the weaker service features: it meets the goal,
    # and the champion (all features) is better on the very same test rows
    weaker = {**CHURN_SPEC, "features": {**CHURN_SPEC["features"], "initial": ["service"]}}
    write_spec(churn_env["problems"], weaker)
    try:
        state, _, run_dir = run_dag("churn", LOGICAL_DATE, problems_dir=churn_env["problems"], conf={"max_rounds": 1})
    finally:
        write_spec(churn_env["problems"], CHURN_SPEC)
    assert state == "success"
    ev = read_json(run_dir / "round_1" / "evaluation.json")
    d = ev["decision"]
    assert d["meets_goal"] is True, d
    assert d["no_worse_than_champion"] is False and d["deploy"] is False, d
    assert ev["champion_version"] == 1 and ev["champion_score"] > ev["test_score"] + 0.01
    s = read_json(run_dir / "run_summary.json")
    assert s["decision"] == "champion_kept"  # the goal is met: the champion is kept, not "goal not met"
    assert s["champion_before"] == 1 and s["champion_after"] == 1 and s["model_version"] is None
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.store import Store

    reg = ModelRegistry(Store.from_uri(artifacts("churn").as_uri()), "churn")
    assert reg.versions() == [1]
    assert reg.champion()["version"] == 1


def test_a_goal_that_cannot_be_met_ends_in_goal_not_met_and_deploys_nothing(airflow_db, churn_env):
    impossible = {
        **CHURN_SPEC,
        "name": "churn_impossible",
        "goal": {**CHURN_SPEC["goal"], "target": 0.999},
        "features": {**CHURN_SPEC["features"], "initial": ["service"]},
    }
    write_spec(churn_env["problems"], impossible)
    state, _, run_dir = run_dag("churn_impossible", LOGICAL_DATE, problems_dir=churn_env["problems"])
    assert state == "success"
    s = read_json(run_dir / "run_summary.json")
    assert s["decision"] == "goal_not_met"
    assert len(s["rounds"]) == impossible["max_rounds"]
    assert not any(r["meets_goal"] for r in s["rounds"])
    assert s["rounds"][1]["plan"]["remedy"] in {"tune_model", "augment_features", "augment_data"}
    assert s["model_version"] is None and s["champion_after"] is None
    assert "not met" in s["reason"]
    assert not (artifacts("churn_impossible") / "registry" / "versions").exists() or not any(
        (artifacts("churn_impossible") / "registry" / "versions").iterdir()
    )
    outcome = read_json(run_dir / "outcome.json")
    assert outcome["decision"] == "goal_not_met"


def test_unfit_data_stops_the_run_at_the_quality_gate(airflow_db, churn_env):
    # tenure_months and monthly_charges miss 3% and 5% of their values: more than this spec allows
    unfit = {**CHURN_SPEC, "name": "churn_unfit", "quality": {"min_rows": 500, "max_missing_share": 0.02}}
    write_spec(churn_env["problems"], unfit)
    state, _, run_dir = run_dag("churn_unfit", LOGICAL_DATE, problems_dir=churn_env["problems"])
    assert state == "failed"
    verdict = read_json(run_dir / "eda" / "verdict.json")
    assert verdict["verdict"] == "unfit"
    assert verdict["failed"] == ["max_missing_share"]
    detail = next(c["detail"] for c in verdict["checks"] if c["name"] == "max_missing_share")
    assert "monthly_charges" in detail
    assert (run_dir / "eda" / "eda_report.html").exists()  # the person fixing the data gets the report
    # nothing was engineered or trained on unfit data (only round 1's plan had been written)
    assert [p.name for p in (run_dir / "round_1").iterdir()] == ["plan.json"]


def test_too_few_positives_stops_the_run_when_the_problem_is_formulated(airflow_db, churn_env):
    unfit = {**CHURN_SPEC, "name": "churn_rare", "quality": {"min_rows": 500, "min_positives": 100_000}}
    write_spec(churn_env["problems"], unfit)
    state, _, run_dir = run_dag("churn_rare", LOGICAL_DATE, problems_dir=churn_env["problems"])
    assert state == "failed"
    assert not (run_dir / "collect_summary.json").exists()


def test_a_positive_label_that_matches_no_row_fails_when_the_problem_is_formulated(airflow_db, churn_env):
    wrong = {**CHURN_SPEC, "name": "churn_label", "problem": {**CHURN_SPEC["problem"], "positive_label": "Y"}}
    write_spec(churn_env["problems"], wrong)
    state, _, run_dir = run_dag("churn_label", LOGICAL_DATE, problems_dir=churn_env["problems"])
    assert state == "failed"
    s = read_json(run_dir / "run_summary.json")  # the failed run still explains itself
    assert s["decision"] == "failed" and s["failed_task"] == "formulate_problem"
    assert "positive_label 'Y' matches no value of column 'churned'" in s["error"], s["error"]
    assert "'Yes'" in s["error"] and "'No'" in s["error"]  # the values it saw


def test_the_positive_label_is_compared_the_same_way_everywhere(airflow_db, churn_env):
    # "yes" for data holding "Yes": one rule (text without case or blanks) in every section
    lower = {**CHURN_SPEC, "name": "churn_lower", "problem": {**CHURN_SPEC["problem"], "positive_label": " yes"}}
    write_spec(churn_env["problems"], lower)
    state, _, run_dir = run_dag("churn_lower", LOGICAL_DATE, problems_dir=churn_env["problems"], conf={"max_rounds": 1})
    assert state == "success"
    card = read_json(run_dir / "problem_card.json")
    positives = card["data"]["positives"]
    collect = read_json(run_dir / "collect_summary.json")
    split = read_json(run_dir / "round_1" / "features" / "split.json")
    profile = read_json(run_dir / "eda" / "profile.json")
    assert positives > 500
    assert collect["positives"] == sum(split[p]["positives"] for p in ("train", "validation", "test"))
    assert abs(collect["positives"] - positives) <= 3  # the quarantined rows are the only difference
    assert profile["target"]["positives"] == collect["positives"], profile["target"]
