"""A whole lifecycle DAG with ``backend: aws`` against moto: artifacts in S3 (every object
encrypted with the spec's KMS key), collect_and_label as a Glue job running the project's job
file, the curated partitions in the Glue Data Catalog, one SageMaker script-mode training job
per trial, the champion as a model package and an endpoint; a second run does not collide with
the first, a retried task does not start a second job, a killed task stops its job."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from include.lifecycle.store import safe_run_id
from tests.aws.conftest import (
    BUCKET,
    LOGICAL_DATE,
    PROBLEM,
    ROLE_ARN,
    answered,
    install_players,
    intercept,
    run_as_task,
    task_context,
)
from tests.integration.dagrun import ROOT, run_dag

pytestmark = [pytest.mark.aws, pytest.mark.integration]

NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def _objects(s3, prefix: str = "") -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def _json(s3, key: str):
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


@pytest.fixture(scope="module")
def first_run(airflow_db, aws_env, clients):
    """The DAG run (module-scoped: the other tests read what it left in the emulator)."""
    mp = pytest.MonkeyPatch()
    played = _install_players(mp, aws_env, clients)
    try:
        state, run_id, _ = run_dag(PROBLEM, LOGICAL_DATE, problems_dir=aws_env["problems"])
    finally:
        mp.undo()
    return {"state": state, "run_id": run_id, "played": played}


def _install_players(mp, aws_env, clients):
    # under the session's temporary folder (next to the test problems), which the suite removes at the end
    folder = tempfile.mkdtemp(prefix="aws-play-", dir=aws_env["problems"].parent)
    return install_players(mp, aws_env, clients, Path(folder))


def test_glue_and_sagemaker_waits_are_deferred_to_the_triggerer(first_run) -> None:
    """aws.deferrable (the default): the provider operators hand the wait to their triggers and the
    tasks resume in execute_complete with the trigger's event (dag.test runs the triggers in line)."""
    from ml_lifecycle.aws.common import BOTOCORE_RETRIES

    resumed = first_run["played"]["resumed"]
    tasks = [r["task"] for r in resumed]
    assert sorted(tasks) == ["collect_and_label", "train_model", "train_model"]
    assert all(r["event"]["status"] == "success" for r in resumed)
    trained = {p["config"]["TrainingJobName"] for p in first_run["played"]["training"]}
    assert {r["event"]["job_name"] for r in resumed if r["task"] == "train_model"} == trained
    deferred = first_run["played"]["deferred"]
    assert sorted(d["task"] for d in deferred) == sorted(tasks)
    for d in deferred:  # the provider's triggers, polling as the spec says, covering the job's run time
        trigger = d["trigger"]
        assert type(trigger).__name__ == (
            "GlueJobCompleteTrigger" if d["task"] == "collect_and_label" else "SageMakerTrigger"
        )
        assert trigger.botocore_config == {"retries": BOTOCORE_RETRIES}
        assert trigger.waiter_delay == 1 and trigger.attempts * trigger.waiter_delay >= 3600


def test_the_dag_runs_green_on_aws_and_writes_its_artifacts_to_s3(first_run, clients) -> None:
    s3 = clients["s3"]
    assert first_run["state"] == "success"
    run = f"ml/{PROBLEM}/runs/{safe_run_id(first_run['run_id'])}"
    summary = _json(s3, f"{run}/run_summary.json")
    assert summary["decision"] == "deployed" and summary["model_version"] == 1
    collect = _json(s3, f"{run}/collect_summary.json")
    assert collect["rows_in"] == collect["rows_curated"] + collect["rows_quarantined"] > 10_000
    assert collect["dataset_uri"].startswith(f"s3://{BUCKET}/ml/{PROBLEM}/runs/")
    from include.lifecycle import mlflow_env

    mv = mlflow_env.client().get_model_version_by_alias(PROBLEM, "champion")  # the MLflow registry
    assert int(mv.version) == 1 and mv.source.startswith(f"s3://{BUCKET}/ml/mlflow-artifacts/{PROBLEM}/")
    keys = _objects(s3, f"ml/{PROBLEM}/")
    assert any(k.startswith(f"ml/{PROBLEM}/curated/ds=") for k in keys)
    assert any(k.startswith(f"{run}/round_1/trials/") and k.endswith("/output/metrics.json") for k in keys)
    assert f"{run}/report.html" in keys
    # the champion is an approved model package version and the endpoint serves it
    outcome = _json(s3, f"{run}/outcome.json")
    sm = clients["sagemaker"]
    package = sm.describe_model_package(ModelPackageName=outcome["sagemaker"]["model_package_arn"])
    assert package["CustomerMetadataProperties"]["ml_lifecycle_version"] == "1"
    endpoint = sm.describe_endpoint(EndpointName="card-fraud-aws-test")
    assert endpoint["EndpointConfigName"] == outcome["sagemaker"]["model_name"] == "card-fraud-aws-v1"
    model_url = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    with tarfile.open(
        fileobj=io.BytesIO(s3.get_object(Bucket=BUCKET, Key=model_url.split("/", 3)[3])["Body"].read())
    ) as tf:
        assert {"manifest.json", "threshold.json", "preprocessor.joblib"} <= set(tf.getnames())


def test_every_object_in_the_bucket_is_encrypted_with_the_spec_key(first_run, clients, aws_env) -> None:
    s3 = clients["s3"]
    keys = _objects(s3)
    assert len(keys) > 50
    unencrypted = []
    for key in keys:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        if head.get("ServerSideEncryption") != "aws:kms" or aws_env["kms_key_id"] not in head.get("SSEKMSKeyId", ""):
            unencrypted.append(key)
    assert unencrypted == []


def test_the_glue_job_runs_the_projects_job_file_with_the_runs_arguments(first_run, clients, aws_env) -> None:
    (played,) = first_run["played"]["glue"]
    job = played["job"]
    s3 = clients["s3"]
    loc = job["Command"]["ScriptLocation"]
    script = s3.get_object(Bucket=BUCKET, Key=loc.removeprefix(f"s3://{BUCKET}/"))["Body"].read()
    assert script == (ROOT / "include" / "jobs" / "collect_and_label.py").read_bytes()
    assert job["Role"] == ROLE_ARN
    assert job["Command"]["Name"] == "glueetl" and job["GlueVersion"] == "5.0"
    glue_spec = aws_env["spec"]["aws"].get("glue") or {}
    assert job["WorkerType"] == glue_spec.get("worker_type", "G.1X")
    assert job["NumberOfWorkers"] == glue_spec.get("number_of_workers", 2)
    assert job["DefaultArguments"]["--extra-py-files"].endswith("/include.zip")
    modules = dict(m.split("==") for m in job["DefaultArguments"]["--additional-python-modules"].split(","))
    from importlib import metadata

    assert modules["pandas"] == metadata.version("pandas")
    assert modules["ibis-framework"] == metadata.version("ibis-framework") and "sqlglot" in modules
    assert "pyspark" not in modules  # Glue 5.0 ships Spark 3.5
    args = played["arguments"]
    assert args["--engine"] == "spark"
    run_dir = f"runs/{safe_run_id(first_run['run_id'])}"
    assert args["--run-dir"] == run_dir and args["--ml-run-key"] == f"{PROBLEM}/{run_dir}"
    assert args["--artifact-root"] == f"s3://{BUCKET}/ml/{PROBLEM}"
    assert args["--source"] == f"s3://{BUCKET}/landing/transactions"
    assert args["--sse"] == "aws:kms" and args["--kms-key-id"] == aws_env["kms_key_id"]
    assert args["--pii-key-secret"] == "ml-lifecycle/pii-hash-key"
    assert json.loads(args["--spec"])["name"] == PROBLEM
    assert not any("test-only-pii-key" in v for v in args.values())  # the key itself never travels


def test_the_glue_job_ran_the_spark_path(first_run, clients) -> None:
    """The played glueetl job curated on Spark: its executors read the files and wrote the
    partitions (its log and its summary say so), and the run still went green."""
    (played,) = first_run["played"]["glue"]
    log = played["log"]
    assert "collect_and_label: engine spark" in log
    assert re.search(r"spark: read \d+ files of 18 partitions \(\d+ rows\) on the executors", log)
    assert "spark: wrote 18 curated partitions on the executors" in log
    run = f"ml/{PROBLEM}/runs/{safe_run_id(first_run['run_id'])}"
    collect = _json(clients["s3"], f"{run}/collect_summary.json")
    engine = collect["engine"]
    assert engine["name"] == "spark" and engine["master"] == "local[2]" and engine["partitions_curated"] == 18
    assert collect["rows_in"] == sum(f["rows"] for f in collect["files"] if f["source"] == "data" and "rows" in f)
    assert {p["ds"] for p in collect["partitions"]} == {
        k.split("ds=")[1].split("/")[0] for k in _objects(clients["s3"], f"ml/{PROBLEM}/curated/") if "_manifest" in k
    }
    assert first_run["state"] == "success"


def test_the_per_entity_features_are_computed_by_the_glue_job_and_taken_by_feature_engineering(
    first_run, clients
) -> None:
    """The glueetl job computed the spec's per-entity groups on Spark for the data set's rows; round
    1's feature engineering (card_velocity is an initial group here) took them instead of computing
    them in the Airflow task, and says so in the round's features.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.lifecycle.features import EntityFeatures

    s3 = clients["s3"]
    run = f"ml/{PROBLEM}/runs/{safe_run_id(first_run['run_id'])}"
    collect = _json(s3, f"{run}/collect_summary.json")
    info = collect["engine"]["entity_features"]
    assert info["groups"] == ["card_velocity", "card_history"] and info["rel"].endswith("/entity_features.parquet")
    body = s3.get_object(Bucket=BUCKET, Key=f"ml/{PROBLEM}/{info['rel']}")["Body"].read()
    pre = EntityFeatures.from_arrow(pq.read_table(pa.BufferReader(body)))
    assert len(pre.frame) == collect["dataset_rows"] and list(pre.frame.columns) == info["columns"]
    assert "per-entity features: groups ['card_velocity', 'card_history']" in first_run["played"]["glue"][0]["log"]
    features = _json(s3, f"{run}/round_1/features/features.json")
    assert features["precomputed"] == {"engine": pre.engine, "groups": ["card_velocity"]}
    assert "vel_cnt_24h" in features["columns"]["numeric"]


def test_the_curated_partitions_are_in_the_glue_catalog(first_run, clients) -> None:
    glue = clients["glue"]
    table = glue.get_table(DatabaseName="ml_lifecycle", Name=f"{PROBLEM}_curated")["Table"]
    assert [k["Name"] for k in table["PartitionKeys"]] == ["ds"]
    cols = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    assert cols["amount"] == "double" and cols["ts"] == "timestamp"
    parts = glue.get_partitions(DatabaseName="ml_lifecycle", TableName=f"{PROBLEM}_curated")["Partitions"]
    days = sorted(p["Values"][0] for p in parts)
    assert len(days) == 18 and days[-1] == "2026-10-31"
    s3_days = {k.split("ds=")[1].split("/")[0] for k in _objects(clients["s3"], f"ml/{PROBLEM}/curated/")}
    assert set(days) <= s3_days
    loc = next(p for p in parts if p["Values"] == [days[0]])["StorageDescriptor"]["Location"]
    assert loc == f"s3://{BUCKET}/ml/{PROBLEM}/curated/ds={days[0]}/"


def test_each_trial_is_a_script_mode_training_job(first_run, clients, aws_env) -> None:
    s3 = clients["s3"]
    configs = [p["config"] for p in first_run["played"]["training"]]
    assert len(configs) == 2
    names = [c["TrainingJobName"] for c in configs]
    assert len(set(names)) == 2 and all(NAME_RE.match(n) and len(n) <= 63 for n in names)
    run = f"ml/{PROBLEM}/runs/{safe_run_id(first_run['run_id'])}/round_1"
    for c in configs:
        hp = c["HyperParameters"]
        assert hp["sagemaker_program"] == "train.py"
        assert {"family", "trial_id", "metric", "seed", "class_weight"} <= set(hp)
        assert hp["metric"] == "roc_auc" and hp["seed"] == "42"
        assert all(isinstance(v, str) for v in hp.values())
        ch = {x["ChannelName"]: x["DataSource"]["S3DataSource"]["S3Uri"] for x in c["InputDataConfig"]}
        assert ch == {
            "train": f"s3://{BUCKET}/{run}/features/train/",
            "validation": f"s3://{BUCKET}/{run}/features/validation/",
        }
        assert c["OutputDataConfig"] == {
            "S3OutputPath": f"s3://{BUCKET}/{run}/sagemaker",
            "KmsKeyId": aws_env["kms_key_id"],
        }
        assert c["RoleArn"] == ROLE_ARN and c["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
        # the code the container runs is the project's train.py, byte for byte
        src = s3.get_object(Bucket=BUCKET, Key=hp["sagemaker_submit_directory"].removeprefix(f"s3://{BUCKET}/"))
        with tarfile.open(fileobj=io.BytesIO(src["Body"].read()), mode="r:gz") as tf:
            assert tf.extractfile("train.py").read() == (ROOT / "include" / "jobs" / "train.py").read_bytes()
        desc = clients["sagemaker"].describe_training_job(TrainingJobName=c["TrainingJobName"])
        assert desc["TrainingJobStatus"] == "Completed"
    by_family = {c["HyperParameters"]["family"]: c["HyperParameters"] for c in configs}
    assert by_family["xgboost"]["n_estimators"] == "40"  # the spec's params, as strings
    # the trial's result in the run is what the container wrote
    ev = _json(s3, f"{run}/evaluation.json")
    metrics = _json(s3, f"{run}/trials/{ev['trial_id']}/output/metrics.json")
    assert metrics["trial_id"] == ev["trial_id"]


def test_a_second_run_does_not_collide_and_retried_tasks_start_no_second_job(
    first_run, airflow_db, aws_env, clients
) -> None:
    from ml_lifecycle.aws.deploy import BLUE_GREEN_UPDATE
    from ml_lifecycle.context import RunContext
    from ml_lifecycle.operators import CollectAndLabelOperator, TrainingTrialOperator

    sm = clients["sagemaker"]
    mp = pytest.MonkeyPatch()
    played = _install_players(mp, aws_env, clients)
    try:
        state, run_id, _ = run_dag(PROBLEM, LOGICAL_DATE, problems_dir=aws_env["problems"])
        assert state == "success" and run_id != first_run["run_id"]
        first = {p["config"]["TrainingJobName"] for p in first_run["played"]["training"]}
        second = {p["config"]["TrainingJobName"] for p in played["training"]}
        assert len(second) == 2 and not first & second
        outcome = _json(clients["s3"], f"ml/{PROBLEM}/runs/{safe_run_id(run_id)}/outcome.json")
        # same data, same seed: as good as the champion, so deployed; the endpoint is updated, not re-created
        assert outcome["decision"] == "deployed" and outcome["version"] == 2
        assert outcome["sagemaker"]["endpoint"] == "updated"
        assert played["update_endpoint"] == [
            {
                "EndpointName": "card-fraud-aws-test",
                "EndpointConfigName": "card-fraud-aws-v2",
                "DeploymentConfig": BLUE_GREEN_UPDATE,
            }
        ]
        assert (
            played["glue"][0]["arguments"]["--ml-run-key"]
            != first_run["played"]["glue"][0]["arguments"]["--ml-run-key"]
        )
        jobs_before = sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
        os.environ["ML_PROBLEMS_DIR"] = str(aws_env["problems"])
        try:
            # retry a trial of the second run: it re-attaches to the completed job
            ctx = task_context(run_id, try_number=2, task_id="train_model", params={"backend": "aws"})
            rc = RunContext.from_airflow(PROBLEM, ctx)
            trial = _evaluated_trial(clients["s3"], run_id)
            op = TrainingTrialOperator(task_id="train_model", problem=PROBLEM, round_no=1, trial=trial)
            again, triggers = run_as_task(ctx, lambda: op.execute(ctx), lambda event: op.execute_complete(ctx, event))
            assert triggers == []  # the job had completed: nothing to wait for
            assert len(played["training"]) == 2  # no new job was created
            assert again["training_job_name"] in second
            assert len(sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]) == len(jobs_before)

            # retry collect_and_label of the second run: it re-attaches to its Glue job run
            glue = clients["glue"]
            job_name = played["glue"][0]["job"]["Name"]
            runs_before = glue.get_job_runs(JobName=job_name)["JobRuns"]
            ctx = task_context(run_id, try_number=2, task_id="collect_and_label", params={"backend": "aws"})
            op = CollectAndLabelOperator(task_id="collect_and_label", problem=PROBLEM)
            summary, triggers = run_as_task(ctx, lambda: op.execute(ctx), lambda event: op.execute_complete(ctx, event))
            assert [t.run_id for t in triggers] == [played["glue"][0]["run_id"]]
            assert len(played["glue"]) == 1
            assert len(glue.get_job_runs(JobName=job_name)["JobRuns"]) == len(runs_before) == 2
            assert summary["rows_in"] == rc.store.read_json(rc.layout.collect_summary)["rows_in"]

            # augment_data re-collects a wider window into the next round's folder: a new Glue job run
            wider_dir = rc.layout.collect_dir(2)
            wider, _ = run_as_task(
                ctx,
                lambda: rc.backend.collect(op, rc, ctx, lookback_days=24, run_dir=wider_dir),
                lambda event: rc.backend.collect_complete(op, rc, event, run_dir=wider_dir),
            )
        finally:
            os.environ.pop("ML_PROBLEMS_DIR", None)
        assert len(played["glue"]) == 2
        assert played["glue"][1]["arguments"]["--run-dir"] == wider_dir
        assert played["glue"][1]["arguments"]["--lookback-days"] == "24"
        assert len(wider["partitions"]) == 24 and wider["rows_in"] > summary["rows_in"]
    finally:
        mp.undo()


def test_job_names_are_deterministic_unique_and_short() -> None:
    from ml_lifecycle.aws.training import training_job_name

    long = "a_problem_name_that_is_long_enough_to_matter_" + "x" * 16
    n1 = training_job_name(long, "manual__2026-11-01T00:00:00+00:00", 10, "r10-random_forest-11")
    assert n1 == training_job_name(long, "manual__2026-11-01T00:00:00+00:00", 10, "r10-random_forest-11")
    n2 = training_job_name(long, "manual__2026-11-01T00:00:01+00:00", 10, "r10-random_forest-11")
    n3 = training_job_name(long, "manual__2026-11-01T00:00:00+00:00", 10, "r10-random_forest-11", attempt=3)
    assert len({n1, n2, n3}) == 3
    assert all(len(n) <= 63 and NAME_RE.match(n) for n in (n1, n2, n3))


def _publisher(aws_env: dict, name: str, endpoint: str, versions: int):
    """A registry of ``versions`` versions of problem ``name`` in S3, and a function publishing one of
    them as deploy_model does (in a task's context)."""
    from airflow.sdk.execution_time.context import set_current_context

    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.spec import parse_spec
    from ml_lifecycle.aws.deploy import publish_champion
    from ml_lifecycle.aws.store import s3_problem_store

    data = json.loads(json.dumps(aws_env["spec"])) | {"name": name}
    data["deploy"] = {"endpoint_name": endpoint}
    spec = parse_spec(data)
    store = s3_problem_store(spec)
    registry = ModelRegistry(store, spec.name)
    numbers = list(range(1, versions + 1))
    assert [registry.register({"model.ubj": f"m{v}".encode()}, {"run_id": "r"}) for v in numbers] == numbers

    def publish(version: int, run_id: str = "manual__a") -> dict:
        rc = SimpleNamespace(spec=spec, store=store, run_id=run_id)
        with set_current_context(task_context(run_id, task_id="deploy_model")):
            return publish_champion(rc, version, log=print)

    return publish


def _answer_updates(monkeypatch, updates: list) -> None:
    """moto does not implement UpdateEndpoint: the test answers it and records the request."""

    def update_endpoint(params, call):
        updates.append(params)
        return answered({"EndpointArn": "arn:test"})

    intercept(monkeypatch, {"UpdateEndpoint": update_endpoint})


def test_publishing_a_champion_registers_a_model_package_and_creates_then_updates_the_endpoint(
    aws_env, clients, monkeypatch
) -> None:
    from ml_lifecycle.aws.deploy import BLUE_GREEN_UPDATE

    publish = _publisher(aws_env, "fraud_publish", "card-fraud-test", 2)
    updates: list[dict] = []
    _answer_updates(monkeypatch, updates)
    sm = clients["sagemaker"]
    first = publish(1)
    again = publish(1)
    second = publish(2, run_id="manual__b")
    assert (first["endpoint"], again["endpoint"], second["endpoint"]) == ("created", "unchanged", "updated")
    assert again["model_package_arn"] == first["model_package_arn"] != second["model_package_arn"]
    packages = sm.list_model_packages(ModelPackageGroupName="fraud-publish")["ModelPackageSummaryList"]
    assert len(packages) == 2  # the retried publish of version 1 registered nothing new
    desc = sm.describe_model_package(ModelPackageName=second["model_package_arn"])
    assert desc["ModelApprovalStatus"] == "Approved"
    assert desc["CustomerMetadataProperties"]["ml_lifecycle_version"] == "2"
    assert desc["InferenceSpecification"]["SupportedContentTypes"] == ["text/csv", "application/json"]
    url = desc["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    assert url == f"s3://{BUCKET}/ml/fraud_publish/sagemaker/models/v2/model.tar.gz"
    body = clients["s3"].get_object(Bucket=BUCKET, Key=url.removeprefix(f"s3://{BUCKET}/"))
    assert body["ServerSideEncryption"] == "aws:kms" and aws_env["kms_key_id"] in body["SSEKMSKeyId"]
    with tarfile.open(fileobj=io.BytesIO(body["Body"].read()), mode="r:gz") as tf:
        assert tf.extractfile("model.ubj").read() == b"m2"
        assert json.loads(tf.extractfile("manifest.json").read())["version"] == 2
    assert sm.describe_endpoint(EndpointName="card-fraud-test")["EndpointConfigName"] == first["model_name"]
    assert updates == [
        {
            "EndpointName": "card-fraud-test",
            "EndpointConfigName": second["model_name"],
            "DeploymentConfig": BLUE_GREEN_UPDATE,
        }
    ]
    cfg = sm.describe_endpoint_config(EndpointConfigName=second["model_name"])
    assert cfg["ProductionVariants"][0]["ModelName"] == second["model_name"]
    assert cfg["KmsKeyId"] == aws_env["kms_key_id"]
    model = sm.describe_model(ModelName=second["model_name"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == url and model["ExecutionRoleArn"] == ROLE_ARN


def test_the_deploy_returns_once_the_endpoint_is_in_service_and_fails_when_it_failed(aws_env, monkeypatch) -> None:
    """moto's endpoint is InService at once: the test has it say Creating for three looks first,
    then, on a retried deploy that changes nothing, Failed."""
    from airflow.sdk.exceptions import AirflowFailException

    publish = _publisher(aws_env, "fraud_in_service", "card-fraud-in-service", 1)
    script = ["Creating", "Creating", "Creating"]
    seen: list[str] = []

    def describe_endpoint(params, call):
        desc = call(params)
        seen.append(script.pop(0) if script else desc["EndpointStatus"])
        return {**desc, "EndpointStatus": seen[-1]}

    intercept(monkeypatch, {"DescribeEndpoint": describe_endpoint})
    assert publish(1)["endpoint"] == "created"
    assert seen == ["Creating", "Creating", "Creating", "InService"]
    script += ["Failed", "Failed"]  # the deploy's look at the endpoint, then the wait's
    with pytest.raises(AirflowFailException, match="card-fraud-in-service is not InService"):
        publish(1)
    assert seen[-2:] == ["Failed", "Failed"] and script == []


def test_a_retried_deploy_finds_its_model_package_on_a_later_page(aws_env, clients, monkeypatch) -> None:
    """list_model_packages answers one package a page here: the third version's package is on the
    third page, and a retried deploy of it registers nothing new."""
    publish = _publisher(aws_env, "fraud_pages", "card-fraud-pages", 3)
    _answer_updates(monkeypatch, [])
    pages: list[str | None] = []

    def one_per_page(params, call):
        pages.append(params.get("NextToken"))
        return call({**params, "MaxResults": 1})

    intercept(monkeypatch, {"ListModelPackages": one_per_page})
    third = [publish(v) for v in (1, 2, 3)][-1]
    pages.clear()
    again = publish(3)
    assert again["model_package_arn"] == third["model_package_arn"]
    assert len(pages) == 3 and pages[0] is None and all(pages[1:])
    listed = clients["sagemaker"].get_paginator("list_model_packages").paginate(ModelPackageGroupName="fraud-pages")
    assert sum(len(page["ModelPackageSummaryList"]) for page in listed) == 3  # none registered twice


def _evaluated_trial(s3, run_id: str) -> dict:
    """The trial of round 1 that a run evaluated, as the round's plan gave it to train_model."""
    rnd = f"ml/{PROBLEM}/runs/{safe_run_id(run_id)}/round_1"
    trial_id = _json(s3, f"{rnd}/evaluation.json")["trial_id"]
    metrics = _json(s3, f"{rnd}/trials/{trial_id}/output/metrics.json")
    return {k: metrics[k] for k in ("trial_id", "family", "params")}


def test_killing_a_task_that_waits_for_its_training_job_stops_the_job(
    first_run, aws_env, clients, monkeypatch, tmp_path
) -> None:
    """aws.deferrable false: the task waits for its job in the worker. A retry after a failed job
    starts the next attempt's job; killing the task (on_kill, called while execute waits, as
    Airflow's signal handler does) stops that job, and the task fails saying so."""
    import threading

    import yaml

    from ml_lifecycle.aws.training import training_job_name
    from ml_lifecycle.operators import TrainingTrialOperator

    spec = json.loads(json.dumps(aws_env["spec"]))
    spec["aws"]["deferrable"] = False
    (tmp_path / f"{PROBLEM}.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("ML_PROBLEMS_DIR", str(tmp_path))
    run_id = first_run["run_id"]
    trial = _evaluated_trial(clients["s3"], run_id)
    failed = training_job_name(PROBLEM, run_id, 1, trial["trial_id"])
    started = training_job_name(PROBLEM, run_id, 1, trial["trial_id"], attempt=2)
    waiting, stopped = threading.Event(), []

    def describe(params, call):  # moto's jobs complete at once: the first failed, the second runs
        desc = call(params)
        if params["TrainingJobName"] == failed:
            return {**desc, "TrainingJobStatus": "Failed", "FailureReason": "played"}
        waiting.set()
        return {**desc, "TrainingJobStatus": "Stopped" if stopped else "InProgress"}

    def stop(params, call):
        stopped.append(params["TrainingJobName"])
        return answered()

    intercept(monkeypatch, {"DescribeTrainingJob": describe, "StopTrainingJob": stop})
    op = TrainingTrialOperator(task_id="train_model", problem=PROBLEM, round_no=1, trial=trial)
    ctx = task_context(run_id, try_number=2, task_id="train_model")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(ctx)
        except BaseException as exc:
            errors.append(exc)

    task = threading.Thread(target=run)
    task.start()
    assert waiting.wait(60), "the task never waited for its job"
    op.on_kill()
    task.join(60)
    assert stopped == [started]
    assert len(errors) == 1 and f"SageMaker training job {started} ended Stopped" in str(errors[0])


def test_batch_scoring_on_aws_is_a_transform_job_with_the_local_backends_scores(
    first_run, airflow_db, aws_env, clients
) -> None:
    """The batch DAG with backend aws: a SageMaker batch transform on the champion's SageMaker model
    (the emulator plays the serving container); its scores equal the local scoring of the same day."""
    import numpy as np
    import pandas as pd

    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.scoring import load_champion, score_partition
    from include.lifecycle.spec import load_spec
    from ml_lifecycle.aws.transform import transform_folder
    from ml_lifecycle.context import RunContext
    from ml_lifecycle.operators import BatchScoringOperator
    from ml_lifecycle.settings import pii_key

    s3 = clients["s3"]
    ds = "2026-10-31"
    mp = pytest.MonkeyPatch()
    played = _install_players(mp, aws_env, clients)
    try:
        state, run_id, _ = run_dag(f"{PROBLEM}_batch_scoring", LOGICAL_DATE, problems_dir=aws_env["problems"])
    finally:
        mp.undo()
    assert state == "success"
    manifest = _json(s3, f"ml/{PROBLEM}/scores/ds={ds}/_manifest.json")
    assert manifest["rows_in"] == manifest["rows_scored"] + manifest["rows_quarantined"] > 1000
    assert manifest["history_partitions"] == 18 and manifest["history_rows"] > 10_000
    (job,) = played["transform"]
    config = job["config"]
    assert manifest["transform_job_name"] == config["TransformJobName"] and NAME_RE.match(config["TransformJobName"])
    assert [r["task"] for r in played["resumed"]] == ["score_new_data"]  # the wait was deferred
    assert [type(d["trigger"]).__name__ for d in played["deferred"]] == ["SageMakerTrigger"]
    version = manifest["model_version"]
    assert config["ModelName"] == manifest["model_name"] == f"card-fraud-aws-v{version}"
    assert config["TransformInput"]["SplitType"] == "None" and config["TransformInput"]["ContentType"] == "text/csv"
    assert config["TransformOutput"]["KmsKeyId"] == aws_env["kms_key_id"]
    assert config["TransformResources"] == {
        "InstanceType": "ml.m5.large",
        "InstanceCount": 1,
        "VolumeKmsKeyId": aws_env["kms_key_id"],
    }
    folder = f"ml/{PROBLEM}/{transform_folder(run_id, ds)}"
    keys = _objects(s3, folder) + _objects(s3, f"ml/{PROBLEM}/scores/ds={ds}")
    assert all(s3.head_object(Bucket=BUCKET, Key=k).get("ServerSideEncryption") == "aws:kms" for k in keys)
    # no raw card number leaves for the transform: its input has the curated tokens
    landing = pd.read_parquet(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=next(
        k for k in _objects(s3, f"landing/transactions/ds={ds}/") if k.endswith(".parquet")
    ))["Body"].read()))  # fmt: skip
    body = s3.get_object(Bucket=BUCKET, Key=f"{folder}/input/{job['files'][0]}")["Body"].read().decode()
    assert not any(card in body for card in landing["card_number"].astype(str).head(50))

    # the same day scored by the local backend's code, with the same champion and key
    os.environ["ML_PROBLEMS_DIR"] = str(aws_env["problems"])
    try:
        rc = RunContext.from_airflow(PROBLEM, {"run_id": run_id, "logical_date": LOGICAL_DATE, "params": {}})
        spec = load_spec(aws_env["problems"] / f"{PROBLEM}.yaml")
        champion = load_champion(ModelRegistry(rc.store, PROBLEM), PROBLEM)
        local, summary = score_partition(
            spec, champion, source=rc.input_store(spec.data.source), ds=ds, pii_key=pii_key()
        )
        # a retried task re-attaches to its transform job and re-uses the prepared input
        mp = pytest.MonkeyPatch()
        again = _install_players(mp, aws_env, clients)
        mp.setattr("include.lifecycle.scoring.curate_for_scoring", _not_again)
        try:
            ctx = task_context(run_id, try_number=2, task_id="score_new_data")
            op = BatchScoringOperator(task_id="score_new_data", problem=PROBLEM)
            retried, triggers = run_as_task(ctx, lambda: op.execute(ctx), lambda event: op.execute_complete(ctx, event))
        finally:
            mp.undo()
    finally:
        os.environ.pop("ML_PROBLEMS_DIR", None)
    assert again["transform"] == [] and triggers == []  # the job had completed: nothing to start or wait for
    retried_manifest = _json(s3, f"ml/{PROBLEM}/scores/ds={ds}/_manifest.json")
    assert retried_manifest["transform_job_name"] == config["TransformJobName"]
    assert retried == {k: manifest[k] for k in retried}
    scores = pd.read_parquet(
        io.BytesIO(s3.get_object(Bucket=BUCKET, Key=f"ml/{PROBLEM}/scores/ds={ds}/part-0.parquet")["Body"].read())
    )
    assert list(scores.columns) == list(local.columns)
    assert scores["transaction_id"].tolist() == local["transaction_id"].tolist()
    np.testing.assert_allclose(scores["score"].to_numpy(), local["score"].to_numpy(), rtol=1e-6, atol=1e-9)
    assert scores["decision"].tolist() == local["decision"].tolist()
    # the scores carry the model's inputs for the monitor, as the local backend's do: the card
    # number as its curated token, never raw
    assert {"amount", "merchant_category", "card_number"} <= set(scores.columns)
    pd.testing.assert_series_equal(scores["amount"], local["amount"])
    assert scores["card_number"].tolist() == local["card_number"].tolist()
    assert not set(scores["card_number"].astype(str)) & set(landing["card_number"].astype(str))
    assert {k: manifest[k] for k in summary} == json.loads(json.dumps(summary))


def _not_again(*args, **kwargs):
    raise AssertionError("the retry curated the day again instead of re-using the prepared input")
