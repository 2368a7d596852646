"""Section 5: plan the round's training trials and select the best one on validation."""

from __future__ import annotations

import logging
from typing import Any

from ml_lifecycle.context import RunContext

log = logging.getLogger("airflow.task")


# --- section 5 -----------------------------------------------------------------------------
def plan_trials(problem: str, round_no: int, **context: Any) -> list[dict[str, Any]]:
    """The round's training trials (mapped into train_model), as the run's backend runs them."""
    from include.lifecycle.models import plan_trials as plan

    rc = RunContext.from_airflow(problem, context)
    p = rc.store.read_json(rc.layout.round(round_no).plan)
    trials = plan(
        rc.spec,
        families=p["families"],
        trials_per_family=p["trials_per_family"],
        wide=p["wide_search"],
        round_no=round_no,
    )
    trials = rc.backend.plan_trials(trials, wide=p["wide_search"], round_no=round_no, log=log.info)
    log.info("round %d: %d trials: %s", round_no, len(trials), [t["trial_id"] for t in trials])
    return [{**t, "k": i, "of": len(trials)} for i, t in enumerate(trials, start=1)]


def select_model(problem: str, round_no: int, trials: Any, **context: Any) -> dict[str, Any]:
    """Select the best trial on validation (never on test), among this round's trials and those of
    the earlier rounds scored on the same rows: a later round never replaces a better earlier
    candidate. ``selection.json``'s ``best`` names the round its model was trained in."""
    from include.lifecycle.decide import select_across_rounds

    rc = RunContext.from_airflow(problem, context)
    results = [dict(trials[i]) for i in range(len(trials))]  # indexing avoids probing past the end
    earlier = []
    for k in range(1, round_no):
        rnd = rc.layout.round(k)
        selection = rc.store.read_json_or(rnd.selection)
        if selection is not None:
            earlier.append(_round_record(rc, k, selection["trials"]))
    picked = select_across_rounds(
        round_no,
        results,
        this=_round_record(rc, round_no, results),
        earlier=earlier,
        higher_is_better=rc.spec.goal.higher_is_better,
    )
    best = picked["best"]
    for r in sorted(results, key=lambda r: r["trial_id"]):
        mark = "  <- best of the round" if r["trial_id"] == picked["round_best"]["trial_id"] else ""
        log.info("%s: train %.4f validation %.4f%s", r["trial_id"], r["train_score"], r["validation_score"], mark)
    for k, why in picked["not_comparable"].items():
        log.info("round %s's trials are not compared with this round's: %s", k, why)
    log.info(
        "select_model: best over rounds %s: %s (round %d), validation %.4f",
        picked["compared_rounds"],
        best["trial_id"],
        best["round"],
        best["validation_score"],
    )
    rc.store.write_json(rc.layout.round(round_no).selection, {"round": round_no, "trials": results, **picked})
    return {
        "round": round_no,
        "trial_id": best["trial_id"],
        "family": best["family"],
        "from_round": best["round"],
        "validation_score": best["validation_score"],
        "train_score": best["train_score"],
    }


def _round_record(rc: RunContext, k: int, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """What select_across_rounds compares of round ``k``: its plan, its split and its trials."""
    rnd = rc.layout.round(k)
    return {
        "round": k,
        "plan": rc.store.read_json(rnd.plan),
        "splits": rc.store.read_json_or(rnd.split),
        "trials": trials,
    }
