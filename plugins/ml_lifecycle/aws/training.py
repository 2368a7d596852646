"""Training trials as SageMaker script-mode training jobs, or one hyperparameter tuning job per
family (the provider's ``SageMakerTrainingOperator`` / ``SageMakerTuningOperator``).

The job runs ``include/jobs/train.py`` (``sagemaker_program`` of the staged ``sourcedir.tar.gz``)
on the round's feature channels; its ``model.tar.gz`` and ``output.tar.gz`` (metrics.json) are
unpacked into the round's ``trials/<trial>/`` where the local backend writes them, so the next
sections do not care where a trial ran. Names are deterministic per (problem, run, round, trial)
and attempt, so a retried task finds its job again.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from typing import Any

from include.lifecycle.layout import RoundLayout
from include.lifecycle.spec import AwsSpec, Spec
from include.lifecycle.store import Store
from ml_lifecycle.aws.code import stage_code
from ml_lifecycle.aws.common import fail, job_tags, provider_kwargs, require_aws, sagemaker_hook, slug, wait_attempts
from ml_lifecycle.aws.operators import TrainingJob, TuningJob
from ml_lifecycle.aws.store import kms_encrypted, s3_uri

# AWS's public registries of the SageMaker framework images (per region, from the SageMaker
# docs); any other region needs aws.training_image.
FRAMEWORK_REGISTRIES = {
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-west-2": "246618743249",
    "eu-west-1": "141502667606",
    "eu-central-1": "492215442770",
}
# train.py logs "validation <metric>=<score>"; SageMaker reads the objective from the job's log.
OBJECTIVE_METRIC = "validation:score"
OBJECTIVE_REGEX = r"validation [a-z0-9_]+=([-+0-9.eE]+)"
# SageMakerTuningOperator defers to SageMakerTrigger with its default number of polls
TUNING_TRIGGER_POLLS = 480


def training_job_name(problem: str, run_id: str, round_no: int, trial_id: str, attempt: int = 1) -> str:
    """Deterministic, unique per (problem, run, round, trial), <= 63 characters, SageMaker's pattern.
    ``attempt`` > 1 only after an earlier job of the same trial failed (names cannot be reused)."""
    digest = hashlib.sha256(f"{problem}|{run_id}|{round_no}|{trial_id}".encode()).hexdigest()[:10]
    tail = f"-r{round_no}-{digest}" + (f"-a{attempt}" if attempt > 1 else "")
    head = f"{slug(problem)[:24]}-{slug(trial_id)}".strip("-")
    return f"{head[: 63 - len(tail)].rstrip('-')}{tail}"


def tuning_job_name(problem: str, run_id: str, round_no: int, trial_id: str, attempt: int = 1) -> str:
    """Deterministic, unique per (problem, run, round, trial): SageMaker allows 32 characters here
    (the training jobs it starts append ``-NNN-xxxxxxxx``)."""
    digest = hashlib.sha256(f"{problem}|{run_id}|{round_no}|{trial_id}".encode()).hexdigest()[:8]
    tail = f"-r{round_no}-{digest}" + (f"a{attempt}" if attempt > 1 else "")
    return f"{slug(problem)[: 32 - len(tail)].rstrip('-')}{tail}"


def training_image(aws: AwsSpec) -> str:
    if aws.training_image:
        return aws.training_image
    account = FRAMEWORK_REGISTRIES.get(aws.region)
    if account is None:
        fail(f"no SageMaker framework image registry known for region {aws.region}: set aws.training_image")
    return f"{account}.dkr.ecr.{aws.region}.amazonaws.com/sagemaker-scikit-learn:{aws.framework_version}-cpu-py3"


def training_config(
    spec: Spec, problem: Store, rnd: RoundLayout, *, run_id: str, hyperparameters: list[str], code: dict[str, str]
) -> dict[str, Any]:
    """A training job of the round (its name is set by the operator, attempt by attempt)."""
    aws = require_aws(spec)
    hp = dict(zip([a[2:] for a in hyperparameters[::2]], hyperparameters[1::2], strict=True))
    hp |= {
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": code["sourcedir.tar.gz"],
        "sagemaker_region": aws.region,
    }

    def channel(split: str) -> dict[str, Any]:
        uri = s3_uri(problem, rnd.channel(split)) + "/"
        return {
            "ChannelName": split,
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
            },
            "ContentType": "application/x-parquet",
            "InputMode": "File",
        }

    output, resources = kms_encrypted(
        aws,
        {"S3OutputPath": s3_uri(problem, f"{rnd.dir}/sagemaker")},
        {
            "InstanceType": aws.training_instance_type,
            "InstanceCount": aws.training_instance_count,
            "VolumeSizeInGB": aws.training_volume_gb,
        },
    )
    return {
        "AlgorithmSpecification": {"TrainingImage": training_image(aws), "TrainingInputMode": "File"},
        "RoleArn": aws.role_arn,
        "HyperParameters": hp,
        "InputDataConfig": [channel("train"), channel("validation")],
        "OutputDataConfig": output,
        "ResourceConfig": resources,
        "StoppingCondition": {"MaxRuntimeInSeconds": aws.training_max_runtime_seconds},
        "Tags": job_tags(spec, run_id),
    }


def tuning_config(spec: Spec, job: dict[str, Any], tuning: dict[str, Any]) -> dict[str, Any]:
    """A hyperparameter tuning job over the trial's categorical ranges; the static hyperparameters
    and the channels are those of the family's training job ``job``."""
    aws = require_aws(spec)
    ranges = {k: [json.dumps(v) for v in values] for k, values in tuning["ranges"].items()}
    static = {k: v for k, v in job["HyperParameters"].items() if k not in ranges}
    algorithm = job["AlgorithmSpecification"] | {
        "MetricDefinitions": [{"Name": OBJECTIVE_METRIC, "Regex": OBJECTIVE_REGEX}]
    }
    keys = ("RoleArn", "InputDataConfig", "OutputDataConfig", "ResourceConfig", "StoppingCondition")
    definition = {"StaticHyperParameters": static, "AlgorithmSpecification": algorithm} | {k: job[k] for k in keys}
    return {
        "HyperParameterTuningJobConfig": {
            "Strategy": aws.tuning_strategy,
            "HyperParameterTuningJobObjective": {
                "Type": "Maximize" if spec.goal.higher_is_better else "Minimize",
                "MetricName": OBJECTIVE_METRIC,
            },
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": int(tuning["max_jobs"]),
                "MaxParallelTrainingJobs": min(aws.tuning_max_parallel_jobs, int(tuning["max_jobs"])),
            },
            "ParameterRanges": {
                "CategoricalParameterRanges": [{"Name": k, "Values": v} for k, v in sorted(ranges.items())],
                "IntegerParameterRanges": [],
                "ContinuousParameterRanges": [],
            },
            "TrainingJobEarlyStoppingType": "Off",
        },
        "TrainingJobDefinition": definition,
        "Tags": job["Tags"],
    }


def trial_job(
    rc: Any, task_id: str, round_no: int, trial: dict[str, Any], *, try_number: int
) -> TrainingJob | TuningJob:
    """The trial's SageMaker job as the provider operator of our task: a training job, or a
    hyperparameter tuning job when the trial carries ``tuning`` ranges; names for attempts
    1..``try_number``."""
    from include.jobs.train import hyperparameter_args

    aws = require_aws(rc.spec)
    rnd = rc.layout.round(round_no)
    hps = hyperparameter_args(rc.spec, rc.store.read_json(rnd.plan), trial)
    config = training_config(rc.spec, rc.store, rnd, run_id=rc.run_id, hyperparameters=hps, code=stage_code(rc.store))
    tuning = trial.get("tuning")
    naming = tuning_job_name if tuning else training_job_name
    names = [naming(rc.spec.name, rc.run_id, round_no, trial["trial_id"], a) for a in range(1, try_number + 1)]
    max_seconds = aws.training_max_runtime_seconds * (tuning or {}).get("max_jobs", 1) + 600
    common = {
        "names": names,
        "deferrable": aws.deferrable,
        "max_ingestion_time": max_seconds,
        **provider_kwargs(aws, task_id),
    }
    if tuning:
        # its trigger polls TUNING_TRIGGER_POLLS times: poll less often for a long tuning job
        interval = max(aws.poll_seconds, wait_attempts(max_seconds, TUNING_TRIGGER_POLLS))
        return TuningJob(config=tuning_config(rc.spec, config, tuning), check_interval=interval, **common)
    return TrainingJob(
        config=config,
        print_log=False,  # the job's log is in CloudWatch; the task polls its status only
        check_interval=aws.poll_seconds,
        max_attempts=wait_attempts(max_seconds, aws.poll_seconds),
        **common,
    )


def _extract(tar_bytes: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:gz") as tf:
        for m in tf.getmembers():
            if m.isfile():
                fh = tf.extractfile(m)
                if fh is not None:
                    out[posixpath.normpath(m.name).lstrip("./")] = fh.read()
    return out


def _job_outputs(problem: Store, desc: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The files of a completed training job's ``model.tar.gz`` and of the ``output.tar.gz`` beside
    it (SM_MODEL_DIR, SM_OUTPUT_DATA_DIR); the output must hold ``metrics.json``."""
    key = desc["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("s3://")
    output = _extract(problem.fs.cat_file(posixpath.join(posixpath.dirname(key), "output.tar.gz")))
    if "metrics.json" not in output:
        fail(f"training job {desc['TrainingJobName']} wrote no metrics.json to SM_OUTPUT_DATA_DIR ({sorted(output)})")
    return _extract(problem.fs.cat_file(key)), output


def _job_result(desc: dict[str, Any], output: dict[str, bytes]) -> dict[str, Any]:
    return json.loads(output["metrics.json"]) | {
        "training_job_name": desc["TrainingJobName"],
        "model_uri": desc["ModelArtifacts"]["S3ModelArtifacts"],
    }


def _keep_trial(rc: Any, rnd: RoundLayout, trial_id: str, model: dict[str, bytes], output: dict[str, bytes]) -> None:
    for folder, files in ((rnd.trial_model(trial_id), model), (rnd.trial_output(trial_id), output)):
        for fname, data in files.items():
            rc.store.write_bytes(f"{folder}/{fname}", data)


def trial_result(rc: Any, round_no: int, trial: dict[str, Any], result: dict[str, Any], *, log: Any) -> dict[str, Any]:
    """The trial's result from what its provider operator returned (``{"Training": description}``
    or ``{"Tuning": description}``); its model and metrics land in the round's ``trials/<trial>/``."""
    rnd = rc.layout.round(round_no)
    if "Tuning" in result:
        return _best_of_tuning(rc, rnd, trial, result["Tuning"], log=log)
    desc = TrainingJob.completed(result["Training"])
    model, output = _job_outputs(rc.store, desc)
    _keep_trial(rc, rnd, trial["trial_id"], model, output)
    out = _job_result(desc, output) | {"model_rel": rnd.trial_model(trial["trial_id"]), "round": round_no}
    log(
        f"{trial['trial_id']}: SageMaker job {desc['TrainingJobName']}: validation {out['metric']}={out['validation_score']:.4f}"
    )
    return out


def tuning_training_jobs(hook: Any, name: str) -> list[dict[str, Any]]:
    """Summaries of the training jobs the tuning job ran (every page)."""
    pages = hook.get_conn().get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
    return [job for page in pages.paginate(HyperParameterTuningJobName=name) for job in page["TrainingJobSummaries"]]


def _best_of_tuning(
    rc: Any, rnd: RoundLayout, trial: dict[str, Any], tuning: dict[str, Any], *, log: Any
) -> dict[str, Any]:
    """After the tuning job completed: every completed training job's metrics, the best on validation
    (the project's own score, not the log-scraped objective) kept as the trial's model."""
    from include.lifecycle.models import best_trial

    name = TuningJob.completed(tuning)["HyperParameterTuningJobName"]
    hook = sagemaker_hook(require_aws(rc.spec))
    results, models = [], {}
    summaries = sorted(tuning_training_jobs(hook, name), key=lambda s: s["TrainingJobName"])
    for i, summary in enumerate(summaries, start=1):
        job = summary["TrainingJobName"]
        if summary.get("TrainingJobStatus") != "Completed":
            log(f"{trial['trial_id']}: tuning job {name}: training job {job} ended {summary.get('TrainingJobStatus')}")
            continue
        desc = TrainingJob.completed(hook.describe_training_job(job))
        model, output = _job_outputs(rc.store, desc)
        result = _job_result(desc, output)
        results.append(result)
        models[job] = (model, output)
        log(
            f"{trial['trial_id']}: tuning job {name}: training job {i} of {len(summaries)} {job} "
            f"{summary.get('TunedHyperParameters')}: validation {result['metric']}={result['validation_score']:.4f}"
        )
    if not results:
        fail(f"SageMaker tuning job {name} completed no training job")
    best = best_trial(results, higher_is_better=rc.spec.goal.higher_is_better)
    _keep_trial(rc, rnd, trial["trial_id"], *models[best["training_job_name"]])
    rc.store.write_json(
        f"{rnd.trial(trial['trial_id'])}/tuning.json", {"tuning_job_name": name, "training_jobs": results}
    )
    best = dict(best) | {
        "trial_id": trial["trial_id"],
        "model_rel": rnd.trial_model(trial["trial_id"]),
        "round": rnd.k,
        "tuning_job_name": name,
        "tuning_training_jobs": len(results),
    }
    log(
        f"{trial['trial_id']}: tuning job {name}: best of {len(results)} training jobs is "
        f"{best['training_job_name']} (validation {best['metric']}={best['validation_score']:.4f})"
    )
    return best
