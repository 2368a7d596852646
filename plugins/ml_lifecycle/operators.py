"""Operators for the two lifecycle steps that AWS runs as managed jobs.

``GlueEtlOperator`` runs the collect-and-label ETL (``include/jobs/collect_and_label.py``)
and ``ScriptModeTrainingOperator`` runs one training trial (``include/jobs/train.py``, the
SageMaker script-mode contract). The ``local`` backend runs the very same files in-process;
the ``aws`` backend (the run's ``backend`` param, else the spec's) submits them as an AWS Glue job
run and SageMaker training jobs through the Amazon provider's hooks (``ml_lifecycle.aws``),
re-attaching to its own job on a retry. Nothing in a constructor touches the disk or the network.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context

from ml_lifecycle.context import RunContext, pii_key, trial_threads, try_number
from ml_lifecycle.errors import fail_fast

PROBLEM_DOC = ":param problem: name of the problem spec (``include/problems/<problem>.yaml``)"


def _backend(rc: RunContext) -> str:
    """The run's backend (the run's ``backend`` param, else the spec's); ``aws`` needs the spec's aws settings."""
    backend = rc.backend
    if backend not in ("local", "aws"):
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"unknown backend {backend!r}: use local or aws")
    return backend


class GlueEtlOperator(BaseOperator):
    """Run the collect-and-label ETL for the run's window; returns a small summary.

    :param problem: name of the problem spec (``include/problems/<problem>.yaml``)
    :param lookback_days: days of partitions before the data interval end; None takes the
        run's ``lookback_days`` param or the spec's ``data.lookback_days``
    :param output_subdir: folder under the run folder for the data set (re-collection by a
        later round writes its own folder, so an earlier round's data set is never overwritten)
    """

    template_fields: Sequence[str] = ("lookback_days", "output_subdir")
    ui_color = "#f4d9c6"

    def __init__(
        self, *, problem: str, lookback_days: int | None = None, output_subdir: str = "", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.problem = problem
        self.lookback_days = lookback_days
        self.output_subdir = output_subdir

    def _run_dir(self, rc: RunContext) -> str:
        return f"{rc.run_dir}/{self.output_subdir}".rstrip("/")

    @fail_fast
    def execute(self, context: Context) -> dict[str, Any]:
        rc = RunContext.from_airflow(self.problem, context)
        lookback_days = int(self.lookback_days or rc.lookback_days)
        if _backend(rc) == "aws" and rc.spec.aws.deferrable:
            from ml_lifecycle.aws import glue_trigger, start_glue_collect

            job_name, run_id = start_glue_collect(
                rc, lookback_days=lookback_days, run_dir=self._run_dir(rc), log=self.log.info
            )
            self.log.info("collect_and_label: waiting for Glue job run %s/%s in the triggerer", job_name, run_id)
            self.defer(trigger=glue_trigger(rc.spec, job_name, run_id), method_name="execute_complete")
        self._remote: tuple[Any, str, str] | None = None

        def started(job_name: str, run_id: str) -> None:
            self._remote = (rc.spec, job_name, run_id)

        return run_collect(
            rc, lookback_days=lookback_days, run_dir=self._run_dir(rc), log=self.log.info, on_start=started
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Back from the triggerer: the Glue job run ended; check it and register its partitions."""
        from ml_lifecycle.aws import check_trigger_event, finish_glue_collect, glue_job_name

        rc = RunContext.from_airflow(self.problem, context)
        event = check_trigger_event(event, "collect_and_label (Glue job run)")
        summary = finish_glue_collect(
            rc, run_dir=self._run_dir(rc), job_name=glue_job_name(rc.spec), run_id=event["run_id"], log=self.log.info
        )
        return _small(summary)

    def on_kill(self) -> None:
        remote = getattr(self, "_remote", None)
        if remote:  # the Glue job run must not outlive the task
            from ml_lifecycle.aws import stop_glue_run

            stop_glue_run(*remote)


def _small(summary: dict[str, Any]) -> dict[str, Any]:
    """The collect summary for XCom: the partitions, files and warnings counted, not listed (the
    whole summary is the run's collect_summary.json)."""
    listed = ("partitions", "files", "warnings")
    return {k: v for k, v in summary.items() if k not in listed} | {k: len(summary.get(k) or []) for k in listed}


def run_collect(rc: RunContext, *, lookback_days: int, run_dir: str, log: Any, on_start: Any = None) -> dict[str, Any]:
    """The collect-and-label job for ``run_dir``: an AWS Glue job run (backend aws), or the very same
    job file in-process (local). Returns the summary with the partitions counted, not listed."""
    if _backend(rc) == "aws":
        from ml_lifecycle.aws import run_glue_collect

        return _small(run_glue_collect(rc, lookback_days=lookback_days, run_dir=run_dir, log=log, on_start=on_start))
    from include.jobs import collect_and_label
    from include.lifecycle.spec import spec_path

    argv = [
        "--spec", str(spec_path(rc.spec.name)),
        "--artifact-root", rc.problem.uri(),
        "--run-dir", run_dir,
        "--as-of", rc.as_of.isoformat(),
        "--lookback-days", str(lookback_days),
    ]  # fmt: skip
    return _small(collect_and_label.main(argv, pii_key=pii_key(), log=log))


class ScriptModeTrainingOperator(BaseOperator):
    """Run one training trial through the SageMaker script-mode contract.

    :param problem: name of the problem spec (``include/problems/<problem>.yaml``)
    :param round_no: lifecycle round the trial belongs to
    :param trial: ``{"trial_id", "family", "params"}`` from the round's trial plan (mapped)
    """

    template_fields: Sequence[str] = ("trial",)
    ui_color = "#c6e0f4"

    def __init__(self, *, problem: str, round_no: int, trial: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.problem = problem
        self.round_no = round_no
        self.trial = trial

    @fail_fast
    def execute(self, context: Context) -> dict[str, Any]:
        rc = RunContext.from_airflow(self.problem, context)
        if "k" in self.trial:  # progress in the task log: which of the round's trials this is
            self.log.info(
                "round %s: trial %s of %s (%s)",
                self.round_no,
                self.trial["k"],
                self.trial["of"],
                self.trial["trial_id"],
            )
        if _backend(rc) == "aws":
            from ml_lifecycle.aws import run_trial_aws, sagemaker_trigger, start_trial_aws

            aws = rc.spec.aws
            tries = try_number(context)
            if aws.deferrable:
                kind, name = start_trial_aws(rc, self.round_no, self.trial, try_number=tries, log=self.log.info)
                self.log.info("waiting for SageMaker %s job %s in the triggerer", kind, name)
                max_seconds = aws.training_max_runtime_seconds * (self.trial.get("tuning") or {}).get("max_jobs", 1)
                self.defer(trigger=sagemaker_trigger(aws, name, kind, max_seconds), method_name="execute_complete")
            self._remote: tuple[Any, str, str] | None = None

            def started(kind: str, name: str) -> None:
                self._remote = (rc.spec, kind, name)

            return run_trial_aws(rc, self.round_no, self.trial, try_number=tries, log=self.log.info, on_start=started)
        return run_trial_local(rc, self.round_no, self.trial, log=self.log.info)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Back from the triggerer: the SageMaker job ended; take its model and metrics."""
        from ml_lifecycle.aws import check_trigger_event, finish_trial_aws

        rc = RunContext.from_airflow(self.problem, context)
        event = check_trigger_event(event, f"trial {self.trial['trial_id']} (SageMaker job)")
        kind = "tuning" if self.trial.get("tuning") else "training"
        return finish_trial_aws(rc, self.round_no, self.trial, kind, event["job_name"], log=self.log.info)

    def on_kill(self) -> None:
        remote = getattr(self, "_remote", None)
        if remote:  # the SageMaker job must not outlive the task
            from ml_lifecycle.aws import stop_job

            stop_job(*remote)


def hyperparameter_args(rc: RunContext, plan: dict[str, Any], trial: dict[str, Any]) -> list[str]:
    """The trial as SageMaker hyper-parameters (``--name value``)."""
    goal = rc.spec.goal
    args = {
        "family": trial["family"],
        "trial_id": trial["trial_id"],
        "problem_type": rc.spec.problem.type,
        "metric": goal.metric,
        "seed": rc.spec.training.seed,
        "class_weight": rc.spec.training.class_weight,
        "resample": plan.get("resample", "none"),
    }
    if goal.max_alert_rate is not None:
        args["max_alert_rate"] = goal.max_alert_rate
    out: list[str] = []
    for k, v in args.items():
        out += [f"--{k}", str(v)]
    for k, v in trial["params"].items():
        out += [f"--{k}", json.dumps(v)]
    return out


def run_trial_local(rc: RunContext, round_no: int, trial: dict[str, Any], *, log: Any) -> dict[str, Any]:
    from include.jobs import train as train_job

    rd = rc.round_dir(round_no)
    plan = rc.problem.read_json(f"{rd}/plan.json")
    trial_rel = f"{rd}/trials/{trial['trial_id']}"
    with tempfile.TemporaryDirectory(prefix="sm-") as tmp:
        channels = {}
        for split in ("train", "validation"):
            rel = f"{rd}/features/{split}"
            if rc.problem.is_local:
                channels[split] = rc.problem.path(rel)
            else:  # stage the channel like SageMaker does (/opt/ml/input/data/<channel>)
                channels[split] = str(Path(tmp, "input", split))
                for name in rc.problem.ls(rel):
                    rc.problem.download(f"{rel}/{name}", str(Path(channels[split], name)))
        env = {
            "SM_CHANNEL_TRAIN": channels["train"],
            "SM_CHANNEL_VALIDATION": channels["validation"],
            "SM_MODEL_DIR": str(Path(tmp, "model")),
            "SM_OUTPUT_DATA_DIR": str(Path(tmp, "output")),
            "SM_NUM_CPUS": str(trial_threads()),  # this trial's share of the cores
        }
        result = train_job.main(hyperparameter_args(rc, plan, trial), env=env, log=log)
        for folder in ("model", "output"):
            for f in sorted(Path(tmp, folder).iterdir()):
                rc.problem.copy_in(str(f), f"{trial_rel}/{folder}/{f.name}")
        shutil.rmtree(Path(tmp, "model"), ignore_errors=True)
    result["model_rel"] = f"{trial_rel}/model"
    result["round"] = round_no
    return result
