"""The artifact store in S3: every object the backend writes is encrypted on the server."""

from __future__ import annotations

from typing import Any

from include.lifecycle.spec import AwsSpec, Spec
from include.lifecycle.store import Store
from ml_lifecycle.aws.common import BOTOCORE_RETRIES, require_aws


def sse_kwargs(aws: AwsSpec) -> dict[str, str]:
    """Server-side encryption of every object the backend writes: SSE-KMS with the spec's key, else SSE-S3."""
    if aws.kms_key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": aws.kms_key_id}
    return {"ServerSideEncryption": "AES256"}


def kms_encrypted(aws: AwsSpec, output: dict[str, Any], resources: dict[str, Any]) -> tuple[dict, dict]:
    """A SageMaker job's output config and resources, with the spec's KMS key (if any) for its
    output in S3 and its instances' volumes."""
    if not aws.kms_key_id:
        return output, resources
    return output | {"KmsKeyId": aws.kms_key_id}, resources | {"VolumeKmsKeyId": aws.kms_key_id}


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


def s3_input_store(spec: Spec, uri: str) -> Store:
    """A read view of an input location; ``s3://`` through the spec's connection (credentials, endpoint)."""
    if uri.startswith("s3://"):
        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath(f"s3://{spec.aws.conn_id}@{uri.removeprefix('s3://')}")
        return Store(path.fs, path.path)
    return Store.from_uri(uri)


def s3_uri(store: Store, rel: str = "") -> str:
    return f"s3://{store.path(rel)}" if rel else f"s3://{store.root}"
