"""include/lifecycle/tracking.py against a real MLflow tracking store (SQLite in a temporary folder):
one MLflow run per DAG run with its nested trials, the goal metric and its interval per round as
steps, a retry that adds nothing twice, a failed run logged as FAILED, errors that name the step."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from include.lifecycle import tracking
from include.lifecycle.layout import RunLayout
from include.lifecycle.spec import load_spec
from include.lifecycle.store import Store

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT / "include" / "problems" / "card_fraud.yaml")
METRIC = SPEC.goal.metric
RUN_ID = "scheduled__2026-11-01T02:00:00+00:00"


def _png() -> bytes:
    """A valid 1x1 PNG (the plots are PNG files)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


TRIALS = {
    1: [
        ("r1-logistic-0", "logistic", {"C": 1.0}, 0.63, 0.59),
        ("r1-xgboost-0", "xgboost", {"max_depth": 5}, 1.0, 0.55),
    ],
    2: [
        ("r2-logistic-0", "logistic", {"C": 1.0}, 0.88, 0.89),
        ("r2-xgboost-0", "xgboost", {"max_depth": 7}, 1.0, 0.87),
    ],
}


def _summary(rounds: int = 2, decision: str = "deployed") -> dict[str, Any]:
    tests = {1: (0.58, 0.49, 0.67, False), 2: (0.83, 0.76, 0.89, True)}
    return {
        "problem": SPEC.name,
        "run_id": RUN_ID,
        "as_of": "2026-11-01T02:00:00+00:00",
        "decision": decision,
        "reason": f"{METRIC} 0.8300 meets the goal >= 0.75; no champion yet",
        "model_version": 1 if decision == "deployed" else None,
        "champion_before": None,
        "champion_after": 1 if decision == "deployed" else None,
        "goal": {"metric": METRIC, "target": 0.75, "higher_is_better": True, "max_alert_rate": 0.005},
        "data": {
            "rows_in": 140000,
            "rows_curated": 139916,
            "rows_quarantined": 84,
            "dataset_rows": 99938,
            "positives": 424,
            "window": {"start": "2026-09-27", "end": "2026-11-01", "lookback_days": 35},
        },
        "splits": {
            str(k): {
                "train": {"rows": 59964, "positives": 255},
                "validation": {"rows": 19989, "positives": 71},
                "test": {"rows": 19985, "positives": 98},
            }
            for k in range(1, rounds + 1)
        },
        "rounds": [
            {
                "round": k,
                "plan": {"remedy": None if k == 1 else "augment_features"},
                "best_trial": TRIALS[k][0][0],
                "train_score": TRIALS[k][0][3],
                "validation_score": TRIALS[k][0][4],
                "test_score": tests[k][0],
                "intervals": {METRIC: {"value": tests[k][0], "low": tests[k][1], "high": tests[k][2], "level": 0.95}},
                "goal_check": {"alert_rate": 0.0041},
                "champion_score": None,
                "meets_goal": tests[k][3],
            }
            for k in range(1, rounds + 1)
        ],
        "data_quality": "fit",
        "spec_digest": SPEC.digest(),
    }


def write_run(root: Path, *, rounds: int = 2, decision: str = "deployed", summary: bool = True) -> Store:
    """A run folder as the lifecycle writes it: summary, reports, rounds with trials and plots."""
    store = Store.from_uri(root.as_uri())
    lay = RunLayout(RUN_ID)
    for k in range(1, rounds + 1):
        rnd = lay.round(k)
        store.write_json(rnd.plan, {"round": k, "remedy": None})
        recs = []
        for trial_id, family, params, train, validation in TRIALS[k]:
            rec = {
                "trial_id": trial_id,
                "family": family,
                "params": params,
                "metric": METRIC,
                "train_score": train,
                "validation_score": validation,
                "validation_auprc": validation - 0.1,
                "selection": "holdout",
                "n_train": 59964,
                "n_validation": 19989,
                "n_features": 45,
                "resample": "none",
                "seconds": {"read": 0.03, "cv": 0.0, "fit": 2.5, "total": 2.6},
            }
            store.write_json(f"{rnd.trial_output(trial_id)}/metrics.json", rec)
            recs.append(rec)
        best = max(recs, key=lambda r: r["validation_score"])
        store.write_json(rnd.selection, {"round": k, "trials": recs, "best": best, "round_best": best})
        store.write_json(rnd.evaluation, {"trial_id": best["trial_id"]})
        store.write_bytes(rnd.plot("pr_curve"), _png())
    store.write_text(lay.eda_report, "<!doctype html><p>EDA</p>")
    store.write_text(lay.report, "<!doctype html><p>report</p>")
    if summary:
        store.write_json(lay.run_summary, _summary(rounds, decision))
    return store


@pytest.fixture
def mlflow_store(tmp_path: Path) -> tuple[Any, str]:
    """A client on a SQLite tracking store and an experiment whose artifacts live beside it."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment(SPEC.name, artifact_location=(tmp_path / "mlartifacts").as_uri())
    return client, experiment_id


def _runs(client: Any, experiment_id: str) -> tuple[list[Any], list[Any]]:
    runs = client.search_runs([experiment_id], max_results=1000)
    parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
    return parents, [r for r in runs if tracking.PARENT_TAG in r.data.tags]


def _steps(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_run_is_one_mlflow_run_with_its_trials_nested(tmp_path: Path, mlflow_store) -> None:
    client, exp = mlflow_store
    store = write_run(tmp_path / "artifacts" / SPEC.name)

    got = tracking.log_run(
        client, exp, store, RUN_ID, spec=SPEC, run_conf={"max_rounds": 3, "force_deploy": False}, backend="local"
    )

    parents, children = _runs(client, exp)
    assert [p.info.run_id for p in parents] == [got["mlflow_run_id"]]
    run = client.get_run(got["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == RUN_ID
    tags = run.data.tags
    assert tags[tracking.TAG_DAG_ID] == SPEC.name and tags[tracking.TAG_RUN_ID] == RUN_ID
    assert tags["decision"] == "deployed" and tags["model_version"] == "1"
    assert "**deployed**" in tags["mlflow.note.content"] and "round 2 (augment_features)" in tags["mlflow.note.content"]
    params = run.data.params
    assert params["spec_digest"] == SPEC.digest()
    assert params["as_of"] == "2026-11-01T02:00:00+00:00"
    assert (params["window_start"], params["window_end"], params["lookback_days"]) == ("2026-09-27", "2026-11-01", "35")
    assert (params["rounds"], params["max_rounds"], params["backend"]) == ("2", "3", "local")
    assert params["seed"] == str(SPEC.training.seed) and params["goal_metric"] == METRIC
    # the goal metric with its interval per round, as steps
    assert _steps(client, run.info.run_id, f"test_{METRIC}") == [(1, 0.58), (2, 0.83)]
    assert _steps(client, run.info.run_id, f"test_{METRIC}_low") == [(1, 0.49), (2, 0.76)]
    assert _steps(client, run.info.run_id, f"test_{METRIC}_high") == [(1, 0.67), (2, 0.89)]
    assert _steps(client, run.info.run_id, "goal_met") == [(1, 0.0), (2, 1.0)]
    assert _steps(client, run.info.run_id, "split_test_positives") == [(1, 98.0), (2, 98.0)]
    m = run.data.metrics
    assert (m["data_rows_in"], m["data_rows_accepted"], m["data_rows_quarantined"]) == (140000, 139916, 84)
    assert m["data_rows_in"] == m["data_rows_accepted"] + m["data_rows_quarantined"]
    # every trial a nested run: its params, train and validation scores, fit time, family and round
    assert len(children) == 4 == got["trials"]
    by_trial = {c.data.tags[tracking.TAG_TRIAL_ID]: c for c in children}
    x = by_trial["r2-xgboost-0"]
    assert x.data.tags[tracking.PARENT_TAG] == run.info.run_id and x.info.run_name == "r2-xgboost-0"
    assert x.data.params["family"] == "xgboost" and x.data.params["round"] == "2" and x.data.params["max_depth"] == "7"
    assert x.data.metrics[f"train_{METRIC}"] == 1.0 and x.data.metrics[f"validation_{METRIC}"] == 0.87
    assert x.data.metrics["fit_seconds"] == 2.5 and x.data.metrics["validation_auprc"] == pytest.approx(0.77)
    assert by_trial["r2-logistic-0"].data.tags["selected"] == "true" and x.data.tags["selected"] == "false"
    # the reports, the summary and the plots as artifacts, readable back
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "run_summary.json", "eda", "round_1", "round_2"} <= names
    assert {a.path for a in client.list_artifacts(run.info.run_id, "round_2/plots")} == {"round_2/plots/pr_curve.png"}
    local = client.download_artifacts(run.info.run_id, "run_summary.json", str(tmp_path / "dl"))
    assert json.loads(Path(local).read_text())["decision"] == "deployed"


def test_a_retry_adds_no_run_no_trial_and_no_metric_step_twice(tmp_path: Path, mlflow_store) -> None:
    client, exp = mlflow_store
    store = write_run(tmp_path / "artifacts" / SPEC.name)
    # the registry of deploy_model came first and created the DAG run's MLflow run
    made = tracking.find_or_create_run(client, exp, SPEC.name, RUN_ID, tags={"registered_by": "deploy_model"})

    first = tracking.log_run(client, exp, store, RUN_ID, spec=SPEC)
    again = tracking.log_run(client, exp, store, RUN_ID, spec=SPEC)

    assert first["mlflow_run_id"] == again["mlflow_run_id"] == made
    assert first["new_metric_values"] > 0 and again["new_metric_values"] == 0
    parents, children = _runs(client, exp)
    assert len(parents) == 1 and len(children) == 4
    assert client.get_run(made).data.tags["registered_by"] == "deploy_model"
    assert _steps(client, made, f"test_{METRIC}") == [(1, 0.58), (2, 0.83)]
    for child in children:
        assert len(client.get_metric_history(child.info.run_id, f"validation_{METRIC}")) == 1


def test_a_run_logged_after_one_round_gets_only_the_new_round_on_the_next_logging(tmp_path: Path, mlflow_store) -> None:
    client, exp = mlflow_store
    root = tmp_path / "artifacts" / SPEC.name
    tracking.log_run(client, exp, write_run(root, rounds=1, decision="goal_not_met"), RUN_ID, spec=SPEC)
    got = tracking.log_run(client, exp, write_run(root, rounds=2), RUN_ID, spec=SPEC)

    assert _steps(client, got["mlflow_run_id"], f"test_{METRIC}") == [(1, 0.58), (2, 0.83)]
    assert client.get_run(got["mlflow_run_id"]).data.tags["decision"] == "deployed"
    assert len(_runs(client, exp)[1]) == 4
    # a param that changed is left as MLflow keeps it (params are immutable) and reported
    assert got["param_conflicts"] == ["rounds"]


def test_a_failed_run_is_logged_as_failed_with_its_error(tmp_path: Path, mlflow_store) -> None:
    client, exp = mlflow_store
    store = Store.from_uri((tmp_path / "artifacts" / SPEC.name).as_uri())
    lay = RunLayout(RUN_ID)
    summary = {
        **_summary(0, "failed"),
        "reason": "task collect_and_label failed: InputFileError: file:///x/missing.csv: no such file",
        "failed_task": "collect_and_label",
        "error": "InputFileError: file:///x/missing.csv: no such file",
        "rounds": [],
        "splits": {},
    }
    store.write_json(lay.run_summary, summary)
    store.write_text(lay.report, "<!doctype html><p>failed</p>")

    got = tracking.log_run(client, exp, store, RUN_ID, spec=SPEC)

    run = client.get_run(got["mlflow_run_id"])
    assert run.info.status == "FAILED" and got["trials"] == 0
    assert run.data.tags["decision"] == "failed" and run.data.tags["failed_task"] == "collect_and_label"
    assert "missing.csv" in run.data.tags["error"]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"report.html", "run_summary.json"}


def test_a_run_without_its_summary_is_logged_as_failed_saying_so(tmp_path: Path, mlflow_store) -> None:
    client, exp = mlflow_store
    store = write_run(tmp_path / "artifacts" / SPEC.name, rounds=1, summary=False)

    got = tracking.log_run(client, exp, store, RUN_ID, spec=SPEC)

    run = client.get_run(got["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["decision"] == "failed"
    assert "run_summary.json does not exist" in run.data.tags["reason"]


def test_a_tracking_error_names_the_run_and_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from tests.mlflow_server import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    store = write_run(tmp_path / "artifacts" / SPEC.name, rounds=1)

    with pytest.raises(
        tracking.TrackingError,
        match=r"run 'scheduled__2026-11-01T02:00:00\+00:00' of 'card_fraud'.*find or create the run",
    ):
        tracking.log_run(client, "1", store, RUN_ID, spec=SPEC)


def test_the_ui_address() -> None:
    assert tracking.ui_url({}) == "http://127.0.0.1:5000"
    assert tracking.ui_url({"MLFLOW_PORT": "5055"}) == "http://127.0.0.1:5055"
    assert tracking.ui_url({"MLFLOW_TRACKING_URI": "http://mlflow.internal:8080/"}) == "http://mlflow.internal:8080"
    assert tracking.ui_url({"MLFLOW_TRACKING_URI": "sqlite:///x.db", "ML_MLFLOW_UI_URL": "https://ml.example/"}) == (
        "https://ml.example"
    )
    assert tracking.run_page("http://h:5000", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc"
    assert (
        tracking.model_version_page("http://h:5000/", "card_fraud", 2) == "http://h:5000/#/models/card_fraud/versions/2"
    )
    # a run id with quotes cannot break out of the search filter
    assert tracking.dag_run_filter("d", "a'b") == "tags.`airflow.dag_id` = 'd' and tags.`airflow.run_id` = 'a\\'b'"
