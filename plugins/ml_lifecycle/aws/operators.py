"""The Amazon provider's job operators, with the one thing they lack here: re-attaching a retried
task to the job an earlier try started, found by its deterministic name or run key.

The provider operators start the job, wait for it (in the worker, or deferred to the provider's
trigger) and describe it; the backend builds them with our task's id and calls their
``execute`` inside our operator. Their deferral names ``execute_complete``, which our operator
has too: it hands the trigger's event back to the provider operator's ``execute_complete``.

- :class:`CollectGlueJob`: a Glue job run carries ``--ml-run-key`` (problem + run folder); a
  retry re-attaches to the run of its key that runs or succeeded (the provider's own re-attach
  keys on the task instance, which the same collection run from another task would not share).
- :class:`TrainingJob`, :class:`TuningJob`, :class:`TransformJob`: the job's names in attempt
  order; a retry re-attaches to the first that runs or completed and starts the first free one
  after failed ones (SageMaker never reuses a name). ``on_kill`` stops the job, which the
  provider's SageMaker operators do not do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, ClassVar

from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerTrainingOperator,
    SageMakerTransformOperator,
    SageMakerTuningOperator,
)
from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
from airflow.sdk.bases.operator import BaseOperatorMeta

from ml_lifecycle.aws.common import describe_or_none, fail, wait_attempts

RUN_KEY_ARG = "--ml-run-key"
# a job in one of these states is the task's job: wait for it or take its result
ATTACHABLE_STATES = {"InProgress", "Stopping", "Completed"}


class CollectGlueJob(GlueJobOperator):
    """``GlueJobOperator`` whose retry re-attaches to the job run of the same run key (running or
    succeeded) instead of starting a second one; a killed task stops its run."""

    def __init__(self, *, run_key: str | None = None, **kwargs: Any) -> None:
        # durable=False: the provider's re-attach (task state, task-uuid argument) gives way to ours
        super().__init__(durable=False, stop_job_run_on_kill=True, **kwargs)
        self.run_key = run_key

    def submit_job(self, context: Any) -> str:
        earlier = self.earlier_run() if self.hook.has_job(self.job_name) else None
        if earlier is None:
            return super().submit_job(context)
        self.log.info("re-attaching to Glue job run %s/%s (%s)", self.job_name, earlier["Id"], earlier["JobRunState"])
        self._set_job_run_id(context, earlier["Id"])
        return earlier["Id"]

    def earlier_run(self) -> dict[str, Any] | None:
        """The newest run of the job for this run key that runs or succeeded (every page of runs)."""
        mine = [
            run
            for page in self.hook.conn.get_paginator("get_job_runs").paginate(JobName=self.job_name)
            for run in page.get("JobRuns", [])
            if (run.get("Arguments") or {}).get(RUN_KEY_ARG) == self.run_key
            and (self.is_job_active(run["JobRunState"]) or self.is_job_succeeded(run["JobRunState"]))
        ]
        return max(mine, key=lambda run: run["StartedOn"], default=None)


class _ReattachByName:
    """For a provider SageMaker job operator: ``names``, the job's names in attempt order."""

    kind: ClassVar[str]  # training, tuning or transform (SageMakerTrigger's job type)
    name_key: ClassVar[str]  # the name's key in the job's config, its description and its Stop call
    status_key: ClassVar[str]  # the status's key in the job's description
    stop_call: ClassVar[str]  # the SageMaker client's method that stops such a job

    @BaseOperatorMeta._apply_defaults  # as the SDK's own operator mixins: the init of a mixin of operators
    def __init__(self, *, names: Sequence[str] = (), config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config=config or {}, **kwargs)
        self.names = list(names)
        self.job_name: str | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        describe = getattr(self.hook, f"describe_{self.kind}_job")
        for name in self.names:
            desc = describe_or_none(describe, name)
            if desc is None:
                self.job_name = self.config[self.name_key] = name
                return super().execute(context)
            status = desc[self.status_key]
            if status in ATTACHABLE_STATES:
                self.job_name = name
                self.log.info("re-attaching to SageMaker %s job %s (%s)", self.kind, name, status)
                return self._attach(context, name, status, describe)
            self.log.info("SageMaker %s job %s ended %s; this try uses the next name", self.kind, name, status)
        fail(f"every attempt of this {self.kind} job failed: {self.names}")

    def _attach(self, context: Any, name: str, status: str, describe: Any) -> dict[str, Any]:
        """Wait for a job an earlier try started as the provider waits for one it starts."""
        if status != "Completed":
            max_seconds = self.max_ingestion_time or 0
            if self.deferrable:
                trigger = SageMakerTrigger(
                    job_name=name,
                    job_type=self.kind,
                    waiter_delay=self.check_interval,
                    waiter_max_attempts=wait_attempts(max_seconds, self.check_interval),
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                )
                timeout = dt.timedelta(seconds=max_seconds) if max_seconds else None
                self.defer(trigger=trigger, method_name="execute_complete", timeout=timeout)
            self.hook.check_status(name, self.status_key, describe, self.check_interval, max_seconds or None)
        return self.execute_complete(context, {"status": "success", "job_name": name})

    @classmethod
    def completed(cls, desc: dict[str, Any]) -> dict[str, Any]:
        """The description of a job that must have completed (else the task fails)."""
        if desc[cls.status_key] != "Completed":
            fail(
                f"SageMaker {cls.kind} job {desc[cls.name_key]} ended {desc[cls.status_key]}: "
                f"{desc.get('FailureReason', '')}"
            )
        return desc

    def on_kill(self) -> None:
        """Stop the job: it must not outlive the task."""
        if self.job_name:
            self.log.info("stopping SageMaker %s job %s", self.kind, self.job_name)
            getattr(self.hook.conn, self.stop_call)(**{self.name_key: self.job_name})


class TrainingJob(_ReattachByName, SageMakerTrainingOperator):
    kind = "training"
    name_key = "TrainingJobName"
    status_key = "TrainingJobStatus"
    stop_call = "stop_training_job"


class TuningJob(_ReattachByName, SageMakerTuningOperator):
    kind = "tuning"
    name_key = "HyperParameterTuningJobName"
    status_key = "HyperParameterTuningJobStatus"
    stop_call = "stop_hyper_parameter_tuning_job"


class TransformJob(_ReattachByName, SageMakerTransformOperator):
    kind = "transform"
    name_key = "TransformJobName"
    status_key = "TransformJobStatus"
    stop_call = "stop_transform_job"
