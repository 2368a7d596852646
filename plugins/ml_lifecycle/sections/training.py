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
    """Select the best trial on the validation split (never on test)."""
    from include.lifecycle.models import best_trial

    rc = RunContext.from_airflow(problem, context)
    results = [dict(trials[i]) for i in range(len(trials))]  # indexing avoids probing past the end
    best = best_trial(results, higher_is_better=rc.spec.goal.higher_is_better)
    for r in sorted(results, key=lambda r: r["trial_id"]):
        mark = "  <- best" if r is best else ""
        log.info("%s: train %.4f validation %.4f%s", r["trial_id"], r["train_score"], r["validation_score"], mark)
    rc.store.write_json(rc.layout.round(round_no).selection, {"round": round_no, "best": best, "trials": results})
    return {
        "round": round_no,
        "trial_id": best["trial_id"],
        "family": best["family"],
        "validation_score": best["validation_score"],
        "train_score": best["train_score"],
    }
