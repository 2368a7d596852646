"""Where the heavy work of a run happens: the verbs every backend implements.

A run's backend is resolved once (``ml_lifecycle.context.resolve``, the one place that knows
``local`` from ``aws``), from the run's ``backend`` param (the trigger form) or else the spec's
``backend``, into an object with the few verbs the lifecycle needs:

    store / input_store       the artifact store and read views of input locations
    trial_concurrency         how many training trials of a DAG may run at once
    plan_trials               the round's trials as this backend runs them
    collect                   the collect-and-label job for a run folder
    train_trial               one training trial (SageMaker script-mode contract)
    score_batch               score a day of new data with the champion
    publish_champion          make a registry version the served model
    stop                      stop the remote job an operator started (on_kill)

``LocalBackend`` (``ml_lifecycle.local``) runs the project's job files in the worker process;
``AwsBackend`` (``ml_lifecycle.aws``) runs the same files as AWS Glue and SageMaker jobs through
the Amazon provider's operators. The long verbs take the task's operator: a backend may defer it
to the triggerer (``op.defer``), and the operator's ``execute_complete`` hands the trigger's event
back to the same backend (``*_complete``). Nothing else in the code asks which backend it is on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from include.lifecycle.layout import CollectSummary
    from include.lifecycle.spec import Spec
    from include.lifecycle.store import Store


class Backend(ABC):
    """The verbs of one backend for one problem spec."""

    name: ClassVar[str]

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    # --- storage ---------------------------------------------------------------------------------
    @abstractmethod
    def store(self) -> Store:
        """The problem's artifact store (``<root>/<problem>``)."""

    @abstractmethod
    def input_store(self, uri: str) -> Store:
        """A read view of an input location (a landing folder, a label feed)."""

    # --- planning --------------------------------------------------------------------------------
    def trial_concurrency(self) -> int | None:
        """``max_active_tis_per_dag`` of the training trials (None: no cap from this backend)."""
        return None

    def plan_trials(self, trials: list[dict[str, Any]], *, wide: bool, round_no: int, log: Any) -> list[dict[str, Any]]:
        """The round's trials as this backend runs them (default: one job per trial)."""
        return trials

    # --- long-running work (may defer the operator) ---------------------------------------------
    @abstractmethod
    def collect(self, op: Any, rc: Any, context: Any, *, lookback_days: int, run_dir: str) -> CollectSummary:
        """Run the collect-and-label job writing ``run_dir``; returns its summary."""

    def collect_complete(self, op: Any, rc: Any, event: dict[str, Any] | None, *, run_dir: str) -> CollectSummary:
        raise NotImplementedError(f"backend {self.name} does not defer the collect job")

    @abstractmethod
    def train_trial(self, op: Any, rc: Any, context: Any, round_no: int, trial: dict[str, Any]) -> dict[str, Any]:
        """Train one trial; its model and metrics land under the round's ``trials/<trial id>/``."""

    def train_trial_complete(
        self, op: Any, rc: Any, round_no: int, trial: dict[str, Any], event: dict[str, Any] | None
    ) -> dict[str, Any]:
        raise NotImplementedError(f"backend {self.name} does not defer training")

    @abstractmethod
    def score_batch(self, op: Any, rc: Any, context: Any, ds: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """Score partition ``ds`` with the champion: ``(scores, summary, manifest extras)``."""

    def score_batch_complete(
        self, op: Any, rc: Any, ds: str, event: dict[str, Any] | None
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        raise NotImplementedError(f"backend {self.name} does not defer batch scoring")

    @abstractmethod
    def publish_champion(self, rc: Any, version: int, *, log: Any) -> dict[str, Any]:
        """Make registry ``version`` (just promoted to champion) the model that serves."""

    def stop(self, op: Any) -> None:  # noqa: B027 - nothing to stop by default
        """Stop the remote job ``op`` started, if any (the task's ``on_kill``)."""
