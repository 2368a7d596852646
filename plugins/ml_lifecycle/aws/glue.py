"""collect_and_label as an AWS Glue job (the provider's ``GlueJobOperator``) and the curated
partitions in the Glue Data Catalog.

The job's script is ``include/jobs/collect_and_label.py`` with ``include/`` as an
``--extra-py-files`` zip. A ``glueetl`` job (Glue 5.0: Spark 3.5, Python 3.11; the default) runs
it with ``--engine spark``: the files are read, curated (``curate_ibis`` on Ibis's PySpark backend)
and the curated partitions written by the Spark executors, so ``aws.glue.number_of_workers`` adds
workers to the work (:mod:`include.lifecycle.collect_spark`); its ``--additional-python-modules``
add Ibis (pinned; Spark itself is Glue's). A ``pythonshell`` job runs ``--engine pandas`` on its
one machine (collect.py). The job definition is named after the code's digest, so it never
changes under its name (no ``update_job``). A job run carries ``--ml-run-key <problem>/<run
folder>``, by which a retried task finds it again.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from include.lifecycle.layout import CURATED, RunLayout
from include.lifecycle.spec import AwsSpec, Spec
from include.lifecycle.store import Store
from ml_lifecycle.aws.code import code_digest, stage_code
from ml_lifecycle.aws.common import botocore_config, fail, provider_kwargs, require_aws, wait_attempts
from ml_lifecycle.aws.operators import RUN_KEY_ARG, CollectGlueJob
from ml_lifecycle.aws.store import s3_uri, sse_kwargs

# Python packages the Glue job installs (--additional-python-modules), pinned to the versions
# this project runs with, so the job computes exactly what the local backend computes.
GLUE_MODULES = ("pandas", "numpy", "pyarrow", "pydantic", "pyyaml", "s3fs", "fsspec")
# and what the Spark engine of a glueetl job adds (never pyspark: Glue 5.0 ships Spark 3.5)
GLUE_SPARK_MODULES = ("ibis-framework", "sqlglot", "pyarrow-hotfix")


def glue_engine(job_type: str) -> str:
    """The job script's ``--engine`` for a Glue job type: Spark on ``glueetl``, pandas on ``pythonshell``."""
    return "spark" if job_type == "glueetl" else "pandas"


def glue_job_name(spec: Spec) -> str:
    """One immutable job definition per problem and code version."""
    return f"ml-{spec.name}-collect-and-label-{code_digest()}"


def glue_run_key(problem: str, run_dir: str) -> str:
    return f"{problem}/{run_dir}"


def _modules(job_type: str = "pythonshell") -> str:
    out = []
    for dist in GLUE_MODULES + (GLUE_SPARK_MODULES if glue_engine(job_type) == "spark" else ()):
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
        "--additional-python-modules": _modules(g.job_type),
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
        "--engine": glue_engine(aws.glue.job_type),
        "--source": source,
        "--pii-key-secret": aws.pii_key_secret,
        "--region": aws.region,
        RUN_KEY_ARG: glue_run_key(spec.name, run_dir),
    }
    if labels:
        args["--labels"] = labels
    args |= {"--sse": sse_kwargs(aws)["ServerSideEncryption"]}
    if aws.kms_key_id:
        args["--kms-key-id"] = aws.kms_key_id
    return args


def collect_job(rc: Any, task_id: str, *, lookback_days: int, run_dir: str) -> CollectGlueJob:
    """The Glue job run of the collection into ``run_dir``, as the provider operator of our task."""
    from include.lifecycle.spec import resolve_source

    spec = rc.spec
    aws = require_aws(spec)
    source = resolve_source(spec.data.source)
    labels = resolve_source(spec.data.labels.source) if spec.data.labels else None
    remote = [s for s in (source, labels) if s]
    if not all(s.startswith("s3://") for s in remote):
        fail(
            f"backend aws runs collect_and_label in AWS Glue: data.source (and labels) must be s3:// URIs, got {remote}"
        )
    code = stage_code(rc.store)
    create_job_kwargs, dpus = glue_job_kwargs(aws, code)
    args = glue_arguments(
        spec, rc.store, run_dir=run_dir, as_of=rc.as_of.isoformat(), lookback_days=lookback_days, source=source,
        labels=labels,
    )  # fmt: skip
    return CollectGlueJob(
        run_key=args[RUN_KEY_ARG],
        job_name=glue_job_name(spec),
        job_desc=f"ml-lifecycle collect_and_label for {spec.name} (code {code_digest()})",
        script_location=code["collect_and_label.py"],
        script_args=args,
        iam_role_arn=aws.role_arn,
        create_job_kwargs=create_job_kwargs,
        num_of_dpus=dpus,
        concurrent_run_limit=max(2, spec.max_active_runs),
        retry_limit=0,  # Airflow retries the task, which re-attaches; Glue must not run it twice
        deferrable=aws.deferrable,
        job_poll_interval=aws.poll_seconds,
        waiter_delay=aws.poll_seconds,
        waiter_max_attempts=wait_attempts(aws.glue.timeout_minutes * 60 + 600, aws.poll_seconds),
        **provider_kwargs(aws, task_id),
    )


def finish_collect(rc: Any, *, run_dir: str, log: Any) -> dict[str, Any]:
    """After the job run succeeded: its summary, with the curated partitions in the catalog."""
    summary = rc.store.read_json(RunLayout.collect_summary_in(run_dir))
    register_curated_partitions(rc.store, rc.spec, [p["ds"] for p in summary["partitions"]], log=log)
    return summary


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
    catalog = GlueCatalogHook(aws_conn_id=aws.conn_id, region_name=aws.region, config=botocore_config())
    glue = catalog.conn
    db, table = aws.glue.database, curated_table_name(spec)
    days = sorted(set(days))
    if not days:
        return {"database": db, "table": table, "added": []}
    schema = pq.read_schema(problem.path(f"{CURATED}/ds={days[-1]}/part-0.parquet"), filesystem=problem.fs)
    columns = [{"Name": f.name, "Type": hive_type(f.type)} for f in schema if f.name != "ds"]
    location = s3_uri(problem, CURATED) + "/"
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
    have = {values[0] for values in catalog.get_partitions(db, table)}  # every page
    new = [d for d in days if d not in have]
    for i in range(0, len(new), 100):  # the API takes at most 100 partitions per call
        batch = [
            {"Values": [d], "StorageDescriptor": {**storage, "Location": f"{location}ds={d}/"}}
            for d in new[i : i + 100]
        ]
        errors = glue.batch_create_partition(DatabaseName=db, TableName=table, PartitionInputList=batch).get("Errors")
        if errors:
            fail(f"Glue catalog: could not add partitions to {db}.{table}: {errors}")
    log(f"collect_and_label: Glue catalog {db}.{table}: {len(new)} new partitions, {len(days)} in this window")
    return {"database": db, "table": table, "added": new}
