"""Developer commands behind ``make run`` / ``make up`` / ``make demo-data`` (not used by the DAGs).

    python -m ml_lifecycle.devtools check-spec PROBLEM
    python -m ml_lifecycle.devtools demo-data [PROBLEM ...] --run-date D --days N --per-day N
    python -m ml_lifecycle.devtools finish-run PROBLEM --since EPOCH --log FILE --artifact-root ROOT
    python -m ml_lifecycle.devtools rollback PROBLEM [--version N] [--by NAME] [--reason TEXT]

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
    args = parser.parse_args(argv)
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
