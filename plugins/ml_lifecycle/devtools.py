"""Developer commands behind ``make run`` / ``make up`` / ``make demo-data`` (not used by the DAGs).

    python -m ml_lifecycle.devtools check-spec PROBLEM
    python -m ml_lifecycle.devtools demo-data [PROBLEM ...] --run-date D --days N --per-day N
    python -m ml_lifecycle.devtools finish-run PROBLEM --since EPOCH --log FILE --artifact-root ROOT
    python -m ml_lifecycle.devtools rollback PROBLEM [--version N] [--by NAME] [--reason TEXT]
    python -m ml_lifecycle.devtools monitor-demo [--per-day N]

``check-spec`` validates one problem spec before Airflow runs it and prints the loader's
message (file, field, rule). ``demo-data`` generates, or extends to today, the synthetic card
data for the problems whose spec reads it (``data.source`` under ``card_fraud/landing``).
``finish-run`` runs after ``airflow dags test``: it finds the run that command just made, sets
its start date to when its first task started (``dags test`` records the logical date as the
start date, so a run of 2026-11-01 would show in the UI as lasting weeks), prints that run's
summary (or, when it failed or never started, the error) and exits with the run's status.
``rollback`` (``make rollback PROBLEM=... [VERSION=...]``) moves the MLflow alias ``champion`` of
the problem's registered model back to the previous champion, or to version N, after checking
every file of that version against its sha256; who and when are recorded in the version's tags
and the deployment history. A running endpoint serves it within its poll interval (at once when
``ml_serving_url`` / ``$ML_SERVING_URL`` names it: it is told to reload).

``monitor-demo`` (``make monitor-demo``, after ``make run``) plays the drift scenario of the
monitoring DAG through the real code paths with a problem of its own (``card_fraud_drift``, the
flagship spec with its own data): it generates card data with a new fraud pattern from
``DRIFT_DAY``, trains and deploys a champion the days before, scores the following days with the
batch-scoring DAG and with the endpoint (its capture), runs the monitoring DAG once the labels
have matured (decay: retraining requested through the asset), runs the lifecycle DAG again (the
run the asset starts on the scheduler), serves the new champion and monitors again; it prints
where the monitoring reports are and writes a timeline report of the whole story
(``<artifact root>/card_fraud_drift/monitoring/demo.html``).

Airflow's plugin manager imports every module of the plugins folder: this one imports airflow
and the project's modules only inside its functions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

DEMO_LANDING = ("card_fraud", "landing")
"""A spec whose ``data.source`` is ``<...>/card_fraud/landing/transactions`` reads the demo data."""


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- the spec --------------------------------------------------------------------------------
def check_spec(problem: str) -> int:
    """0 if ``problem`` has a valid spec; else print why (file, field and rule) and return 2."""
    from include.lifecycle.spec import SpecError, load_spec, problems_dir, spec_files, spec_path

    path = spec_path(problem)
    if not path.is_file():
        known = ", ".join(p.stem for p in spec_files()) or "none"
        _err(f"no spec for problem {problem!r}: {path} does not exist (problems in {problems_dir()}: {known})")
        return 2
    try:
        load_spec(path)
    except SpecError as exc:
        _err(f"spec error: {exc}")
        return 2
    return 0


def demo_landing(spec: Any) -> Path | None:
    """The landing directory of the demo data if ``spec`` reads it, else None."""
    from include.lifecycle.spec import resolve_source

    source = spec.data.source
    if spec.data.format != "parquet" or spec.data.layout != "partitioned":
        return None
    if "://" in source and not source.startswith("file://"):
        return None
    path = Path(resolve_source(source.removeprefix("file://")))
    if path.name == "transactions" and path.parent.parts[-2:] == DEMO_LANDING:
        return path.parent
    return None


def demo_data(problems: list[str], *, run_date: dt.date, days: int, per_day: int, seed: int) -> int:
    """Generate or extend the demo data of ``problems`` (all specs if empty) to today."""
    from include.lifecycle import synth
    from include.lifecycle.spec import SpecError, load_spec, spec_files, spec_path

    paths = [spec_path(p) for p in problems] if problems else spec_files()
    roots: dict[Path, str] = {}
    for path in paths:
        try:
            spec = load_spec(path)
        except (SpecError, OSError) as exc:
            if problems:  # asked for this one: say why nothing happens
                _err(f"demo data: {path} is not a valid spec, skipped ({str(exc).splitlines()[0]})")
            continue
        root = demo_landing(spec)
        if root is not None:
            roots.setdefault(root, spec.name)
        elif problems:
            print(f"demo data: {spec.name} reads {spec.data.source}, not the generated card data; nothing to do")
    start = run_date - dt.timedelta(days=days)
    end = synth.demo_end(run_date)
    for root, name in roots.items():
        out = synth.ensure(
            root,
            start=start,
            end=end,
            tx_per_day=per_day,
            seed=seed,
            log=lambda msg: print(f"  {msg}", flush=True),
        )
        last = (dt.date.fromisoformat(out["end"]) - dt.timedelta(days=1)).isoformat()
        what = {"up_to_date": "up to date", "extended": f"extended by {out.get('days')} days"}.get(
            out["action"], f"generated, {out.get('rows')} transactions"
        )
        print(f"demo data for {name}: {root} holds {start.isoformat()} .. {last} ({what})", flush=True)
    return 0


# --- after `airflow dags test` ---------------------------------------------------------------
def find_test_run(dag_id: str, since: dt.datetime, session: Any) -> Any:
    """The latest run of ``dag_id`` that ``airflow dags test`` created at or after ``since``."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import select

    return session.scalars(
        select(DagRun)
        .where(DagRun.dag_id == dag_id, DagRun.run_after >= since, DagRun.triggered_by == DagRunTriggeredByType.TEST)
        .order_by(DagRun.run_after.desc())
        .limit(1)
    ).first()


def first_task_start(run: Any, session: Any) -> dt.datetime | None:
    """When the run's first task (any try) started."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from sqlalchemy import func, select

    starts = [
        session.scalar(select(func.min(m.start_date)).where(m.dag_id == run.dag_id, m.run_id == run.run_id))
        for m in (TaskInstance, TaskInstanceHistory)
    ]
    starts = [s for s in starts if s is not None]
    return min(starts) if starts else None


def fix_start_date(run: Any, session: Any) -> dt.datetime | None:
    """Set the run's start date to its first task's start (``dags test`` records the logical date)."""
    first = first_task_start(run, session)
    if first is not None and run.start_date != first:
        run.start_date = first
        session.commit()
    return first


def failed_tasks(run: Any, session: Any) -> list[tuple[str, int]]:
    """(task_id, map_index) of the run's failed tasks (not the ones skipped for an upstream failure), in start order."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    tis = session.scalars(
        select(TaskInstance)
        .where(
            TaskInstance.dag_id == run.dag_id,
            TaskInstance.run_id == run.run_id,
            TaskInstance.state == TaskInstanceState.FAILED,
        )
        .order_by(TaskInstance.start_date)
    ).all()
    return [(ti.task_id, ti.map_index) for ti in tis]


def finish_run(problem: str, *, since: float, log_path: Path, artifact_root: str) -> int:
    """Bookkeeping and the terminal summary of the run ``airflow dags test`` just made.

    Returns 0 if that run succeeded, 1 if it failed or never started.
    """
    from airflow.utils.session import create_session

    from include.lifecycle import summarise
    from include.lifecycle.store import safe_run_id

    started = dt.datetime.fromtimestamp(since, dt.UTC)
    log_text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    with create_session() as session:
        run = find_test_run(problem, started - dt.timedelta(seconds=1), session)
        if run is None:
            print(f"run of {problem}: none started (airflow dags test ended before creating one)")
            for line in summarise.last_error_lines(log_text) or ["(no error in the log)"]:
                print(f"  error: {line[:400]}")
            return 1
        fix_start_date(run, session)
        state = str(getattr(run.state, "value", run.state))
        failed = failed_tasks(run, session) if state != "success" else []
        run_id = run.run_id
    store = summarise.problem_store(artifact_root, problem)
    print(summarise.summarise(store, safe_run_id(run_id), state=state, failed=failed, log_text=log_text))
    return 0 if state == "success" else 1


def rollback(
    problem: str, *, version: int | None, by: str | None, reason: str | None, artifact_root: str | None
) -> int:
    """Move the champion alias back (see :meth:`ModelRegistry.rollback`); 0 on success, 1 with the
    reason on stderr when there is nothing to roll back to or the target is damaged."""
    import getpass

    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.store import Store

    if artifact_root:
        uri = artifact_root if "://" in artifact_root else Path(artifact_root).resolve().as_uri()
        store = Store.from_uri(f"{uri.rstrip('/')}/{problem}")
    else:  # the store the problem's tasks use (the spec's backend, the ml_artifact_root variable)
        from ml_lifecycle.context import resolve
        from ml_lifecycle.settings import spec_for

        store = resolve(spec_for(problem)).store()
    registry = ModelRegistry(store, problem)
    before = registry.champion_version()
    try:
        record = registry.rollback(version, by=by or getpass.getuser(), reason=reason)
    except ValueError as exc:
        _err(f"rollback of {problem}: {exc}")
        return 1
    print(
        f"{problem}: the alias champion moved from version {before} to version {record['version']} "
        f"({registry.model_uri(record['version'])}, {registry.tracking_uri}); recorded by {record['rolled_back_by']} "
        f"at {record['deployed_at']}"
    )
    from ml_lifecycle.endpoint import notify_serving

    told = notify_serving(problem, record["version"])
    if told.get("notified"):
        print(f"the endpoint at {told['url']} reloaded: serving version {told.get('model_version')}")
    else:
        print("a running endpoint picks the new champion up when it next polls (make serve: every 5 s)")
    return 0


# --- the monitoring demo ----------------------------------------------------------------------
DRIFT_PROBLEM = "card_fraud_drift"
DRIFT_DAY = dt.date(2026, 10, 1)
"""The drift scenario's dates are fixed (the demo and the test do not depend on today)."""


def run_dag(dag_id: str, logical_date: dt.datetime, *, problems_dir: Path | None = None,
            conf: dict[str, Any] | None = None) -> tuple[str, str]:  # fmt: skip
    """``(state, run_id)`` of one whole run of a DAG of dags/ in this process (``dag.test()``), the
    specs read from ``problems_dir`` (``$ML_PROBLEMS_DIR``; default: the shipped specs)."""
    import os

    from airflow.dag_processing.dagbag import DagBag

    from include.lifecycle.spec import PROJECT_ROOT

    old = os.environ.get("ML_PROBLEMS_DIR")
    if problems_dir is not None:
        os.environ["ML_PROBLEMS_DIR"] = str(problems_dir)
    try:
        bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
        if bag.import_errors:
            raise RuntimeError(f"DAG import errors: {bag.import_errors}")
        dr = bag.dags[dag_id].test(logical_date=logical_date, run_conf=conf)
    finally:
        if old is None:
            os.environ.pop("ML_PROBLEMS_DIR", None)
        else:
            os.environ["ML_PROBLEMS_DIR"] = old
    return str(dr.state), dr.run_id


def serve_days(
    spec: Any, days: list[dt.date], *, artifact_root: str, pii_key: bytes, rows_per_request: int = 500
) -> dict[str, Any]:
    """Send the landing rows of ``days`` (those that pass the schema: a request with a broken row is
    refused whole) to the endpoint (include/lifecycle/serving.py, in this process on a free port,
    the champion of ``artifact_root``) in CSV requests of ``rows_per_request`` rows, then stop it,
    which writes the captured rows still waiting: ``{"requests", "rows", "capture": {...}}``."""
    import http.client

    import pandas as pd

    from include.lifecycle.collect import curate_partition, read_partition_files
    from include.lifecycle.serving import make_server
    from include.lifecycle.spec import resolve_source
    from include.lifecycle.store import Store

    source = Store.from_uri(resolve_source(spec.data.source))
    server = make_server(spec.name, artifact_root=artifact_root, spec=spec, port=0, poll_seconds=None,
                         pii_key=pii_key, capture=True)  # fmt: skip
    server.start()
    sent = requests = 0
    try:
        if server.holder.current is None:
            raise RuntimeError(f"the endpoint has no champion of {spec.name}: {server.holder.last_error}")
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=120)
        for day in days:
            frames = read_partition_files(source, day.isoformat(), spec.data.format)
            raw = pd.concat([df for _, df in frames], ignore_index=True)
            valid, _, _ = curate_partition(frames, spec, pii_key=pii_key)
            key, time_col = spec.data.key, spec.data.time_column
            rows = raw[raw[key].astype(str).isin(set(valid[key].astype(str)))].sort_values(time_col, kind="stable")
            rows = rows.drop_duplicates(key)
            for start in range(0, len(rows), rows_per_request):
                body = rows.iloc[start : start + rows_per_request].to_csv(index=False).encode()
                conn.request("POST", "/invocations", body=body, headers={"Content-Type": "text/csv"})
                resp = conn.getresponse()
                answer = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"the endpoint answered {resp.status}: {answer[:300]!r}")
                requests += 1
            sent += len(rows)
        conn.close()
    finally:
        server.stop()  # flushes the capture
    return {"requests": requests, "rows": sent, "capture": server.capture.status() if server.capture else None}


def drift_spec(name: str = DRIFT_PROBLEM) -> dict[str, Any]:
    """The flagship spec as the drift scenario's problem: its own data, one round, a short window."""
    import yaml

    from include.lifecycle.spec import PROJECT_ROOT

    spec = yaml.safe_load((PROJECT_ROOT / "include" / "problems" / "card_fraud.yaml").read_text())
    spec["name"] = name
    spec["title"] = "Card fraud detection, drift scenario (make monitor-demo)"
    spec["tags"] = ["fraud", "demo", "monitoring"]
    spec["max_rounds"] = 1
    spec["data"]["source"] = f"data/{name}/landing/transactions"
    spec["data"]["labels"]["source"] = f"data/{name}/landing/chargebacks"
    spec["data"]["lookback_days"] = 28
    spec["monitoring"] = {"window_days": 5, "min_positives": 8, "drift_days": 3}
    return spec


def _at(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def timeline_report(problem: str, store: Any, monitor_days: list[dt.date], events: list[str]) -> str:
    """One HTML page with the realised goal metric per day over the monitors' runs (each day's
    newest figures), the goal line, the model version per day, and what happened when."""
    import base64
    import html

    from include.lifecycle import monitoring
    from include.lifecycle.layout import monitoring_dir

    per_day: dict[str, dict[str, Any]] = {}
    summaries = []
    for day in monitor_days:
        doc = store.read_json(f"{monitoring_dir(day.isoformat())}/monitoring.json")
        summaries.append(doc)
        for d in doc["realised"]["per_day"]:
            if d["value"] is not None:
                per_day[d["day"]] = d
    last = summaries[-1]["realised"]
    series = {**last, "per_day": [per_day[k] for k in sorted(per_day)], "window": {}}
    png = monitoring.series_plot(series)
    rows = "".join(
        f"<tr><td>{d['day']}</td><td>{','.join(map(str, d['model_versions']))}</td><td>{d['rows']}</td>"
        f"<td>{d['positives']}</td><td>{d['value']:.3f}</td><td>[{d['low']:.3f}, {d['high']:.3f}]</td>"
        f"<td>{'meets' if d['value'] >= last['target'] else 'below'}</td></tr>"
        for d in series["per_day"]
    )
    runs = "".join(
        f"<tr><td>{s['as_of'][:10]}</td><td>{'RETRAINING REQUESTED' if s['verdict']['retrain'] else 'no request'}</td>"
        f"<td>{html.escape('; '.join(s['verdict']['reasons']))}</td>"
        f"<td><a href='ds={s['as_of'][:10]}/report.html'>report</a></td></tr>"
        for s in summaries
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{problem}: monitoring demo</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}td,th{padding:2px 8px;"
        "border-bottom:1px solid #ddd;vertical-align:top}</style></head><body>"
        f"<h1>{problem}: the champion watched through a drift (make monitor-demo)</h1>"
        f"<ol>{''.join(f'<li>{html.escape(e)}</li>' for e in events)}</ol>"
        f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}'/>"
        f"<h2>Monitoring runs</h2><table><tr><th>as of</th><th>verdict</th><th>why</th><th></th></tr>{runs}</table>"
        f"<h2>Realised {html.escape(last['metric'])} per day (goal {last['target']})</h2><table><tr><th>day</th>"
        f"<th>model</th><th>rows</th><th>positives</th><th>value</th><th>interval</th><th></th></tr>{rows}</table>"
        "</body></html>"
    )


def monitor_demo(*, per_day: int, seed: int = 7, before: int = 7, retrain_after: int = 34) -> int:
    """The drift scenario end to end (see the module's doc); prints where the reports are.

    The champion v1 is trained ``before`` days before the new pattern starts (DRIFT_DAY); the
    retraining run is ``retrain_after`` days after it: the newest maturity (10) + test (5) +
    validation (5) days are never trained on, so a retraining the day the monitor first asks
    (drift day + 17) would learn nothing of the new pattern yet; the monitor keeps asking every
    day until then (its request is the asset event), and at +34 two weeks of it are in the
    training rows."""
    import json
    import os
    import shutil
    import time

    import yaml

    from include.lifecycle import synth
    from include.lifecycle.layout import CAPTURES, CURATED, MONITORING, SCORES, monitoring_dir
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.spec import data_root, load_spec, resolve_source
    from include.lifecycle.store import Store

    started = time.monotonic()
    key = (os.environ.get("AIRFLOW_VAR_ML_PII_HASH_KEY") or "").encode()
    if not key:
        _err("monitor-demo needs the PII key in AIRFLOW_VAR_ML_PII_HASH_KEY (make monitor-demo sets it)")
        return 2
    name = DRIFT_PROBLEM
    artifact_root = os.environ.get("ML_ARTIFACT_ROOT") or str(Path.cwd() / "artifacts")
    os.environ["AIRFLOW_VAR_ML_ARTIFACT_ROOT"] = artifact_root  # the tasks' store is the demo's
    folder = data_root() / "data" / name
    problems = folder / "problems"
    problems.mkdir(parents=True, exist_ok=True)
    spec_doc = drift_spec(name)
    spec_doc["max_rounds"] = 2
    spec_doc["data"]["lookback_days"] = 35  # the flagship's window
    # the features the flagship's loop ends with (make run adds the card's history in round 2): the
    # runs below are forced to deploy their round 1, and the story is the monitor's, not the loop's
    spec_doc["features"]["initial"] = ["transaction", "card_velocity", "card_history"]
    spec_file = problems / f"{name}.yaml"
    spec_file.write_text(yaml.safe_dump(spec_doc, sort_keys=False))
    spec = load_spec(spec_file)
    store = Store.from_uri(Path(artifact_root, name).resolve().as_uri())
    maturity = spec.data.labels.maturity_days

    def step(msg: str) -> None:
        print(f"monitor-demo [{time.monotonic() - started:4.0f} s] {msg}", flush=True)

    def days(first: dt.date, n: int) -> list[dt.date]:
        return [first + dt.timedelta(days=i) for i in range(n)]

    trained = DRIFT_DAY - dt.timedelta(days=before)
    retrain_day = DRIFT_DAY + dt.timedelta(days=retrain_after)
    end = retrain_day + dt.timedelta(days=7 + maturity + 2)
    start = trained - dt.timedelta(days=spec.data.lookback_days + 3)
    landing = Path(resolve_source(spec.data.source)).parent
    wanted = {"per_day": per_day, "seed": seed, "drift_from": DRIFT_DAY.isoformat(), "start": start.isoformat(),
              "end": end.isoformat()}  # fmt: skip
    stamp = folder / "scenario.json"
    if not stamp.exists() or json.loads(stamp.read_text()) != wanted:
        shutil.rmtree(landing, ignore_errors=True)
        step(f"generating {per_day:,} transactions a day {start}..{end}, a new fraud pattern from {DRIFT_DAY}")
        synth.generate(landing, end=end, days=(end - start).days, tx_per_day=per_day, seed=seed, drift_from=DRIFT_DAY)
        stamp.write_text(json.dumps(wanted))
    for sub in (CURATED, SCORES, CAPTURES, MONITORING):  # a fresh story (the registry keeps its versions)
        shutil.rmtree(Path(artifact_root, name, sub), ignore_errors=True)
    events: list[str] = []
    monitors: list[dt.date] = []

    def lifecycle(day: dt.date) -> int:
        state, _ = run_dag(name, _at(day), problems_dir=problems, conf={"force_deploy": True})
        if state != "success":
            raise RuntimeError(f"the lifecycle run of {day} ended {state}")
        return ModelRegistry(store, name).champion_version()

    def batch(first: dt.date, n: int) -> None:
        for day in days(first, n):
            state, _ = run_dag(f"{name}_batch_scoring", _at(day + dt.timedelta(days=1)), problems_dir=problems)
            if state != "success":
                raise RuntimeError(f"batch scoring of {day} ended {state}")

    def monitor(day: dt.date) -> dict[str, Any]:
        state, _ = run_dag(f"{name}_monitoring", _at(day), problems_dir=problems)
        if state != "success":
            raise RuntimeError(f"the monitor of {day} ended {state}")
        monitors.append(day)
        doc = store.read_json(f"{monitoring_dir(day.isoformat())}/monitoring.json")
        w = doc["realised"]["window"]
        figure = "-" if w.get("value") is None else f"{w['value']:.3f} [{w['low']:.3f}, {w['high']:.3f}]"
        verdict = "RETRAINING REQUESTED" if doc["verdict"]["retrain"] else "no request"
        step(f"monitor as of {day}: window {w.get('start')}..{w.get('end')} v{w.get('model_version')} "
             f"{doc['realised']['metric']} {figure} (goal {doc['realised']['target']}): {verdict}")  # fmt: skip
        return doc

    def serve(first: dt.date, n: int, version: int | None) -> None:
        served = serve_days(spec, days(first, n), artifact_root=artifact_root, pii_key=key)
        step(f"   the endpoint (v{version}) answered {served['rows']:,} rows of {first}..{first + dt.timedelta(days=n - 1)} "
             f"in {served['requests']} requests; captured {served['capture']['rows_written']:,}")  # fmt: skip

    step(f"1. train and deploy a champion as of {trained} ({before} days before the new pattern)")
    v1 = lifecycle(trained)
    events.append(f"{trained}: champion v{v1} trained on the days before the new pattern, deployed")
    served_from = DRIFT_DAY + dt.timedelta(days=2)
    step(f"2. v{v1} scores {trained}..{DRIFT_DAY + dt.timedelta(days=6)}: the batch DAG to "
         f"{DRIFT_DAY + dt.timedelta(days=3)}, the endpoint (its capture) from {served_from}")  # fmt: skip
    batch(trained, (DRIFT_DAY - trained).days + 4)
    serve(served_from, 5, v1)
    events.append(f"{DRIFT_DAY}: a new fraud pattern starts (cards skimmed at fuel pumps)")
    events.append(
        f"{trained}..{DRIFT_DAY + dt.timedelta(days=6)}: v{v1} scores every day (batch scoring to "
        f"{DRIFT_DAY + dt.timedelta(days=3)}, the endpoint from {served_from}; two days scored by both)"
    )
    step("3. the monitor once the labels have matured: before the drift's labels, then after")
    monitor(DRIFT_DAY + dt.timedelta(days=maturity))
    decayed_day = DRIFT_DAY + dt.timedelta(days=7 + maturity)
    decayed = monitor(decayed_day)
    if decayed["verdict"]["retrain"]:
        events.append(f"{decayed_day}: the monitor requests retraining (asset {name}.retrain_requested): "
                      + decayed["verdict"]["reasons"][0])  # fmt: skip
    step(f"4. the retraining lifecycle run as of {retrain_day} (on the scheduler the asset event starts it)")
    v2 = lifecycle(retrain_day)
    events.append(f"{retrain_day}: retrained champion v{v2} deployed ({retrain_after - 20} days of the new pattern "
                  "in its training rows)")  # fmt: skip
    serve(retrain_day, 7, v2)
    events.append(f"{retrain_day}..{retrain_day + dt.timedelta(days=6)}: v{v2} serves (the endpoint's capture)")
    step("5. the monitor once those labels have matured")
    after = monitor(retrain_day + dt.timedelta(days=7 + maturity))
    store.write_text(f"{MONITORING}/demo.html", timeline_report(name, store, monitors, events))
    w, was = after["realised"]["window"], decayed["realised"]["window"]
    keys = ("start", "end", "model_version", "value", "low", "high")
    figures = {"goal": after["realised"]["target"], "decayed": {k: was.get(k) for k in keys},
               "after_retrain": {k: w.get(k) for k in keys}}  # fmt: skip
    step(f"done: {json.dumps(figures)}")
    print(f"monitor-demo: the monitoring reports: {store.uri(MONITORING)}/ds=*/report.html", flush=True)
    print(f"monitor-demo: the whole story: {store.uri(MONITORING + '/demo.html')}", flush=True)
    return 0


def trial_pool(pool: str | None) -> int:
    """Create (or resize) the Airflow pool the training trials of every lifecycle DAG share, with
    ``trial_slots()`` slots: ``make up`` and the test stacks run it after the database migration
    (compose's init runs ``airflow pools set`` itself, with the same size)."""
    import os
    import subprocess

    from ml_lifecycle.settings import TRIAL_POOL_ENV, pool_setup_command

    name = pool or os.environ.get(TRIAL_POOL_ENV)
    if not name:
        print(f"trial-pool: no pool named (set ${TRIAL_POOL_ENV} or pass one): nothing to do", flush=True)
        return 0
    cmd = pool_setup_command(name)
    print(f"trial-pool: {' '.join(cmd[:5])}", flush=True)
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_lifecycle.devtools", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check-spec", help="validate one problem spec (prints file, field and rule)")
    p.add_argument("problem")
    p = sub.add_parser("demo-data", help="generate or extend the demo card data to today")
    p.add_argument("problems", nargs="*", help="only these problems (default: every spec)")
    p.add_argument("--run-date", type=dt.date.fromisoformat, required=True, help="the data starts --days before it")
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--per-day", type=int, default=4000)
    p.add_argument("--seed", type=int, default=7)
    p = sub.add_parser("finish-run", help="after airflow dags test: fix the start date, print the summary")
    p.add_argument("problem")
    p.add_argument("--since", type=float, required=True, help="epoch seconds before airflow dags test started")
    p.add_argument("--log", type=Path, required=True, help="the output of airflow dags test")
    p.add_argument("--artifact-root", required=True)
    p = sub.add_parser("rollback", help="move the champion alias back to the previous (or a given) version")
    p.add_argument("problem")
    p.add_argument("--version", type=int, default=None, help="roll back to this version (default: the previous)")
    p.add_argument("--by", default=None, help="who rolls back (default: the current user)")
    p.add_argument("--reason", default=None, help="why (kept in the deployment record)")
    p.add_argument("--artifact-root", default=None, help="default: the store the problem's tasks use")
    p = sub.add_parser("monitor-demo", help="the monitoring DAG on a drift scenario (after make run)")
    p.add_argument("--per-day", type=int, default=4000, help="transactions a day of the scenario's data")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--retrain-after", type=int, default=34, help="days after the drift the retraining run is dated")
    p = sub.add_parser("trial-pool", help="create the Airflow pool the trials of all DAGs share ($ML_TRIAL_POOL)")
    p.add_argument("pool", nargs="?", default=None, help="the pool's name (default: $ML_TRIAL_POOL)")
    args = parser.parse_args(argv)
    if args.command == "trial-pool":
        return trial_pool(args.pool)
    if args.command == "monitor-demo":
        return monitor_demo(per_day=args.per_day, seed=args.seed, retrain_after=args.retrain_after)
    if args.command == "rollback":
        return rollback(
            args.problem, version=args.version, by=args.by, reason=args.reason, artifact_root=args.artifact_root
        )
    if args.command == "check-spec":
        return check_spec(args.problem)
    if args.command == "demo-data":
        return demo_data(args.problems, run_date=args.run_date, days=args.days, per_day=args.per_day, seed=args.seed)
    return finish_run(args.problem, since=args.since, log_path=args.log, artifact_root=args.artifact_root)


if __name__ == "__main__":
    sys.exit(main())
