"""The operators of the lifecycle's long steps: they hand the work to the run's backend.

``CollectAndLabelOperator`` runs the collect-and-label job (``include/jobs/collect_and_label.py``)
for the run, or, with ``round_no``, the wider re-collection augment_data planned for that round;
``TrainingTrialOperator`` trains one trial (``include/jobs/train.py``, the SageMaker script-mode
contract); ``BatchScoringOperator`` scores a day of new data with the champion. The backend
(``ml_lifecycle.backend``) runs the job in the worker (``local``) or as an AWS Glue / SageMaker
job through the Amazon provider's operators (``aws``), deferring the wait to the triggerer and
re-attaching to its own job on a retry. ``on_kill`` stops the remote job. Nothing in a
constructor touches the disk or the network.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ml_lifecycle.context import RunContext
from ml_lifecycle.errors import fail_fast


def _small(summary: dict[str, Any]) -> dict[str, Any]:
    """The collect summary for XCom: the partitions, files and warnings counted, not listed (the
    whole summary is the collect_summary.json of the run or round)."""
    listed = ("partitions", "files", "warnings")
    return {k: v for k, v in summary.items() if k not in listed} | {k: len(summary.get(k) or []) for k in listed}


class _BackendOperator(BaseOperator):
    """Resolves the run's backend in ``execute`` and keeps it for ``execute_complete`` / ``on_kill``."""

    def __init__(self, *, problem: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.problem = problem

    def _run(self, context: Context) -> RunContext:
        rc = RunContext.from_airflow(self.problem, context)
        self._backend = rc.backend
        return rc

    def on_kill(self) -> None:
        backend = getattr(self, "_backend", None)
        if backend is not None:  # a remote job must not outlive the task
            backend.stop(self)


class CollectAndLabelOperator(_BackendOperator):
    """Collect, validate, de-duplicate, label and curate the window's data; returns a small summary.

    :param problem: name of the problem spec (``include/problems/<problem>.yaml``)
    :param round_no: None for the run's collection (the run's ``lookback_days``); k for the
        re-collection augment_data planned for round k (its plan's ``lookback_days``, written to
        the round's folder). A round whose plan needs no new data is skipped.
    """

    ui_color = "#f4d9c6"

    def __init__(self, *, problem: str, round_no: int | None = None, **kwargs: Any) -> None:
        super().__init__(problem=problem, **kwargs)
        self.round_no = round_no

    def _target(self, rc: RunContext) -> tuple[str, int]:
        """(folder, lookback days) of this collection."""
        if self.round_no is None:
            return rc.layout.dir, rc.lookback_days
        plan = rc.store.read_json(rc.layout.round(self.round_no).plan)
        if not plan.get("needs_new_data"):
            raise AirflowSkipException(f"round {self.round_no}'s plan needs no new data ({plan.get('remedy')})")
        folder = rc.layout.collect_dir(self.round_no)
        if plan["dataset_rel"] != rc.layout.dataset_in(folder):
            raise AirflowFailException(f"round {self.round_no}'s plan trains on {plan['dataset_rel']}, not on {folder}")
        return folder, int(plan["lookback_days"])

    @fail_fast
    def execute(self, context: Context) -> dict[str, Any]:
        rc = self._run(context)
        folder, lookback_days = self._target(rc)
        self.log.info("collecting %s days of data before %s into %s", lookback_days, rc.as_of.isoformat(), folder)
        return _small(rc.backend.collect(self, rc, context, lookback_days=lookback_days, run_dir=folder))

    @fail_fast
    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Back from the triggerer: the remote job ended."""
        rc = self._run(context)
        folder, _ = self._target(rc)
        return _small(rc.backend.collect_complete(self, rc, event, run_dir=folder))


class TrainingTrialOperator(_BackendOperator):
    """Train one trial through the SageMaker script-mode contract (mapped over the round's plan).

    :param problem: name of the problem spec (``include/problems/<problem>.yaml``)
    :param round_no: lifecycle round the trial belongs to
    :param trial: ``{"trial_id", "family", "params"}`` from the round's trial plan (mapped)
    """

    template_fields: Sequence[str] = ("trial",)
    ui_color = "#c6e0f4"

    def __init__(self, *, problem: str, round_no: int, trial: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(problem=problem, **kwargs)
        self.round_no = round_no
        self.trial = trial

    @fail_fast
    def execute(self, context: Context) -> dict[str, Any]:
        rc = self._run(context)
        if "k" in self.trial:  # progress in the task log: which of the round's trials this is
            self.log.info(
                "round %s: trial %s of %s (%s)",
                self.round_no,
                self.trial["k"],
                self.trial["of"],
                self.trial["trial_id"],
            )
        return rc.backend.train_trial(self, rc, context, self.round_no, self.trial)

    @fail_fast
    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Back from the triggerer: the remote job ended; take its model and metrics."""
        rc = self._run(context)
        return rc.backend.train_trial_complete(self, rc, self.round_no, self.trial, event)


def scoring_date(rc: RunContext) -> str:
    """The partition a run scores: the ``ds`` param, else the last whole day before the data interval end."""
    ds = rc.params.get("ds")
    if ds:
        try:
            return dt.date.fromisoformat(str(ds)).isoformat()
        except ValueError:
            raise AirflowFailException(f"param ds={ds!r} is not a date YYYY-MM-DD") from None
    return (rc.as_of.date() - dt.timedelta(days=1)).isoformat()


class BatchScoringOperator(_BackendOperator):
    """Score a day of new data (``ds=YYYY-MM-DD``) with the champion and write
    ``<root>/<problem>/scores/ds=<ds>/part-0.parquet`` (row key, time, score, decision, model version;
    no PII) and its ``_manifest.json``: in this process (``local``), or as a SageMaker batch
    transform job on the champion's SageMaker model (``aws``). Re-running replaces both atomically.

    :param problem: name of the problem spec (``include/problems/<problem>.yaml``)
    """

    ui_color = "#d9f4c6"

    @fail_fast
    def execute(self, context: Context) -> dict[str, Any]:
        rc = self._run(context)
        ds = scoring_date(rc)
        return self._write(rc, ds, *rc.backend.score_batch(self, rc, context, ds))

    @fail_fast
    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Back from the triggerer: the transform job ended; keep the day's predictions."""
        rc = self._run(context)
        ds = scoring_date(rc)
        return self._write(rc, ds, *rc.backend.score_batch_complete(self, rc, ds, event))

    def _write(
        self, rc: RunContext, ds: str, scores: Any, summary: dict[str, Any], extra: dict[str, Any]
    ) -> dict[str, Any]:
        from include.lifecycle.layout import scores_dir

        rel = scores_dir(ds)
        rc.store.write_parquet(f"{rel}/part-0.parquet", scores)
        manifest = {
            **summary,
            "scores_uri": rc.store.uri(f"{rel}/part-0.parquet"),
            "columns": list(scores.columns),
            "run_id": rc.run_id,
            **extra,
        }
        rc.store.write_json(f"{rel}/_manifest.json", manifest)
        self.log.info(
            "score_new_data: ds=%s %s rows in = %s scored + %s quarantined; %s flagged by model version %s -> %s",
            ds,
            summary["rows_in"],
            summary["rows_scored"],
            summary["rows_quarantined"],
            summary["flagged"],
            summary["model_version"],
            manifest["scores_uri"],
        )
        keys = ("ds", "rows_in", "rows_scored", "rows_quarantined", "flagged", "model_version")
        return {k: manifest[k] for k in keys} | {"scores_uri": manifest["scores_uri"]}
