"""Serving the champion from Airflow: the batch-scoring DAG (dags/batch_scoring.py) scores one
landing partition of new, unlabelled transactions with the champion in ``dag.test()``, one score
per valid input row with its inputs captured (spec serving.capture) and the PII as the curated
tokens, idempotent per partition; the aws backend without aws settings fails clearly;
and deploy_model's notification makes a running endpoint load the new champion.

The test has its own artifact root (variable ml_artifact_root) and data root, so its champion
never meets the flagship test's registry."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from include.lifecycle import synth
from include.lifecycle.collect import curate_partition, read_partition_files
from include.lifecycle.registry import ModelRegistry
from include.lifecycle.spec import load_spec
from include.lifecycle.store import Store
from tests.integration.dagrun import ROOT, content_hash, run_dag
from tests.unit.test_bundle import _build_bundle_files, _transactions

pytestmark = pytest.mark.integration

SPEC = load_spec(ROOT / "include" / "problems" / "card_fraud.yaml")
DAG_ID = "card_fraud_batch_scoring"
LOGICAL_DATE = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)  # scores ds=2026-11-01, the last whole day
THRESHOLD = 0.5


@pytest.fixture(scope="module")
def env(session_tmp: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = session_tmp / "batch-scoring"
    artifacts, data = base / "artifacts", base / "data"
    landing = data / "data" / "card_fraud" / "landing"
    # ten days of new transactions, a few broken rows on purpose
    synth.generate(landing, end=LOGICAL_DATE.date(), days=10, tx_per_day=300, seed=11, defect_rate=0.02)
    registry = ModelRegistry(Store.from_uri(f"file://{artifacts}/card_fraud"), "card_fraud")
    files, _, _ = _build_bundle_files(
        SPEC,
        _transactions(3000, seed=1),
        "xgboost",
        {"n_estimators": 30, "max_depth": 3},
        tmp_path_factory.mktemp("bundle"),
        threshold=THRESHOLD,
    )
    registry.promote(registry.register(files, {"problem": "card_fraud"}), run_id="test", expected_champion=None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_VAR_ML_ARTIFACT_ROOT", str(artifacts))
        mp.setenv("ML_DATA_ROOT", str(data))
        yield {"artifacts": artifacts / "card_fraud", "landing": landing / "transactions", "registry": registry}


def test_batch_dag_scores_one_partition_once_per_row_without_pii(airflow_db, env) -> None:
    state, _, _ = run_dag(DAG_ID, LOGICAL_DATE)
    assert state == "success"
    folder = env["artifacts"] / "scores" / "ds=2026-11-01"
    scores = pd.read_parquet(folder / "part-0.parquet")
    manifest = json.loads((folder / "_manifest.json").read_text())
    # the day's capture: key, time, the model's inputs (curated), the answer
    assert list(scores.columns) == [
        "transaction_id", "ts", "card_number", "merchant_id", "merchant_category", "amount", "channel", "country",
        "score", "decision", "model_version",
    ]  # fmt: skip

    # one score per valid input row; the broken rows are counted, not lost
    raw = pd.concat(
        [df for _, df in read_partition_files(Store.from_uri(str(env["landing"])), "2026-11-01", "parquet")]
    )
    _, quarantined, counts = curate_partition(
        read_partition_files(Store.from_uri(str(env["landing"])), "2026-11-01", "parquet"),
        SPEC,
        pii_key=os.environ["AIRFLOW_VAR_ML_PII_HASH_KEY"].encode(),
    )
    assert manifest["rows_in"] == len(raw) == counts["rows_in"]
    assert manifest["rows_quarantined"] == len(quarantined) > 0
    assert manifest["rows_scored"] == len(scores) == len(raw) - len(quarantined)
    assert scores["transaction_id"].is_unique
    assert set(scores["transaction_id"]) <= set(raw["transaction_id"].astype(str))
    assert scores["ts"].min() >= pd.Timestamp("2026-11-01", tz="UTC") > scores["ts"].max() - pd.Timedelta(days=1)
    assert scores["ts"].is_monotonic_increasing
    assert manifest["history_partitions"] == 9 and manifest["history_rows"] > 2000

    # the champion's scores and decisions
    assert set(scores["model_version"]) == {1} and manifest["model_version"] == 1
    assert scores["score"].between(0, 1).all() and scores["score"].nunique() > 10
    np.testing.assert_array_equal(scores["decision"].to_numpy(dtype=int), (scores["score"] >= THRESHOLD).astype(int))
    assert manifest["flagged"] == int(scores["decision"].sum())

    # the inputs as the curated data has them: the card number as its token, no raw card number anywhere
    curated, _, _ = curate_partition(
        read_partition_files(Store.from_uri(str(env["landing"])), "2026-11-01", "parquet"),
        SPEC,
        pii_key=os.environ["AIRFLOW_VAR_ML_PII_HASH_KEY"].encode(),
    )
    mine = curated.set_index("transaction_id").loc[scores["transaction_id"]]
    assert scores["card_number"].tolist() == mine["card_number"].tolist()
    np.testing.assert_allclose(scores["amount"].to_numpy(), mine["amount"].to_numpy())
    cards = set(raw["card_number"].dropna().astype(str))
    for col in scores.columns:
        assert not set(scores[col].astype(str)) & cards, col
    assert not any(c in (folder / "_manifest.json").read_text() for c in list(cards)[:200])

    # idempotent: a re-run for the same day replaces the partition with the same content
    first = content_hash(scores)
    state, _, _ = run_dag(DAG_ID, LOGICAL_DATE)
    assert state == "success"
    assert content_hash(pd.read_parquet(folder / "part-0.parquet")) == first
    assert sorted(p.name for p in folder.iterdir()) == ["_manifest.json", "part-0.parquet"]


def test_batch_dag_scores_the_day_given_as_param(airflow_db, env) -> None:
    state, _, _ = run_dag(DAG_ID, LOGICAL_DATE, conf={"ds": "2026-10-28"})
    assert state == "success"
    manifest = json.loads((env["artifacts"] / "scores" / "ds=2026-10-28" / "_manifest.json").read_text())
    assert manifest["ds"] == "2026-10-28" and manifest["rows_scored"] > 250
    assert manifest["history_partitions"] == 5  # the generated data starts on 2026-10-23


def test_batch_scoring_on_aws_without_aws_settings_fails_and_writes_nothing(airflow_db, env, capfd) -> None:
    """The shipped card_fraud spec has no aws section: asking for aws fails clearly (the transform
    job itself is tested against the emulator in tests/aws)."""
    state, _, _ = run_dag(DAG_ID, LOGICAL_DATE, conf={"ds": "2026-10-27", "backend": "aws"})
    assert state == "failed"
    out, err = capfd.readouterr()
    assert "backend aws needs aws.bucket and aws.role_arn" in out + err
    assert not (env["artifacts"] / "scores" / "ds=2026-10-27").exists()


def test_deploy_notification_makes_the_endpoint_load_the_new_champion(airflow_db, env, monkeypatch) -> None:
    from include.lifecycle.serving import make_server
    from ml_lifecycle.endpoint import notify_serving

    registry: ModelRegistry = env["registry"]
    server = make_server("card_fraud", artifact_root=str(env["artifacts"].parent), spec=SPEC, port=0, poll_seconds=None)
    server.start()
    try:
        assert server.holder.current.version == 1
        version = registry.register(registry.load(1), {"problem": "card_fraud"})
        registry.promote(version, run_id="test-2", expected_champion=1)
        monkeypatch.setenv("ML_SERVING_URL", server.url)
        answer = notify_serving("card_fraud", version)
        assert answer["notified"] is True and answer["model_version"] == version == 2
        assert server.holder.current.version == 2
    finally:
        server.stop()
    # nothing listens any more: the notification fails softly, the deployment is not affected
    answer = notify_serving("card_fraud", 2, timeout=1.0)
    assert answer["notified"] is False and answer["error"]
    monkeypatch.delenv("ML_SERVING_URL")
    assert notify_serving("card_fraud", 2) == {"notified": False, "reason": "variable ml_serving_url not set"}
    # the promotion is recorded in the registry
    assert [d["version"] for d in registry.deployments()] == [1, 2]


def test_batch_dag_is_daily_with_retries_and_only_for_partitioned_problems() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors
    batch = sorted(d for d in bag.dag_ids if d.endswith("_batch_scoring"))
    assert batch == [DAG_ID]  # breast_cancer and diabetes are single files: nothing new arrives daily
    dag = bag.dags[DAG_ID]
    assert dag.catchup is False and dag.max_active_runs == 1
    assert {"ml-lifecycle", "batch-scoring", "backend:local"} <= dag.tags
    assert dag.task_ids == ["score_new_data"]
    task = dag.get_task("score_new_data")
    assert task.owner == SPEC.owner and task.retries >= 1 and task.retry_exponential_backoff
    assert dag.params["ds"] is None and dag.params["backend"] == "local"
