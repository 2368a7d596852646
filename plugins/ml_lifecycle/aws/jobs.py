"""The ``aws`` backend: S3 artifact store, the ETL as an AWS Glue job, training trials as
SageMaker script-mode training jobs, the curated data in the Glue Data Catalog.

The files that run remotely are the project's own entry points, unchanged:
``include/jobs/collect_and_label.py`` (the Glue job's script, with ``include/`` as an
``--extra-py-files`` zip) and ``include/jobs/train.py`` (``sagemaker_program`` of a
``sourcedir.tar.gz`` holding it and ``include/``). Code is staged content-addressed under
``<prefix>/_code/<digest>/``, so a Glue job definition never changes under its name.

Names are deterministic: a Glue job run carries ``--ml-run-key`` (problem + run folder), a
training job is named from problem, run, round and trial (<= 63 characters). A retried task
finds its earlier job and waits for it (or takes its result) instead of starting another.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import posixpath
import re
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from include.lifecycle.spec import PROJECT_ROOT, AwsSpec, Spec
from include.lifecycle.store import Store

ACTIVE_GLUE_STATES = {"STARTING", "RUNNING", "STOPPING", "WAITING", "SUCCEEDED"}
ATTACHABLE_JOB_STATES = {"InProgress", "Stopping", "Completed"}
# Python packages the Glue job installs (--additional-python-modules), pinned to the versions
# this project runs with, so the job computes exactly what the local backend computes.
GLUE_MODULES = ("pandas", "numpy", "pyarrow", "pydantic", "pyyaml", "s3fs", "fsspec")
# AWS's public registries of the SageMaker framework images (per region, from the SageMaker
# docs); any other region needs aws.training_image.
FRAMEWORK_REGISTRIES = {
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-west-2": "246618743249",
    "eu-west-1": "141502667606",
    "eu-central-1": "492215442770",
}


# Throttling and transient errors: botocore retries every AWS call with adaptive back-off (client-side
# rate limiting plus exponential back-off with jitter), in the workers and in the triggers alike.
BOTOCORE_RETRIES = {"mode": "adaptive", "max_attempts": 10}


def botocore_config() -> Any:
    from botocore.config import Config

    return Config(retries=dict(BOTOCORE_RETRIES))


def _fail(msg: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(msg)


def require_aws(spec: Spec) -> AwsSpec:
    """The spec's aws settings, or a clear failure when a run asks for aws on a spec without them."""
    aws = spec.aws
    if not (aws.bucket and aws.role_arn):
        _fail(f"problem {spec.name!r}: backend aws needs aws.bucket and aws.role_arn in its spec")
    return aws


def sse_kwargs(aws: AwsSpec) -> dict[str, str]:
    """Server-side encryption of every object the backend writes: SSE-KMS with the spec's key, else SSE-S3."""
    if aws.kms_key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": aws.kms_key_id}
    return {"ServerSideEncryption": "AES256"}


def s3_problem_store(spec: Spec) -> Store:
    """``s3://<conn_id>@<bucket>/<prefix>/<problem>`` through ObjectStoragePath (credentials and
    ``endpoint_url`` from the Airflow connection), on an s3fs instance of its own that encrypts."""
    from airflow.sdk import ObjectStoragePath

    aws = require_aws(spec)
    root = ObjectStoragePath(f"s3://{aws.conn_id}@{aws.bucket}/{aws.prefix}") / spec.name
    shared = root.fs  # cached per connection: never mutate it, derive an encrypting instance
    options = {
        **shared.storage_options,
        "s3_additional_kwargs": sse_kwargs(aws),
        "config_kwargs": {**shared.storage_options.get("config_kwargs", {}), "retries": dict(BOTOCORE_RETRIES)},
        "skip_instance_cache": True,
    }
    return Store(type(shared)(**options), root.path)


def s3_uri(store: Store, rel: str = "") -> str:
    return f"s3://{store.path(rel)}" if rel else f"s3://{store.root}"


# --- code staging ------------------------------------------------------------------------------
def _include_files() -> list[Path]:
    root = PROJECT_ROOT / "include"
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])
    return buf.getvalue()


def _targz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            tf.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0)


@functools.cache
def code_bundle() -> dict[str, bytes]:
    """The code the remote jobs run, byte-for-byte reproducible from the checkout."""
    include = {str(p.relative_to(PROJECT_ROOT)): p.read_bytes() for p in _include_files()}
    jobs = PROJECT_ROOT / "include" / "jobs"
    return {
        "collect_and_label.py": (jobs / "collect_and_label.py").read_bytes(),
        "include.zip": _zip(include),
        # script mode: the framework runs `python train.py --hp value ...` in the extracted folder,
        # so include/ next to it is importable
        "sourcedir.tar.gz": _targz({"train.py": (jobs / "train.py").read_bytes(), **include}),
    }


def code_digest() -> str:
    h = hashlib.sha256()
    for name, data in sorted(code_bundle().items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:12]


def stage_code(problem: Store) -> dict[str, str]:
    """Upload the code bundle once per code version (``<prefix>/_code/<digest>/``); returns S3 URIs."""
    code = Store(problem.fs, posixpath.dirname(problem.root)).sub("_code", code_digest())
    out = {}
    for name, data in code_bundle().items():
        if not code.exists(name):
            code.write_bytes(name, data)
        out[name] = s3_uri(code, name)
    return out


# --- Glue: collect_and_label --------------------------------------------------------------------
def glue_job_name(spec: Spec) -> str:
    """One immutable job definition per problem and code version."""
    return f"ml-{spec.name}-collect-and-label-{code_digest()}"


def glue_run_key(problem: str, run_dir: str) -> str:
    return f"{problem}/{run_dir}"


def _modules() -> str:
    out = []
    for dist in GLUE_MODULES:
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(dist)
    return ",".join(out)


def glue_job_kwargs(aws: AwsSpec, code: dict[str, str]) -> tuple[dict[str, Any], float | None]:
    """``create_job_kwargs`` and DPUs of the job definition (Python shell or Glue 5.0 Python 3.11)."""
    g = aws.glue
    defaults = {
        "--extra-py-files": code["include.zip"],
        "--additional-python-modules": _modules(),
        "--job-language": "python",
    }
    kwargs: dict[str, Any] = {"Timeout": g.timeout_minutes, "DefaultArguments": defaults}
    if g.job_type == "pythonshell":
        kwargs["Command"] = {
            "Name": "pythonshell",
            "ScriptLocation": code["collect_and_label.py"],
            "PythonVersion": "3.9",
        }
        defaults["library-set"] = "analytics"
        return kwargs, g.max_capacity
    kwargs["Command"] = {"Name": "glueetl", "ScriptLocation": code["collect_and_label.py"], "PythonVersion": "3"}
    kwargs |= {"GlueVersion": g.glue_version, "WorkerType": g.worker_type, "NumberOfWorkers": g.number_of_workers}
    return kwargs, None


def glue_hook(spec: Spec, code: dict[str, str]) -> Any:
    from airflow.providers.amazon.aws.hooks.glue import GlueJobHook

    aws = require_aws(spec)
    kwargs, dpus = glue_job_kwargs(aws, code)
    return GlueJobHook(
        job_name=glue_job_name(spec),
        desc=f"ml-lifecycle collect_and_label for {spec.name} (code {code_digest()})",
        script_location=code["collect_and_label.py"],
        iam_role_arn=aws.role_arn,
        create_job_kwargs=kwargs,
        num_of_dpus=dpus,
        concurrent_run_limit=max(2, spec.max_active_runs),
        retry_limit=0,  # Airflow retries the task, which re-attaches; Glue must not run it twice
        job_poll_interval=aws.poll_seconds,
        aws_conn_id=aws.conn_id,
        region_name=aws.region,
        config=botocore_config(),
    )


def glue_arguments(
    spec: Spec, problem: Store, *, run_dir: str, as_of: str, lookback_days: int, source: str, labels: str | None
) -> dict[str, str]:
    aws = require_aws(spec)
    args = {
        "--spec": json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True),
        "--artifact-root": s3_uri(problem),
        "--run-dir": run_dir,
        "--as-of": as_of,
        "--lookback-days": str(lookback_days),
        "--source": source,
        "--pii-key-secret": aws.pii_key_secret,
        "--region": aws.region,
        "--ml-run-key": glue_run_key(spec.name, run_dir),
    }
    if labels:
        args["--labels"] = labels
    args |= {"--sse": sse_kwargs(aws)["ServerSideEncryption"]}
    if aws.kms_key_id:
        args["--kms-key-id"] = aws.kms_key_id
    return args


def find_glue_run(hook: Any, job_name: str, run_key: str) -> dict[str, Any] | None:
    """The newest run of ``job_name`` started for ``run_key`` that is running or succeeded."""
    runs: list[dict[str, Any]] = []
    for page in hook.conn.get_paginator("get_job_runs").paginate(JobName=job_name):
        runs += page.get("JobRuns", [])
    mine = [r for r in runs if (r.get("Arguments") or {}).get("--ml-run-key") == run_key]
    mine = [r for r in mine if r.get("JobRunState") in ACTIVE_GLUE_STATES]
    return max(mine, key=lambda r: r.get("StartedOn") or 0, default=None)


def start_glue_collect(rc: Any, *, lookback_days: int, run_dir: str, log: Any) -> tuple[str, str]:
    """Start the Glue job run for this run folder, or re-attach to the one an earlier try started.
    Returns ``(job name, job run id)``."""
    from include.lifecycle.spec import resolve_source

    spec = rc.spec
    source = resolve_source(spec.data.source)
    labels = resolve_source(spec.data.labels.source) if spec.data.labels else None
    remote = [s for s in (source, labels) if s]
    if not all(s.startswith("s3://") for s in remote):
        _fail(
            f"backend aws runs collect_and_label in AWS Glue: data.source (and labels) must be s3:// URIs, got {remote}"
        )
    code = stage_code(rc.store)
    hook = glue_hook(spec, code)
    job_name = glue_job_name(spec)
    run_key = glue_run_key(spec.name, run_dir)
    hook.get_or_create_glue_job()
    earlier = find_glue_run(hook, job_name, run_key)
    if earlier:
        log(f"collect_and_label: re-attaching to Glue job run {job_name}/{earlier['Id']} ({earlier['JobRunState']})")
        return job_name, earlier["Id"]
    args = glue_arguments(
        spec,
        rc.store,
        run_dir=run_dir,
        as_of=rc.as_of.isoformat(),
        lookback_days=lookback_days,
        source=source,
        labels=labels,
    )
    run_id = hook.initialize_job(script_arguments=args)["JobRunId"]
    log(f"collect_and_label: started Glue job run {job_name}/{run_id} for {run_key}")
    return job_name, run_id


def _glue_client_hook(spec: Spec) -> Any:
    from airflow.providers.amazon.aws.hooks.glue import GlueJobHook

    aws = require_aws(spec)
    return GlueJobHook(
        aws_conn_id=aws.conn_id, region_name=aws.region, job_poll_interval=aws.poll_seconds, config=botocore_config()
    )


def finish_glue_collect(rc: Any, *, run_dir: str, job_name: str, run_id: str, log: Any) -> dict[str, Any]:
    """After the job run ended: check it succeeded, read its summary, register the curated partitions."""
    state = _glue_client_hook(rc.spec).get_job_state(job_name, run_id)
    if state != "SUCCEEDED":
        _fail(f"Glue job run {job_name}/{run_id} ended {state}")
    summary = rc.store.read_json(f"{run_dir}/collect_summary.json")
    register_curated_partitions(rc.store, rc.spec, [p["ds"] for p in summary["partitions"]], log=log)
    return summary


def run_glue_collect(rc: Any, *, lookback_days: int, run_dir: str, log: Any, on_start: Any = None) -> dict[str, Any]:
    """Run (or re-attach to) the Glue job for this run folder, wait in this process, register the partitions."""
    job_name, run_id = start_glue_collect(rc, lookback_days=lookback_days, run_dir=run_dir, log=log)
    if on_start:
        on_start(job_name, run_id)
    _glue_client_hook(rc.spec).job_completion(job_name, run_id)
    return finish_glue_collect(rc, run_dir=run_dir, job_name=job_name, run_id=run_id, log=log)


def _attempts(max_seconds: int, poll_seconds: int) -> int:
    return max(1, -(-max_seconds // poll_seconds))


def glue_trigger(spec: Spec, job_name: str, run_id: str) -> Any:
    """The provider's trigger that waits for the job run in the triggerer (deferrable wait)."""
    from airflow.providers.amazon.aws.triggers.glue import GlueJobCompleteTrigger

    aws = require_aws(spec)
    return GlueJobCompleteTrigger(
        job_name=job_name,
        run_id=run_id,
        waiter_delay=aws.poll_seconds,
        waiter_max_attempts=_attempts(aws.glue.timeout_minutes * 60 + 600, aws.poll_seconds),
        aws_conn_id=aws.conn_id,
        region_name=aws.region,
        botocore_config={"retries": dict(BOTOCORE_RETRIES)},
    )


def sagemaker_trigger(aws: AwsSpec, name: str, job_type: str, max_seconds: int) -> Any:
    """The provider's trigger that waits for a training, tuning or transform job in the triggerer."""
    from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger

    return SageMakerTrigger(
        job_name=name,
        job_type=job_type,
        waiter_delay=aws.poll_seconds,
        waiter_max_attempts=_attempts(max_seconds + 600, aws.poll_seconds),
        aws_conn_id=aws.conn_id,
        region_name=aws.region,
        botocore_config={"retries": dict(BOTOCORE_RETRIES)},
    )


def check_trigger_event(event: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """A trigger's event must say success (then it is returned); anything else fails the task with
    the trigger's message."""
    if not event or event.get("status") != "success":
        _fail(f"{what}: waiting in the triggerer ended with {event!r}")
    assert event is not None
    return event


# --- Glue Data Catalog ----------------------------------------------------------------------------
_HIVE = [
    (("int8", "int16", "int32"), "int"),
    (("int64", "uint32", "uint64"), "bigint"),
    (("float", "halffloat"), "float"),
    (("double",), "double"),
    (("bool",), "boolean"),
]


def hive_type(arrow_type: Any) -> str:
    t = str(arrow_type)
    if t.startswith("timestamp"):
        return "timestamp"
    if t.startswith("date32"):  # "date32[day]"
        return "date"
    if t.startswith("dictionary") or t in ("string", "large_string"):
        return "string"
    for names, hive in _HIVE:
        if t in names:
            return hive
    return "string"


def curated_table_name(spec: Spec) -> str:
    return f"{spec.name}_curated"


def register_curated_partitions(problem: Store, spec: Spec, days: list[str], *, log: Any) -> dict[str, Any]:
    """Create or update the ``<problem>_curated`` table (Parquet, partitioned by ``ds``) and add the
    partitions it lacks; returns what was registered."""
    import pyarrow.parquet as pq
    from airflow.providers.amazon.aws.hooks.glue_catalog import GlueCatalogHook

    aws = require_aws(spec)
    glue = GlueCatalogHook(aws_conn_id=aws.conn_id, region_name=aws.region, config=botocore_config()).conn
    db, table = aws.glue.database, curated_table_name(spec)
    days = sorted(set(days))
    if not days:
        return {"database": db, "table": table, "added": []}
    schema = pq.read_schema(problem.path(f"curated/ds={days[-1]}/part-0.parquet"), filesystem=problem.fs)
    columns = [{"Name": f.name, "Type": hive_type(f.type)} for f in schema if f.name != "ds"]
    location = s3_uri(problem, "curated") + "/"
    storage = {
        "Columns": columns,
        "Location": location,
        "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
        "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
        "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
    }
    table_input = {
        "Name": table,
        "Description": f"curated (typed, deduplicated, labelled, PII tokenised) data of {spec.name}",
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "parquet", "ml_lifecycle_problem": spec.name},
        "PartitionKeys": [{"Name": "ds", "Type": "string"}],
        "StorageDescriptor": storage,
    }
    try:
        glue.get_database(Name=db)
    except glue.exceptions.EntityNotFoundException:
        glue.create_database(DatabaseInput={"Name": db, "Description": "ml-lifecycle curated data"})
    try:
        glue.get_table(DatabaseName=db, Name=table)
        glue.update_table(DatabaseName=db, TableInput=table_input)
    except glue.exceptions.EntityNotFoundException:
        glue.create_table(DatabaseName=db, TableInput=table_input)
    have: set[str] = set()
    for page in glue.get_paginator("get_partitions").paginate(DatabaseName=db, TableName=table):
        have |= {p["Values"][0] for p in page["Partitions"]}
    new = [d for d in days if d not in have]
    for i in range(0, len(new), 100):  # the API takes at most 100 partitions per call
        batch = [
            {"Values": [d], "StorageDescriptor": {**storage, "Location": f"{location}ds={d}/"}}
            for d in new[i : i + 100]
        ]
        errors = glue.batch_create_partition(DatabaseName=db, TableName=table, PartitionInputList=batch).get("Errors")
        if errors:
            _fail(f"Glue catalog: could not add partitions to {db}.{table}: {errors}")
    log(f"collect_and_label: Glue catalog {db}.{table}: {len(new)} new partitions, {len(days)} in this window")
    return {"database": db, "table": table, "added": new}


# --- SageMaker: one training job per trial ---------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def training_job_name(problem: str, run_id: str, round_no: int, trial_id: str, attempt: int = 1) -> str:
    """Deterministic, unique per (problem, run, round, trial), <= 63 characters, SageMaker's pattern.
    ``attempt`` > 1 only after an earlier job of the same trial failed (names cannot be reused)."""
    digest = hashlib.sha256(f"{problem}|{run_id}|{round_no}|{trial_id}".encode()).hexdigest()[:10]
    tail = f"-r{round_no}-{digest}" + (f"-a{attempt}" if attempt > 1 else "")
    head = f"{_slug(problem)[:24]}-{_slug(trial_id)}".strip("-")
    return f"{head[: 63 - len(tail)].rstrip('-')}{tail}"


def training_image(aws: AwsSpec) -> str:
    if aws.training_image:
        return aws.training_image
    account = FRAMEWORK_REGISTRIES.get(aws.region)
    if account is None:
        _fail(f"no SageMaker framework image registry known for region {aws.region}: set aws.training_image")
    return f"{account}.dkr.ecr.{aws.region}.amazonaws.com/sagemaker-scikit-learn:{aws.framework_version}-cpu-py3"


def training_config(
    spec: Spec,
    problem: Store,
    *,
    name: str,
    run_id: str,
    round_dir: str,
    hyperparameters: list[str],
    code: dict[str, str],
) -> dict[str, Any]:
    aws = require_aws(spec)
    hp = dict(zip([a[2:] for a in hyperparameters[::2]], hyperparameters[1::2], strict=True))
    hp |= {
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": code["sourcedir.tar.gz"],
        "sagemaker_region": aws.region,
    }

    def channel(split: str) -> dict[str, Any]:
        uri = s3_uri(problem, f"{round_dir}/features/{split}") + "/"
        return {
            "ChannelName": split,
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
            },
            "ContentType": "application/x-parquet",
            "InputMode": "File",
        }

    output = {"S3OutputPath": s3_uri(problem, f"{round_dir}/sagemaker")}
    resources: dict[str, Any] = {
        "InstanceType": aws.training_instance_type,
        "InstanceCount": aws.training_instance_count,
        "VolumeSizeInGB": aws.training_volume_gb,
    }
    if aws.kms_key_id:
        output["KmsKeyId"] = aws.kms_key_id
        resources["VolumeKmsKeyId"] = aws.kms_key_id
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": training_image(aws), "TrainingInputMode": "File"},
        "RoleArn": aws.role_arn,
        "HyperParameters": hp,
        "InputDataConfig": [channel("train"), channel("validation")],
        "OutputDataConfig": output,
        "ResourceConfig": resources,
        "StoppingCondition": {"MaxRuntimeInSeconds": aws.training_max_runtime_seconds},
        "Tags": [
            {"Key": "ml-lifecycle:problem", "Value": spec.name},
            {"Key": "ml-lifecycle:run-id", "Value": run_id[:256]},
        ],
    }


def sagemaker_hook(aws: AwsSpec) -> Any:
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    return SageMakerHook(aws_conn_id=aws.conn_id, region_name=aws.region, config=botocore_config())


def _job_status(describe: Any, name: str, key: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        return describe(name)[key]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            return None  # SageMaker's answers for "no such job"
        raise


_STATUS_KEYS = {
    "training": "TrainingJobStatus",
    "tuning": "HyperParameterTuningJobStatus",
    "transform": "TransformJobStatus",
}


def _describe(hook: Any, kind: str) -> tuple[Any, str]:
    """The hook's describe method of a SageMaker job kind and the status key of its answer."""
    return getattr(hook, f"describe_{kind}_job"), _STATUS_KEYS[kind]


def start_or_attach(hook: Any, kind: str, config_for: Any, names: list[str], log: Any) -> str:
    """Walk a job's names in attempt order: attach to one that runs or completed, skip failed ones,
    create the first free name. ``kind`` is ``training``, ``tuning`` or ``transform``. Returns the
    job name to wait for."""
    describe, key = _describe(hook, kind)
    for name in names:
        status = _job_status(describe, name, key)
        if status is None:
            getattr(hook, f"create_{kind}_job")(config_for(name), wait_for_completion=False)
            log(f"started SageMaker {kind} job {name}")
            return name
        if status in ATTACHABLE_JOB_STATES:
            log(f"re-attaching to SageMaker {kind} job {name} ({status})")
            return name
        log(f"SageMaker {kind} job {name} ended {status}; the retry uses the next name")
    _fail(f"every attempt of this {kind} job failed: {names}")
    return ""


def _extract(tar_bytes: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:gz") as tf:
        for m in tf.getmembers():
            if m.isfile():
                fh = tf.extractfile(m)
                if fh is not None:
                    out[posixpath.normpath(m.name).lstrip("./")] = fh.read()
    return out


def _trial_job_names(rc: Any, round_no: int, trial: dict[str, Any], try_number: int) -> list[str]:
    naming = tuning_job_name if trial.get("tuning") else training_job_name
    return [naming(rc.spec.name, rc.run_id, round_no, trial["trial_id"], a) for a in range(1, try_number + 1)]


def start_trial_aws(rc: Any, round_no: int, trial: dict[str, Any], *, try_number: int, log: Any) -> tuple[str, str]:
    """Start the trial's SageMaker job (a training job, or a hyperparameter tuning job when the trial
    carries ``tuning`` ranges), or re-attach to the one an earlier try started.
    Returns ``(kind, job name)`` with kind ``training`` or ``tuning``."""
    from include.jobs.train import hyperparameter_args

    aws = require_aws(rc.spec)
    rd = rc.layout.round(round_no).dir
    plan = rc.store.read_json(rc.layout.round(round_no).plan)
    code = stage_code(rc.store)
    hps = hyperparameter_args(rc.spec, plan, trial)
    kind = "tuning" if trial.get("tuning") else "training"

    def config_for(name: str) -> dict[str, Any]:
        if kind == "tuning":
            return tuning_config(
                rc.spec, rc.store, name=name, run_id=rc.run_id, round_dir=rd, hyperparameters=hps, code=code,
                tuning=trial["tuning"],
            )  # fmt: skip
        return training_config(
            rc.spec, rc.store, name=name, run_id=rc.run_id, round_dir=rd, hyperparameters=hps, code=code
        )

    names = _trial_job_names(rc, round_no, trial, try_number)
    return kind, start_or_attach(sagemaker_hook(aws), kind, config_for, names, log)


def wait_job(aws: AwsSpec, kind: str, name: str) -> None:
    """Wait for a SageMaker job in this process (``aws.deferrable: false``); fails unless it completed."""
    hook = sagemaker_hook(aws)
    describe, key = _describe(hook, kind)
    hook.check_status(name, key, describe, aws.poll_seconds)


def _job_outputs(problem: Store, model_uri: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """``model.tar.gz`` and the ``output.tar.gz`` beside it (SM_MODEL_DIR, SM_OUTPUT_DATA_DIR)."""
    key = model_uri.removeprefix("s3://")
    output = _extract(problem.fs.cat_file(posixpath.join(posixpath.dirname(key), "output.tar.gz")))
    return _extract(problem.fs.cat_file(key)), output


def _completed(hook: Any, kind: str, name: str) -> dict[str, Any]:
    """The description of a SageMaker ``kind`` job that must have completed (else the task fails)."""
    describe, key = _describe(hook, kind)
    desc = describe(name)
    if desc[key] != "Completed":
        _fail(f"SageMaker {kind} job {name} ended {desc[key]}: {desc.get('FailureReason', '')}")
    return desc


def _keep_trial(rc: Any, trial_rel: str, model: dict[str, bytes], output: dict[str, bytes]) -> None:
    for fname, data in model.items():
        rc.store.write_bytes(f"{trial_rel}/model/{fname}", data)
    for fname, data in output.items():
        rc.store.write_bytes(f"{trial_rel}/output/{fname}", data)


def finish_trial_aws(
    rc: Any, round_no: int, trial: dict[str, Any], kind: str, name: str, *, log: Any
) -> dict[str, Any]:
    """After the job ended: its model and metrics land where the local backend puts them
    (``<round>/trials/<trial>/{model,output}``), so the next sections do not care where it ran."""
    if kind == "tuning":
        return finish_tuning_aws(rc, round_no, trial, name, log=log)
    hook = sagemaker_hook(require_aws(rc.spec))
    model_uri = _completed(hook, "training", name)["ModelArtifacts"]["S3ModelArtifacts"]
    trial_rel = f"{rc.layout.round(round_no).dir}/trials/{trial['trial_id']}"
    model, output = _job_outputs(rc.store, model_uri)
    if "metrics.json" not in output:
        _fail(f"training job {name} wrote no metrics.json to SM_OUTPUT_DATA_DIR ({sorted(output)})")
    _keep_trial(rc, trial_rel, model, output)
    result = json.loads(output["metrics.json"])
    result |= {"model_rel": f"{trial_rel}/model", "round": round_no, "training_job_name": name, "model_uri": model_uri}
    log(f"{trial['trial_id']}: SageMaker job {name}: validation {result['metric']}={result['validation_score']:.4f}")
    return result


def run_trial_aws(
    rc: Any, round_no: int, trial: dict[str, Any], *, try_number: int, log: Any, on_start: Any = None
) -> dict[str, Any]:
    """One trial as a SageMaker job, waited for in this process (``aws.deferrable: false``)."""
    kind, name = start_trial_aws(rc, round_no, trial, try_number=try_number, log=log)
    if on_start:
        on_start(kind, name)
    wait_job(require_aws(rc.spec), kind, name)
    return finish_trial_aws(rc, round_no, trial, kind, name, log=log)


# --- SageMaker: hyperparameter tuning jobs ----------------------------------------------------------
# train.py logs "validation <metric>=<score>"; SageMaker reads the objective from the job's log.
OBJECTIVE_METRIC = "validation:score"
OBJECTIVE_REGEX = r"validation [a-z0-9_]+=([-+0-9.eE]+)"


def tuning_job_name(problem: str, run_id: str, round_no: int, trial_id: str, attempt: int = 1) -> str:
    """Deterministic, unique per (problem, run, round, trial): SageMaker allows 32 characters here
    (the training jobs it starts append ``-NNN-xxxxxxxx``)."""
    digest = hashlib.sha256(f"{problem}|{run_id}|{round_no}|{trial_id}".encode()).hexdigest()[:8]
    tail = f"-r{round_no}-{digest}" + (f"a{attempt}" if attempt > 1 else "")
    return f"{_slug(problem)[: 32 - len(tail)].rstrip('-')}{tail}"


def tuning_config(
    spec: Spec,
    problem: Store,
    *,
    name: str,
    run_id: str,
    round_dir: str,
    hyperparameters: list[str],
    code: dict[str, str],
    tuning: dict[str, Any],
) -> dict[str, Any]:
    """A hyperparameter tuning job over the trial's categorical ranges; the static hyperparameters
    and the channels are those of a single training job of the family."""
    aws = require_aws(spec)
    job = training_config(
        spec, problem, name=name, run_id=run_id, round_dir=round_dir, hyperparameters=hyperparameters, code=code
    )
    ranges = {k: [json.dumps(v) for v in values] for k, values in tuning["ranges"].items()}
    static = {k: v for k, v in job["HyperParameters"].items() if k not in ranges}
    algorithm = job["AlgorithmSpecification"] | {
        "MetricDefinitions": [{"Name": OBJECTIVE_METRIC, "Regex": OBJECTIVE_REGEX}]
    }
    definition = {
        "StaticHyperParameters": static,
        "AlgorithmSpecification": algorithm,
        "RoleArn": job["RoleArn"],
        "InputDataConfig": job["InputDataConfig"],
        "OutputDataConfig": job["OutputDataConfig"],
        "ResourceConfig": job["ResourceConfig"],
        "StoppingCondition": job["StoppingCondition"],
    }
    return {
        "HyperParameterTuningJobName": name,
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


def tuning_training_jobs(hook: Any, name: str) -> list[dict[str, Any]]:
    """Summaries of the training jobs the tuning job ran."""
    conn = hook.get_conn()
    jobs: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"HyperParameterTuningJobName": name, "MaxResults": 100}
    while True:
        page = conn.list_training_jobs_for_hyper_parameter_tuning_job(**kwargs)
        jobs += page.get("TrainingJobSummaries", [])
        if not page.get("NextToken"):
            return jobs
        kwargs["NextToken"] = page["NextToken"]


def finish_tuning_aws(rc: Any, round_no: int, trial: dict[str, Any], name: str, *, log: Any) -> dict[str, Any]:
    """After the tuning job ended: read every completed training job's metrics, keep the best on
    validation (the project's own score, not the log-scraped objective) as the trial's model."""
    from include.lifecycle.models import best_trial

    aws = require_aws(rc.spec)
    hook = sagemaker_hook(aws)
    _completed(hook, "tuning", name)
    results, models = [], {}
    summaries = tuning_training_jobs(hook, name)
    for i, summary in enumerate(sorted(summaries, key=lambda s: s["TrainingJobName"]), start=1):
        job = summary["TrainingJobName"]
        if summary.get("TrainingJobStatus") != "Completed":
            log(f"{trial['trial_id']}: tuning job {name}: training job {job} ended {summary.get('TrainingJobStatus')}")
            continue
        model_uri = _completed(hook, "training", job)["ModelArtifacts"]["S3ModelArtifacts"]
        model, output = _job_outputs(rc.store, model_uri)
        if "metrics.json" not in output:
            _fail(f"training job {job} of tuning job {name} wrote no metrics.json ({sorted(output)})")
        result = json.loads(output["metrics.json"]) | {"training_job_name": job, "model_uri": model_uri}
        results.append(result)
        models[job] = (model, output)
        log(
            f"{trial['trial_id']}: tuning job {name}: training job {i} of {len(summaries)} {job} "
            f"{summary.get('TunedHyperParameters')}: validation {result['metric']}={result['validation_score']:.4f}"
        )
    if not results:
        _fail(f"SageMaker tuning job {name} completed no training job")
    best = best_trial(results, higher_is_better=rc.spec.goal.higher_is_better)
    trial_rel = f"{rc.layout.round(round_no).dir}/trials/{trial['trial_id']}"
    _keep_trial(rc, trial_rel, *models[best["training_job_name"]])
    rc.store.write_json(f"{trial_rel}/tuning.json", {"tuning_job_name": name, "training_jobs": results})
    best = dict(best) | {
        "trial_id": trial["trial_id"],
        "model_rel": f"{trial_rel}/model",
        "round": round_no,
        "tuning_job_name": name,
        "tuning_training_jobs": len(results),
    }
    log(
        f"{trial['trial_id']}: tuning job {name}: best of {len(results)} training jobs is "
        f"{best['training_job_name']} (validation {best['metric']}={best['validation_score']:.4f})"
    )
    return best


# --- SageMaker: model registry and endpoint ------------------------------------------------------
def _missing(exc: Exception) -> bool:
    """SageMaker answers "no such thing" with a ValidationException."""
    return getattr(exc, "response", {}).get("Error", {}).get("Code") == "ValidationException"


def publish_champion(spec: Spec, problem: Store, version: int, *, run_id: str, log: Any) -> dict[str, Any]:
    """Register registry version ``version`` as an approved model package (group ``<problem>``) and
    point the endpoint at it: ``create_endpoint`` the first time, ``update_endpoint`` afterwards.
    ``model.tar.gz`` is the registry version verbatim (checksums verified, with its manifest), as the
    serving container loads it. Every step looks before it creates: a retried deploy creates nothing twice."""
    from botocore.exceptions import ClientError

    from include.lifecycle.registry import ModelRegistry

    aws = require_aws(spec)
    if not aws.serving_image:
        _fail("deploying to a SageMaker endpoint needs aws.serving_image (an image serving the hosting contract)")
    sm = sagemaker_hook(aws).get_conn()
    rel = f"sagemaker/models/v{version}/model.tar.gz"
    if not problem.exists(rel):
        registry = ModelRegistry(problem.sub("registry"))
        files = registry.load(version) | {
            "manifest.json": problem.read_bytes(f"registry/versions/{version}/manifest.json"),
            # the serving container checks rows with the spec's schema rules (serving.py --model-dir)
            "spec.json": json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True).encode(),
        }
        problem.write_bytes(rel, _targz(files))
    container = {"Image": aws.serving_image, "ModelDataUrl": s3_uri(problem, rel)}
    group = _slug(spec.name)[:63]
    try:
        sm.describe_model_package_group(ModelPackageGroupName=group)
    except ClientError as exc:
        if not _missing(exc):
            raise
        sm.create_model_package_group(ModelPackageGroupName=group, ModelPackageGroupDescription=spec.title[:1024])
    package_arn = None
    for summary in sm.list_model_packages(ModelPackageGroupName=group).get("ModelPackageSummaryList", []):
        desc = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
        if (desc.get("CustomerMetadataProperties") or {}).get("ml_lifecycle_version") == str(version):
            package_arn = summary["ModelPackageArn"]
    if package_arn is None:
        package_arn = sm.create_model_package(
            ModelPackageGroupName=group,
            ModelPackageDescription=f"{spec.name} registry version {version} (run {run_id})"[:1024],
            InferenceSpecification={
                "Containers": [container],
                "SupportedContentTypes": ["text/csv", "application/json"],
                "SupportedResponseMIMETypes": ["application/json", "text/csv"],
            },
            ModelApprovalStatus="Approved",
            CustomerMetadataProperties={"ml_lifecycle_version": str(version), "ml_lifecycle_run_id": run_id[:256]},
        )["ModelPackageArn"]
    model = champion_model_name(spec, version)
    if not _model_exists(sm, model):
        sm.create_model(ModelName=model, PrimaryContainer=container, ExecutionRoleArn=aws.role_arn)
    try:
        sm.describe_endpoint_config(EndpointConfigName=model)
    except ClientError as exc:
        if not _missing(exc):
            raise
        variant = {
            "VariantName": "AllTraffic",
            "ModelName": model,
            "InstanceType": aws.serving_instance_type,
            "InitialInstanceCount": aws.serving_instance_count,
        }
        extra = {"KmsKeyId": aws.kms_key_id} if aws.kms_key_id else {}
        sm.create_endpoint_config(EndpointConfigName=model, ProductionVariants=[variant], **extra)
    endpoint = _slug(spec.deploy.endpoint_name or spec.name)[:63]
    try:
        current = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    except ClientError as exc:
        if not _missing(exc):
            raise
        current = None
    if current is None:
        sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=model)
        action = "created"
    elif current != model:
        sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=model, DeploymentConfig=BLUE_GREEN_UPDATE)
        action = "updated"
    else:
        action = "unchanged"
    log(f"deploy_model: model package {package_arn}; endpoint {endpoint} {action} -> {model}")
    return {"model_package_arn": package_arn, "model_name": model, "endpoint_name": endpoint, "endpoint": action}


# An endpoint update is blue/green: SageMaker brings up the new fleet, shifts all traffic at once
# when it is healthy, and keeps the old fleet 10 minutes before terminating it (a quick way back).
BLUE_GREEN_UPDATE = {
    "BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
        "TerminationWaitInSeconds": 600,
    }
}


def champion_model_name(spec: Spec, version: int) -> str:
    """The SageMaker model (and endpoint config) of registry version ``version``."""
    return f"{_slug(spec.name)[:50]}-v{version}"


# --- SageMaker: batch transform (the batch-scoring DAG) ---------------------------------------------
TRANSFORM_SHARD_ROWS = 20_000  # rows of one input file = one /invocations request (MaxPayloadInMB 6)


def transform_job_name(problem: str, run_id: str, ds: str, attempt: int = 1) -> str:
    """Deterministic, unique per (problem, run, day), <= 63 characters."""
    digest = hashlib.sha256(f"{problem}|{run_id}|{ds}".encode()).hexdigest()[:10]
    tail = f"-score-{ds.replace('-', '')}-{digest}" + (f"-a{attempt}" if attempt > 1 else "")
    return f"{_slug(problem)[: 63 - len(tail)].rstrip('-')}{tail}"


def transform_folder(run_id: str, ds: str) -> str:
    from include.lifecycle.store import safe_run_id

    return f"scores/_transform/ds={ds}/{safe_run_id(run_id)}"


def prepare_transform(rc: Any, ds: str, *, pii_key: bytes, log: Any) -> dict[str, Any]:
    """Curate day ``ds`` and its history (rejected rows counted, PII tokenised) and write the
    transform input: CSV files of about TRANSFORM_SHARD_ROWS rows, the day's rows of some entities
    after the history rows of the same entities, so the endpoint's per-entity features see the same past
    as in training (all rows of an entity land in the same file: one request). Idempotent: a
    retry finds ``prepare.json`` and re-uses the files."""
    import numpy as np
    import pandas as pd

    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.scoring import NoChampion, curate_for_scoring, input_schema, load_champion
    from include.lifecycle.spec import resolve_source

    spec = rc.spec
    folder = transform_folder(rc.run_id, ds)
    if rc.store.exists(f"{folder}/prepare.json"):
        log(f"score_new_data: re-using the transform input of this run ({rc.store.uri(folder)})")
        return rc.store.read_json(f"{folder}/prepare.json")
    try:
        champion = load_champion(ModelRegistry(rc.store.sub("registry")), spec.name)
    except NoChampion as exc:
        _fail(f"cannot score ds={ds}: {exc}")
    model = champion_model_name(spec, champion.version)
    if not _model_exists(sagemaker_hook(require_aws(spec)).get_conn(), model):
        _fail(
            f"champion v{champion.version} has no SageMaker model {model!r}: deploy it with backend aws "
            "(deploy_model creates the model, the endpoint config and the endpoint)"
        )
    source = rc.input_store(resolve_source(spec.data.source))
    try:
        rows, context, counts, history = curate_for_scoring(spec, source=source, ds=ds, pii_key=pii_key)
    except FileNotFoundError as exc:
        _fail(str(exc))
    key, entity, time_col = spec.data.key, spec.data.entity_column, spec.data.time_column
    if not key:
        _fail(f"{spec.name}: batch transform needs data.key to match predictions to rows")
    columns = [c.name for c in input_schema(spec, champion.bundle)]
    columns += [key] if key not in columns else []
    history_rows = 0 if context is None else len(context)
    if context is not None and entity:  # only the past of the day's entities is needed
        context = context.loc[context[entity].isin(rows[entity]), columns]
    shards = max(1, -(-(len(rows) + (0 if context is None else len(context))) // TRANSFORM_SHARD_ROWS))

    def shard_of(frame: pd.DataFrame) -> np.ndarray:
        if entity:
            return pd.util.hash_array(frame[entity].astype(str).to_numpy()) % shards
        return np.arange(len(frame)) % shards

    day_shard = shard_of(rows)
    ctx_shard = shard_of(context) if context is not None and entity else None
    for i in range(shards):
        part = rows.loc[day_shard == i, columns]
        if ctx_shard is not None and context is not None:
            part = pd.concat([context.loc[ctx_shard == i], part], ignore_index=True)
        rc.store.write_bytes(f"{folder}/input/part-{i:04d}.csv", part.to_csv(index=False).encode())
    rc.store.write_parquet(f"{folder}/rows.parquet", rows[[c for c in (key, time_col) if c]])
    prepared = {
        "ds": ds,
        "model_name": model,
        "version": champion.version,
        "threshold": champion.threshold,
        "shards": shards,
        "counts": counts,
        "history": history,
        "history_rows": history_rows,
        "context_rows": 0 if context is None else len(context),
        "champion_deployed_at": champion.record.get("deployed_at"),
        "source_uri": source.uri(f"ds={ds}"),
    }
    rc.store.write_json(f"{folder}/prepare.json", prepared)
    log(
        f"score_new_data: ds={ds}: {len(rows)} rows (+ {prepared['context_rows']} earlier rows of their entities) in "
        f"{shards} transform input files for model {model}"
    )
    return prepared


def _model_exists(sm: Any, model: str) -> bool:
    """Whether the SageMaker model exists (``sm``: a SageMaker client)."""
    from botocore.exceptions import ClientError

    try:
        sm.describe_model(ModelName=model)
    except ClientError as exc:
        if _missing(exc):
            return False
        raise
    return True


def transform_config(spec: Spec, problem: Store, *, name: str, model: str, folder: str, run_id: str) -> dict[str, Any]:
    aws = require_aws(spec)
    output: dict[str, Any] = {
        "S3OutputPath": s3_uri(problem, f"{folder}/output"),
        "Accept": "text/csv",
        "AssembleWith": "None",
    }
    resources: dict[str, Any] = {
        "InstanceType": aws.transform_instance_type,
        "InstanceCount": aws.transform_instance_count,
    }
    if aws.kms_key_id:
        output["KmsKeyId"] = aws.kms_key_id
        resources["VolumeKmsKeyId"] = aws.kms_key_id
    return {
        "TransformJobName": name,
        "ModelName": model,
        "MaxConcurrentTransforms": 1,  # the serving container scores one request at a time
        "MaxPayloadInMB": 6,
        "BatchStrategy": "SingleRecord",  # SplitType None: one file is one request
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": s3_uri(problem, f"{folder}/input/")}},
            "ContentType": "text/csv",
            "CompressionType": "None",
            "SplitType": "None",
        },
        "TransformOutput": output,
        "TransformResources": resources,
        "Tags": [
            {"Key": "ml-lifecycle:problem", "Value": spec.name},
            {"Key": "ml-lifecycle:run-id", "Value": run_id[:256]},
        ],
    }


def start_transform(rc: Any, ds: str, *, try_number: int, pii_key: bytes, log: Any) -> str:
    """Prepare the input (once per run) and start the transform job, or re-attach to the one an
    earlier try started. Returns the job name."""
    prepared = prepare_transform(rc, ds, pii_key=pii_key, log=log)
    folder = transform_folder(rc.run_id, ds)
    names = [transform_job_name(rc.spec.name, rc.run_id, ds, a) for a in range(1, try_number + 1)]

    def config_for(name: str) -> dict[str, Any]:
        return transform_config(
            rc.spec, rc.store, name=name, model=prepared["model_name"], folder=folder, run_id=rc.run_id
        )

    return start_or_attach(sagemaker_hook(require_aws(rc.spec)), "transform", config_for, names, log)


def finish_transform(rc: Any, ds: str, name: str, *, log: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """After the job ended: the predictions of the day's rows (the context rows' are dropped) in the
    local backend's shape, the accounting ``rows_in = rows_scored + rows_quarantined`` and what
    :func:`prepare_transform` recorded."""
    import pandas as pd

    from include.lifecycle.scoring import finish_scores

    _completed(sagemaker_hook(require_aws(rc.spec)), "transform", name)
    folder = transform_folder(rc.run_id, ds)
    prepared = rc.store.read_json(f"{folder}/prepare.json")
    key = rc.spec.data.key
    rows = rc.store.read_parquet(f"{folder}/rows.parquet")
    preds = []
    for i in range(prepared["shards"]):
        out = f"{folder}/output/part-{i:04d}.csv.out"
        if not rc.store.exists(out):
            _fail(f"transform job {name} wrote no {rc.store.uri(out)}")
        preds.append(pd.read_csv(io.BytesIO(rc.store.read_bytes(out)), dtype={"id": str}))
    pred = pd.concat(preds, ignore_index=True).drop_duplicates("id", keep="last").set_index("id")
    ids = rows[key].astype(str)
    missing = int((~ids.isin(pred.index)).sum())
    if missing:
        _fail(f"transform job {name}: {missing} of {len(rows)} rows of ds={ds} have no prediction")
    got = pred.loc[ids.to_numpy()]
    scored = pd.DataFrame({key: rows[key].to_numpy(), "score": got["score"].to_numpy(dtype="float64")})
    scored["decision"] = pd.array(got["decision"].to_numpy(), dtype="Int8")
    scored["model_version"] = got["model_version"].to_numpy(dtype="int64")
    log(f"score_new_data: transform job {name}: {len(scored)} predictions for ds={ds}")
    scores, summary = finish_scores(
        rc.spec, rows, scored, prepared["counts"], ds=ds, version=prepared["version"],
        threshold=prepared["threshold"], history=prepared["history"], history_rows=prepared["history_rows"],
    )  # fmt: skip
    return scores, summary, prepared


def stop_glue_run(spec: Spec, job_name: str, run_id: str) -> None:
    _glue_client_hook(spec).conn.batch_stop_job_run(JobName=job_name, JobRunIds=[run_id])


def stop_job(spec: Spec, kind: str, name: str) -> None:
    """Stop a SageMaker training, tuning or transform job (``on_kill``)."""
    conn = sagemaker_hook(require_aws(spec)).get_conn()
    if kind == "tuning":
        conn.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    elif kind == "transform":
        conn.stop_transform_job(TransformJobName=name)
    else:
        conn.stop_training_job(TrainingJobName=name)
