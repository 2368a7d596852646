"""Alerts of a lifecycle DAG as one Airflow notifier, configured by the spec's ``alerts`` section.

Events: ``failure`` (a task failed for good: ``on_failure_callback``), ``goal_not_met`` (the
run ended without a deployable model: ``on_success_callback`` of ``goal_not_met``) and
``approval_requested`` (a person is asked to approve a deployment: the HITL task's notifier).

Every alert is written to the artifact store (``<problem>/alerts/<run>/<event>-<task>.json``,
an audit trail) and then sent through the spec's channel: ``log`` (default; a WARNING in the
task log), ``smtp`` (the smtp provider's SmtpNotifier), ``sns`` (the amazon provider's
SnsNotifier) or ``slack`` (the slack provider's SlackNotifier, installed separately).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Literal

from airflow.sdk import BaseNotifier

Event = Literal["failure", "goal_not_met", "approval_requested"]
EVENTS: tuple[str, ...] = ("failure", "goal_not_met", "approval_requested")
log = logging.getLogger("airflow.task")


def alert_message(event: str, problem: str, run_id: str, task_id: str, detail: str) -> tuple[str, str]:
    """(subject, body) of an alert: short enough for SNS and chat, plain enough for e-mail."""
    what = {
        "failure": f"task {task_id} failed",
        "goal_not_met": "the business goal was not met; nothing was deployed",
        "approval_requested": "a model is waiting for deployment approval",
    }[event]
    subject = f"[ml-lifecycle] {problem}: {what}"[:100]
    body = f"{subject}\nrun: {run_id}\ntask: {task_id}\n\n{detail}".strip()
    return subject, body


class LifecycleNotifier(BaseNotifier):
    """Send one lifecycle event of ``problem`` through the channel its spec declares.

    :param problem: the problem (DAG id) whose spec's ``alerts`` section configures the channel.
    :param event: ``failure``, ``goal_not_met`` or ``approval_requested``.
    """

    def __init__(self, *, problem: str, event: Event, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if event not in EVENTS:
            raise ValueError(f"unknown alert event {event!r}; expected one of {EVENTS}")
        self.problem = problem
        self.event = event

    def _run(self, context: Any) -> Any:
        """The run's context: its store is the run's backend's (its ``backend`` param, else the spec's)."""
        from ml_lifecycle.context import RunContext

        return RunContext.from_airflow(self.problem, context)

    def _detail(self, context: Any) -> str:
        if self.event == "failure":
            ti = context.get("ti") or context.get("task_instance")
            exc = context.get("exception")
            lines = [f"error: {type(exc).__name__}: {exc}" if exc else "error: (no exception in the context)"]
            if ti is not None and getattr(ti, "try_number", None):
                lines.append(f"try: {ti.try_number}")
            return "\n".join(lines)
        rc = self._run(context)
        if self.event == "goal_not_met":
            outcome = rc.store.read_json_or(rc.layout.outcome) or {}
            return f"reason: {outcome.get('reason', '(no outcome recorded)')}\nreport: {rc.store.uri(rc.layout.report)}"
        approval = rc.store.read_json_or(rc.layout.approval_request) or {}
        return (
            approval.get("summary", "")
            + f"\nanswer it in the Airflow UI (Required actions) for run {context['run_id']}"
        )

    def notify(self, context: Any) -> None:
        from include.lifecycle.layout import alert_record
        from ml_lifecycle.settings import spec_for

        alerts = spec_for(self.problem).alerts
        ti = context.get("ti") or context.get("task_instance")
        task_id = getattr(ti, "task_id", "") or ""
        run_id = context.get("run_id") or getattr(ti, "run_id", "")
        try:
            detail = self._detail(context)
        except Exception as exc:  # an alert about a failure must not fail on reading artifacts
            detail = f"(details unavailable: {exc})"
        subject, body = alert_message(self.event, self.problem, run_id, task_id, detail)
        record = {
            "problem": self.problem,
            "event": self.event,
            "run_id": run_id,
            "task_id": task_id,
            "channel": alerts.channel,
            "subject": subject,
            "body": body,
            "at": dt.datetime.now(dt.UTC).isoformat(),
        }
        self._run(context).store.write_json(alert_record(run_id, self.event, task_id), record)
        send(alerts, subject, body, context)


def send(alerts: Any, subject: str, body: str, context: Any) -> None:
    """Deliver through the configured channel; the providers' notifiers do the I/O."""
    if alerts.channel == "log":
        log.warning("ALERT %s\n%s", subject, body)
    elif alerts.channel == "smtp":
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        SmtpNotifier(
            to=alerts.to, subject=subject, html_content=f"<pre>{_escape(body)}</pre>", smtp_conn_id=alerts.conn_id
        ).notify(context)
    elif alerts.channel == "sns":
        from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

        SnsNotifier(
            aws_conn_id=alerts.conn_id or "aws_default", target_arn=alerts.target, message=body, subject=subject
        ).notify(context)
    elif alerts.channel == "slack":
        try:
            from airflow.providers.slack.notifications.slack import SlackNotifier
        except ImportError as exc:
            raise RuntimeError(
                "alerts.channel slack needs apache-airflow-providers-slack (add it to requirements.in)"
            ) from exc
        SlackNotifier(slack_conn_id=alerts.conn_id or "slack_api_default", channel=alerts.target, text=body).notify(
            context
        )
    else:  # the spec's Literal makes this unreachable; kept loud in case the two drift apart
        raise ValueError(f"unknown alerts.channel {alerts.channel!r}")


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def lifecycle_notifiers(problem: str, event: Event, enabled: bool) -> list[LifecycleNotifier]:
    """The callback list for one event (empty when the spec switches the event off)."""
    return [LifecycleNotifier(problem=problem, event=event)] if enabled else []
