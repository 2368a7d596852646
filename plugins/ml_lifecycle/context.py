"""What every lifecycle task needs to know about its run: spec, backend, store, layout, window."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from include.lifecycle.layout import Outcome, RunLayout
from include.lifecycle.spec import Spec
from include.lifecycle.store import Store
from ml_lifecycle.backend import Backend
from ml_lifecycle.settings import spec_for

BACKENDS = ("local", "aws")


def backend_name(spec: Spec, params: dict[str, Any] | None = None) -> str:
    """The run's backend name: the ``backend`` param of the run, else the spec's; checked."""
    name = str((params or {}).get("backend") or spec.backend)
    if name not in BACKENDS:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    return name


def resolve(spec: Spec, params: dict[str, Any] | None = None) -> Backend:
    """The backend object of a run (or, without params, of the spec: what the DAG is parsed with)."""
    name = backend_name(spec, params)
    if name == "aws":
        from ml_lifecycle.aws import AwsBackend

        return AwsBackend(spec)
    from ml_lifecycle.local import LocalBackend

    return LocalBackend(spec)


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
