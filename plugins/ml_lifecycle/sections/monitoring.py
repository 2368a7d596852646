"""Watch the champion in production: the ``<problem>_monitoring`` DAG's tasks.

``monitor_champion`` reads the scored days (``scores/ds=*``, written by batch scoring), the label
feed up to the run's data interval end and the scored days' inputs from the landing partitions;
it writes ``monitoring/ds=<day>/monitoring.json``, ``report.html`` and ``realised.png``
(``include/lifecycle/monitoring.py`` does the statistics) and returns the verdict.
``request_retraining`` runs only when the verdict asks for retraining: it updates the
``<problem>.retrain_requested`` asset with the evidence in the event's ``extra``, which schedules
the lifecycle DAG, and alerts on the spec's channel.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ml_lifecycle.context import RunContext

log = logging.getLogger("airflow.task")

SLACK_DAYS = 2
"""Scored days read beyond maturity + window: days that lack labels or rows still show in the series."""


def _days(end: dt.date, n: int) -> list[str]:
    return [(end - dt.timedelta(days=i)).isoformat() for i in range(n, 0, -1)]


def _read_days(store: Any, days: list[str], rel: Any, columns: list[str] | None = None) -> Any:
    import pandas as pd

    frames = [store.read_parquet(rel(d), columns=columns) for d in days if store.exists(rel(d))]
    return pd.concat(frames, ignore_index=True) if frames else None


def monitor_champion(problem: str, **context: Any) -> dict[str, Any]:
    """The champion's realised goal metric on matured labels, drift of its served inputs, the verdict."""
    import pandas as pd

    from include.lifecycle import monitoring
    from include.lifecycle.collect import partition_files, read_file
    from include.lifecycle.evaluate_data.reference import champion_training_data, drift_against
    from include.lifecycle.layout import monitoring_dir, scores_dir
    from include.lifecycle.spec import resolve_source

    rc = RunContext.from_airflow(problem, context)
    spec, mon = rc.spec, rc.spec.monitoring
    if spec.data.time_column is None or spec.data.key is None:
        raise AirflowFailException(f"{problem}: monitoring needs data.key and data.time_column")
    as_of = rc.as_of
    maturity = spec.data.labels.maturity_days if spec.data.labels else 0
    days = _days(as_of.date(), maturity + mon.window_days + SLACK_DAYS)
    scores = _read_days(rc.store, days, lambda d: f"{scores_dir(d)}/part-0.parquet")
    if scores is None:
        raise AirflowSkipException(f"{problem}: no scored day in {days[0]}..{days[-1]}: nothing to monitor yet")
    log.info(
        "monitor_champion: %d scored rows of %d days from %s",
        len(scores),
        scores[spec.data.time_column].dt.date.nunique(),
        rc.store.uri("scores"),
    )

    # the label feed: every partition up to the instant (arrivals after it are filtered by time)
    labels = None
    if spec.data.labels is not None:
        lab = spec.data.labels
        feed = rc.input_store(resolve_source(lab.source))
        label_days = _days(as_of.date() + dt.timedelta(days=1), len(days) + 31)
        frames = []
        for d in label_days:
            names, _ = partition_files(feed, d, lab.format) if feed.exists(f"ds={d}") else ([], None)
            frames += [read_file(feed, f"ds={d}/{n}", lab.format, [lab.key, lab.arrived_at]) for n in names]
        labels = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[lab.key, lab.arrived_at])
        log.info("monitor_champion: %d label rows from %s", len(labels), feed.uri())
    rows, counts = monitoring.matured_rows(scores, labels, spec, as_of=as_of)

    # the scored days' inputs (amounts for the goal metric, features for drift), joined by key
    source = rc.input_store(resolve_source(spec.data.source))
    scored_days = sorted(rows[monitoring.DAY].dt.date.astype(str).unique())
    newest = sorted(scores[spec.data.time_column].dt.date.astype(str).unique())[-mon.drift_days :]
    inputs = []
    for d in sorted(set(scored_days) | set(newest)):
        names, _ = partition_files(source, d, spec.data.format) if source.exists(f"ds={d}") else ([], None)
        inputs += [read_file(source, f"ds={d}/{n}", spec.data.format) for n in names]
    served = pd.concat(inputs, ignore_index=True) if inputs else None
    amount_col = spec.data.amount_column
    if served is not None and amount_col and amount_col in served.columns:
        amounts = served[[spec.data.key, amount_col]].drop_duplicates(spec.data.key)
        rows = rows.merge(amounts, on=spec.data.key, how="left", suffixes=("", "_input"))
    realised = monitoring.series(spec, rows, amount_column=amount_col, seed=spec.training.seed)

    drift = None
    if served is not None:
        recent = served[pd.to_datetime(served[spec.data.time_column], utc=True).dt.date.astype(str).isin(newest)]
        numeric, categorical = spec.profile_roles(recent.drop(columns=[spec.problem.target], errors="ignore"))
        reference, info = champion_training_data(
            rc.store, columns=[*numeric, *categorical], time_column=spec.data.time_column
        )
        drift = drift_against(
            recent,
            reference,
            {**info, "train_end": None},  # served rows are all after the champion's training
            time_column=spec.data.time_column,
            numeric=numeric,
            categorical=categorical,
            recent_days=mon.drift_days,
            seed=spec.training.seed,
        )
    verdict = monitoring.verdict(spec, realised, drift)
    champion = realised["window"].get("model_version")
    summary = {
        "problem": problem,
        "as_of": as_of.isoformat(),
        "run_id": rc.run_id,
        "champion_version": champion,
        "counts": counts,
        "realised": realised,
        "drift": None if drift is None else {k: drift.get(k) for k in ("columns", "compared", "why", "version")},
        "verdict": verdict,
    }
    out_dir = monitoring_dir(as_of.date().isoformat())
    images = {"realised goal metric": monitoring.series_plot(realised)}
    rc.store.write_bytes(f"{out_dir}/realised.png", images["realised goal metric"])
    rc.store.write_text(f"{out_dir}/report.html", monitoring.render_report(problem, summary, images))
    rc.store.write_json(f"{out_dir}/monitoring.json", summary)
    w = realised["window"]
    log.info(
        "monitor_champion: window %s..%s champion v%s realised %s %s [%s, %s] (goal %s); %s",
        w.get("start"), w.get("end"), champion, spec.goal.metric, w.get("value"), w.get("low"), w.get("high"),
        spec.goal.target, "; ".join(verdict["reasons"]),
    )  # fmt: skip
    return {
        "retrain": verdict["retrain"],
        "reasons": verdict["reasons"],
        "evidence": verdict["evidence"],
        "champion_version": champion,
        "report_uri": rc.store.uri(f"{out_dir}/report.html"),
        "summary_uri": rc.store.uri(f"{out_dir}/monitoring.json"),
    }


def request_retraining(problem: str, **context: Any) -> dict[str, Any]:
    """Update ``<problem>.retrain_requested`` with the monitor's evidence (its event schedules the
    lifecycle DAG) when the verdict asks for it; skipped otherwise."""
    from ml_lifecycle.assets import retrain_requested_asset

    result = context["ti"].xcom_pull(task_ids="monitor_champion") or {}
    if not result.get("retrain"):
        raise AirflowSkipException("the champion meets its goal (or cannot be judged yet): no retraining requested")
    extra = {
        "reasons": result["reasons"],
        "evidence": json.loads(json.dumps(result["evidence"], default=str)),
        "champion_version": result.get("champion_version"),
        "report_uri": result.get("report_uri"),
        "monitor_run_id": context["run_id"],
    }
    context["outlet_events"][retrain_requested_asset(problem)].extra = extra
    log.warning("request_retraining: %s", "; ".join(result["reasons"]))
    rc = RunContext.from_airflow(problem, context)
    if rc.spec.monitoring.alert:
        from include.lifecycle.layout import alert_record
        from ml_lifecycle.notify import send

        subject = f"[ml-lifecycle] {problem}: the monitor requests retraining"
        body = "\n".join(
            [subject, f"run: {context['run_id']}", "", *result["reasons"], f"report: {extra['report_uri']}"]
        )
        record = {"problem": problem, "event": "retrain_requested", "run_id": context["run_id"], "subject": subject,
                  "body": body, "channel": rc.spec.alerts.channel}  # fmt: skip
        rc.store.write_json(alert_record(context["run_id"], "retrain_requested", "request_retraining"), record)
        send(rc.spec.alerts, subject, body, context)
    return extra
