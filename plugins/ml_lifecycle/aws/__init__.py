"""The ``aws`` backend: the S3 artifact store, collect_and_label as an AWS Glue job, training
trials, batch scoring and the endpoint on SageMaker, through the Amazon provider's operators.

A long verb builds the provider operator of its job with our task's id (``glue``, ``training``,
``transform``) and runs its ``execute`` inside our operator: the provider starts the job (or,
our one addition in ``operators``, re-attaches to the job an earlier try started) and waits in
the worker, or defers to its trigger (``aws.deferrable``). The deferral names
``execute_complete``; our operator's ``execute_complete`` calls the verb's ``*_complete``,
which hands the trigger's event to the same provider operator's ``execute_complete``. Either
way the provider's answer (the job's description) becomes the lifecycle's result.

    store.py       S3 store, server-side encryption of every object
    code.py        the code the jobs run, packed reproducibly, staged by digest
    operators.py   the provider's Glue/SageMaker job operators + re-attach by name, on_kill
    glue.py        the Glue job of collect_and_label, the curated tables in the Data Catalog
    training.py    training and hyperparameter tuning jobs of a round's trials
    transform.py   the batch transform job of the batch-scoring DAG
    deploy.py      model package version, model, endpoint config and endpoint (InService)
"""

from __future__ import annotations

from typing import Any

from include.lifecycle.layout import CollectSummary
from include.lifecycle.spec import Spec
from include.lifecycle.store import Store
from ml_lifecycle.backend import Backend
from ml_lifecycle.settings import pii_key, try_number


class AwsBackend(Backend):
    name = "aws"

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self._job: Any = None  # the provider operator running this task's remote job (on_kill)

    def store(self) -> Store:
        from ml_lifecycle.aws.store import s3_problem_store

        return s3_problem_store(self.spec)

    def input_store(self, uri: str) -> Store:
        from ml_lifecycle.aws.store import s3_input_store

        return s3_input_store(self.spec, uri)

    def plan_trials(self, trials: list[dict[str, Any]], *, wide: bool, round_no: int, log: Any) -> list[dict[str, Any]]:
        if not self.spec.aws.hyperparameter_tuning:
            return trials
        from include.lifecycle.tuning import as_tuning_jobs

        trials = as_tuning_jobs(self.spec, trials, wide=wide, round_no=round_no)
        for t in trials:
            if t.get("tuning"):
                log(f"round {round_no}: {t['trial_id']}: one SageMaker tuning job of {t['tuning']['max_jobs']} "
                    f"training jobs over {t['tuning']['ranges']}")  # fmt: skip
        return trials

    # --- the provider operator of the task's job ---------------------------------------------------
    def _execute(self, op: Any, job: Any, context: Any) -> Any:
        """Run provider operator ``job`` as task ``op``'s work. When it defers, ``op`` defers with the
        same trigger and resumes in its ``execute_complete`` (then see :meth:`_resume`)."""
        from airflow.sdk.exceptions import TaskDeferred

        self._job = job
        try:
            return job.execute(context)
        except TaskDeferred as deferred:
            op.log.info("%s: waiting for %s in the triggerer", op.task_id, type(deferred.trigger).__name__)
            op.defer(trigger=deferred.trigger, method_name="execute_complete", timeout=deferred.timeout)

    def _resume(self, op: Any, job_class: type, event: dict[str, Any] | None) -> Any:
        """The trigger's event back in a provider operator of the job's class (the one that deferred
        is gone with the worker that ran it): its ``execute_complete`` checks the event and describes
        the job."""
        from airflow.sdk import get_current_context

        from ml_lifecycle.aws.common import provider_kwargs, require_aws

        job = job_class(**provider_kwargs(require_aws(self.spec), op.task_id))
        return job.execute_complete(get_current_context(), event)

    def stop(self, op: Any) -> None:
        if self._job is not None:  # the provider operator stops its job run, or ours (TrainingJob...)
            self._job.on_kill()

    # --- the verbs ---------------------------------------------------------------------------------
    def collect(self, op: Any, rc: Any, context: Any, *, lookback_days: int, run_dir: str) -> CollectSummary:
        from ml_lifecycle.aws import glue

        self._execute(op, glue.collect_job(rc, op.task_id, lookback_days=lookback_days, run_dir=run_dir), context)
        return glue.finish_collect(rc, run_dir=run_dir, log=op.log.info)

    def collect_complete(self, op: Any, rc: Any, event: dict[str, Any] | None, *, run_dir: str) -> CollectSummary:
        from ml_lifecycle.aws import glue
        from ml_lifecycle.aws.operators import CollectGlueJob

        self._resume(op, CollectGlueJob, event)
        return glue.finish_collect(rc, run_dir=run_dir, log=op.log.info)

    def train_trial(self, op: Any, rc: Any, context: Any, round_no: int, trial: dict[str, Any]) -> dict[str, Any]:
        from ml_lifecycle.aws import training

        job = training.trial_job(rc, op.task_id, round_no, trial, try_number=try_number(context))
        return training.trial_result(rc, round_no, trial, self._execute(op, job, context), log=op.log.info)

    def train_trial_complete(
        self, op: Any, rc: Any, round_no: int, trial: dict[str, Any], event: dict[str, Any] | None
    ) -> dict[str, Any]:
        from ml_lifecycle.aws import training
        from ml_lifecycle.aws.operators import TrainingJob, TuningJob

        result = self._resume(op, TuningJob if trial.get("tuning") else TrainingJob, event)
        return training.trial_result(rc, round_no, trial, result, log=op.log.info)

    def score_batch(self, op: Any, rc: Any, context: Any, ds: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        from ml_lifecycle.aws import transform

        job = transform.transform_job(
            rc, op.task_id, ds, try_number=try_number(context), pii_key=pii_key(), log=op.log.info
        )
        return transform.transform_result(rc, ds, self._execute(op, job, context), log=op.log.info)

    def score_batch_complete(
        self, op: Any, rc: Any, ds: str, event: dict[str, Any] | None
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        from ml_lifecycle.aws import transform
        from ml_lifecycle.aws.operators import TransformJob

        return transform.transform_result(rc, ds, self._resume(op, TransformJob, event), log=op.log.info)

    def publish_champion(self, rc: Any, version: int, *, log: Any) -> dict[str, Any]:
        """An approved model package version and the SageMaker endpoint on it (aws.serving_image)."""
        if not self.spec.aws.serving_image:
            return {}
        from ml_lifecycle.aws import deploy

        return {"sagemaker": deploy.publish_champion(rc, version, log=log)}
