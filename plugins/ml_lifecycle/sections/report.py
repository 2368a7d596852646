"""The run's report and run_summary.json, whatever happened."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from ml_lifecycle.context import RunContext

log = logging.getLogger("airflow.task")


# --- the report ------------------------------------------------------------------------------
def _failed_tasks(rc: RunContext, context: dict[str, Any]) -> list[dict[str, Any]]:
    """The tasks of this run that failed, each with its error (recorded by ``FailureRecorder``).

    The task states come from Airflow (the execution API); a failure record whose task is no longer
    failed (cleared and re-run since) does not count. Without the states (no API), the records do."""
    from ml_lifecycle.errors import ti_key

    folder = rc.layout.failures_dir
    records = [rc.store.read_json(f"{folder}/{n}") for n in rc.store.ls(folder)] if rc.store.exists(folder) else []
    states: dict[str, str] | None = None
    ti = context.get("ti")
    try:
        found = ti.get_task_states(dag_id=rc.spec.name, run_ids=[rc.run_id])  # type: ignore[union-attr]
        states = dict(found.get(rc.run_id, {}))
    except Exception as exc:  # e.g. a task run outside a supervisor
        log.info("publish_report: task states unavailable (%s: %s); using the failure records", type(exc).__name__, exc)
    if states is None:
        return records
    # Airflow names a mapped task instance <task_id>_<map_index> in these states
    by_task = {ti_key(r["task_id"], r.get("map_index")): r for r in records}
    failed = []
    for task_id, state in sorted(states.items()):
        if str(getattr(state, "value", state)) == "failed":
            failed.append(by_task.get(task_id) or {"task_id": task_id, "error": "(failed; no error recorded)"})
    return failed


def publish_report(problem: str, **context: Any) -> dict[str, Any]:
    """run_summary.json (machine-readable) and report.html (EDA + rounds + decision), whatever
    happened: a run in which a task failed gets ``decision: failed`` with the failing task and its
    error, and this task then fails too, so the run is marked failed."""
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.report_run import render_run_report, run_summary

    rc = RunContext.from_airflow(problem, context)
    layout = rc.layout
    failed = _failed_tasks(rc, context)
    outcome = rc.store.read_json_or(layout.outcome)
    if failed:
        first = failed[0]
        outcome = {
            "decision": "failed",
            "version": None,
            "failed_task": first["task_id"],
            "error": first.get("error"),
            "failures": failed,
            "reason": f"task {first['task_id']} failed: {first.get('error')}",
        }
    elif outcome is None:
        outcome = {
            "decision": "failed",
            "version": None,
            "failed_task": None,
            "error": "no end task (deploy_model, goal_not_met, keep_champion) recorded an outcome",
            "reason": "the run ended without an outcome (no task recorded a failure)",
        }
    rounds = rc.rounds()
    reg = ModelRegistry(rc.store, rc.spec.name)
    try:
        champion_after = reg.champion()
    except Exception as exc:  # a damaged registry must not stop the report that explains the run
        log.info("publish_report: champion unreadable (%s: %s)", type(exc).__name__, exc)
        champion_after = None
    summary = run_summary(
        spec=rc.spec,
        run_id=rc.run_id,
        as_of=rc.as_of.isoformat(),
        outcome=outcome,
        rounds=rounds,
        problem_card=rc.store.read_json_or(layout.problem_card),
        collect=rc.store.read_json_or(layout.collect_summary),
        eda=rc.store.read_json_or(layout.eda_verdict),
        champion_after=champion_after,
        report_uri=rc.store.uri(layout.report),
    )
    plots = {
        r["round"]: {
            n: rc.store.read_bytes(layout.round(r["round"]).plot(n)) for n in (r["evaluation"] or {}).get("plots", [])
        }
        for r in rounds
    }
    eda_html = rc.store.read_text(layout.eda_section) if rc.store.exists(layout.eda_section) else ""
    rc.store.write_text(layout.report, render_run_report(summary, eda_html, plots))
    rc.store.write_json(layout.run_summary, summary)
    log.info("report: %s; decision %s: %s", summary["report_uri"], summary["decision"], summary["reason"])
    if summary["decision"] == "failed":
        raise AirflowFailException(f"the run failed: {summary['reason']} (report: {summary['report_uri']})")
    return {
        "decision": summary["decision"],
        "summary_uri": rc.store.uri(layout.run_summary),
        "report_uri": summary["report_uri"],
    }


# --- the run in MLflow, and the run's end at a glance ---------------------------------------------
def log_to_mlflow(problem: str, **context: Any) -> dict[str, Any]:
    """Log the run to MLflow from the files it wrote (``include/lifecycle/tracking.py``): one MLflow
    run in the problem's experiment (params, per-round metrics with intervals, data counts, the
    decision as a tag, the reports and plots as artifacts) and a nested run per training trial.

    Runs after ``publish_report`` whatever happened (a failed run is logged too, as FAILED), so
    the report and run_summary.json exist before anything talks to the tracking store. Idempotent:
    a retry finds the run by its tags and adds nothing twice. A tracking error fails this task
    only (it is retried: a tracking server down, a locked SQLite store): the report is already
    written, the decision stands, and the run shows failed with this task red; clearing it logs
    the run again."""
    from airflow.sdk.exceptions import AirflowException

    from include.lifecycle import mlflow_env, tracking
    from ml_lifecycle.settings import artifact_root

    rc = RunContext.from_airflow(problem, context)
    root = str(artifact_root())
    dag_id = context["dag"].dag_id if context.get("dag") is not None else problem
    try:
        client = mlflow_env.client(artifact_root=root)
        experiment_id = mlflow_env.experiment_id(client, problem, artifact_root=root)
        result = tracking.log_run(
            client,
            experiment_id,
            rc.store,
            rc.run_id,
            spec=rc.spec,
            run_conf=rc.params,
            backend=rc.backend.name,
            dag_id=dag_id,
        )
    except Exception as exc:
        where = mlflow_env.tracking_uri(root)
        log.error("log_to_mlflow: the run was NOT logged to %s: %s: %s", where, type(exc).__name__, exc)
        # an AirflowException keeps the task's retries (fail_fast would end a plain error at once)
        raise AirflowException(f"MLflow tracking of run {rc.run_id} at {where} failed: {exc}") from exc
    url = tracking.run_page(tracking.ui_url(), experiment_id, result["mlflow_run_id"])
    log.info(
        "log_to_mlflow: run %s logged to %s (experiment %s): decision %s, %d trials as nested runs, "
        "%d new metric values, %d artifacts; %s",
        rc.run_id,
        mlflow_env.tracking_uri(root),
        experiment_id,
        result["decision"],
        result["trials"],
        result["new_metric_values"],
        result["artifacts"],
        url,
    )
    if result["param_conflicts"]:
        log.warning(
            "log_to_mlflow: params already logged with other values, left as they were: %s", result["param_conflicts"]
        )
    return {**result, "url": url}


def model_deployed(problem: str, **context: Any) -> dict[str, Any]:
    """The run's end at a glance in the grid: this task succeeds when the run deployed a new
    champion and is skipped when it did not (goal not met, champion kept, rejected, not promoted);
    the skip says why. A failed run never gets here (publish_report failed: upstream failed)."""
    from airflow.sdk.exceptions import AirflowSkipException

    rc = RunContext.from_airflow(problem, context)
    summary = rc.store.read_json(rc.layout.run_summary)
    decision = summary.get("decision")
    if decision != "deployed":
        raise AirflowSkipException(f"not deployed: {decision} - {summary.get('reason')}")
    log.info(
        "model_deployed: version %s is the champion (was %s)",
        summary.get("model_version"),
        summary.get("champion_before"),
    )
    return {"decision": decision, "version": summary.get("model_version")}
