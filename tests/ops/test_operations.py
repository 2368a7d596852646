"""Operations features of the lifecycle DAGs, in-process: the run form (Param validation), the
optional human approval, alerts through the notifier and the Assets other DAGs schedule on.
Whole runs use ``dag.test()`` on a small partitioned problem; a person's answer to the approval
is exercised against a real Airflow in test_real_airflow.py (dag.test() would wait for it)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from pathlib import Path

import pytest

from include.lifecycle.spec import load_spec
from tests.integration.dagrun import ROOT, artifacts, read_json, run_dag
from tests.ops.opsspec import make_data, ops_spec, write_spec
from tests.registry_store import registry_of

END = dt.date(2026, 10, 1)
LOGICAL_DATE = dt.datetime(2026, 9, 30, tzinfo=dt.UTC)  # data interval ends at END


def _bag(problems: Path | None = None):
    from airflow.dag_processing.dagbag import DagBag

    old = os.environ.get("ML_PROBLEMS_DIR")
    if problems is not None:
        os.environ["ML_PROBLEMS_DIR"] = str(problems)
    try:
        bag = DagBag(dag_folder=str(ROOT / "dags"))
    finally:
        if old is None:
            os.environ.pop("ML_PROBLEMS_DIR", None)
        else:
            os.environ["ML_PROBLEMS_DIR"] = old
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture(scope="module")
def ops_env(session_tmp):
    problems = session_tmp / "ops-problems"
    make_data(session_tmp / "data", END)
    write_spec(problems, ops_spec("ops_auto"))
    write_spec(problems, ops_spec("ops_approval", deploy={"require_approval": True, "approval_timeout_hours": 12}))
    write_spec(problems, ops_spec("ops_impossible", goal={"target": 0.9999}))
    write_spec(problems, ops_spec("ops_missing", data={"source": "ops_fraud/landing/nothing_here"}))
    return problems


@pytest.fixture(scope="module")
def shipped():
    return _bag()


# --- the run form --------------------------------------------------------------------------
def _validate(dag, conf: dict) -> dict:
    params = copy.deepcopy(dag.params)
    params.update(conf)
    return params.validate()


def test_form_fields_have_titles_descriptions_and_bounds(shipped):
    dag = shipped.dags["card_fraud"]
    spec = load_spec(ROOT / "include" / "problems" / "card_fraud.yaml")
    schema = {k: dag.params.get_param(k).schema for k in dag.params}
    described = {k: dag.params.get_param(k).description for k in dag.params}
    assert set(schema) == {"max_rounds", "lookback_days", "force_deploy", "skip_approval", "backend"}
    for name, s in schema.items():
        assert s.get("title") and described[name], name
    assert (schema["max_rounds"]["minimum"], schema["max_rounds"]["maximum"]) == (1, spec.max_rounds)
    assert (schema["lookback_days"]["minimum"], schema["lookback_days"]["maximum"]) == (
        1,
        spec.data.max_lookback_days,
    )
    assert schema["backend"]["enum"] == ["local", "aws"]
    assert "WARNING" in described["force_deploy"]
    assert schema["skip_approval"]["type"] == "boolean"
    assert "deploys automatically" in described["skip_approval"]
    assert _validate(dag, {}) == {
        "max_rounds": spec.max_rounds,
        "lookback_days": spec.data.lookback_days,
        "force_deploy": False,
        "skip_approval": False,
        "backend": spec.backend,
    }
    assert _validate(dag, {"max_rounds": 1, "lookback_days": 7, "backend": "aws"})["lookback_days"] == 7


@pytest.mark.parametrize(
    "conf, field",
    [
        ({"max_rounds": 0}, "max_rounds"),
        ({"max_rounds": 99}, "max_rounds"),
        ({"max_rounds": "two"}, "max_rounds"),
        ({"lookback_days": 0}, "lookback_days"),
        ({"lookback_days": 10_000}, "lookback_days"),
        ({"backend": "gcp"}, "backend"),
        ({"force_deploy": "yes"}, "force_deploy"),
        ({"skip_approval": 1}, "skip_approval"),
    ],
)
def test_form_refuses_bad_values_naming_the_field(shipped, conf, field):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=field):
        _validate(shipped.dags["card_fraud"], conf)


# --- wiring: approval, assets, callbacks ---------------------------------------------------
def test_shipped_specs_deploy_automatically_and_publish_assets(shipped):
    from ml_lifecycle.errors import FailureRecorder
    from ml_lifecycle.notify import LifecycleNotifier

    for dag_id in ("card_fraud", "breast_cancer", "diabetes"):
        dag = shipped.dags[dag_id]
        assert "approve_deployment" not in dag.task_ids
        assert {o.name for o in dag.get_task("collect_and_label").outlets} == {f"{dag_id}.curated_data"}
        assert {o.uri for o in dag.get_task("deploy_model").outlets} == {f"ml-lifecycle://{dag_id}/champion_model"}
        for task in dag.tasks:
            # every failure is recorded for the run's report; the report task itself alerts no one again
            cbs = [(type(c), getattr(c, "event", None)) for c in task.on_failure_callback]
            expect = [(FailureRecorder, None)]
            if task.task_id != "publish_report":
                expect.append((LifecycleNotifier, "failure"))
            assert cbs == expect, task.task_id
        assert [c.event for c in dag.get_task("goal_not_met").on_success_callback] == ["goal_not_met"]
        for k in range(1, load_spec(ROOT / "include" / "problems" / f"{dag_id}.yaml").max_rounds + 1):
            assert "deploy_model" in dag.get_task(f"round_{k}.meets_business_goal").downstream_task_ids


def test_approval_sits_between_every_round_and_deploy_model(ops_env):
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    dag = _bag(ops_env).dags["ops_approval"]
    approve = dag.get_task("approve_deployment")
    assert isinstance(approve, ApprovalOperator)
    assert approve.defaults == ["Reject"]  # no answer in time deploys nothing
    assert approve.response_timeout == dt.timedelta(hours=12)
    assert approve.downstream_task_ids == {"deploy_model", "publish_report"}
    assert dag.get_task("deploy_model").upstream_task_ids == {"approve_deployment"}
    assert approve.upstream_task_ids == {"round_1.meets_business_goal"}
    assert [n.event for n in approve.notifiers] == ["approval_requested"]


def test_serialized_dag_keeps_assets_and_approval(ops_env):
    from airflow.serialization.serialized_objects import DagSerialization

    dag = _bag(ops_env).dags["ops_approval"]
    back = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert {o.uri for o in back.get_task("deploy_model").outlets} == {"ml-lifecycle://ops_approval/champion_model"}
    assert {o.uri for o in back.get_task("collect_and_label").outlets} == {"ml-lifecycle://ops_approval/curated_data"}
    assert back.get_task("approve_deployment").downstream_task_ids == {"deploy_model", "publish_report"}


# --- whole runs ------------------------------------------------------------------------------
@pytest.mark.integration
def test_automatic_deploy_emits_asset_events(airflow_db, ops_env):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    state, run_id, run_dir = run_dag("ops_auto", LOGICAL_DATE, problems_dir=ops_env)
    assert state == "success"
    summary = read_json(run_dir / "run_summary.json")
    assert summary["decision"] == "deployed", summary["reason"]
    with create_session() as session:
        events = session.execute(
            select(AssetModel.name, AssetEvent.source_run_id, AssetEvent.source_task_id).join(
                AssetModel, AssetEvent.asset_id == AssetModel.id
            )
        ).all()
    mine = {(name, task) for name, rid, task in events if rid == run_id}
    assert mine == {("ops_auto.curated_data", "collect_and_label"), ("ops_auto.champion_model", "deploy_model")}


@pytest.mark.integration
def test_skip_approval_param_deploys_without_asking(airflow_db, ops_env, monkeypatch):
    state, run_id, run_dir = run_dag("ops_approval", LOGICAL_DATE, problems_dir=ops_env, conf={"skip_approval": True})
    assert state == "success"
    approval = read_json(run_dir / "approval.json")
    assert approval["approved"] is True and approval["by"] == "skip_approval param"
    assert approval["meets_goal"] is True and approval["round"] == 1
    summary = read_json(run_dir / "run_summary.json")
    assert summary["decision"] == "deployed"
    registry = registry_of("ops_approval")
    assert summary["model_version"] == registry.champion_version()
    tags = registry.tags(summary["model_version"])  # the approval is recorded on the model version
    assert (tags["approval.approved"], tags["approval.by"], tags["approval.at"]) == (
        "true",
        approval["by"],
        approval["at"],
    )

    # a retry of approve_deployment in the same run re-uses the recorded answer: nobody is asked
    # twice (asking would need the HITL API, which does not exist outside a task runner)
    from ml_lifecycle.approval import DeploymentApprovalOperator

    monkeypatch.setenv("ML_PROBLEMS_DIR", str(ops_env))
    op = DeploymentApprovalOperator(task_id="approve_deployment_retry", problem="ops_approval")
    again = op.execute({"run_id": run_id, "data_interval_end": LOGICAL_DATE, "params": {}})
    assert again == {"chosen_options": ["Approve"], "reused_answer": True}

    # without a recorded answer, a retry whose earlier try asked says that it asks again (Airflow
    # 3.3.2 can lose an answer given within a second of the question, see approval.py). Airflow's
    # HITL transport needs a task runner: here the question is captured where it would be sent.
    from airflow.providers.standard.operators.hitl import HITLOperator

    asked = []
    monkeypatch.setattr(HITLOperator, "execute", lambda self, context: asked.append((self.subject, self.body)))
    (run_dir / "approval.json").unlink()
    for attempt in (1, 2):
        ti = type("TI", (), {"try_number": attempt})()
        op = DeploymentApprovalOperator(task_id="approve_deployment", problem="ops_approval")
        op.execute({"run_id": run_id, "data_interval_end": LOGICAL_DATE, "params": {}, "ti": ti})
        assert read_json(run_dir / "approval_request.json")["try"] == attempt
    (first_subject, first_body), (second_subject, second_body) = asked
    assert first_subject.startswith("Deploy ops_approval round 1? roc_auc ")
    assert second_subject == f"(asked again) {first_subject}"
    assert second_body.startswith("*Asked again: an earlier try") and second_body.endswith(first_body)


@pytest.mark.integration
def test_goal_not_met_sends_an_alert(airflow_db, ops_env):
    state, run_id, run_dir = run_dag("ops_impossible", LOGICAL_DATE, problems_dir=ops_env)
    assert state == "success"
    assert read_json(run_dir / "run_summary.json")["decision"] == "goal_not_met"
    alert = read_json(artifacts("ops_impossible") / "alerts" / run_dir.name / "goal_not_met-goal_not_met.json")
    assert alert["event"] == "goal_not_met" and alert["channel"] == "log" and alert["run_id"] == run_id
    assert "goal" in alert["subject"] and "0.9999" in alert["body"]
    assert "report.html" in alert["body"]


@pytest.mark.integration
def test_a_failed_task_sends_an_alert(airflow_db, ops_env):
    state, run_id, run_dir = run_dag("ops_missing", LOGICAL_DATE, problems_dir=ops_env)
    assert state == "failed"
    alerts = sorted((artifacts("ops_missing") / "alerts" / run_dir.name).glob("*.json"))
    assert [a.name for a in alerts] == ["failure-formulate_problem.json"]
    alert = json.loads(alerts[0].read_text())
    assert alert["event"] == "failure" and "task formulate_problem failed" in alert["subject"]
    assert "AirflowFailException" in alert["body"] and "data in window" in alert["body"]


@pytest.mark.integration
def test_a_champion_promoted_meanwhile_is_compared_again(airflow_db, ops_env):
    """Two runs at once (a backfill): the one that promotes second compared against a champion
    that is gone. It compares again with the new champion on its own test rows and promotes only
    if it still passes; it never fails on the race and never skips the gate."""
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.store import Store
    from ml_lifecycle.context import RunContext
    from ml_lifecycle.local import LocalBackend
    from ml_lifecycle.sections.deploy import promote_or_recheck

    state, run_id, run_dir = run_dag("ops_auto", LOGICAL_DATE, problems_dir=ops_env)
    assert state == "success"
    assert read_json(run_dir / "run_summary.json")["decision"] == "deployed"
    store = Store.from_uri(str(artifacts("ops_auto")))
    spec = load_spec(ops_env / "ops_auto.yaml")
    rc = RunContext(spec=spec, backend=LocalBackend(spec), store=store, run_id=run_id, as_of=LOGICAL_DATE, params={})
    reg = ModelRegistry(store, spec.name)
    champion = reg.champion()["version"]

    def copy_of(version: int, *, data_end: str | None = None) -> dict[str, bytes]:
        files = {n: b for n, b in reg.load(version).items() if n not in ("manifest.json", "metadata.json")}
        if data_end:  # as if trained by a run of a later date
            lineage = json.loads(files["lineage.json"])
            lineage["window"] = {**lineage["window"], "end": data_end}
            files["lineage.json"] = json.dumps(lineage).encode()
        return files

    ev = read_json(run_dir / "round_1" / "evaluation.json")
    stale = {**ev, "champion_version": champion - 1 if champion > 1 else None}
    # another run promotes a copy of the champion after this one compared: same data and split, so
    # it is compared paired on its own held-out test rows (a difference of 0: no worse)
    meanwhile = reg.register(copy_of(champion), {"problem": "ops_auto", "run_id": "other-run"})
    reg.promote(meanwhile, run_id="other-run", expected_champion=champion)

    candidate = reg.register(copy_of(champion), {"problem": "ops_auto", "run_id": run_id})
    record = promote_or_recheck(rc, reg, candidate, stale)
    assert record is not None and record["version"] == candidate and record["previous"] == meanwhile
    recheck = read_json(run_dir / "recheck.json")
    assert recheck["champion_version"] == meanwhile and recheck["deploy"] is True
    assert "the champion changed during this run" in recheck["reason"]
    assert "rows it never saw" in recheck["reason"]

    # a backfill finishing after a run of a later date: its model was trained on older data than
    # the champion now in place, and no test row is unseen by that champion: it is registered, not
    # promoted (an older model never silently replaces a newer one)
    newer = reg.register(copy_of(champion, data_end="2027-01-01"), {"problem": "ops_auto", "run_id": "later-run"})
    reg.promote(newer, run_id="later-run", expected_champion=candidate)
    older = reg.register(copy_of(champion), {"problem": "ops_auto", "run_id": run_id})
    assert promote_or_recheck(rc, reg, older, {**stale, "champion_version": candidate}) is None
    assert reg.champion()["version"] == newer
    recheck = read_json(run_dir / "recheck.json")
    assert recheck["deploy"] is False and "trained on newer data" in recheck["reason"]


_DEPLOY_AT_ONCE = """
import json, sys, time
from pathlib import Path
from ml_lifecycle import sections

problem, run_id, when, go = sys.argv[1:5]
while not Path(go).exists():  # both processes start deploy_model at the same moment
    time.sleep(0.01)
import datetime as dt
out = sections.deploy_model(problem, run_id=run_id, data_interval_end=dt.datetime.fromisoformat(when), params={})
print(json.dumps(out))
"""


@pytest.mark.integration
def test_two_runs_deploying_at_once_replace_the_champion_one_after_the_other(airflow_db, ops_env, tmp_path):
    """Two backfill runs of the same window reach deploy_model at the same moment, both having
    compared against "no champion", while a third run has promoted version 1 meanwhile. The alias
    moves by compare-and-set under the registry lock: they cannot both replace version 1; each
    compares again with the champion it finds and the second replaces the first's, so the MLflow
    registry holds one chain 1 <- a <- b and every promotion is recorded once."""
    import shutil
    import subprocess
    import sys

    from include.lifecycle.store import safe_run_id

    write_spec(ops_env, ops_spec("ops_race"))
    state, run_id, run_dir = run_dag("ops_race", LOGICAL_DATE, problems_dir=ops_env)
    assert state == "success" and read_json(run_dir / "run_summary.json")["decision"] == "deployed"
    registry = registry_of("ops_race")
    assert registry.champion_version() == 1
    racers = [f"backfill__2026-09-30T00:00:00+00:00-race{i}" for i in (1, 2)]
    for racer in racers:  # the same rounds, evaluated before version 1 existed
        folder = run_dir.parent / safe_run_id(racer)
        shutil.copytree(run_dir, folder)
        for name in ("outcome.json", "run_summary.json", "report.html", "recheck.json"):
            (folder / name).unlink(missing_ok=True)
        assert read_json(folder / "round_1" / "evaluation.json")["champion_version"] is None
    go = tmp_path / "go"
    env = {**os.environ, "ML_PROBLEMS_DIR": str(ops_env), "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'plugins'}"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _DEPLOY_AT_ONCE, "ops_race", racer, LOGICAL_DATE.isoformat(), str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for racer in racers
    ]
    go.touch()
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [r["decision"] for r in results] == ["deployed", "deployed"], results
    first, second = sorted(results, key=lambda r: r["previous_champion"] != 1)
    assert first["previous_champion"] == 1 and second["previous_champion"] == first["version"]
    assert registry.versions() == [1, 2, 3] and registry.champion_version() == second["version"]
    chain = [(d["version"], d["previous"]) for d in registry.deployments()]
    assert chain == [(1, None), (first["version"], 1), (second["version"], first["version"])]
    for racer, result in zip(racers, results, strict=True):
        # each registered its own version (found again by its claim) and compared again, saying so
        assert registry.find({"run_id": racer, "round": 1}) == result["version"]
        recheck = read_json(run_dir.parent / safe_run_id(racer) / "recheck.json")
        assert "the champion changed during this run" in recheck["reason"]


@pytest.fixture
def smtp_sink(monkeypatch):
    from tests.ops.smtpsink import SmtpSink

    with SmtpSink() as sink:
        conn = {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": sink.port,
            "extra": {
                "disable_ssl": True,
                "disable_tls": True,
                "from_email": "ml-lifecycle@example.com",
                "retry_limit": 0,
                "timeout": 10,
            },
        }
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_OPS", json.dumps(conn))
        yield sink


@pytest.mark.integration
def test_goal_not_met_alert_is_mailed_over_smtp(airflow_db, ops_env, smtp_sink):
    write_spec(
        ops_env,
        ops_spec(
            "ops_mailed",
            goal={"target": 0.9999},
            alerts={"channel": "smtp", "to": ["ml-oncall@example.com"], "conn_id": "smtp_ops"},
        ),
    )
    try:
        state, run_id, run_dir = run_dag("ops_mailed", LOGICAL_DATE, problems_dir=ops_env)
    finally:
        (ops_env / "ops_mailed.yaml").unlink()
    assert state == "success"
    assert read_json(run_dir / "run_summary.json")["decision"] == "goal_not_met"
    assert len(smtp_sink.messages) == 1
    rcpt, msg = smtp_sink.messages[0]
    assert rcpt == ["ml-oncall@example.com"]
    assert msg["Subject"] == "[ml-lifecycle] ops_mailed: the business goal was not met; nothing was deployed"
    body = next(p for p in msg.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    assert run_id in body and "misses the goal" in body
    record = read_json(artifacts("ops_mailed") / "alerts" / run_dir.name / "goal_not_met-goal_not_met.json")
    assert record["channel"] == "smtp"


@pytest.mark.parametrize(
    "alerts, message",
    [
        ({"channel": "smtp"}, "alerts.to"),
        ({"channel": "sns"}, "alerts.target"),
        ({"channel": "pager"}, "alerts.channel"),
        ({"chanel": "log"}, "alerts.chanel"),
    ],
)
def test_alerts_section_errors_name_the_field(tmp_path, alerts, message):
    from include.lifecycle.spec import SpecError

    path = write_spec(tmp_path, ops_spec("ops_alerts", alerts=alerts))
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        load_spec(path)


def test_approval_timeout_must_be_positive(tmp_path):
    from include.lifecycle.spec import SpecError

    path = write_spec(tmp_path, ops_spec("ops_timeout", deploy={"require_approval": True, "approval_timeout_hours": 0}))
    with pytest.raises(SpecError, match=r"deploy\.approval_timeout_hours"):
        load_spec(path)
