"""Watch the champion in production: the ``<problem>_monitoring`` DAG's tasks.

``monitor_champion`` reads the scored days - batch scoring's ``scores/ds=*`` and the endpoint's
captures ``captures/ds=*`` (one row per key: the endpoint's answer wins, see
``include/lifecycle/monitoring.scored_rows``) -, the label feed up to the run's data interval end
and the scored rows' inputs: as captured with them (``serving.capture``), else, for days scored
without them, from the landing partitions; it writes ``monitoring/ds=<day>/monitoring.json``, ``report.html`` and ``realised.png``
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


def _read_captures(store: Any, days: list[str]) -> Any:
    """The endpoint's captured rows of ``days`` (every flush file of every server), or None."""
    import pandas as pd

    from include.lifecycle.layout import capture_dir

    files = [
        f"{capture_dir(d)}/{name}"
        for d in days
        for name, is_dir in store.entries(capture_dir(d))
        if not is_dir and name.endswith(".parquet")
    ]
    frames = [store.read_parquet(f) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else None


def _landing_days(store: Any, days: list[str], fmt: str) -> Any:
    """The raw landing rows of ``days`` (for days scored without their inputs), or None."""
    import pandas as pd

    from include.lifecycle.collect import partition_files, read_file

    frames = []
    for d in days:
        names, _ = partition_files(store, d, fmt) if store.exists(f"ds={d}") else ([], None)
        frames += [read_file(store, f"ds={d}/{n}", fmt) for n in names]
    return pd.concat(frames, ignore_index=True) if frames else None


def monitor_champion(problem: str, **context: Any) -> dict[str, Any]:
    """The champion's realised goal metric on matured labels, drift of its served inputs, the verdict."""
    import numpy as np
    import pandas as pd

    from include.lifecycle import monitoring
    from include.lifecycle.capture import input_columns
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
    batch = _read_days(rc.store, days, lambda d: f"{scores_dir(d)}/part-0.parquet")
    endpoint = _read_captures(rc.store, days)
    if batch is None and endpoint is None:
        raise AirflowSkipException(f"{problem}: no scored day in {days[0]}..{days[-1]}: nothing to monitor yet")
    scores, sources = monitoring.scored_rows(batch, endpoint, spec)
    time_col, key = spec.data.time_column, spec.data.key
    scores[time_col] = monitoring.utc(scores[time_col])  # one zone for batch and endpoint rows
    log.info(
        "monitor_champion: %d scored rows of %d days (%d batch-scored from %s, %d captured by the endpoint in %s; "
        "%d scored twice, the endpoint's answer kept)",
        len(scores), scores[time_col].dt.date.nunique(), sources["rows_batch"], rc.store.uri("scores"),
        sources["rows_endpoint"], rc.store.uri("captures"), sources["duplicates_dropped"],
    )  # fmt: skip

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
    counts |= sources

    # the scored rows' inputs (amounts for the goal metric, features for drift): as captured with
    # the scores; the landing partitions only for days scored without them (capture off, or older)
    inputs = input_columns(spec, scores.columns)
    captured = scores[inputs].notna().any(axis=1).to_numpy() if inputs else np.zeros(len(scores), dtype=bool)
    day_of = scores[time_col].dt.date.astype(str)
    scored_days = sorted(rows[monitoring.DAY].dt.date.astype(str).unique())
    newest = sorted(day_of.unique())[-mon.drift_days :]
    uncaptured = sorted((set(scored_days) | set(newest)) & set(day_of[~captured]))
    landing = _landing_days(rc.input_store(resolve_source(spec.data.source)), uncaptured, spec.data.format)
    amount_col = spec.data.amount_column
    if amount_col:
        if amount_col not in rows.columns:
            rows[amount_col] = np.nan
        if landing is not None and amount_col in landing.columns:
            first = landing.drop_duplicates(key)
            raw = pd.Series(first[amount_col].to_numpy(dtype=float), index=first[key].astype(str).to_numpy())
            rows[amount_col] = rows[amount_col].astype(float).fillna(rows[key].astype(str).map(raw))
    realised = monitoring.series(spec, rows, amount_column=amount_col, seed=spec.training.seed)

    parts = []
    recent_captured = captured & day_of.isin(newest).to_numpy()
    if recent_captured.any():
        parts.append(scores.loc[recent_captured, [time_col, *inputs]])
    already = 0
    if landing is not None:
        raw_recent = landing[monitoring.utc(landing[time_col]).dt.date.astype(str).isin(newest).to_numpy()]
        # a day scored partly with inputs (e.g. capture switched on that day): its captured rows are
        # in already, so their landing copies are left out rather than counted twice
        seen = raw_recent[key].astype(str).isin(set(scores.loc[recent_captured, key].astype(str))).to_numpy()
        already = int(seen.sum())
        raw_recent = raw_recent.loc[~seen]
        parts.append(raw_recent.assign(**{time_col: monitoring.utc(raw_recent[time_col])}))
    counts["drift_inputs"] = {
        "captured_rows": int(recent_captured.sum()),
        "landing_days": [d for d in uncaptured if d in newest],
        "landing_rows_already_captured": already,
    }
    drift = None
    if parts:
        recent = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
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
