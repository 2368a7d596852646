"""The AWS backend against moto (S3, KMS, Secrets Manager, Glue, SageMaker) on 127.0.0.1.

moto accepts the Glue job run and the SageMaker training job and reports them finished at once,
without running anything. The fixtures here *play* the remote side, in tests only: after the
project starts a Glue job run, the job's script and ``--extra-py-files`` are fetched back from S3
and run with the arguments the job run received (as Glue would); after it creates a training job,
the ``sourcedir.tar.gz`` is fetched back and its ``train.py`` runs with the ``SM_*`` variables on
the channels downloaded from S3, and ``model.tar.gz`` / ``output.tar.gz`` are put at
``<S3OutputPath>/<job name>/output/`` with the job's KMS key (as SageMaker would). The few calls
moto does not implement (UpdateEndpoint, ListTrainingJobsForHyperParameterTuningJob) are answered
by the test (:func:`intercept`), after checking their parameters against the API's model.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import json
import logging
import os
import random
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from tests.integration.dagrun import ROOT

REGION = "eu-west-1"
BUCKET = "ml-lifecycle-test"
CONN_ID = "ml_aws_test"
# a made-up account in a test spec (moto does not check roles)
ROLE_ARN = "arn:aws:iam::123456789012:role/ml-lifecycle-test"
PII_SECRET = "ml-lifecycle/pii-hash-key"
PROBLEM = "card_fraud_aws"
PROBLEM_TUNING = "card_fraud_aws_tuning"
END = dt.date(2026, 11, 1)
LOGICAL_DATE = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": REGION}


@pytest.fixture(scope="session")
def moto_url():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def clients(moto_url):
    import boto3

    return {
        name: boto3.client(name, endpoint_url=moto_url, **CREDS)
        for name in ("s3", "kms", "secretsmanager", "glue", "sagemaker")
    }


@pytest.fixture(scope="session")
def aws_env(moto_url, clients, session_tmp):
    """Bucket, KMS key, PII secret, the Airflow connection (endpoint_url in its extra), the
    landing data in S3 and a spec with backend aws in a problems folder of its own."""
    from include.lifecycle import synth

    mp = pytest.MonkeyPatch()
    extra = {"endpoint_url": moto_url, "region_name": REGION}
    mp.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}),
    )
    s3 = clients["s3"]
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    key_id = clients["kms"].create_key(Description="ml-lifecycle test")["KeyMetadata"]["KeyId"]
    # MLflow (tracking and the model registry): an artifact root in S3 needs a tracking server (on AWS
    # the ARN of a SageMaker managed MLflow server); here a SQLite store. MLflow's own uploads (the
    # run's reports) go to the emulator, encrypted with the spec's key like every other object.
    # (set per test by mlflow_for_aws_tests below, never for the whole session: the tests after these
    # would all share this one store and its registered models)
    mlflow_vars = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{session_tmp / 'aws-mlflow.db'}",
        "MLFLOW_S3_ENDPOINT_URL": moto_url,
        "MLFLOW_S3_UPLOAD_EXTRA_ARGS": json.dumps({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_id}),
    }
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        mp.setenv(name, value)
    clients["secretsmanager"].create_secret(Name=PII_SECRET, SecretString=os.environ["AIRFLOW_VAR_ML_PII_HASH_KEY"])

    landing = session_tmp / "aws-landing"
    synth.generate(landing, end=END, days=24, tx_per_day=1500, seed=11, n_merchants=400)
    for f in sorted(landing.rglob("*.parquet")):
        s3.put_object(
            Bucket=BUCKET,
            Key=f"landing/{f.relative_to(landing).as_posix()}",
            Body=f.read_bytes(),
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=key_id,
        )

    spec = yaml.safe_load((ROOT / "include" / "problems" / "card_fraud.yaml").read_text())
    spec |= {"name": PROBLEM, "schedule": None, "backend": "aws", "max_rounds": 1}
    spec["data"] |= {
        "source": f"s3://{BUCKET}/landing/transactions",
        "lookback_days": 18,
        "max_lookback_days": 24,
    }
    spec["data"]["labels"] |= {"source": f"s3://{BUCKET}/landing/chargebacks", "maturity_days": 2}
    spec["goal"] |= {"metric": "roc_auc", "target": 0.6, "max_alert_rate": 0.02}
    spec["quality"] |= {"min_rows": 500, "min_positives": 5}
    spec["training"] |= {"initial_candidates": ["logistic", "xgboost"], "trials_per_candidate": 1}
    # a per-entity group from round 1: the glueetl job computes it on Spark, feature engineering takes it
    spec["features"]["initial"] = ["transaction", "card_velocity"]
    spec["training"]["split"] = {"validation_days": 3, "test_days": 3}
    spec["training"]["candidates"][2]["params"] |= {"n_estimators": 40}
    spec["diagnosis"] |= {"min_train_positives": 5}
    spec["aws"] = {
        "region": REGION,
        "bucket": BUCKET,
        "prefix": "ml",
        "role_arn": ROLE_ARN,
        "kms_key_id": key_id,
        "conn_id": CONN_ID,
        "pii_key_secret": PII_SECRET,
        "poll_seconds": 1,
        "serving_image": "registry.example/ml-lifecycle-serving:test",
        "glue": {"number_of_workers": 3},  # a glueetl job (Spark), played by PySpark in local mode
    }
    spec["deploy"] = {"enabled": True, "endpoint_name": "card-fraud-aws-test"}
    problems = session_tmp / "aws-problems"
    problems.mkdir(exist_ok=True)
    (problems / f"{PROBLEM}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    # the same problem tuned by SageMaker: three xgboost trials -> one hyperparameter tuning job
    tuned = json.loads(json.dumps(spec)) | {"name": PROBLEM_TUNING}
    tuned["training"] |= {"initial_candidates": ["xgboost"], "trials_per_candidate": 3}
    tuned["deploy"] = {"enabled": True, "endpoint_name": "card-fraud-aws-tuning-test"}
    (problems / f"{PROBLEM_TUNING}.yaml").write_text(yaml.safe_dump(tuned, sort_keys=False))
    yield {"url": moto_url, "problems": problems, "kms_key_id": key_id, "spec": spec, "mlflow_vars": mlflow_vars}
    mp.undo()


@pytest.fixture(scope="module", autouse=True)
def mlflow_for_aws_tests(aws_env: dict) -> Iterator[None]:
    """The AWS tests' MLflow settings, for each module of tests/aws (module-scoped and autouse, so
    they are set before a module's own fixtures run the DAG) and undone after it."""
    mp = pytest.MonkeyPatch()
    for name, value in aws_env["mlflow_vars"].items():
        mp.setenv(name, value)
    yield
    mp.undo()


def _s3_get(s3: Any, uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _job_env(moto_url: str, **extra: str) -> dict[str, str]:
    """A clean environment like a remote job's: no project on the path, AWS through the emulator."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        **extra,
    }


def _spark_env(work: Path) -> dict[str, str]:
    """What a glueetl job's Spark needs on this machine: a Java Spark 3.5 runs on (failing with the
    install hint without one), the workers on this interpreter, local[2] without UI, scratch in ``work``."""
    from tests.unit.engines import find_java_home

    conf = {
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "2",
        "spark.driver.memory": "1g",
        "spark.local.dir": str(work / "spark"),
        "spark.sql.warehouse.dir": str(work / "spark" / "warehouse"),
    }
    submit = " ".join(f"--conf {k}={v}" for k, v in conf.items())
    return {
        "JAVA_HOME": find_java_home(),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_SUBMIT_ARGS": f"--master local[2] {submit} pyspark-shell",
    }


def _targz(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                tf.add(f, arcname=f.relative_to(folder).as_posix())
    return buf.getvalue()


def intercept(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Any]) -> None:
    """Answer AWS API calls of botocore's clients in the test: ``answers[operation](params, call)``
    returns the call's response, ``call(params)`` asks moto. The parameters are checked against
    the API's model first, as botocore would before sending them."""
    from botocore.client import BaseClient
    from botocore.validate import validate_parameters

    real = BaseClient._make_api_call

    def make_api_call(self, operation, params):
        answer = answers.get(operation)
        if answer is None:
            return real(self, operation, params)
        validate_parameters(params, self.meta.service_model.operation_model(operation).input_shape)
        return answer(params, lambda p: real(self, operation, p))

    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)


def answered(body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A successful response of an API call the test answers itself."""
    return {**(body or {}), "ResponseMetadata": {"HTTPStatusCode": 200}}


def task_context(run_id: str, *, try_number: int = 1, task_id: str = "task", params: dict | None = None) -> dict:
    """What a task's execute gets, enough for the lifecycle's operators and the provider's."""
    ti = SimpleNamespace(
        dag_id="dag", task_id=task_id, run_id=run_id, map_index=-1, try_number=try_number, xcom_push=lambda **_: None
    )
    return {"ti": ti, "run_id": run_id, "logical_date": LOGICAL_DATE, "params": params or {}}


def run_as_task(ctx: dict, execute: Any, execute_complete: Any) -> tuple[Any, list[Any]]:
    """Run ``execute()`` as the task runner does: when it defers, the trigger runs here and
    ``execute_complete(event)`` resumes (in the same task context). Returns the result and the
    triggers it deferred to."""
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred
    from airflow.sdk.execution_time.context import set_current_context

    async def first_event(trigger):
        async for event in trigger.run():
            return event.payload

    with set_current_context(ctx):
        try:
            return execute(), []
        except TaskDeferred as deferred:
            return execute_complete(asyncio.run(first_event(deferred.trigger))), [deferred.trigger]


def install_players(monkeypatch: pytest.MonkeyPatch, aws_env: dict, clients: dict, tmp_path: Path) -> dict:
    """Make moto's Glue job runs and SageMaker jobs do their work; records what was sent. A job
    the project creates reports InProgress to the first look after its creation (as a real job
    does), so the provider operators defer; the trigger then finds it Completed in moto."""
    from airflow.providers.amazon.aws.hooks.glue import GlueJobHook
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    from ml_lifecycle.operators import BatchScoringOperator, CollectAndLabelOperator, TrainingTrialOperator

    s3 = clients["s3"]
    played: dict[str, list[dict[str, Any]]] = {
        "glue": [],
        "training": [],
        "update_endpoint": [],
        "tuning": [],
        "transform": [],
        "deferred": [],
        "resumed": [],
    }
    tuning_jobs: dict[str, list[dict[str, Any]]] = {}
    just_created: set[str] = set()
    start_job_run = GlueJobHook.initialize_job
    create_training_job = SageMakerHook.create_training_job
    create_tuning_job = SageMakerHook.create_tuning_job
    create_transform_job = SageMakerHook.create_transform_job

    def play_glue(self, script_arguments=None, run_kwargs=None):
        response = start_job_run(self, script_arguments, run_kwargs)
        job = clients["glue"].get_job(JobName=self.job_name)["Job"]
        args = {**job.get("DefaultArguments", {}), **(script_arguments or {})}
        work = tmp_path / f"glue-{response['JobRunId']}"
        work.mkdir()
        script = work / "script.py"
        script.write_bytes(_s3_get(s3, job["Command"]["ScriptLocation"]))
        libs = work / "include.zip"
        libs.write_bytes(_s3_get(s3, args["--extra-py-files"]))
        argv = ["--JOB_ID", "j_test", "--JOB_RUN_ID", response["JobRunId"], "--JOB_NAME", self.job_name]
        for k, v in args.items():
            if k.startswith("--"):
                argv += [k, v]
        env = _job_env(aws_env["url"], PYTHONPATH=str(libs))
        if job["Command"]["Name"] == "glueetl":  # Glue's Spark, played by PySpark in local mode
            env |= _spark_env(work)
        proc = subprocess.run(
            [sys.executable, str(script), *argv],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, f"the Glue job failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        played["glue"].append(
            {"job": job, "arguments": dict(script_arguments or {}), "run_id": response["JobRunId"], "log": proc.stdout}
        )
        return response

    def play_training(hook, config):
        """SageMaker's side of a training job: the code, the channels and the outputs in S3."""
        response = create_training_job(hook, config, False, False)
        name = config["TrainingJobName"]
        work = tmp_path / f"sm-{name}"
        code = work / "code"
        code.mkdir(parents=True)
        hp = config["HyperParameters"]
        with tarfile.open(fileobj=io.BytesIO(_s3_get(s3, hp["sagemaker_submit_directory"])), mode="r:gz") as tf:
            tf.extractall(code, filter="data")
        env = {"SM_MODEL_DIR": str(work / "model"), "SM_OUTPUT_DATA_DIR": str(work / "output")}
        for ch in config["InputDataConfig"]:
            folder = work / "input" / "data" / ch["ChannelName"]
            folder.mkdir(parents=True)
            bucket, _, prefix = ch["DataSource"]["S3DataSource"]["S3Uri"].removeprefix("s3://").partition("/")
            for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
                rel = obj["Key"][len(prefix) :].lstrip("/")
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            env[f"SM_CHANNEL_{ch['ChannelName'].upper()}"] = str(folder)
        argv = []
        for k, v in hp.items():
            if not k.startswith("sagemaker_"):  # the training toolkit keeps its own parameters
                argv += [f"--{k}", v]
        proc = subprocess.run(
            [sys.executable, hp["sagemaker_program"], *argv],
            cwd=code,
            env=_job_env(aws_env["url"], **env),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, f"the training container failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        out = config["OutputDataConfig"]
        bucket, _, prefix = out["S3OutputPath"].removeprefix("s3://").partition("/")
        sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": out["KmsKeyId"]} if out.get("KmsKeyId") else {}
        for fname, folder in (("model.tar.gz", "model"), ("output.tar.gz", "output")):
            body = _targz(work / folder)
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}/output/{fname}", Body=body, **sse)
        played["training"].append(
            {"config": config, "stdout": proc.stdout, "metrics": work / "output" / "metrics.json"}
        )
        return response

    def play_created_training(self, config, wait_for_completion=True, print_log=True, check_interval=30, **_):
        response = play_training(self, config)
        just_created.add(config["TrainingJobName"])
        return response

    def play_tuning(self, config, wait_for_completion=True, check_interval=30, max_ingestion_time=None):
        """SageMaker's side of a tuning job: sample MaxNumberOfTrainingJobs points of the categorical
        ranges, run a training job for each (named ``<tuning job>-NNN-xxxxxxxx``) and scrape the
        objective from its log with the job's own metric regex."""
        response = create_tuning_job(self, config, False, check_interval, max_ingestion_time)
        name = config["HyperParameterTuningJobName"]
        tuning = config["HyperParameterTuningJobConfig"]
        ranges = tuning["ParameterRanges"]["CategoricalParameterRanges"]
        grid = list(itertools.product(*(r["Values"] for r in ranges)))
        random.Random(name).shuffle(grid)
        definition = config["TrainingJobDefinition"]
        (metric,) = definition["AlgorithmSpecification"]["MetricDefinitions"]
        jobs = []
        for i, point in enumerate(grid[: tuning["ResourceLimits"]["MaxNumberOfTrainingJobs"]], start=1):
            tuned = {r["Name"]: v for r, v in zip(ranges, point, strict=True)}
            job = f"{name}-{i:03d}-{hashlib.sha256(f'{name}{i}'.encode()).hexdigest()[:8]}"
            keys = ("AlgorithmSpecification", "RoleArn", "InputDataConfig", "OutputDataConfig", "ResourceConfig")
            job_config = {k: definition[k] for k in keys} | {
                "TrainingJobName": job,
                "HyperParameters": definition["StaticHyperParameters"] | tuned,
                "StoppingCondition": definition["StoppingCondition"],
            }
            play_training(self, job_config)
            found = re.findall(metric["Regex"], played["training"][-1]["stdout"])
            assert found, f"the objective regex {metric['Regex']!r} matches nothing in the job's log"
            jobs.append(
                {
                    "TrainingJobName": job,
                    "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{job}",
                    "TuningJobName": name,
                    "CreationTime": dt.datetime.now(dt.UTC),
                    "TrainingJobStatus": "Completed",
                    "TunedHyperParameters": tuned,
                    "FinalHyperParameterTuningJobObjectiveMetric": {
                        "MetricName": metric["Name"],
                        "Value": float(found[-1]),
                    },
                    "ObjectiveStatus": "Succeeded",
                }
            )
        tuning_jobs[name] = jobs
        played["tuning"].append({"config": config, "jobs": jobs})
        return response

    def play_transform(self, config, wait_for_completion=True, check_interval=30, max_ingestion_time=None):
        """The serving container's side of a batch transform: the model of ``ModelDataUrl`` unpacked
        and served by the container's entry point (``serving.py --model-dir``) on 127.0.0.1; every
        input file POSTed to /invocations as one request (SplitType None), the answer written to
        ``<S3OutputPath>/<file>.out``, as SageMaker does."""
        import urllib.request

        from include.lifecycle.serving import make_model_dir_server

        response = create_transform_job(self, config, False, check_interval, max_ingestion_time)
        name = config["TransformJobName"]
        model = clients["sagemaker"].describe_model(ModelName=config["ModelName"])
        work = tmp_path / f"transform-{name}"
        with tarfile.open(fileobj=io.BytesIO(_s3_get(s3, model["PrimaryContainer"]["ModelDataUrl"]))) as tf:
            tf.extractall(work / "model", filter="data")
        source = config["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, _, prefix = source.removeprefix("s3://").partition("/")
        out = config["TransformOutput"]
        out_bucket, _, out_prefix = out["S3OutputPath"].removeprefix("s3://").partition("/")
        sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": out["KmsKeyId"]} if out.get("KmsKeyId") else {}
        server = make_model_dir_server(work / "model", port=0, max_body_bytes=config["MaxPayloadInMB"] * 2**20)
        server.start()
        files = []
        try:
            for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
                headers = {"Content-Type": config["TransformInput"]["ContentType"], "Accept": out["Accept"]}
                req = urllib.request.Request(
                    f"{server.url}/invocations", data=_s3_get(s3, f"s3://{bucket}/{obj['Key']}"), headers=headers
                )
                with urllib.request.urlopen(req, timeout=60) as answer:
                    body = answer.read()
                rel = obj["Key"][len(prefix) :].lstrip("/")
                s3.put_object(Bucket=out_bucket, Key=f"{out_prefix}/{rel}.out", Body=body, **sse)
                files.append(rel)
        finally:
            server.stop()
        played["transform"].append({"config": config, "files": files})
        just_created.add(name)
        return response

    def running_at_first(describe, status_key):
        """A job the project just created is InProgress to the first look after its creation."""

        def describe_job(self, name):
            desc = describe(self, name)
            if name in just_created:
                just_created.discard(name)
                return {**desc, status_key: "InProgress"}
            return desc

        return describe_job

    def answer_update_endpoint(params, call):  # moto does not implement UpdateEndpoint
        played["update_endpoint"].append(params)
        return answered({"EndpointArn": "arn:aws:sagemaker:played"})

    def answer_tuning_jobs(params, call):  # moto does not implement ListTrainingJobsForHyperParameterTuningJob
        return answered({"TrainingJobSummaries": tuning_jobs[params["HyperParameterTuningJobName"]]})

    for op in (CollectAndLabelOperator, TrainingTrialOperator, BatchScoringOperator):

        def resumed(self, context, event=None, _complete=op.execute_complete):
            played["resumed"].append({"task": self.task_id.split(".")[-1], "event": event})
            return _complete(self, context, event)

        def deferred(self, *, trigger, method_name, kwargs=None, timeout=None, _defer=op.defer):
            played["deferred"].append({"task": self.task_id.split(".")[-1], "trigger": trigger})
            _defer(self, trigger=trigger, method_name=method_name, kwargs=kwargs, timeout=timeout)

        monkeypatch.setattr(op, "execute_complete", resumed)
        monkeypatch.setattr(op, "defer", deferred)
    intercept(
        monkeypatch,
        {"UpdateEndpoint": answer_update_endpoint, "ListTrainingJobsForHyperParameterTuningJob": answer_tuning_jobs},
    )
    monkeypatch.setattr(GlueJobHook, "initialize_job", play_glue)
    monkeypatch.setattr(SageMakerHook, "create_training_job", play_created_training)
    monkeypatch.setattr(SageMakerHook, "create_tuning_job", play_tuning)
    monkeypatch.setattr(SageMakerHook, "create_transform_job", play_transform)
    for kind, key in (("training", "TrainingJobStatus"), ("transform", "TransformJobStatus")):
        describe = getattr(SageMakerHook, f"describe_{kind}_job")
        monkeypatch.setattr(SageMakerHook, f"describe_{kind}_job", running_at_first(describe, key))
    return played
