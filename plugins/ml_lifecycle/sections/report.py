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
    from include.lifecycle.layout import REGISTRY
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
    reg = ModelRegistry(rc.store.sub(REGISTRY))
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
