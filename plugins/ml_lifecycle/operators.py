"""Operators for the two lifecycle steps that AWS runs as managed jobs.

``GlueEtlOperator`` runs the collect-and-label ETL (``include/jobs/collect_and_label.py``)
and ``ScriptModeTrainingOperator`` runs one training trial (``include/jobs/train.py``, the
SageMaker script-mode contract). The ``local`` backend runs the very same files in-process;
nothing in a constructor touches the disk or the network.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context

from ml_lifecycle.context import RunContext, pii_key

PROBLEM_DOC = ":param problem: name of the problem spec (``include/problems/<problem>.yaml``)"


def _backend(rc: RunContext) -> str:
    backend = rc.params.get("backend") or rc.spec.backend
    if backend != "local":
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"backend {backend!r} is not available in this release (see README: not done yet)")
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

    def execute(self, context: Context) -> dict[str, Any]:
        rc = RunContext.from_airflow(self.problem, context)
        _backend(rc)
        return run_collect(
            rc,
            lookback_days=int(self.lookback_days or rc.lookback_days),
            run_dir=f"{rc.run_dir}/{self.output_subdir}".rstrip("/"),
            log=self.log.info,
        )


def run_collect(rc: RunContext, *, lookback_days: int, run_dir: str, log: Any) -> dict[str, Any]:
    """The local implementation: the Glue job file, in-process."""
    from include.jobs import collect_and_label
    from include.lifecycle.spec import spec_path

    argv = [
        "--spec", str(spec_path(rc.spec.name)),
        "--artifact-root", rc.problem.uri(),
        "--run-dir", run_dir,
        "--as-of", rc.as_of.isoformat(),
        "--lookback-days", str(lookback_days),
    ]  # fmt: skip
    summary = collect_and_label.main(argv, pii_key=pii_key(), log=log)
    return {k: v for k, v in summary.items() if k != "partitions"} | {"partitions": len(summary["partitions"])}


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

    def execute(self, context: Context) -> dict[str, Any]:
        rc = RunContext.from_airflow(self.problem, context)
        _backend(rc)
        return run_trial_local(rc, self.round_no, self.trial, log=self.log.info)


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
        }
        result = train_job.main(hyperparameter_args(rc, plan, trial), env=env, log=log)
        for folder in ("model", "output"):
            for f in sorted(Path(tmp, folder).iterdir()):
                rc.problem.copy_in(str(f), f"{trial_rel}/{folder}/{f.name}")
        shutil.rmtree(Path(tmp, "model"), ignore_errors=True)
    result["model_rel"] = f"{trial_rel}/model"
    result["round"] = round_no
    return result
