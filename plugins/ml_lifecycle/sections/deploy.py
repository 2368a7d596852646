"""Deploy the winning round's model, or record that the goal was not met."""

from __future__ import annotations

import json
import logging
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from ml_lifecycle.context import RunContext
from ml_lifecycle.sections.evaluation import recompare

log = logging.getLogger("airflow.task")


# --- deploy / end states ---------------------------------------------------------------------
def promote_or_recheck(rc: RunContext, reg: Any, version: int, ev: dict[str, Any]) -> dict[str, Any] | None:
    """Promote ``version``; if another run (a concurrent run or backfill) promoted a champion since
    this run compared against it, compare again with the new champion on this run's test rows and
    promote only if the candidate still passes the gate (None: it does not; recorded in recheck.json)."""
    from include.lifecycle.registry import ChampionChanged

    forced = bool(ev["decision"].get("forced", False))
    details = {"metric": ev["metric"], "test_score": ev["test_score"], "forced": forced}
    expected = ev["champion_version"]
    for _ in range(10):
        try:
            return reg.promote(version, run_id=rc.run_id, expected_champion=expected, details=details)
        except ChampionChanged as exc:
            expected, again = recompare(rc, ev)
            reason = f"the champion changed during this run ({exc}); against version {expected}: {again['reason']}"
            rc.store.write_json(rc.layout.recheck, {**again, "champion_version": expected, "reason": reason})
            log.info("deploy_model: %s", reason)
            if not (again["deploy"] or forced):
                return None
    raise AirflowFailException(
        "deploy_model: the champion kept changing under this run; giving up after 10 comparisons"
    )


def champion_event_extra(reg: Any, out: dict[str, Any], ev: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The ``extra`` of the ``<problem>.champion_model`` asset event: what a consumer (the batch
    scoring DAG, a person reading the asset's events) needs without opening the registry."""
    metric = ev["metric"]
    ci = ((ev.get("intervals") or {}).get(metric)) or (ev.get("goal_check") or {}).get("interval") or {}
    version = out.get("version")
    return {
        "decision": out["decision"],
        "version": version,
        "registered_version": out.get("registered_version", version),
        "previous_version": out.get("previous_champion"),
        "metric": metric,
        "test_score": ev["test_score"],
        "interval": {k: ci.get(k) for k in ("low", "high", "level", "method") if ci.get(k) is not None} or None,
        "run_id": run_id,
        "round": out.get("round"),
        "model_name": reg.name,
        "model_uri": reg.model_uri(version) if version is not None else None,
        "alias_uri": f"models:/{reg.name}@champion",
        "tracking_uri": reg.tracking_uri,
    }


def deploy_model(problem: str, **context: Any) -> dict[str, Any]:
    """Register the winning round's bundle as a new version of the problem's registered model in
    MLflow, move the alias ``champion`` to it (compare-and-set) and serve it; the
    ``<problem>.champion_model`` asset event carries the version, metric, interval, run and model URI."""
    from include.lifecycle import deploy
    from include.lifecycle.registry import ModelRegistry, approval_tags

    rc = RunContext.from_airflow(problem, context)
    rounds = rc.rounds()
    win = deploy.winning_round(rounds)
    if win is None:
        raise AirflowFailException("deploy_model ran but no round met the goal: refusing to deploy")
    k, ev = win["round"], win["evaluation"]
    try:
        # the round the model was trained in: the winning round, or an earlier one its selection kept
        trained = deploy.trained_round(rounds, win)
        files = deploy.bundle_files(rc.store, rc.layout.round(trained["round"]), ev, evaluated_in=rc.layout.round(k))
        # the data that round trained on: this run's collection, or a wider one from augment_data
        source = rc.store.read_json(trained["plan"].get("collect_rel") or rc.layout.collect_summary)
        lineage = deploy.lineage(
            run_id=rc.run_id,
            win=win,
            trained=trained,
            source=source,
            dataset_uri=rc.store.uri(trained["plan"]["dataset_rel"]),
            spec_digest=rc.spec.digest(),
        )
    except ValueError as exc:
        raise AirflowFailException(f"deploy_model: {exc}") from exc
    files["lineage.json"] = json.dumps(lineage, indent=2, sort_keys=True).encode()
    reg = ModelRegistry(rc.store, rc.spec.name)
    # idempotent on retry: the version this run and round registered (found by its claim tag) is
    # re-used; a try killed before MLflow created the version left only files, which are rewritten
    claim = {"run_id": rc.run_id, "round": k}
    earlier = reg.find(claim)
    if earlier is None:
        version = reg.register(
            files,
            {
                "problem": rc.spec.name,
                "metric": ev["metric"],
                "test_score": ev["test_score"],
                "run_id": rc.run_id,
                "round": k,
                "trained_in_round": trained["round"],
            },
            claim=claim,
            tags=approval_tags(rc.store.read_json_or(rc.layout.approval)),
        )
        log.info("deploy_model: registered version %s of %s", version, reg.where())
    else:
        version = earlier
        log.info("deploy_model: re-using version %s, registered by an earlier try of this run", version)
    # a retry after a kill that followed the alias move finds its own promotion and completes it
    record = promote_or_recheck(rc, reg, version, ev)
    if record is None:
        out = {
            "decision": "not_promoted",
            "version": None,
            "registered_version": version,
            "round": k,
            "test_score": ev["test_score"],
            "reason": rc.store.read_json(rc.layout.recheck)["reason"],
        }
        rc.record_outcome(out)
        _asset_extra(context, problem, champion_event_extra(reg, out, ev, rc.run_id))
        log.info("deploy_model: version %s registered, not promoted - %s", version, out["reason"])
        return out
    out = {
        "decision": "deployed",
        "version": version,
        "round": k,
        "previous_champion": record["previous"],
        "test_score": ev["test_score"],
        "reason": ev["decision"]["reason"],
        "model_uri": reg.model_uri(version),
        **rc.backend.publish_champion(rc, version, log=log.info),
    }
    rc.record_outcome(out)
    _asset_extra(context, problem, champion_event_extra(reg, out, ev, rc.run_id))
    log.info(
        "deploy_model: version %s is the champion (was %s): %s", version, record["previous"], reg.model_uri(version)
    )
    return out


def _asset_extra(context: Any, problem: str, extra: dict[str, Any]) -> None:
    """Set the ``extra`` of this task's ``champion_model`` asset event (the Task SDK's
    ``outlet_events`` accessor; the event is emitted when the task succeeds)."""
    from ml_lifecycle.assets import champion_model_asset

    events = context.get("outlet_events")
    if events is None:  # called outside a task (unit tests of the section with a plain context)
        return
    events[champion_model_asset(problem)].extra = extra


def _last_evaluated(rc: RunContext) -> dict[str, Any]:
    """The record of the last round that was evaluated: the one whose branch ended the loop."""
    return next(r for r in reversed(rc.rounds()) if r["evaluation"])


def goal_not_met(problem: str, **context: Any) -> dict[str, Any]:
    """The last round missed, or no remedy could change the candidate: deploy nothing, keep the
    champion, record why."""
    rc = RunContext.from_airflow(problem, context)
    last = _last_evaluated(rc)
    k, ev, diagnosis = last["round"], last["evaluation"], last["diagnosis"] or {}
    if diagnosis.get("stop"):  # diagnose ended the loop before the last round
        why = f"{'; '.join(diagnosis.get('changes') or [])}; {ev['decision']['reason']}"
    else:
        why = ev["decision"]["reason"]
    out = {
        "decision": "goal_not_met",
        "version": None,
        "round": k,
        "test_score": ev["test_score"],
        "reason": f"after {k} round(s) the goal is not met: {why}",
    }
    rc.record_outcome(out)
    log.info("goal_not_met: %s", out["reason"])
    return out


def keep_champion(problem: str, **context: Any) -> dict[str, Any]:
    """The candidate meets the goal but the champion is better (or trained on newer data): keep the
    champion, deploy nothing, spend no remedy round on it (another round cannot make the goal more
    met), record why as its own decision, ``champion_kept``."""
    rc = RunContext.from_airflow(problem, context)
    last = _last_evaluated(rc)
    k, ev = last["round"], last["evaluation"]
    out = {
        "decision": "champion_kept",
        "version": None,
        "round": k,
        "test_score": ev["test_score"],
        "reason": f"round {k} meets the goal but champion version {ev.get('champion_version')} is better: "
        f"it stays the champion; {ev['decision']['reason']}",
    }
    rc.record_outcome(out)
    log.info("keep_champion: %s", out["reason"])
    return out
