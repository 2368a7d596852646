"""The aws settings of a spec, the backend choice per run and the S3 store's encryption settings
(no emulator needed: nothing here talks to AWS)."""

from __future__ import annotations

import copy

import pytest
import yaml

from include.lifecycle.spec import SpecError, parse_spec
from tests.integration.dagrun import ROOT

pytestmark = pytest.mark.aws

ROLE = "arn:aws:iam::123456789012:role/ml-lifecycle"


def _aws_spec(**aws) -> dict:
    data = yaml.safe_load((ROOT / "include" / "problems" / "card_fraud.yaml").read_text())
    data["backend"] = "aws"
    data["data"]["source"] = "s3://landing-bucket/transactions"
    data["aws"] = {"bucket": "ml-artifacts", "role_arn": ROLE, **aws}
    return data


def test_aws_defaults() -> None:
    aws = parse_spec(_aws_spec()).aws
    assert (aws.region, aws.prefix, aws.conn_id, aws.kms_key_id) == ("eu-west-1", "ml-lifecycle", "aws_default", None)
    assert (aws.training_instance_type, aws.training_instance_count) == ("ml.m5.xlarge", 1)
    assert (aws.glue.job_type, aws.glue.glue_version, aws.glue.database) == ("glueetl", "5.0", "ml_lifecycle")


@pytest.mark.parametrize(
    ("aws", "field"),
    [
        ({"role_arn": "ml-role"}, "aws.role_arn"),
        ({"bucket": "Bad_Bucket"}, "aws.bucket"),
        ({"region": "europe"}, "aws.region"),
        ({"prefix": "/leading/slash"}, "aws.prefix"),
        ({"training_instance_type": "m5.large"}, "aws.training_instance_type"),
        ({"training_instance_count": 4}, "aws.training_instance_count"),
        ({"glue": {"max_capacity": 2}}, "aws.glue.max_capacity"),
        ({"glue": {"job_type": "spark"}}, "aws.glue.job_type"),
        ({"poll_seconds": 0}, "aws.poll_seconds"),
        ({"unknown": 1}, "aws.unknown"),
    ],
)
def test_bad_aws_settings_name_the_field(aws: dict, field: str) -> None:
    with pytest.raises(SpecError, match=f"field '{field}'"):
        parse_spec(_aws_spec(**aws))


def test_backend_aws_needs_bucket_and_role() -> None:
    data = _aws_spec()
    del data["aws"]["role_arn"]
    with pytest.raises(SpecError, match="backend aws needs aws.bucket and aws.role_arn"):
        parse_spec(data)


def test_sse_is_kms_with_a_key_and_s3_managed_without() -> None:
    from ml_lifecycle.aws.store import sse_kwargs

    assert sse_kwargs(parse_spec(_aws_spec()).aws) == {"ServerSideEncryption": "AES256"}
    assert sse_kwargs(parse_spec(_aws_spec(kms_key_id="alias/ml")).aws) == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/ml",
    }


def test_the_run_param_chooses_the_backend(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A spec with aws settings runs locally unless the spec or the run says aws, and the other
    way round; the aws store is rooted at s3://<bucket>/<prefix>/<problem> and encrypts."""
    from ml_lifecycle import context

    data = _aws_spec(kms_key_id="alias/ml", conn_id="no_such_conn_for_this_test")
    local = copy.deepcopy(data) | {"name": "fraud_local", "backend": "local"}
    for d in (data | {"name": "fraud_aws"}, local):
        (tmp_path / f"{d['name']}.yaml").write_text(yaml.safe_dump(d))
    monkeypatch.setenv("ML_PROBLEMS_DIR", str(tmp_path))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-used")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-used")

    def rc(problem: str, params: dict) -> context.RunContext:
        return context.RunContext.from_airflow(
            problem,
            {
                "run_id": "manual__x",
                "logical_date": None,
                "dag_run": type("R", (), {"run_after": None})(),
                "params": params,
            },
        )

    assert rc("fraud_local", {}).store.is_local
    assert rc("fraud_aws", {"backend": "local"}).store.is_local
    for store in (rc("fraud_aws", {}).store, rc("fraud_local", {"backend": "aws"}).store):
        assert store.uri().startswith("s3://ml-artifacts/ml-lifecycle/fraud_")
        assert store.fs.s3_additional_kwargs == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/ml"}


def test_a_run_asking_for_aws_on_a_spec_without_aws_settings_fails_clearly() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from ml_lifecycle.context import resolve

    spec = parse_spec(yaml.safe_load((ROOT / "include" / "problems" / "card_fraud.yaml").read_text()))
    with pytest.raises(AirflowFailException, match="backend aws needs aws.bucket and aws.role_arn"):
        resolve(spec, {"backend": "aws"}).store()


def test_the_iam_policies_grant_what_the_backend_calls_and_no_wildcard_actions() -> None:
    import json
    import re

    policy = json.loads((ROOT / "aws" / "iam-policy.json").read_text())
    role = json.loads((ROOT / "aws" / "execution-role-policy.json").read_text())
    json.loads((ROOT / "aws" / "execution-role-trust.json").read_text())

    def actions(p: dict) -> set[str]:
        out: set[str] = set()
        for st in p["Statement"]:
            if st["Effect"] == "Allow":
                out |= {st["Action"]} if isinstance(st["Action"], str) else set(st["Action"])
        return out

    # what plugins/ml_lifecycle/aws/ and the provider's operators and hooks it uses call, from the Airflow worker
    called = {
        "s3:ListBucket", "s3:GetObject", "s3:PutObject",
        "glue:GetJob", "glue:CreateJob", "glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns",
        "glue:BatchStopJobRun", "glue:GetDatabase", "glue:CreateDatabase", "glue:GetTable", "glue:CreateTable",
        "glue:UpdateTable", "glue:GetPartitions", "glue:BatchCreatePartition",
        "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
        "sagemaker:CreateHyperParameterTuningJob", "sagemaker:DescribeHyperParameterTuningJob",
        "sagemaker:StopHyperParameterTuningJob", "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
        "sagemaker:CreateTransformJob", "sagemaker:DescribeTransformJob", "sagemaker:StopTransformJob",
        "sagemaker:CreateModelPackageGroup", "sagemaker:DeleteModelPackageGroup", "sagemaker:ListModelPackages",
        "sagemaker:DescribeModelPackage", "sagemaker:CreateModelPackage", "sagemaker:DescribeModel",
        "sagemaker:CreateModel", "sagemaker:DescribeEndpointConfig", "sagemaker:CreateEndpointConfig",
        "sagemaker:DescribeEndpoint", "sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint",
        "iam:PassRole", "kms:GenerateDataKey", "kms:Decrypt",
    }  # fmt: skip
    assert called <= actions(policy)
    # what the Glue job and the training container call with the execution role
    assert {"s3:GetObject", "s3:PutObject", "secretsmanager:GetSecretValue", "kms:GenerateDataKey"} <= actions(role)
    for p in (policy, role):
        assert not any(a == "*" or a.endswith(":*") for a in actions(p))
        text = json.dumps(p)
        assert not re.search(r"\b\d{12}\b", text)  # no account id: placeholders only
        assert set(re.findall(r"\$\{(\w+)\}", text)) <= {
            "BUCKET", "PREFIX", "LANDING_PREFIX", "REGION", "ACCOUNT_ID", "KMS_KEY_ARN",
            "GLUE_DATABASE", "EXECUTION_ROLE_NAME", "PII_SECRET_NAME",
        }  # fmt: skip


class _FakeSageMakerHook:
    """The SageMakerHook calls of a training job operator, answered from a dict of name -> status;
    records the jobs it creates and stops."""

    def __init__(self, statuses: dict[str, str]) -> None:
        self.statuses = statuses
        self.created: list[str] = []
        self.stopped: list[str] = []
        self.conn = type(
            "Client", (), {"stop_training_job": lambda _, TrainingJobName: self.stopped.append(TrainingJobName)}
        )()

    def describe_training_job(self, name: str) -> dict:
        from botocore.exceptions import ClientError

        if name not in self.statuses:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "not found"}}, "DescribeTrainingJob")
        return {"TrainingJobName": name, "TrainingJobStatus": self.statuses[name]}

    def configure_s3_resources(self, config: dict) -> None:
        pass

    def create_training_job(self, config: dict, **_) -> dict:
        self.created.append(config["TrainingJobName"])
        self.statuses[config["TrainingJobName"]] = "Completed"
        return {"ResponseMetadata": {"HTTPStatusCode": 200}}

    def check_status(self, name: str, key: str, describe, interval: int, max_seconds: int | None) -> dict:
        self.statuses[name] = "Completed"  # waited for it
        return describe(name)


def _training_job(statuses: dict[str, str], *, deferrable: bool = False):
    from ml_lifecycle.aws.operators import TrainingJob

    job = TrainingJob(
        task_id="train_model", names=["job", "job-a2", "job-a3"], deferrable=deferrable, max_ingestion_time=3600
    )
    job.hook = _FakeSageMakerHook(dict(statuses))
    return job


@pytest.mark.parametrize(
    ("statuses", "expected", "created"),
    [
        ({}, "job", ["job"]),  # first attempt: create
        ({"job": "InProgress"}, "job", []),  # retry while it runs: attach and wait
        ({"job": "Completed"}, "job", []),  # retry after it completed: take its result
        ({"job": "Failed"}, "job-a2", ["job-a2"]),  # names cannot be reused: the next attempt's name
        ({"job": "Failed", "job-a2": "Completed"}, "job-a2", []),
    ],
)
def test_a_retried_trial_attaches_to_its_job_or_starts_the_next_attempt(statuses, expected, created) -> None:
    job = _training_job(statuses)
    result = job.execute({})
    assert result["Training"] == {"TrainingJobName": expected, "TrainingJobStatus": "Completed"}
    assert job.job_name == expected and job.hook.created == created


def test_a_deferrable_retry_waits_for_its_running_job_in_the_provider_trigger() -> None:
    from airflow.sdk.exceptions import TaskDeferred

    job = _training_job({"job": "InProgress"}, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        job.execute({})
    trigger = deferred.value.trigger
    assert (type(trigger).__name__, trigger.job_name, trigger.job_type) == ("SageMakerTrigger", "job", "training")
    assert deferred.value.method_name == "execute_complete" and job.hook.created == []
    assert trigger.attempts * trigger.waiter_delay >= 3600


def test_every_attempt_failed_fails_the_task() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    job = _training_job({"job": "Failed", "job-a2": "Stopped", "job-a3": "Failed"})
    with pytest.raises(AirflowFailException, match="every attempt of this training job failed"):
        job.execute({})
    assert job.hook.created == []


def test_a_killed_task_stops_the_job_it_started_or_attached_to() -> None:
    job = _training_job({"job": "Failed"})
    job.on_kill()  # nothing started yet: nothing to stop
    job.execute({})
    job.on_kill()
    assert job.hook.stopped == ["job-a2"]


def test_arrow_types_map_to_hive_types_for_the_catalog() -> None:
    import pyarrow as pa

    from ml_lifecycle.aws.glue import hive_type

    cases = {
        pa.int32(): "int",
        pa.int64(): "bigint",
        pa.float64(): "double",
        pa.bool_(): "boolean",
        pa.date32(): "date",
        pa.timestamp("us", tz="UTC"): "timestamp",
        pa.string(): "string",
        pa.dictionary(pa.int32(), pa.string()): "string",
    }
    assert {str(t): hive_type(t) for t in cases} == {str(t): h for t, h in cases.items()}


def test_every_aws_client_retries_throttling_with_adaptive_back_off() -> None:
    """The provider operators (and the triggers they defer to), the hooks and the S3 store all
    carry the same retry policy."""
    from ml_lifecycle.aws.common import BOTOCORE_RETRIES, provider_kwargs, sagemaker_hook
    from ml_lifecycle.aws.operators import CollectGlueJob, TransformJob

    aws = parse_spec(_aws_spec()).aws
    assert BOTOCORE_RETRIES == {"mode": "adaptive", "max_attempts": 10}
    assert sagemaker_hook(aws).config.retries == BOTOCORE_RETRIES
    for job in (CollectGlueJob(**provider_kwargs(aws, "t")), TransformJob(**provider_kwargs(aws, "t"))):
        assert job.botocore_config == {"retries": BOTOCORE_RETRIES}
        assert job.hook.config.retries == BOTOCORE_RETRIES
        assert (job.aws_conn_id, job.region_name) == ("aws_default", "eu-west-1")


def test_glueetl_runs_the_spark_engine_and_pythonshell_pandas() -> None:
    """A glueetl job (Spark) gets ``--engine spark`` and Ibis among its modules (pinned, never
    pyspark: Glue ships Spark); a pythonshell job stays on pandas without Ibis."""
    from importlib import metadata

    from include.lifecycle.store import Store
    from ml_lifecycle.aws.glue import glue_arguments, glue_job_kwargs

    code = {"include.zip": "s3://b/code/include.zip", "collect_and_label.py": "s3://b/code/collect_and_label.py"}
    for job_type, engine in (("glueetl", "spark"), ("pythonshell", "pandas")):
        glue = {"job_type": job_type, "number_of_workers": 5, "worker_type": "G.2X"}
        spec = parse_spec(_aws_spec(glue=glue))
        assert spec.aws is not None
        kwargs, _ = glue_job_kwargs(spec.aws, code)
        modules = dict(m.split("==") for m in kwargs["DefaultArguments"]["--additional-python-modules"].split(","))
        assert "pyspark" not in modules and modules["pandas"] == metadata.version("pandas")
        args = glue_arguments(
            spec, Store.from_uri("memory://ml/p"), run_dir="runs/r", as_of="2026-11-01", lookback_days=3,
            source="s3://landing-bucket/transactions", labels=None,
        )  # fmt: skip
        assert args["--engine"] == engine
        if job_type == "glueetl":
            assert kwargs["Command"]["Name"] == "glueetl" and kwargs["GlueVersion"] == "5.0"
            assert (kwargs["WorkerType"], kwargs["NumberOfWorkers"]) == ("G.2X", 5)
            assert modules["ibis-framework"] == metadata.version("ibis-framework")
            assert modules["sqlglot"] == metadata.version("sqlglot")
        else:
            assert kwargs["Command"]["Name"] == "pythonshell" and "ibis-framework" not in modules
