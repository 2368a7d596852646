"""Tuning as a SageMaker hyperparameter tuning job: with ``aws.hyperparameter_tuning`` a family with
several trials in a round runs as one tuning job over its search grid (categorical ranges), the
objective scraped from train.py's log; the task keeps the best training job's model."""

from __future__ import annotations

import io
import itertools
import json
import re
import tarfile
import tempfile
from pathlib import Path

import pytest

from include.lifecycle.store import safe_run_id
from tests.aws.conftest import BUCKET, LOGICAL_DATE, PROBLEM_TUNING, ROLE_ARN, install_players
from tests.integration.dagrun import run_dag

pytestmark = [pytest.mark.aws, pytest.mark.integration]


def _json(s3, key: str):
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


@pytest.fixture(scope="module")
def tuned_run(airflow_db, aws_env, clients):
    mp = pytest.MonkeyPatch()
    played = install_players(
        mp, aws_env, clients, Path(tempfile.mkdtemp(prefix="aws-tune-", dir=aws_env["problems"].parent))
    )
    try:
        state, run_id, _ = run_dag(PROBLEM_TUNING, LOGICAL_DATE, problems_dir=aws_env["problems"])
    finally:
        mp.undo()
    return {"state": state, "run_id": run_id, "played": played}


def test_three_xgboost_trials_run_as_one_tuning_job_over_the_search_grid(tuned_run, aws_env) -> None:
    assert tuned_run["state"] == "success"
    (tuning,) = tuned_run["played"]["tuning"]
    config = tuning["config"]
    name = config["HyperParameterTuningJobName"]
    assert len(name) <= 32 and name.startswith("card-fraud-aws-tuning"[: len(name) - 12])
    cfg = config["HyperParameterTuningJobConfig"]
    assert cfg["Strategy"] == "Bayesian"
    assert cfg["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "validation:score"}
    assert cfg["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 3, "MaxParallelTrainingJobs": 2}
    ranges = {r["Name"]: r["Values"] for r in cfg["ParameterRanges"]["CategoricalParameterRanges"]}
    spec_grid = aws_env["spec"]["training"]["candidates"][2]["search"]
    assert ranges == {k: [json.dumps(v) for v in vals] for k, vals in spec_grid.items()}
    definition = config["TrainingJobDefinition"]
    static = definition["StaticHyperParameters"]
    assert (
        static["family"] == "xgboost" and static["n_estimators"] == "40" and static["sagemaker_program"] == "train.py"
    )
    assert not set(ranges) & set(static)  # a tuned parameter is never also static
    assert definition["RoleArn"] == ROLE_ARN
    assert definition["OutputDataConfig"]["KmsKeyId"] == aws_env["kms_key_id"]
    run = f"ml/{PROBLEM_TUNING}/runs/{safe_run_id(tuned_run['run_id'])}/round_1"
    assert {c["ChannelName"] for c in definition["InputDataConfig"]} == {"train", "validation"}
    assert all(f"/{run}/features/" in c["DataSource"]["S3DataSource"]["S3Uri"] for c in definition["InputDataConfig"])
    # the emulator played three training jobs, each at a different point of the grid
    jobs = tuning["jobs"]
    assert len(jobs) == 3 and all(j["TrainingJobName"].startswith(f"{name}-") for j in jobs)
    points = [tuple(sorted(j["TunedHyperParameters"].items())) for j in jobs]
    assert len(set(points)) == 3
    grid = set(itertools.product(*ranges.values()))
    assert all(tuple(v for _, v in sorted(p)) in grid for p in points)


def test_the_round_keeps_the_best_training_job_of_the_tuning_job(tuned_run, clients) -> None:
    s3 = clients["s3"]
    run = f"ml/{PROBLEM_TUNING}/runs/{safe_run_id(tuned_run['run_id'])}/round_1"
    selection = _json(s3, f"{run}/selection.json")
    (trial,) = selection["trials"]  # one mapped task: the tuning job
    assert trial["trial_id"] == "r1-xgboost-tuning" and trial["tuning_training_jobs"] == 3
    tuning = _json(s3, f"{run}/trials/r1-xgboost-tuning/tuning.json")
    scores = {j["training_job_name"]: j["validation_score"] for j in tuning["training_jobs"]}
    assert len(scores) == 3
    assert scores[trial["training_job_name"]] == max(scores.values())
    # the scraped objective SageMaker would rank by agrees with the project's own score
    played = {j["TrainingJobName"]: j for j in tuned_run["played"]["tuning"][0]["jobs"]}
    objective = played[trial["training_job_name"]]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    assert objective == pytest.approx(trial["validation_score"], abs=5e-5)
    # the kept model is the best job's model.tar.gz, byte for byte, and it is what was deployed
    with tarfile.open(fileobj=io.BytesIO(_get(s3, trial["model_uri"])), mode="r:gz") as tf:
        packed = {m.name.lstrip("./"): tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    kept = {n: _get(s3, f"s3://{BUCKET}/{run}/trials/r1-xgboost-tuning/model/{n}") for n in packed}
    assert packed and kept == packed
    summary = _json(s3, f"ml/{PROBLEM_TUNING}/runs/{safe_run_id(tuned_run['run_id'])}/run_summary.json")
    assert summary["decision"] == "deployed"
    assert clients["sagemaker"].describe_endpoint(EndpointName="card-fraud-aws-tuning-test")["EndpointStatus"]


def _get(s3, uri: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=uri.removeprefix(f"s3://{BUCKET}/"))["Body"].read()


def test_tuning_job_names_fit_32_characters_and_differ_per_run_and_attempt() -> None:
    from ml_lifecycle.aws.training import tuning_job_name

    long = "a_problem_name_that_is_long_enough_to_matter"
    names = {
        tuning_job_name(long, "scheduled__2026-11-01T00:00:00+00:00", 10, "r10-xgboost-tuning"),
        tuning_job_name(long, "scheduled__2026-11-02T00:00:00+00:00", 10, "r10-xgboost-tuning"),
        tuning_job_name(long, "scheduled__2026-11-01T00:00:00+00:00", 10, "r10-xgboost-tuning", attempt=2),
    }
    assert len(names) == 3 and all(len(n) <= 32 and re.match(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$", n) for n in names)
