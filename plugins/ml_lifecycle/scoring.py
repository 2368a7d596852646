"""Serving the champion from Airflow tasks: batch scoring of a landing partition, and telling a
running endpoint (include/lifecycle/serving.py) to load a newly deployed champion.

The scoring logic is pure (``include/lifecycle/scoring.py``); this module does the I/O: the
spec, the artifact store, the PII key and the champion from the registry.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import urllib.error
import urllib.request
from typing import Any

from airflow.sdk import BaseOperator, Context

from ml_lifecycle.context import RunContext, pii_key, try_number

SERVING_URL_VARIABLE = "ml_serving_url"
"""Airflow variable (or ``$ML_SERVING_URL``) with the base URL of the local endpoint, e.g.
``http://127.0.0.1:8081``; deploy_model posts to ``<url>/reload`` when it is set."""

log = logging.getLogger("airflow.task")


def _fail(msg: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(msg)


def serving_url() -> str | None:
    from airflow.sdk import Variable

    return Variable.get(SERVING_URL_VARIABLE, default=None) or os.environ.get("ML_SERVING_URL") or None


def notify_serving(problem: str, version: int | None, *, timeout: float = 2.0) -> dict[str, Any]:
    """Ask the running endpoint, if any, to reload its champion. Best effort: never raises (a
    deployment must not fail because no server runs); the outcome is logged and returned."""
    url = serving_url()
    if not url:
        log.info("serving: no %s set, no endpoint to tell about version %s", SERVING_URL_VARIABLE, version)
        return {"notified": False, "reason": f"variable {SERVING_URL_VARIABLE} not set"}
    target = url.rstrip("/") + "/reload"
    req = urllib.request.Request(target, data=b"", method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read() or b"{}")
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        log.warning("serving: could not reach %s (%s); it will pick up version %s when it polls", target, exc, version)
        return {"notified": False, "url": target, "error": str(exc)[:200]}
    log.info("serving: %s answered %s", target, answer)
    return {"notified": True, "url": target, "model_version": answer.get("model_version"), "error": answer.get("error")}


def scoring_date(rc: RunContext) -> str:
    """The partition a run scores: the ``ds`` param, else the last whole day before the data interval end."""
    ds = rc.params.get("ds")
    if ds:
        try:
            return dt.date.fromisoformat(str(ds)).isoformat()
        except ValueError:
            _fail(f"param ds={ds!r} is not a date YYYY-MM-DD")
    return (rc.as_of.date() - dt.timedelta(days=1)).isoformat()


def score_new_data(problem: str, **context: Any) -> dict[str, Any]:
    """Score one ``ds=YYYY-MM-DD`` landing partition with the champion in this process and write
    ``<root>/<problem>/scores/ds=YYYY-MM-DD/part-0.parquet`` (row key, time, score, decision,
    model version; no PII) and its ``_manifest.json``. Re-running replaces both atomically."""
    from include.lifecycle.registry import ChecksumError, ModelRegistry
    from include.lifecycle.scoring import NoChampion, load_champion, score_partition
    from include.lifecycle.spec import resolve_source

    rc = RunContext.from_airflow(problem, context)
    ds = scoring_date(rc)
    try:
        champion = load_champion(ModelRegistry(rc.problem.sub("registry")), problem)
    except (NoChampion, ChecksumError) as exc:
        _fail(f"cannot score ds={ds}: {exc}")
    source = rc.input_store(resolve_source(rc.spec.data.source))
    try:
        scores, summary = score_partition(rc.spec, champion, source=source, ds=ds, pii_key=pii_key())
    except FileNotFoundError as exc:
        _fail(str(exc))
    extra = {"source_uri": source.uri(f"ds={ds}"), "champion_deployed_at": champion.record.get("deployed_at")}
    return write_scores(rc, ds, scores, summary, extra)


def write_scores(
    rc: RunContext, ds: str, scores: Any, summary: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    """``scores/ds=<ds>/part-0.parquet`` and ``_manifest.json`` (atomic writes); the small XCom."""
    rel = f"scores/ds={ds}"
    rc.problem.write_parquet(f"{rel}/part-0.parquet", scores)
    manifest = {
        **summary,
        "scores_uri": rc.problem.uri(f"{rel}/part-0.parquet"),
        "columns": list(scores.columns),
        "run_id": rc.run_id,
        **extra,
    }
    rc.problem.write_json(f"{rel}/_manifest.json", manifest)
    log.info(
        "score_new_data: ds=%s %s rows in = %s scored + %s quarantined; %s flagged by model version %s -> %s",
        ds,
        summary["rows_in"],
        summary["rows_scored"],
        summary["rows_quarantined"],
        summary["flagged"],
        summary["model_version"],
        manifest["scores_uri"],
    )
    return {
        k: manifest[k] for k in ("ds", "rows_in", "rows_scored", "rows_quarantined", "flagged", "model_version")
    } | {"scores_uri": manifest["scores_uri"]}


class BatchScoringOperator(BaseOperator):
    """Score a day of new data with the champion: in this process (``local``), or as a SageMaker
    batch transform job on the champion's SageMaker model (``aws``; the wait is deferred to the
    triggerer with ``aws.deferrable``). Both write the same scores and manifest.

    :param problem: name of the problem spec (``include/problems/<problem>.yaml``)
    """

    ui_color = "#d9f4c6"

    def __init__(self, *, problem: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.problem = problem

    def execute(self, context: Context) -> dict[str, Any]:
        rc = RunContext.from_airflow(self.problem, context)
        if rc.backend == "local":
            return score_new_data(self.problem, **context)
        if rc.backend != "aws":
            _fail(f"unknown backend {rc.backend!r}: use local or aws")
        from ml_lifecycle.aws import require_aws, sagemaker_trigger, start_transform, wait_job

        aws = require_aws(rc.spec)
        ds = scoring_date(rc)
        name = start_transform(rc, ds, try_number=try_number(context), pii_key=pii_key(), log=self.log.info)
        if aws.deferrable:
            self.log.info("score_new_data: waiting for SageMaker transform job %s in the triggerer", name)
            self.defer(
                trigger=sagemaker_trigger(aws, name, "transform", aws.training_max_runtime_seconds),
                method_name="execute_complete",
            )
        self._remote = (rc.spec, "transform", name)
        wait_job(aws, "transform", name)
        return self._finish(rc, ds, name)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Back from the triggerer: the transform job ended; keep the day's predictions."""
        from ml_lifecycle.aws import check_trigger_event

        rc = RunContext.from_airflow(self.problem, context)
        event = check_trigger_event(event, "score_new_data (SageMaker transform job)")
        return self._finish(rc, scoring_date(rc), event["job_name"])

    def _finish(self, rc: RunContext, ds: str, name: str) -> dict[str, Any]:
        from ml_lifecycle.aws import finish_transform

        scores, summary, prepared = finish_transform(rc, ds, name, log=self.log.info)
        extra = {k: prepared[k] for k in ("source_uri", "champion_deployed_at", "model_name")}
        return write_scores(rc, ds, scores, summary, extra | {"transform_job_name": name})

    def on_kill(self) -> None:
        remote = getattr(self, "_remote", None)
        if remote:  # the transform job must not outlive the task
            from ml_lifecycle.aws import stop_job

            stop_job(*remote)
