"""Entry point of the collect-and-label ETL: the same file runs in-process (local backend)
and as an AWS Glue job (aws backend), where Glue passes ``--name value`` args.

    python -m include.jobs.collect_and_label --spec include/problems/card_fraud.yaml \
        --artifact-root file:///.../artifacts/card_fraud --run-dir runs/<run> \
        --as-of 2026-11-01T00:00:00+00:00 --lookback-days 28 --pii-key-env ML_PII_HASH_KEY

``--engine pandas`` (the default: the local backend and a Glue ``pythonshell`` job) runs
:func:`include.lifecycle.collect.collect_and_label` in this process; ``--engine spark`` (a Glue
``glueetl`` job) runs :func:`include.lifecycle.collect_spark.collect_and_label_spark` on the job's
Spark session, the executors reading and writing the partitions (same outputs; ``--spark-master``
only outside Glue, e.g. ``local[2]``). The summary's ``engine`` says which ran.

On Glue the key comes from Secrets Manager (``--pii-key-secret``) and every object written to S3
is encrypted on the server (``--sse aws:kms --kms-key-id ...`` or ``--sse AES256``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from include.lifecycle.collect import collect_and_label
from include.lifecycle.layout import RunLayout
from include.lifecycle.spec import load_spec, parse_spec, resolve_source
from include.lifecycle.store import Store, to_json


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, help="path of the problem YAML, or the spec as JSON text")
    p.add_argument("--artifact-root", required=True, help="URI of <root>/<problem>")
    p.add_argument("--run-dir", required=True, help="run-scoped folder relative to the problem root")
    p.add_argument("--as-of", required=True, help="data interval end (ISO 8601)")
    p.add_argument("--lookback-days", type=int, required=True)
    p.add_argument("--pii-key-env", default="ML_PII_HASH_KEY", help="environment variable holding the PII key")
    p.add_argument("--source", default=None, help="override data.source")
    p.add_argument("--labels", default=None, help="override data.labels.source")
    p.add_argument("--pii-key-secret", default=None, help="AWS Secrets Manager secret holding the PII key (Glue)")
    p.add_argument("--region", default=None, help="AWS region of the secret")
    p.add_argument("--sse", default=None, choices=["aws:kms", "AES256"], help="S3 server-side encryption of writes")
    p.add_argument("--kms-key-id", default=None, help="KMS key of --sse aws:kms")
    p.add_argument("--engine", default="pandas", choices=["pandas", "spark"], help="pandas in process, or Spark")
    p.add_argument("--spark-master", default=None, help="Spark master outside Glue (default: PySpark's)")
    args, _unknown = p.parse_known_args(argv)  # Glue adds its own --JOB_NAME etc.
    return args


def main(argv: Sequence[str] | None = None, *, pii_key: bytes | None = None, log: Any = print) -> dict[str, Any]:
    args = parse_args(argv)
    spec = (
        parse_spec(json.loads(args.spec), "<spec json>") if args.spec.lstrip().startswith("{") else load_spec(args.spec)
    )
    if pii_key is not None:
        key = pii_key
    elif args.pii_key_secret:
        key = secret_key(args.pii_key_secret, args.region)
    else:
        key = os.environ.get(args.pii_key_env, "").encode()
    source = resolve_source(args.source or spec.data.source)
    labels = resolve_source(args.labels or spec.data.labels.source) if spec.data.labels else None
    problem = Store.from_uri(args.artifact_root, **storage_options(args))
    run = {
        "problem": problem,
        "run_dir": args.run_dir,
        "as_of": dt.datetime.fromisoformat(args.as_of),
        "lookback_days": args.lookback_days,
        "pii_key": key,
        "source_uri": source,
        "labels_uri": labels,
        "log": log,
    }
    if args.engine == "spark":
        from include.lifecycle.collect_spark import collect_and_label_spark, spark_fallback_reason, spark_session

        log(f"collect_and_label: engine spark (master {args.spark_master or 'of the job'})")
        spark = None if spark_fallback_reason(spec) else spark_session(args.spark_master)
        summary = collect_and_label_spark(spec, spark=spark, **run)
    else:
        summary = collect_and_label(spec, **run) | {"engine": {"name": "pandas"}}
    problem.write_json(RunLayout.collect_summary_in(args.run_dir), summary)
    return summary


def storage_options(args: argparse.Namespace) -> dict[str, Any]:
    """s3fs options that encrypt every object the job writes (``--sse``, ``--kms-key-id``)."""
    if not args.sse or not args.artifact_root.startswith("s3://"):
        return {}
    extra = {"ServerSideEncryption": args.sse}
    if args.sse == "aws:kms" and args.kms_key_id:
        extra["SSEKMSKeyId"] = args.kms_key_id
    return {"s3_additional_kwargs": extra}


def secret_key(secret_id: str, region: str | None) -> bytes:
    """The PII key from AWS Secrets Manager (the Glue job's role may read this one secret)."""
    import boto3

    value = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=secret_id)
    return (value.get("SecretString") or value["SecretBinary"].decode()).encode()


if __name__ == "__main__":  # pragma: no cover - exercised as a Glue job / CLI
    print(to_json(main(sys.argv[1:])))
