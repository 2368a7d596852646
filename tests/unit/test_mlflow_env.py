"""include/lifecycle/mlflow_env.py: where the MLflow store lives, and one experiment per problem."""

from __future__ import annotations

import multiprocessing

import pytest

from include.lifecycle import mlflow_env


def test_the_store_defaults_to_sqlite_inside_the_artifact_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_env.tracking_uri(str(tmp_path / "a")) == f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    assert mlflow_env.tracking_uri((tmp_path / "b").as_uri()) == f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    assert mlflow_env.artifact_location(str(tmp_path)) == f"{tmp_path.as_uri()}/mlflow-artifacts"
    monkeypatch.setenv("ML_ARTIFACT_ROOT", str(tmp_path / "env"))
    assert mlflow_env.tracking_uri() == f"sqlite:///{tmp_path / 'env' / 'mlflow.db'}"


def test_mlflow_tracking_uri_wins_and_a_remote_root_needs_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(mlflow_env.TrackingConfigError, match="MLFLOW_TRACKING_URI.*sagemaker-mlflow"):
        mlflow_env.tracking_uri("s3://bucket/prefix")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert mlflow_env.tracking_uri("s3://bucket/prefix") == "http://127.0.0.1:5999"
    assert mlflow_env.artifact_location("s3://bucket/prefix/") == "s3://bucket/prefix/mlflow-artifacts"
    # Airflow's ObjectStoragePath names its connection in the URI; MLflow and boto3 do not know it
    assert mlflow_env.artifact_location("s3://aws_default@bucket/prefix") == "s3://bucket/prefix/mlflow-artifacts"


def _create(root: str, out) -> None:
    c = mlflow_env.client(root)
    out.put(mlflow_env.experiment_id(c, "card_fraud", root))


def test_two_processes_creating_the_experiment_get_the_same_one(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = str(tmp_path)
    mlflow_env.client(root).search_experiments()  # the schema, once (the test below races its creation)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_create, args=(root, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    ids = {out.get(timeout=5) for _ in procs}
    assert len(ids) == 1
    exp = mlflow_env.client(root).get_experiment(ids.pop())
    assert exp.name == "card_fraud" and exp.artifact_location == f"{tmp_path.as_uri()}/mlflow-artifacts/card_fraud"


def _open_at_once(root: str, barrier, out) -> None:
    import mlflow  # noqa: F401 - imported before the barrier, so the opens themselves race

    barrier.wait(120)
    try:
        c = mlflow_env.client(root)
        c.search_experiments()
        c.search_registered_models()
        out.put("ok")
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {exc}")


def test_runs_that_start_together_on_a_fresh_checkout_all_open_the_store(tmp_path, monkeypatch):
    """make up on a fresh clone, *Trigger* with *Unpause on trigger* ticked: the manual and the
    nightly run start together and both evaluate_data tasks open an MLflow store that does not
    exist yet. Seen on 2026-11-27: two processes migrated the new SQLite schema at once and one
    failed (alembic: "expected to match one row when updating ... in 'alembic_version'; 0 found")."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = str(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    n = 3
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(root, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [out.get(timeout=5) for _ in procs] == ["ok"] * n
