"""The flagship run logged to a real MLflow tracking server, and Airflow's links to its results.

A real ``mlflow server`` on 127.0.0.1 (tests/mlflow_server.py) is the run's tracking store
(``MLFLOW_TRACKING_URI``); the whole card-fraud DAG runs with ``dag.test()`` on the demo data
(as a problem of its own name, ``card_fraud_tracked``, so its champion is its own). Then:

- the server holds ONE MLflow run for the DAG run (found by its Airflow tags) with the goal metric
  and its interval per round as steps, the data counts, the decision, the reports and plots, and
  one nested run per training trial;
- ``model_deployed`` says at a glance what the run did;
- Airflow's own API app (in-process, with its real auth manager and this project's plugin) gives
  every task the three extra links, and they lead to the report, the MLflow run and the model
  version; without a login they answer 401.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from include.lifecycle import synth
from tests.integration.dagrun import ROOT, read_json, run_dag
from tests.mlflow_server import mlflow_server  # noqa: F401  (the server fixture)

pytestmark = pytest.mark.integration

PROBLEM = "card_fraud_tracked"
LOGICAL_DATE = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def problems(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped flagship spec under a name of its own (same data, same goal, same loop)."""
    folder = tmp_path_factory.mktemp("problems")
    spec = yaml.safe_load((ROOT / "include" / "problems" / "card_fraud.yaml").read_text())
    spec["name"] = PROBLEM
    (folder / f"{PROBLEM}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def tracked_run(airflow_db, session_tmp, problems, mlflow_server) -> dict[str, Any]:  # noqa: F811
    root = session_tmp / "data" / "data" / "card_fraud" / "landing"
    synth.generate(root, end=LOGICAL_DATE.date(), days=90, tx_per_day=4000, seed=7)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        state, run_id, run_dir = run_dag(PROBLEM, LOGICAL_DATE, problems_dir=problems)
    return {"state": state, "run_id": run_id, "run_dir": run_dir, "server": mlflow_server}


def _client(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url)


def _task_states(run_id: str) -> dict[str, str]:
    from airflow.models import DagRun

    dr = DagRun.find(dag_id=PROBLEM, run_id=run_id)[0]
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def test_the_run_and_its_trials_are_on_the_tracking_server(tracked_run):
    from include.lifecycle import tracking

    assert tracked_run["state"] == "success"
    summary = read_json(tracked_run["run_dir"] / "run_summary.json")
    client = _client(tracked_run["server"].url)
    experiments = {e.experiment_id: e for e in client.search_experiments()}
    runs = client.search_runs(
        list(experiments), filter_string=tracking.dag_run_filter(PROBLEM, tracked_run["run_id"]), max_results=1000
    )
    parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
    trials = [r for r in runs if tracking.PARENT_TAG in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    run = parents[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["decision"] == summary["decision"] == "deployed"
    assert run.data.params["spec_digest"] == summary["spec_digest"]
    assert run.data.params["rounds"] == str(len(summary["rounds"])) and run.data.params["backend"] == "local"
    metric = summary["goal"]["metric"]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, f"test_{metric}"))
    assert history == [(r["round"], pytest.approx(r["test_score"])) for r in summary["rounds"]]
    lows = dict((m.step, m.value) for m in client.get_metric_history(run.info.run_id, f"test_{metric}_low"))
    for r in summary["rounds"]:
        assert lows[r["round"]] == pytest.approx(r["intervals"][metric]["low"])
    assert run.data.metrics["data_rows_in"] == summary["data"]["rows_in"]
    # one nested run per trial the rounds trained, each with its scores and fit time
    trained = sorted(p.name for p in tracked_run["run_dir"].glob("round_*/trials/*"))
    assert sorted(t.data.tags[tracking.TAG_TRIAL_ID] for t in trials) == trained
    assert all(t.data.tags[tracking.PARENT_TAG] == run.info.run_id for t in trials)
    assert all({f"validation_{metric}", "fit_seconds"} <= set(t.data.metrics) for t in trials)
    assert sum(t.data.tags["selected"] == "true" for t in trials) >= 1
    # the reports and plots, readable back from the server
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "run_summary.json", "eda"} <= names
    last = summary["rounds"][-1]["round"]
    pngs = {a.path for a in client.list_artifacts(run.info.run_id, f"round_{last}/plots")}
    assert f"round_{last}/plots/pr_curve.png" in pngs


def test_the_deployed_model_is_a_version_of_the_run_on_the_server_with_the_alias_champion(tracked_run):
    """The registry is the server's: the deployed version was registered from the DAG run's MLflow
    run (its bundle under the run's artifacts, the manifest and lineage as tags) and the alias
    ``champion`` points at it."""
    from include.lifecycle import tracking

    summary = read_json(tracked_run["run_dir"] / "run_summary.json")
    client = _client(tracked_run["server"].url)
    mv = client.get_model_version_by_alias(PROBLEM, "champion")
    assert int(mv.version) == summary["model_version"] == summary["champion_after"]
    run = client.get_run(mv.run_id)
    assert run.data.tags[tracking.TAG_RUN_ID] == tracked_run["run_id"] == mv.tags["airflow.run_id"]
    assert mv.source.startswith(run.info.artifact_uri) and "manifest" in mv.tags
    assert mv.tags["lineage.spec_digest"] == summary["spec_digest"]
    bundle = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(mv.run_id, mv.source.split("/artifacts/")[-1])}
    assert {"features.json", "preprocessor.joblib", "threshold.json", "lineage.json"} <= bundle


def test_the_run_says_deployed_at_a_glance(tracked_run):
    states = _task_states(tracked_run["run_id"])
    assert states["publish_report"] == "success"
    assert states["log_to_mlflow"] == "success"
    assert states["model_deployed"] == "success"


def test_a_run_that_deployed_nothing_skips_model_deployed_saying_why(tracked_run, problems, monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    from include.lifecycle.layout import RunLayout
    from include.lifecycle.store import Store
    from ml_lifecycle import sections

    monkeypatch.setenv("ML_PROBLEMS_DIR", str(problems))
    run_id = "manual__2026-10-01T00:00:00+00:00"
    store = Store.from_uri(tracked_run["run_dir"].parents[1].as_uri())
    reason = "amount_recall_at_alert_rate 0.5814 misses the goal >= 0.75"
    store.write_json(RunLayout(run_id).run_summary, {"decision": "goal_not_met", "reason": reason})
    with pytest.raises(AirflowSkipException, match=f"not deployed: goal_not_met - {reason}"):
        sections.model_deployed(PROBLEM, run_id=run_id, data_interval_end=LOGICAL_DATE, params={})


@pytest.fixture(scope="module")
def api(tracked_run, session_tmp) -> Any:
    """Airflow's API app in-process with its real (simple) auth manager, the plugin mounted, and a
    bearer token of a real login."""
    from fastapi.testclient import TestClient

    env = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "reader:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "MLFLOW_TRACKING_URI": tracked_run["server"].url,
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        from airflow.api_fastapi.app import create_app, purge_cached_app

        purge_cached_app()
        client = TestClient(create_app(), follow_redirects=False)
        passwords = Path(os.environ["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
        password = read_json(passwords)["reader"]
        got = client.post("/auth/token", json={"username": "reader", "password": password})
        assert got.status_code == 201, got.text
        yield client, {"Authorization": f"Bearer {got.json()['access_token']}"}
        purge_cached_app()


def test_every_task_links_to_the_report_the_mlflow_run_and_the_model_version(tracked_run, api):
    client, auth = api
    run = quote(tracked_run["run_id"], safe="")
    base = f"/api/v2/dags/{PROBLEM}/dagRuns/{run}/taskInstances"
    for task_id, map_index in (("publish_report", -1), ("round_1.train_model", 0), ("collect_and_label", -1)):
        got = client.get(f"{base}/{task_id}/links", params={"map_index": map_index}, headers=auth)
        assert got.status_code == 200, got.text
        links = got.json()["extra_links"]
        assert links == {
            "MLflow run": f"/ml-lifecycle/runs/{PROBLEM}/{run}/mlflow",
            "Model version": f"/ml-lifecycle/runs/{PROBLEM}/{run}/model",
            "Run report": f"/ml-lifecycle/runs/{PROBLEM}/{run}/report",
        }, task_id

    report = client.get(links["Run report"], headers=auth)
    assert report.status_code == 200
    assert report.text == (tracked_run["run_dir"] / "report.html").read_text()

    to_mlflow = client.get(links["MLflow run"], headers=auth)
    assert to_mlflow.status_code == 307
    target = to_mlflow.headers["location"]
    assert target.startswith(f"{tracked_run['server'].url}/#/experiments/")
    mlflow_run_id = target.rsplit("/", 1)[1]
    assert (
        _client(tracked_run["server"].url).get_run(mlflow_run_id).data.tags["airflow.run_id"] == tracked_run["run_id"]
    )

    to_model = client.get(links["Model version"], headers=auth)
    assert to_model.status_code == 307
    assert "/#/models/" in to_model.headers["location"]

    # the results are Airflow's to guard: no login, no report
    assert client.get(links["Run report"]).status_code == 401


def test_links_of_a_run_without_results_say_why(tracked_run, api):
    client, auth = api
    got = client.get(f"/ml-lifecycle/runs/{PROBLEM}/manual__1999-01-01T00:00:00+00:00/mlflow", headers=auth)
    assert got.status_code == 404 and "is not in the MLflow tracking store" in got.text
    got = client.get(f"/ml-lifecycle/runs/{PROBLEM}/manual__1999-01-01T00:00:00+00:00/report", headers=auth)
    assert got.status_code == 404 and "report.html does not exist" in got.text


def test_logging_the_run_again_adds_nothing(tracked_run, problems):
    """A retry of log_to_mlflow finds the run by its tags: no second run, no trial twice, no step twice."""
    from include.lifecycle import tracking
    from include.lifecycle.spec import load_spec
    from include.lifecycle.store import Store

    client = _client(tracked_run["server"].url)
    experiments = [e.experiment_id for e in client.search_experiments()]
    where = tracking.dag_run_filter(PROBLEM, tracked_run["run_id"])
    before = client.search_runs(experiments, filter_string=where, max_results=1000)
    parent = next(r for r in before if tracking.PARENT_TAG not in r.data.tags)
    store = Store.from_uri(tracked_run["run_dir"].parents[1].as_uri())  # <artifact root>/<problem>

    got = tracking.log_run(
        client, parent.info.experiment_id, store, tracked_run["run_id"], spec=load_spec(problems / f"{PROBLEM}.yaml")
    )

    assert got["mlflow_run_id"] == parent.info.run_id and got["new_metric_values"] == 0
    after = client.search_runs(experiments, filter_string=where, max_results=1000)
    assert sorted(r.info.run_id for r in after) == sorted(r.info.run_id for r in before)
