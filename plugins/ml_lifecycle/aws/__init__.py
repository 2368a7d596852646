"""The ``aws`` backend: S3 store, the collect job on AWS Glue, trials and batch scoring on SageMaker."""

from __future__ import annotations

from typing import Any

from include.lifecycle.layout import CollectSummary
from include.lifecycle.store import Store
from ml_lifecycle.backend import Backend
from ml_lifecycle.settings import pii_key, try_number


class AwsBackend(Backend):
    name = "aws"

    def store(self) -> Store:
        from ml_lifecycle.aws.jobs import s3_problem_store

        return s3_problem_store(self.spec)

    def input_store(self, uri: str) -> Store:
        if uri.startswith("s3://"):  # through the spec's connection (credentials, endpoint)
            from airflow.sdk import ObjectStoragePath

            path = ObjectStoragePath(f"s3://{self.spec.aws.conn_id}@{uri.removeprefix('s3://')}")
            return Store(path.fs, path.path)
        return Store.from_uri(uri)

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

    def collect(self, op: Any, rc: Any, context: Any, *, lookback_days: int, run_dir: str) -> CollectSummary:
        from ml_lifecycle.aws import jobs

        if self.spec.aws.deferrable:
            job_name, run_id = jobs.start_glue_collect(rc, lookback_days=lookback_days, run_dir=run_dir, log=op.log.info)
            op.log.info("collect: waiting for Glue job run %s/%s in the triggerer", job_name, run_id)
            op.defer(trigger=jobs.glue_trigger(self.spec, job_name, run_id), method_name="execute_complete")

        def started(job_name: str, run_id: str) -> None:
            op._remote = ("glue", job_name, run_id)

        return jobs.run_glue_collect(rc, lookback_days=lookback_days, run_dir=run_dir, log=op.log.info, on_start=started)

    def collect_complete(self, op: Any, rc: Any, event: dict[str, Any] | None, *, run_dir: str) -> CollectSummary:
        from ml_lifecycle.aws import jobs

        event = jobs.check_trigger_event(event, "collect (Glue job run)")
        return jobs.finish_glue_collect(
            rc, run_dir=run_dir, job_name=jobs.glue_job_name(self.spec), run_id=event["run_id"], log=op.log.info
        )

    def train_trial(self, op: Any, rc: Any, context: Any, round_no: int, trial: dict[str, Any]) -> dict[str, Any]:
        from ml_lifecycle.aws import jobs

        aws = self.spec.aws
        tries = try_number(context)
        if aws.deferrable:
            kind, name = jobs.start_trial_aws(rc, round_no, trial, try_number=tries, log=op.log.info)
            op.log.info("waiting for SageMaker %s job %s in the triggerer", kind, name)
            max_seconds = aws.training_max_runtime_seconds * (trial.get("tuning") or {}).get("max_jobs", 1)
            op.defer(trigger=jobs.sagemaker_trigger(aws, name, kind, max_seconds), method_name="execute_complete")

        def started(kind: str, name: str) -> None:
            op._remote = (kind, name)

        return jobs.run_trial_aws(rc, round_no, trial, try_number=tries, log=op.log.info, on_start=started)

    def train_trial_complete(
        self, op: Any, rc: Any, round_no: int, trial: dict[str, Any], event: dict[str, Any] | None
    ) -> dict[str, Any]:
        from ml_lifecycle.aws import jobs

        event = jobs.check_trigger_event(event, f"trial {trial['trial_id']} (SageMaker job)")
        kind = "tuning" if trial.get("tuning") else "training"
        return jobs.finish_trial_aws(rc, round_no, trial, kind, event["job_name"], log=op.log.info)

    def score_batch(self, op: Any, rc: Any, context: Any, ds: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        from ml_lifecycle.aws import jobs

        aws = jobs.require_aws(self.spec)
        name = jobs.start_transform(rc, ds, try_number=try_number(context), pii_key=pii_key(), log=op.log.info)
        if aws.deferrable:
            op.log.info("score_new_data: waiting for SageMaker transform job %s in the triggerer", name)
            op.defer(
                trigger=jobs.sagemaker_trigger(aws, name, "transform", aws.training_max_runtime_seconds),
                method_name="execute_complete",
            )
        op._remote = ("transform", name)
        jobs.wait_job(aws, "transform", name)
        return self._transform_result(op, rc, ds, name)

    def score_batch_complete(
        self, op: Any, rc: Any, ds: str, event: dict[str, Any] | None
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        from ml_lifecycle.aws import jobs

        event = jobs.check_trigger_event(event, "score_new_data (SageMaker transform job)")
        return self._transform_result(op, rc, ds, event["job_name"])

    def _transform_result(self, op: Any, rc: Any, ds: str, name: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        from ml_lifecycle.aws import jobs

        scores, summary, prepared = jobs.finish_transform(rc, ds, name, log=op.log.info)
        extra = {k: prepared[k] for k in ("source_uri", "champion_deployed_at", "model_name")}
        return scores, summary, extra | {"transform_job_name": name}

    def publish_champion(self, rc: Any, version: int, *, log: Any) -> dict[str, Any]:
        """An approved model package version and the SageMaker endpoint on it (aws.serving_image)."""
        if not self.spec.aws.serving_image:
            return {}
        from ml_lifecycle.aws import jobs

        return {"sagemaker": jobs.publish_champion(self.spec, rc.store, version, run_id=rc.run_id, log=log)}

    def stop(self, op: Any) -> None:
        remote = getattr(op, "_remote", None)
        if not remote:
            return
        from ml_lifecycle.aws import jobs

        if remote[0] == "glue":
            jobs.stop_glue_run(self.spec, remote[1], remote[2])
        else:
            jobs.stop_job(self.spec, *remote)
