"""Settings every lifecycle task shares: Airflow variables (artifact root, PII key), the spec
of a problem, task defaults, and this machine's cores and trial slots."""

from __future__ import annotations

import datetime as dt
import functools
import os
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath, Variable

from include.lifecycle.spec import PROJECT_ROOT, Spec, load_spec, spec_path

ARTIFACT_ROOT_VARIABLE = "ml_artifact_root"
PII_KEY_VARIABLE = "ml_pii_hash_key"

# OpenMP (xgboost's and scikit-learn's libgomp) spin-waits at every barrier by default. When any
# other process wants a core at the same time (the scheduler, another task, another user), a fit
# with threads = cores degrades sharply: a 0.6 s xgboost fit took 23 s on 2 cores with a load of
# 2.4 (bench/scheduler.py, 2026-11-27). Waiting passively costs little and keeps a fit near its
# share. libgomp reads this once, when it loads: every task process imports this module while it
# parses its DAG file, before a section imports xgboost or scikit-learn. A setting of the
# environment's own wins.
OPENMP_WAIT_POLICY = "PASSIVE"
os.environ.setdefault("OMP_WAIT_POLICY", OPENMP_WAIT_POLICY)


def task_defaults(owner: str, **extra: Any) -> dict[str, Any]:
    """default_args of every lifecycle DAG: the spec's owner, retries with exponential back-off."""
    return {
        "owner": owner,
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=20),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(minutes=10),
        **extra,
    }


def machine_cores() -> int:
    """The cores this process may use (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def trial_slots() -> int:
    """How many training trials of one DAG may run at once on this machine (``$ML_TRIAL_SLOTS``,
    else half the cores; never more than the cores): with :func:`trial_threads` each, concurrent
    trials x threads <= cores."""
    env = os.environ.get("ML_TRIAL_SLOTS")
    cores = machine_cores()
    return min(cores, max(1, int(env))) if env else max(1, cores // 2)


TRIAL_POOL_ENV = "ML_TRIAL_POOL"


def trial_pool() -> str | None:
    """The Airflow pool that the local training trials of every lifecycle DAG share
    (``$ML_TRIAL_POOL``). ``make up``, docker compose and the project's test stacks set it to
    ``ml_trials`` and create that pool with ``trial_slots()`` slots (``pool_setup_command``;
    compose's init computes the same size in shell), so
    the cap of concurrent trials holds across DAGs (several problems, a monitor's retraining) and
    not only within one DAG. Unset: no pool (Airflow's ``default_pool``) and the cap is per DAG: a
    task whose pool does not exist is never scheduled, so a deployment that did not create the
    pool must not be made to wait for it."""
    return os.environ.get(TRIAL_POOL_ENV) or None


def pool_setup_command(pool: str) -> list[str]:
    """The ``airflow`` command line that creates (or resizes) the trial pool on this machine."""
    return ["airflow", "pools", "set", pool, str(trial_slots()), "training trials of every lifecycle DAG"]


def trial_threads() -> int:
    """Threads of one local trial: its share of the cores when ``trial_slots()`` trials run at once."""
    return max(1, machine_cores() // trial_slots())


def try_number(context: Any) -> int:
    """The task instance's try (1 on the first run, 2 on the first retry, ...)."""
    return int(getattr(context.get("ti"), "try_number", 1) or 1)


def default_artifact_root() -> str:
    return os.environ.get("ML_ARTIFACT_ROOT") or (PROJECT_ROOT / "artifacts").as_uri()


def artifact_root() -> ObjectStoragePath:
    """The root of the artifact store: Airflow variable ``ml_artifact_root`` (e.g.
    ``s3://aws_default@bucket/prefix``), else ``$ML_ARTIFACT_ROOT``, else ``<project>/artifacts``."""
    uri = Variable.get(ARTIFACT_ROOT_VARIABLE, default=None) or default_artifact_root()
    if "://" not in uri:
        uri = Path(uri).resolve().as_uri()
    return ObjectStoragePath(uri)


@functools.cache
def _spec_cached(path: str, mtime: float) -> Spec:
    return load_spec(path)


def spec_for(problem: str) -> Spec:
    path = spec_path(problem)
    return _spec_cached(str(path), path.stat().st_mtime)


def pii_key() -> bytes:
    """The PII hashing key from the Airflow variable (never from the repository)."""
    key = Variable.get(PII_KEY_VARIABLE, default=None)
    if not key:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(
            f"Airflow variable {PII_KEY_VARIABLE!r} is not set: the PII columns cannot be tokenised. Set it "
            f"(e.g. AIRFLOW_VAR_ML_PII_HASH_KEY, or a secrets backend); `make run` creates a random one."
        )
    return key.encode()
