"""What every part of the ``aws`` backend shares: the spec's aws settings, the retry policy of every
AWS client, the arguments of the provider's operators and hooks, and SageMaker's name rules."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn

from include.lifecycle.spec import AwsSpec, Spec

# Throttling and transient errors: botocore retries every AWS call with adaptive back-off (client-side
# rate limiting plus exponential back-off with jitter), in the workers and in the triggers alike.
BOTOCORE_RETRIES = {"mode": "adaptive", "max_attempts": 10}


def botocore_config() -> dict[str, Any]:
    """The botocore client configuration of every hook, operator and trigger (a fresh dict each time)."""
    return {"retries": dict(BOTOCORE_RETRIES)}


def fail(msg: str) -> NoReturn:
    """Fail the task for a reason a retry cannot fix."""
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(msg)


def require_aws(spec: Spec) -> AwsSpec:
    """The spec's aws settings, or a clear failure when a run asks for aws on a spec without them."""
    aws = spec.aws
    if not (aws.bucket and aws.role_arn):
        fail(f"problem {spec.name!r}: backend aws needs aws.bucket and aws.role_arn in its spec")
    return aws


def provider_kwargs(aws: AwsSpec, task_id: str) -> dict[str, Any]:
    """The arguments every Amazon provider operator of a task gets: our task's id, the spec's
    connection and region, the retry policy."""
    return {
        "task_id": task_id,
        "aws_conn_id": aws.conn_id,
        "region_name": aws.region,
        "botocore_config": botocore_config(),
    }


def job_tags(spec: Spec, run_id: str) -> list[dict[str, str]]:
    """The tags of every SageMaker job: which problem and which run it belongs to."""
    return [
        {"Key": "ml-lifecycle:problem", "Value": spec.name},
        {"Key": "ml-lifecycle:run-id", "Value": run_id[:256]},
    ]


def sagemaker_hook(aws: AwsSpec) -> Any:
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    return SageMakerHook(aws_conn_id=aws.conn_id, region_name=aws.region, config=botocore_config())


def wait_attempts(max_seconds: int, poll_seconds: int) -> int:
    """How many polls every ``poll_seconds`` cover ``max_seconds``."""
    return max(1, -(-max_seconds // poll_seconds))


def slug(text: str) -> str:
    """``text`` in SageMaker's name alphabet (letters, digits, single dashes)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def describe_or_none(describe: Callable[[str], dict[str, Any]], name: str) -> dict[str, Any] | None:
    """What SageMaker's ``describe`` says of ``name``, None when there is no such thing (SageMaker
    answers that with ValidationException, or ResourceNotFound for tuning jobs)."""
    from botocore.exceptions import ClientError

    try:
        return describe(name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            return None
        raise
