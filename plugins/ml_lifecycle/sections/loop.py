"""Sections 6 and 8: the business-goal gate, the diagnosis and the remedies of the loop."""

from __future__ import annotations

import logging
from typing import Any

from ml_lifecycle import task_ids
from ml_lifecycle.context import RunContext

log = logging.getLogger("airflow.task")


# --- sections 6 and 8 ------------------------------------------------------------------------
def meets_business_goal(problem: str, round_no: int, **context: Any) -> str:
    """Branch: deploy (after a person's approval if the spec asks), or diagnose and go round
    again, or stop with the goal not met."""
    rc = RunContext.from_airflow(problem, context)
    ev = rc.store.read_json(rc.layout.round(round_no).evaluation)
    if ev["decision"]["deploy"] and rc.spec.deploy.enabled:
        log.info("meets_business_goal: YES - %s", ev["decision"]["reason"])
        return task_ids.APPROVE_DEPLOYMENT if rc.spec.deploy.require_approval else task_ids.DEPLOY_MODEL
    why = ev["decision"]["reason"] if ev["decision"]["deploy"] is False else "deploy.enabled is false in the spec"
    if round_no >= rc.max_rounds:
        log.info("meets_business_goal: NO in the last round (%d/%d) - %s", round_no, rc.max_rounds, why)
        return task_ids.GOAL_NOT_MET
    log.info("meets_business_goal: NO - %s; diagnosing", why)
    return task_ids.in_round(round_no, task_ids.DIAGNOSE)


def diagnose(problem: str, round_no: int, **context: Any) -> str:
    """Branch: pick the remedy from the evidence and write the reason down."""
    from include.lifecycle.decide import diagnose as rule
    from include.lifecycle.models import TARGET_COL

    rc = RunContext.from_airflow(problem, context)
    rnd = rc.layout.round(round_no)
    ev = rc.store.read_json(rnd.evaluation)
    train_positives = None
    if rc.spec.is_binary:
        train_positives = int(rc.store.read_parquet(rnd.channel_file("train"), columns=[TARGET_COL])[TARGET_COL].sum())
    d = rule(
        rc.spec,
        train_score=ev["train_score"],
        validation_score=ev["validation_score"],
        train_positives=train_positives,
        test_score=ev["test_score"],
    )
    rc.store.write_json(rnd.diagnosis, d)
    log.info("diagnose round %d: %s - %s", round_no, d["remedy"], d["reason"])
    return task_ids.in_round(round_no, d["remedy"])


def remedy(problem: str, round_no: int, remedy_name: str, **context: Any) -> dict[str, Any]:
    """tune_model / augment_features / augment_data: write the next round's plan. A plan that needs
    more history names the data set and summary the next ``collect_more_data`` task writes."""
    from include.lifecycle.decide import next_plan

    rc = RunContext.from_airflow(problem, context)
    layout, rnd = rc.layout, rc.layout.round(round_no)
    plan = rc.store.read_json(rnd.plan)
    d = rc.store.read_json(rnd.diagnosis)
    new = next_plan(rc.spec, plan, remedy_name, d["reason"])
    if new.get("needs_new_data"):
        folder = layout.collect_dir(round_no + 1)
        new["dataset_rel"] = layout.dataset_in(folder)
        new["collect_rel"] = layout.collect_summary_in(folder)  # the re-collection's own summary
    rc.store.write_json(layout.round(round_no + 1).plan, new)
    log.info("%s: round %d plan: %s", remedy_name, round_no + 1, "; ".join(new["changes"]))
    return {"round": round_no + 1, "remedy": new["applied"], "changes": new["changes"]}
