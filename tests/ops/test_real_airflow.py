"""A real Airflow on a real metadata database, driven only through the REST API.

PostgreSQL 15 (a throwaway cluster on 127.0.0.1 in a temp folder, run as an unprivileged user
when the tests run as root), ``airflow db migrate``, then the scheduler (LocalExecutor),
dag-processor and api-server as separate processes, all on loopback and free ports. With a
small partitioned problem that requires approval, the test checks:

- the nightly schedule creates a run by itself; a person approves it over the HITL endpoint
  and the model is deployed;
- a manual run with a bad param is refused (400); a manual run with params is rejected by a
  person: nothing is deployed and the report says so;
- a backfill of 5 dates with max_active_runs=2 (POST /api/v2/backfills, skip_approval in the
  runs' conf): every run succeeds, with its own artifacts and its own data window, and the
  registry stays consistent (one champion, an unbroken chain of promotions, checksums valid).

Every process is stopped by the fixtures, also when the test fails.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ml_lifecycle import localstack
from tests.integration.dagrun import read_json
from tests.ops.opsspec import make_data, ops_spec, write_spec

pytestmark = pytest.mark.integration

DAG_ID = "ops_live"
WAIT = 900  # seconds: a safety bound for each wait, not an assertion about speed
READING = 5  # seconds between seeing the approval question and answering it
# Optional: ML_SCREENSHOTS_DIR=docs/screenshots also saves PNGs of the UI on the way (needs the
# playwright package and a system chromium; neither is in requirements.txt).
SCREENSHOTS = os.environ.get("ML_SCREENSHOTS_DIR")


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with localstack.postgres_cluster("ml-ops-pg-") as server:
        yield localstack.create_database(server, "airflow")


def _wait(what: str, probe, procs: dict[str, subprocess.Popen] | None = None, every: float = 2.0) -> Any:
    return localstack.wait_for(what, probe, procs, every=every, timeout=WAIT)


@pytest.fixture(scope="module")
def airflow(postgres) -> Iterator[dict[str, Any]]:
    base = Path(tempfile.mkdtemp(prefix="ml-ops-airflow-"))
    home, problems, data, artifacts = base / "home", base / "problems", base / "data", base / "artifacts"
    home.mkdir()
    today = dt.datetime.now(dt.UTC).date()
    make_data(data, end=today, days=40)
    write_spec(problems, ops_spec(DAG_ID, deploy={"require_approval": True}))
    env = localstack.stack_env(home, postgres, localstack.free_port())
    env.update(
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        ML_PROBLEMS_DIR=str(problems),
        ML_DATA_ROOT=str(data),
        ML_ARTIFACT_ROOT=str(artifacts),
        ML_CODE_VERSION="ops-test",
        ML_TRIAL_POOL="ml_trials",  # as make up and compose run it: trials of all DAGs share a pool
    )
    try:
        localstack.migrate(env)
        with localstack.airflow_stack(env) as (api, procs):
            yield {"api": api, "procs": procs, "today": today, "artifacts": artifacts / DAG_ID, "home": home}
    finally:
        if os.environ.get("ML_KEEP_TEST_TMP"):
            print(f"kept the real-Airflow folder {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def _iso(day: dt.date) -> str:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).isoformat()


def _run_path(run_id: str) -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.request.quote(run_id, safe='')}"


def _answer(af: dict[str, Any], run_id: str, option: str, again: bool = False) -> int:
    """Wait for approve_deployment to ask, check what it shows, answer over the HITL endpoint;
    returns the try of approve_deployment that asked."""
    path = _run_path(run_id) + "/taskInstances/approve_deployment/-1/hitlDetails"

    def asked():
        status, detail = af["api"].get(path)
        if status != 200 or not detail.get("body") or detail["response_received"]:
            _still_running(af, run_id, "before approve_deployment asked")
            return None
        return detail if _task_state(af, run_id, "approve_deployment") == "awaiting_input" else None

    detail = _wait(f"the approval question of {run_id}", asked, af["procs"])
    time.sleep(READING)  # like a person, who does not answer within a second (see _answer_and_wait)
    ui_run = f"/dags/{DAG_ID}/runs/{urllib.request.quote(run_id, safe='')}"
    _screenshot(af, f"approval-{option.lower()}", f"{ui_run}/tasks/approve_deployment/required_actions")
    _screenshot(af, f"run-waiting-for-approval-{option.lower()}", ui_run)
    assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
    assert detail["response_received"] is False
    # a re-ask shows the first try's text: Airflow 3.3 keeps one HITL record per task instance and a
    # retry only clears its answer (execution_api upsert_hitl_detail); the re-ask is said in the
    # task log and the approval alert (approval_request.json), not in the UI's question
    assert detail["subject"].startswith(f"Deploy {DAG_ID} round 1? roc_auc "), (again, detail["subject"])
    assert "| round | remedy |" in detail["body"] and "**Candidate.**" in detail["body"]
    assert "meets the goal" in detail["body"]
    asking_try = _task(af, run_id, "approve_deployment")["try_number"]  # the try that asked: it waits for us
    status, answer = af["api"].patch(path, {"chosen_options": [option], "params_input": {}})
    assert status == 200, answer
    assert answer["chosen_options"] == [option] and answer["responded_by"]["name"] == "admin"
    return asking_try


def _answer_and_wait(af: dict[str, Any], run_id: str, option: str) -> dict[str, Any]:
    """Answer the run's approval question with ``option``, wait for the run to end.

    Airflow 3.3.2 can lose an answer given within about a second of the question (the scheduler
    fails the resumed try, see approval.py; the CI run of 2026-11-24 hung on it). ``_answer``
    answers ``READING`` seconds after the question, as a person would; should a slow scheduler
    still lose the answer, the retry asks again, saying so, and gets the same answer. Every
    re-ask is printed, so a CI log shows whether it happens."""
    answered = {_answer(af, run_id, option)}

    def done():
        status, run = af["api"].get(_run_path(run_id))
        assert status == 200, run
        if run["state"] in ("success", "failed"):
            return run
        ti = _task(af, run_id, "approve_deployment")
        if ti["state"] == "awaiting_input" and ti["try_number"] not in answered:
            print(f"approve_deployment of {run_id} asked again in try {ti['try_number']}; answering {option} again")
            answered.add(_answer(af, run_id, option, again=True))
        return None

    return _wait(f"run {run_id}", done, af["procs"])


def _screenshot(af: dict[str, Any], name: str, path: str, click: str | None = None) -> None:
    """Save the UI page ``path`` as ``<ML_SCREENSHOTS_DIR>/<name>.png``, logged in with the test's token."""
    if not SCREENSHOTS:
        return
    from playwright.sync_api import sync_playwright

    out = Path(SCREENSHOTS)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            ctx = browser.new_context(viewport={"width": 1440, "height": 900})
            ctx.add_cookies([{"name": "_token", "value": af["api"].login(), "url": af["api"].base}])
            page = ctx.new_page()
            page.goto(af["api"].base + path, wait_until="networkidle", timeout=60_000)
            page.wait_for_timeout(3000)  # the React UI renders after its API calls return
            if click:  # e.g. the Trigger button, whose form is a dialog without a URL of its own
                page.get_by_role("button", name=click).first.click()
                page.wait_for_timeout(3000)
            page.screenshot(path=str(out / f"{name}.png"))
        finally:
            browser.close()


def _still_running(af: dict[str, Any], run_id: str, when: str) -> None:
    """Fail at once, naming the run's failed tasks, when the run ended ``when`` (instead of
    waiting out ``WAIT`` for a question that will never come)."""
    status, run = af["api"].get(_run_path(run_id))
    assert status == 200, run
    if run["state"] not in ("success", "failed"):
        return
    status, found = af["api"].get(_run_path(run_id) + "/taskInstances?state=failed&state=upstream_failed")
    tis = found.get("task_instances", [])
    failed = [(t["task_id"], t.get("map_index"), t["state"]) for t in tis]
    first = next((t for t in tis if t["state"] == "failed"), None)
    log = ""
    if first:
        where = f"/taskInstances/{first['task_id']}/logs/{first['try_number']}?full_content=true"
        _, got = af["api"].get(_run_path(run_id) + where + f"&map_index={first.get('map_index', -1)}")
        log = f"\nlog of {first['task_id']} (end):\n{json.dumps(got)[-3000:]}"
    raise AssertionError(f"run {run_id} ended {run['state']} {when}; failed tasks: {failed}{log}")


def _task(af: dict[str, Any], run_id: str, task_id: str) -> dict[str, Any]:
    status, ti = af["api"].get(_run_path(run_id) + f"/taskInstances/{task_id}")
    assert status == 200, ti
    return ti


def _task_state(af: dict[str, Any], run_id: str, task_id: str) -> str:
    return _task(af, run_id, task_id)["state"]


def _trials_share_the_pool(af: dict[str, Any], run_ids: list[str]) -> None:
    """The training trials ran in the pool the stack created (as make up and compose create it),
    and never more at once than its slots, across runs that ran side by side."""
    status, pool = af["api"].get("/api/v2/pools/ml_trials")
    assert status == 200, pool
    trials = []
    for run_id in run_ids:  # the API returns at most 100 task instances a page
        status, found = af["api"].get(_run_path(run_id) + "/taskInstances?task_display_name_pattern=train_model")
        assert status == 200 and found["total_entries"] == len(found["task_instances"]), found
        trials += [ti for ti in found["task_instances"] if ti["task_id"].endswith(".train_model")]
    assert trials and {ti["pool"] for ti in trials} == {"ml_trials"}, [(ti["task_id"], ti["pool"]) for ti in trials]
    assert len({ti["dag_run_id"] for ti in trials}) == len(run_ids)
    edges = sorted(
        (stamp, +1 if i == 0 else -1)
        for ti in trials
        if ti["start_date"] and ti["end_date"]
        for i, stamp in enumerate(
            (dt.datetime.fromisoformat(ti["start_date"]), dt.datetime.fromisoformat(ti["end_date"]))
        )
    )
    running = peak = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    assert 1 <= peak <= pool["slots"], (peak, pool)


def test_real_airflow_schedule_approval_params_and_backfill(airflow):
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.store import Store, safe_run_id

    af, api, today = airflow, airflow["api"], airflow["today"]
    runs_dir = af["artifacts"] / "runs"

    def dag_ready():
        status, dag = api.get(f"/api/v2/dags/{DAG_ID}")
        return dag if status == 200 else None

    dag = _wait(f"the dag-processor to parse {DAG_ID}", dag_ready, af["procs"])
    assert dag["is_paused"] is False and "ml-lifecycle" in {t["name"] for t in dag["tags"]}
    status, errors = api.get("/api/v2/importErrors")
    assert status == 200 and errors["total_entries"] == 0, errors

    # 1. a bad param is refused before a run exists
    status, body = api.post(
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        {"logical_date": _iso(today - dt.timedelta(days=2)), "conf": {"max_rounds": 5}},
    )
    assert status == 400 and "max_rounds" in json.dumps(body), (status, body)

    # 2. the nightly schedule creates the latest run by itself; a person approves it
    def scheduled():
        status, runs = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=scheduled")
        assert status == 200, runs
        return runs["dag_runs"][0] if runs["total_entries"] else None

    nightly = _wait("the scheduled run", scheduled, af["procs"])
    assert nightly["data_interval_end"].startswith(today.isoformat())
    assert _answer_and_wait(af, nightly["dag_run_id"], "Approve")["state"] == "success"
    nightly_dir = runs_dir / safe_run_id(nightly["dag_run_id"])
    s0 = read_json(nightly_dir / "run_summary.json")
    assert s0["decision"] == "deployed" and s0["model_version"] == 1, s0["reason"]
    approval = read_json(nightly_dir / "approval.json")
    assert approval["approved"] is True and approval["by"] == "admin"
    reg = ModelRegistry(Store.from_uri(str(af["artifacts"])), DAG_ID)  # the registered model, in MLflow
    assert reg.tags(1)["approval.by"] == "admin" and reg.tags(1)["approval.at"] == approval["at"]

    # 3. a manual run as the UI's trigger form makes it (logical date: now) with a param: the
    # person rejects; nothing is deployed, the report says why
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if now.date() != today:  # the test crossed midnight: the data ends the day before `today`
        now = dt.datetime(today.year, today.month, today.day, 23, 59, tzinfo=dt.UTC)
    status, manual = api.post(
        f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": now.isoformat(), "conf": {"lookback_days": 18}}
    )
    assert status == 200, manual
    assert manual["conf"]["lookback_days"] == 18
    assert _answer_and_wait(af, manual["dag_run_id"], "Reject")["state"] == "success"
    assert _task_state(af, manual["dag_run_id"], "deploy_model") == "skipped"
    assert _task_state(af, manual["dag_run_id"], "publish_report") == "success"
    manual_dir = runs_dir / safe_run_id(manual["dag_run_id"])
    s1 = read_json(manual_dir / "run_summary.json")
    assert s1["decision"] == "rejected" and s1["model_version"] is None
    assert "rejected by admin" in s1["reason"]
    # @daily is a cron trigger in Airflow 3: a run's data interval ends at its logical date
    assert read_json(manual_dir / "problem_card.json")["data"]["window"] == [
        (today - dt.timedelta(days=18)).isoformat(),
        today.isoformat(),
    ]
    assert reg.champion_version() == 1

    # 4. a backfill of 5 dates, two runs at a time, approval skipped by the runs' conf
    first, last = today - dt.timedelta(days=8), today - dt.timedelta(days=4)
    status, backfill = api.post(
        "/api/v2/backfills",
        {
            "dag_id": DAG_ID,
            "from_date": _iso(first),
            "to_date": _iso(last),
            "max_active_runs": 2,
            "dag_run_conf": {"skip_approval": True},
        },
    )
    assert status == 200, backfill
    assert backfill["max_active_runs"] == 2

    def backfill_done():
        status, runs = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=backfill&limit=50")
        assert status == 200, runs
        found = runs["dag_runs"]
        return found if len(found) == 5 and all(r["state"] in ("success", "failed") for r in found) else None

    runs = _wait("the backfill's 5 runs", backfill_done, af["procs"])
    _screenshot(af, "dag-grid-after-backfill", f"/dags/{DAG_ID}")
    _screenshot(af, "backfills", f"/dags/{DAG_ID}/backfills")
    _screenshot(af, "trigger-form", f"/dags/{DAG_ID}", click="Trigger")
    assert {r["state"] for r in runs} == {"success"}, [(r["dag_run_id"], r["state"]) for r in runs]
    ends = sorted(r["data_interval_end"][:10] for r in runs)
    assert ends == [(first + dt.timedelta(days=i)).isoformat() for i in range(5)]
    summaries = {}
    for r in runs:
        run_dir = runs_dir / safe_run_id(r["dag_run_id"])
        s = read_json(run_dir / "run_summary.json")
        assert s["run_id"] == r["dag_run_id"]
        end = dt.date.fromisoformat(r["data_interval_end"][:10])
        # its own window: the lookback ending at its own data interval end
        assert read_json(run_dir / "problem_card.json")["data"]["window"] == [
            (end - dt.timedelta(days=21)).isoformat(),
            end.isoformat(),
        ]
        assert (run_dir / "report.html").stat().st_size > 10_000
        # the champion (the nightly run's) was trained on newer data than any backfilled date: an
        # older model never replaces it, so no backfill reaches the approval or deploy_model
        assert s["decision"] in ("champion_kept", "goal_not_met"), s["reason"]
        if s["decision"] == "champion_kept":
            assert "trained on newer data" in s["reason"], s["reason"]
        assert not (run_dir / "approval.json").exists()
        assert _task_state(af, r["dag_run_id"], "deploy_model") == "skipped"
        summaries[r["dag_run_id"]] = s
    assert len({read_json(runs_dir / safe_run_id(r) / "collect_summary.json")["dataset_rel"] for r in summaries}) == 5
    _trials_share_the_pool(af, [r["dag_run_id"] for r in runs])

    # 5. the registry: the nightly run's version is still the one champion, promoted once, intact
    assert [d["version"] for d in reg.deployments()] == [1]
    assert reg.champion()["version"] == 1 and reg.champion()["previous"] is None
    all_runs = {nightly["dag_run_id"], manual["dag_run_id"], *summaries}
    with tempfile.TemporaryDirectory() as tmp:
        for version in reg.versions():
            reg.materialise(version, Path(tmp) / str(version))  # verifies every file's sha256
            lineage = json.loads((Path(tmp) / str(version) / "lineage.json").read_text())
            assert lineage["run_id"] in all_runs
    assert reg.metadata(1)["run_id"] == nightly["dag_run_id"]

    # 6. the monitor's retraining request (an asset event with its evidence, posted as the
    # monitoring DAG's request_retraining posts it) starts a lifecycle run on the scheduler: the
    # DAG is scheduled on its cron *or* the asset. The run has no logical date; its window ends
    # when it was queued, and its problem card and report say what triggered it.
    status, assets = api.get(f"/api/v2/assets?name_pattern={DAG_ID}.retrain_requested")
    assert status == 200 and assets["total_entries"] == 1, assets
    evidence = {"reasons": ["realised roc_auc 0.41 [0.35, 0.47] below the goal 0.55"], "monitor_run_id": "ops-mon-1"}
    before = dt.datetime.now(dt.UTC)
    status, event = api.post("/api/v2/assets/events", {"asset_id": assets["assets"][0]["id"], "extra": evidence})
    assert status == 200, event

    def asset_run():
        status, runs = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=asset_triggered")
        assert status == 200, runs
        return runs["dag_runs"][0] if runs["total_entries"] else None

    triggered = _wait("the asset-triggered run", asset_run, af["procs"])
    run_id = triggered["dag_run_id"]

    def ended_or_asking():
        status, run = api.get(_run_path(run_id))
        assert status == 200, run
        if run["state"] in ("success", "failed"):
            return run
        return "asking" if _task_state(af, run_id, "approve_deployment") == "awaiting_input" else None

    done = _wait(f"run {run_id}", ended_or_asking, af["procs"])
    if done == "asking":  # the candidate may replace the champion: a person declines here
        done = _answer_and_wait(af, run_id, "Reject")
    assert done["state"] == "success", done
    run_dir = runs_dir / safe_run_id(run_id)
    card = read_json(run_dir / "problem_card.json")
    assert card["trigger"]["run_type"] == "asset_triggered"
    asked = card["trigger"]["retrain_requested"]
    assert asked["reasons"] == evidence["reasons"] and asked["monitor_run_id"] == "ops-mon-1"
    window_end = dt.date.fromisoformat(card["data"]["window"][1])
    assert before.date() <= window_end <= dt.datetime.now(dt.UTC).date(), card["data"]["window"]
    report = (run_dir / "report.html").read_text()
    assert "the monitor&#x27;s retraining request (run ops-mon-1)" in report or (
        "the monitor's retraining request (run ops-mon-1)" in report
    )
    assert "below the goal 0.55" in report
    assert reg.champion()["version"] == 1  # rejected or kept: the nightly champion stays
