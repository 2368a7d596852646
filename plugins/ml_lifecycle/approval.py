"""The optional human approval before ``deploy_model`` (spec ``deploy.require_approval``).

``approve_deployment`` is an Airflow human-in-the-loop ApprovalOperator: it shows the round
history and the candidate's metrics against the goal and the champion (read from the run's
artifacts) and waits for Approve or Reject in the UI (*Required actions*) or over REST.
Approve: ``deploy_model`` runs and records who approved, and when, as tags of the model version
it registers in MLflow (``approval.approved``, ``approval.by``, ``approval.at``: see
``include.lifecycle.registry.approval_tags``). Reject (or no answer within
``deploy.approval_timeout_hours``): nothing is deployed, the outcome ``rejected`` is recorded and
the report is still published.
The run param ``skip_approval`` bypasses the question (recorded as such).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator

from ml_lifecycle import task_ids
from ml_lifecycle.context import RunContext
from ml_lifecycle.settings import try_number


def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, int | float) and not isinstance(x, bool) else "-"


def approval_summary(spec: Any, rounds: list[dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    """(subject, markdown body, facts) for the approver: every round against the goal, then the
    candidate that would be deployed against the goal and the champion."""
    goal = spec.goal
    op = ">=" if goal.higher_is_better else "<="
    lines = [
        f"**Goal.** {goal.statement}",
        "",
        f"**Criterion.** `{goal.metric} {op} {goal.target}` on the untouched test split, and no worse than "
        f"the champion (margin {goal.champion_margin}).",
        "",
        "| round | remedy | features | best trial | train | validation | test | meets goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    candidate = None
    for r in rounds:
        ev, plan = r.get("evaluation") or {}, r.get("plan") or {}
        meets = goal.met_by(ev["test_score"]) if "test_score" in ev else None
        lines.append(
            f"| {r['round']} | {plan.get('remedy') or 'initial'} | {', '.join(plan.get('feature_groups') or [])} "
            f"| {ev.get('trial_id', '-')} | {_fmt(ev.get('train_score'))} | {_fmt(ev.get('validation_score'))} "
            f"| {_fmt(ev.get('test_score'))} | {'yes' if meets else 'no' if meets is False else '-'} |"
        )
        if candidate is None and (ev.get("decision") or {}).get("deploy"):
            candidate = r
    if candidate is None:
        raise ValueError("no round produced a deployable candidate: nothing to approve")
    ev = candidate["evaluation"]
    facts = {
        "round": candidate["round"],
        "trial_id": ev["trial_id"],
        "family": ev.get("family"),
        "metric": goal.metric,
        "test_score": ev["test_score"],
        "target": goal.target,
        "meets_goal": goal.met_by(ev["test_score"]),
        "champion_version": ev.get("champion_version"),
        "champion_score": ev.get("champion_score"),
        "forced": bool(ev["decision"].get("forced")),
        "reason": ev["decision"]["reason"],
        "threshold": ev.get("threshold"),
    }
    champ = (
        f"champion version {facts['champion_version']} scores {_fmt(facts['champion_score'])} on the same rows"
        if facts["champion_version"] is not None
        else "there is no champion yet"
    )
    lines += [
        "",
        f"**Candidate.** round {facts['round']}, trial `{facts['trial_id']}` ({facts['family']}): "
        f"{goal.metric} **{_fmt(facts['test_score'])}** vs goal {op} {goal.target} "
        f"({'meets' if facts['meets_goal'] else 'MISSES'} the goal); {champ}.",
        "",
        f"**Why it would deploy.** {facts['reason']}",
    ]
    if facts["forced"]:
        lines += ["", "**WARNING: forced by the run's `force_deploy` param - it does not pass the gate.**"]
    if facts["threshold"] is not None:
        lines += ["", f"Decision threshold: {_fmt(facts['threshold'])}."]
    subject = (
        f"Deploy {spec.name} round {facts['round']}? {goal.metric} {_fmt(facts['test_score'])} "
        f"(goal {op} {goal.target})"
    )
    return subject, "\n".join(lines), facts


class DeploymentApprovalOperator(ApprovalOperator):
    """Ask a person to approve the deployment of this run's candidate model.

    :param problem: the problem (DAG id) whose run artifacts describe the candidate.
    :param deploy_task_id: the task that deploys; the only task skipped on Reject.
    """

    def __init__(self, *, problem: str, deploy_task_id: str = task_ids.DEPLOY_MODEL, **kwargs: Any) -> None:
        kwargs.setdefault("subject", f"Deploy the {problem} model?")
        kwargs.setdefault("defaults", [self.REJECT])  # no answer in time means no deployment
        super().__init__(**kwargs)
        self.problem = problem
        self.deploy_task_id = deploy_task_id

    def execute(self, context: Any) -> Any:
        rc = RunContext.from_airflow(self.problem, context)
        subject, body, facts = approval_summary(rc.spec, rc.rounds())
        earlier = rc.store.read_json_or(rc.layout.approval)
        if earlier is not None:
            # a retry of this task (e.g. its state update failed after the answer was recorded) must
            # not ask the person again: the recorded answer of this run stands
            self.log.info("approve_deployment: re-using the answer recorded by an earlier try: %s", earlier)
            if earlier.get("approved"):
                return {"chosen_options": [self.APPROVE], "reused_answer": True}
            deploy = [
                t for t in context["task"].get_direct_relatives(upstream=False) if t.task_id == self.deploy_task_id
            ]
            self.skip(ti=context["ti"], tasks=deploy)
            return {"chosen_options": [self.REJECT], "reused_answer": True}
        if rc.params.get("skip_approval"):
            self._record(rc, approved=True, by="skip_approval param", facts=facts)
            self.log.info("approve_deployment: skipped by the run's skip_approval param; deploying")
            return {"chosen_options": [self.APPROVE], "skipped_by_param": True}
        asked_before = rc.store.read_json_or(rc.layout.approval_request)
        if asked_before is not None and try_number(context) > 1:
            # Airflow 3.3.2 can lose an answer given within about a second of the question: the
            # scheduler requeues the resumed task before it has reaped the worker that parked it,
            # then fails that try ("finished with state success, but ... queued"). The answer is in
            # Airflow's record of the failed try, which a task cannot read: ask again, and say so. Airflow
            # keeps the first try's HITL subject and body (one record per task instance; a retry only
            # clears its answer), so the UI shows the first question: the log and the approval alert
            # (which reads approval_request.json's summary) carry the "asked again".
            self.log.warning(
                "approve_deployment: try %d; an earlier try asked at %s and recorded no answer (if someone "
                "answered within a second or so of the question, Airflow lost it): asking again",
                try_number(context),
                asked_before.get("asked_at", "?"),
            )
            subject = f"(asked again) {subject}"
            body = (
                f"*Asked again: an earlier try of this task asked the same question and recorded no answer.*\n\n{body}"
            )
        self.subject, self.body = subject, body
        rc.store.write_json(
            rc.layout.approval_request,
            {"summary": body, "asked_at": dt.datetime.now(dt.UTC).isoformat(), "try": try_number(context), **facts},
        )
        self.log.info("approve_deployment: waiting for a person to approve\n%s", body)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        ret = HITLOperator.execute_complete(self, context=context, event=event)
        approved = ret["chosen_options"] == [self.APPROVE]
        self.hitl_summary_extra["approved"] = approved
        rc = RunContext.from_airflow(self.problem, context)
        user = (ret.get("responded_by_user") or {}).get("name") or "the timeout default"
        facts = rc.store.read_json_or(rc.layout.approval_request) or {}
        self._record(rc, approved=approved, by=user, facts={k: v for k, v in facts.items() if k != "summary"})
        if approved:
            self.log.info("approve_deployment: approved by %s; deploying", user)
            return ret
        reason = f"deployment rejected by {user}; the candidate: {facts.get('reason', '?')}"
        rc.record_outcome(
            {
                "decision": "rejected",
                "version": None,
                "round": facts.get("round"),
                "test_score": facts.get("test_score"),
                "reason": reason,
            },
        )
        self.log.info("approve_deployment: %s; nothing is deployed", reason)
        deploy = [t for t in context["task"].get_direct_relatives(upstream=False) if t.task_id == self.deploy_task_id]
        self.skip(ti=context["ti"], tasks=deploy)
        return ret

    def _record(self, rc: RunContext, *, approved: bool, by: str, facts: dict[str, Any]) -> None:
        rc.store.write_json(
            rc.layout.approval,
            {"approved": approved, "by": by, "at": dt.datetime.now(dt.UTC).isoformat(), **facts},
        )
