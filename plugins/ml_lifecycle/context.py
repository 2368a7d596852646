"""What every lifecycle task needs to know about its run: spec, store, run folder, window."""

from __future__ import annotations

import datetime as dt
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import ObjectStoragePath, Variable

from include.lifecycle.layout import Outcome, RunLayout
from include.lifecycle.spec import PROJECT_ROOT, Spec, load_spec, spec_path
from include.lifecycle.store import Store

if TYPE_CHECKING:
    from ml_lifecycle.backend import Backend

ARTIFACT_ROOT_VARIABLE = "ml_artifact_root"
PII_KEY_VARIABLE = "ml_pii_hash_key"


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
    else half the cores): with :func:`trial_threads` each, concurrent trials x threads <= cores."""
    env = os.environ.get("ML_TRIAL_SLOTS")
    return max(1, int(env)) if env else max(1, machine_cores() // 2)


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


@dataclass
class RunContext:
    """A task's view of its run: the spec, the run's backend (resolved once), its store and layout."""

    spec: Spec
    backend: Backend
    store: Store
    run_id: str
    as_of: dt.datetime
    params: dict[str, Any]

    @classmethod
    def from_airflow(cls, problem: str, context: Any) -> RunContext:
        from ml_lifecycle.backend import resolve

        as_of = context.get("data_interval_end") or context.get("logical_date")
        if as_of is None:
            as_of = context["dag_run"].run_after
        spec = spec_for(problem)
        params = dict(context.get("params") or {})
        backend = resolve(spec, params)
        return cls(
            spec=spec, backend=backend, store=backend.store(), run_id=context["run_id"], as_of=as_of, params=params
        )

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_id)

    def input_store(self, uri: str) -> Store:
        """A read view of an input location, through the backend (its credentials, its endpoint)."""
        return self.backend.input_store(uri)

    @property
    def lookback_days(self) -> int:
        return int(self.params.get("lookback_days") or self.spec.data.lookback_days)

    @property
    def max_rounds(self) -> int:
        """Rounds are unrolled up to the spec's max_rounds; a run may ask for fewer."""
        return min(int(self.params.get("max_rounds") or self.spec.max_rounds), self.spec.max_rounds)

    def rounds(self) -> list[dict[str, Any]]:
        """The record of each round this run has planned so far: plan, evaluation, diagnosis, split."""
        out = []
        for k in range(1, self.spec.max_rounds + 1):
            rnd = self.layout.round(k)
            if not self.store.exists(rnd.plan):
                break
            out.append(
                {
                    "round": k,
                    "plan": self.store.read_json(rnd.plan),
                    "evaluation": self.store.read_json_or(rnd.evaluation),
                    "diagnosis": self.store.read_json_or(rnd.diagnosis),
                    "splits": self.store.read_json_or(rnd.split),
                }
            )
        return out

    def record_outcome(self, outcome: Outcome) -> None:
        """How the run ended (``outcome.json``): the one writer, for deploy_model, goal_not_met and a
        rejected approval."""
        self.store.write_json(self.layout.outcome, outcome)
