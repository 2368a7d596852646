"""The daily per-problem DAGs beside the lifecycle DAG (batch scoring, monitoring): their common
arguments and the loop that builds one per spec that wants it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, MutableMapping
from typing import Any

from airflow.sdk import DAG

from include.lifecycle.spec import Spec, SpecError, load_spec, spec_files
from ml_lifecycle.settings import task_defaults

SCHEDULE = "@daily"


def daily_dag(spec: Spec, suffix: str, *, description: str, tag: str, doc_md: str | None, **kwargs: Any) -> DAG:
    """``<problem>_<suffix>``, daily, one run at a time, no catch-up."""
    return DAG(
        dag_id=f"{spec.name}_{suffix}",
        description=f"{spec.title}: {description}",
        doc_md=doc_md,
        schedule=SCHEDULE,
        # far back on purpose: Airflow marks every task of a run dated before start_date as skipped
        # and calls the run a success; a backfill of old dates must run and say what data it found
        start_date=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags={"ml-lifecycle", tag, f"backend:{spec.backend}", *spec.tags},
        default_args=task_defaults(spec.owner),
        **kwargs,
    )


def build_for_specs(
    namespace: MutableMapping[str, Any], suffix: str, wanted: Callable[[Spec], bool], build: Callable[[Spec], DAG]
) -> None:
    """Put ``build(spec)`` into ``namespace`` (a DAG file's globals) as ``dag_<problem>_<suffix>`` for
    every spec that loads and is ``wanted``; a broken spec is reported by dags/lifecycle_dags.py."""
    for path in spec_files():
        try:
            spec = load_spec(path)
        except SpecError:
            continue
        if wanted(spec):
            namespace[f"dag_{spec.name}_{suffix}"] = build(spec)
