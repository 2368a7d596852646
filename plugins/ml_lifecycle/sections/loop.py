"""Sections 6 and 8: the business-goal gate, the diagnosis and the remedies of the loop."""

from __future__ import annotations

import logging
from typing import Any

from ml_lifecycle import task_ids
from ml_lifecycle.context import RunContext

log = logging.getLogger("airflow.task")


# --- sections 6 and 8 ------------------------------------------------------------------------
def meets_business_goal(problem: str, round_no: int, **context: Any) -> str:
    """Branch: deploy (after a person's approval if the spec asks); keep the champion when the
    candidate meets the goal but the champion is better; or diagnose and go round again; or stop
    with the goal not met."""
    rc = RunContext.from_airflow(problem, context)
    decision = rc.store.read_json(rc.layout.round(round_no).evaluation)["decision"]
    if decision["deploy"] and rc.spec.deploy.enabled:
        log.info("meets_business_goal: YES - %s", decision["reason"])
        return task_ids.APPROVE_DEPLOYMENT if rc.spec.deploy.require_approval else task_ids.DEPLOY_MODEL
    if decision.get("meets_goal") and decision.get("no_worse_than_champion") is False and not decision.get("forced"):
        # another round cannot make the goal "more met": the champion is simply better (or newer)
        log.info("meets_business_goal: the goal is met but the champion is better; keeping it - %s", decision["reason"])
        return task_ids.KEEP_CHAMPION
    why = decision["reason"] if decision["deploy"] is False else "deploy.enabled is false in the spec"
    if round_no >= rc.max_rounds:
        log.info("meets_business_goal: NO in the last round (%d/%d) - %s", round_no, rc.max_rounds, why)
        return task_ids.GOAL_NOT_MET
    log.info("meets_business_goal: NO - %s; diagnosing", why)
    return task_ids.in_round(round_no, task_ids.DIAGNOSE)


def _train_counts(rc: RunContext, round_no: int) -> tuple[int, int] | None:
    """(positives, rows) of a round's training channel; None for a regression."""
    from include.lifecycle.models import TARGET_COL

    if not rc.spec.is_binary:
        return None
    y = rc.store.read_parquet(rc.layout.round(round_no).channel_file("train"), columns=[TARGET_COL])[TARGET_COL]
    return int(y.sum()), len(y)


def _next_plan(rc: RunContext, round_no: int, remedy_name: str, reason: str) -> dict[str, Any]:
    """``decide.next_plan`` with what the run knows: the earlier rounds' plans, this round's training
    rows, and whether the source holds partitions outside this round's window (older history)."""
    from include.lifecycle.decide import next_plan

    layout = rc.layout
    plans = [r["plan"] for r in rc.rounds() if r["round"] <= round_no]
    plan = plans[-1]
    collect = rc.store.read_json_or(plan.get("collect_rel") or layout.collect_summary) or {}
    outside = collect.get("partitions_outside_window")
    return next_plan(
        rc.spec,
        plan,
        remedy_name,
        reason,
        earlier=plans[:-1],
        train_counts=_train_counts(rc, round_no),
        more_history=outside is None or outside > 0,
    )


def diagnose(problem: str, round_no: int, **context: Any) -> str:
    """Branch: pick the remedy from the evidence, write the reason down, and go to the remedy that
    will change the candidate (the diagnosed one, or the one it falls through to); when none can,
    end the loop (goal_not_met) instead of spending a round on the same candidate."""
    from include.lifecycle.decide import NO_REMEDY
    from include.lifecycle.decide import diagnose as rule

    rc = RunContext.from_airflow(problem, context)
    rnd = rc.layout.round(round_no)
    ev = rc.store.read_json(rnd.evaluation)
    trained_in = ev.get("origin_round") or round_no  # the round the evaluated model was trained in
    counts = _train_counts(rc, trained_in)
    d = rule(
        rc.spec,
        train_score=ev["train_score"],
        validation_score=ev["validation_score"],
        train_positives=None if counts is None else counts[0],
        test_score=ev["test_score"],
    )
    nxt = _next_plan(rc, round_no, d["remedy"], d["reason"])
    d.update(applied=nxt["applied"], changes=nxt["changes"], skipped=nxt["skipped"])
    if nxt["applied"] is None:
        d.update(stop=True, reason=f"{d['reason']}; but {NO_REMEDY}: {'; '.join(nxt['skipped'])}")
        rc.store.write_json(rnd.diagnosis, d)
        log.info("diagnose round %d: %s - ending the loop", round_no, d["reason"])
        return task_ids.GOAL_NOT_MET
    rc.store.write_json(rnd.diagnosis, d)
    log.info("diagnose round %d: %s (applied: %s) - %s", round_no, d["remedy"], d["applied"], d["reason"])
    return task_ids.in_round(round_no, d["applied"])


def remedy(problem: str, round_no: int, remedy_name: str, **context: Any) -> dict[str, Any]:
    """tune_model / augment_features / augment_data: write the next round's plan. A plan that needs
    more history names the data set and summary the next ``collect_more_data`` task writes.

    The plan keeps the diagnosed remedy and the one applied (they differ when the diagnosed one
    could not change the candidate); called as another remedy than diagnose chose, it plans that one."""
    from airflow.sdk.exceptions import AirflowFailException

    rc = RunContext.from_airflow(problem, context)
    layout, rnd = rc.layout, rc.layout.round(round_no)
    d = rc.store.read_json(rnd.diagnosis)
    asked = d["remedy"] if d.get("applied") == remedy_name else remedy_name
    new = _next_plan(rc, round_no, asked, d["reason"])
    if new["applied"] is None:
        raise AirflowFailException(f"{remedy_name}: {new['changes'][0]}; no round {round_no + 1} to plan")
    if new.get("needs_new_data"):
        folder = layout.collect_dir(round_no + 1)
        new["dataset_rel"] = layout.dataset_in(folder)
        new["collect_rel"] = layout.collect_summary_in(folder)  # the re-collection's own summary
    rc.store.write_json(layout.round(round_no + 1).plan, new)
    log.info("%s: round %d plan: %s", remedy_name, round_no + 1, "; ".join(new["changes"]))
    for skipped in new["skipped"]:
        log.info("%s: passed over %s", remedy_name, skipped)
    return {"round": round_no + 1, "remedy": new["applied"], "changes": new["changes"]}
