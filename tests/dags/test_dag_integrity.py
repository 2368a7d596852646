"""DAG integrity, adapted to Airflow 3.3: DagBag lives in airflow.dag_processing.dagbag and
takes no include_examples (conftest sets AIRFLOW__CORE__LOAD_EXAMPLES=False)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from include.lifecycle.spec import load_spec, spec_files

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
SHIPPED = {p.stem: load_spec(p) for p in spec_files(ROOT / "include" / "problems")}


def _dagbag(problems_dir: Path | None = None):
    from airflow.dag_processing.dagbag import DagBag

    if problems_dir is not None:
        os.environ["ML_PROBLEMS_DIR"] = str(problems_dir)
    try:
        return DagBag(dag_folder=str(DAGS))
    finally:
        os.environ.pop("ML_PROBLEMS_DIR", None)


@pytest.fixture(scope="module")
def dagbag():
    return _dagbag()


def test_every_spec_becomes_a_dag_without_import_errors(dagbag):
    assert dagbag.import_errors == {}
    # plus one batch-scoring DAG (dags/batch_scoring.py) per problem with daily partitions
    batch = {
        f"{p}_batch_scoring"
        for p, s in SHIPPED.items()
        if s.data.layout == "partitioned" and s.data.time_column and s.deploy.enabled
    }
    # and one monitoring DAG (dags/monitoring.py) per problem whose scored days get labels later
    monitored = {f"{p}_monitoring" for p, s in SHIPPED.items() if s.monitored}
    assert set(dagbag.dag_ids) == set(SHIPPED) | batch | monitored
    assert {"card_fraud", "breast_cancer", "diabetes", "card_fraud_batch_scoring", "card_fraud_monitoring"} <= set(
        dagbag.dag_ids
    )


def test_a_monitored_problem_runs_on_its_cron_or_the_monitors_retraining_request(dagbag):
    monitor = dagbag.dags["card_fraud_monitoring"]
    assert [t.task_id for t in monitor.topological_sort()] == ["monitor_champion", "request_retraining"]
    outlets = monitor.get_task("request_retraining").outlets
    assert [a.name for a in outlets] == ["card_fraud.retrain_requested"]
    timetable = dagbag.dags["card_fraud"].timetable
    assert type(timetable).__name__ == "AssetOrTimeSchedule"
    assert "card_fraud.retrain_requested" in str(timetable.asset_condition)
    assert timetable.timetable.expression == "0 2 * * *"
    # a static problem is not monitored and keeps its schedule (none: run by hand)
    assert "diabetes_monitoring" not in dagbag.dag_ids and dagbag.dags["diabetes"].schedule is None


@pytest.mark.parametrize("problem", sorted(SHIPPED))
def test_dag_metadata_comes_from_the_spec(dagbag, problem):
    spec = SHIPPED[problem]
    dag = dagbag.dags[problem]
    assert isinstance(dag.tags, set)
    assert {"ml-lifecycle", f"backend:{spec.backend}", *spec.tags} <= dag.tags
    # the goal in words and the measurable criterion are the DAG's documentation
    assert " ".join(spec.goal.statement.split())[:60] in " ".join(dag.doc_md.split())
    assert f"`{spec.goal.metric} " in dag.doc_md
    assert dag.catchup is False
    assert dag.params["max_rounds"] == spec.max_rounds
    for task in dag.tasks:
        assert task.owner == spec.owner, task.task_id
        if task.task_id == "publish_report":  # it only reads and writes the run's own files
            assert task.retries == 0 and task.trigger_rule == "all_done"
            continue
        assert task.retries >= 1, task.task_id
        assert task.retry_exponential_backoff, task.task_id
        assert task.retry_delay >= dt.timedelta(seconds=1)


def test_flagship_schedule_is_nightly(dagbag):
    dag = dagbag.dags["card_fraud"]
    assert SHIPPED["card_fraud"].schedule == "0 2 * * *"
    # the cron, or (a monitored problem) the cron inside "cron or the monitor's retraining request"
    assert getattr(dag.timetable, "timetable", dag.timetable).expression == "0 2 * * *"


@pytest.mark.parametrize("problem", sorted(SHIPPED))
def test_every_section_is_a_task_and_rounds_are_unrolled(dagbag, problem):
    spec = SHIPPED[problem]
    dag = dagbag.dags[problem]
    ids = set(dag.task_ids)
    assert {
        "formulate_problem",
        "collect_and_label",
        "evaluate_data",
        "deploy_model",
        "goal_not_met",
        "keep_champion",
        "publish_report",
    } <= ids
    for k in range(1, spec.max_rounds + 1):
        for section in (
            "feature_engineering",
            "plan_trials",
            "train_model",
            "select_model",
            "evaluate_model",
            "meets_business_goal",
        ):
            assert f"round_{k}.{section}" in ids
        last = k == spec.max_rounds
        assert (f"round_{k}.diagnose" in ids) is not last
        for remedy in ("tune_model", "augment_features", "augment_data", "collect_more_data"):
            assert (f"round_{k}.{remedy}" in ids) is not last
    assert f"round_{spec.max_rounds + 1}.feature_engineering" not in ids


def test_branches_and_the_loop_edges(dagbag):
    from airflow.providers.standard.operators.python import BranchPythonOperator

    dag = dagbag.dags["card_fraud"]
    gate = dag.get_task("round_1.meets_business_goal")
    assert isinstance(gate, BranchPythonOperator)
    assert gate.downstream_task_ids == {"deploy_model", "goal_not_met", "keep_champion", "round_1.diagnose"}
    assert dag.get_edge_info("round_1.meets_business_goal", "keep_champion") == {"label": "goal met, champion better"}
    diagnose = dag.get_task("round_1.diagnose")
    assert isinstance(diagnose, BranchPythonOperator)
    # the remedy that can change the candidate, or the end of the loop when none can (then it skips
    # the other ends itself: the joins would otherwise run on the earlier gates' success)
    assert diagnose.downstream_task_ids == {
        "round_1.tune_model",
        "round_1.augment_features",
        "round_1.augment_data",
        "goal_not_met",
        "deploy_model",
        "keep_champion",
    }
    assert dag.get_edge_info("round_1.diagnose", "goal_not_met") == {"label": "no remedy can change it"}
    assert dag.get_edge_info("round_1.diagnose", "deploy_model") == {"label": "skipped when the loop ends here"}
    for remedy in ("tune_model", "augment_features"):
        assert dag.get_task(f"round_1.{remedy}").downstream_task_ids == {"round_2.feature_engineering"}
    # augment_data's wider re-collection is a task of its own, before the next round
    assert dag.get_task("round_1.augment_data").downstream_task_ids == {
        "round_2.feature_engineering",
        "round_1.collect_more_data",
    }
    assert dag.get_task("round_1.collect_more_data").downstream_task_ids == {"round_2.feature_engineering"}
    assert dag.get_task("round_2.feature_engineering").trigger_rule == "none_failed_min_one_success"
    # trials are a mapped task; the joins tolerate skipped branches
    assert dag.get_task("round_2.train_model").is_mapped
    assert dag.get_task("deploy_model").trigger_rule == "none_failed_min_one_success"
    assert dag.get_task("publish_report").upstream_task_ids == {"deploy_model", "goal_not_met", "keep_champion"}
    for end in ("goal_not_met", "keep_champion"):
        assert dag.get_task(end).trigger_rule == "none_failed_min_one_success"
    assert dag.get_edge_info("round_1.meets_business_goal", "deploy_model") == {"label": "goal met"}


def test_the_run_ends_in_mlflow_and_says_whether_it_deployed(dagbag):
    for problem in sorted(SHIPPED):
        dag = dagbag.dags[problem]
        assert dag.get_task("publish_report").downstream_task_ids == {"log_to_mlflow", "model_deployed"}
        # logged whatever happened (a failed run too), after the report exists; retried on its own
        log_to_mlflow = dag.get_task("log_to_mlflow")
        assert log_to_mlflow.trigger_rule == "all_done" and log_to_mlflow.retries >= 1
        # green when the run deployed a champion, skipped when not, upstream_failed when the run failed
        assert dag.get_task("model_deployed").trigger_rule == "all_success"
        assert not log_to_mlflow.downstream_task_ids and not dag.get_task("model_deployed").downstream_task_ids


def test_dag_file_imports_nothing_heavy():
    code = textwrap.dedent(
        f"""
        import sys
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(DAGS)!r})
        assert not bag.import_errors, bag.import_errors
        heavy = ("sklearn", "xgboost", "matplotlib", "scipy", "pandas", "pyarrow", "mlflow")
        heavy = sorted(m for m in heavy if m in sys.modules)
        print("HEAVY", heavy)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout


def _broken_dir(tmp_path: Path, mutate) -> Path:
    d = tmp_path / "problems"
    d.mkdir()
    shutil.copy(ROOT / "include" / "problems" / "breast_cancer.yaml", d / "breast_cancer.yaml")
    data = yaml.safe_load((ROOT / "include" / "problems" / "card_fraud.yaml").read_text())
    mutate(data)
    (d / "card_fraud.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return d


def test_a_wrong_spec_fails_the_import_naming_file_field_and_rule(tmp_path):
    def mutate(data):
        data["goal"]["max_alert_rate"] = 3  # a share: must be <= 1

    bag = _dagbag(_broken_dir(tmp_path, mutate))
    assert bag.import_errors, "a broken spec must fail the DAG import"
    # one import error, for the file that reports invalid specs; the good spec's DAG still loads
    assert [Path(f).name for f in bag.import_errors] == ["problem_spec_errors.py"], bag.import_errors
    assert "breast_cancer" in bag.dags and "card_fraud" not in bag.dags
    message = "\n".join(bag.import_errors.values())
    assert "breast_cancer.yaml" not in message
    assert "card_fraud.yaml" in message
    assert "goal.max_alert_rate" in message
    assert "less than or equal to 1" in message


def test_an_unknown_field_is_rejected_with_its_name(tmp_path):
    def mutate(data):
        data["training"]["candidates"][0]["famly"] = "logistic"

    bag = _dagbag(_broken_dir(tmp_path, mutate))
    message = "\n".join(bag.import_errors.values())
    assert "training.candidates[0].famly" in message
    assert "card_fraud.yaml" in message


def test_trials_share_the_machines_pool_when_the_deployment_made_one(monkeypatch):
    """make up and compose set ML_TRIAL_POOL and create the pool: every DAG's trials then share
    it (the cap holds across DAGs). Unset, a DAG must not name a pool nobody created (its tasks
    would never be scheduled); the aws backend's trials run on SageMaker and take no local slot."""
    from ml_lifecycle.settings import trial_slots

    monkeypatch.setenv("ML_TRIAL_POOL", "ml_trials")
    pooled = _dagbag()
    assert pooled.import_errors == {}
    for name, spec in SHIPPED.items():
        for k in range(1, spec.max_rounds + 1):
            trials = pooled.dags[name].get_task(f"round_{k}.train_model")
            local = spec.backend == "local"
            assert trials.max_active_tis_per_dag == (trial_slots() if local else None)
            assert trials.pool == ("ml_trials" if local else "default_pool"), (name, k)
    monkeypatch.delenv("ML_TRIAL_POOL")
    plain = _dagbag()
    assert {plain.dags[n].get_task("round_1.train_model").pool for n in SHIPPED} == {"default_pool"}
