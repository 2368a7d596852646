"""deploy_model on SageMaker: the champion as an approved model package version and the endpoint on
it (the provider's ``SageMakerRegisterModelVersionOperator`` and ``SageMakerEndpointOperator``).

``model.tar.gz`` is the registry version verbatim (checksums verified, with its manifest and the
spec the serving container checks rows with). The endpoint (``deploy.endpoint_name``, else the
problem) is created on the first deploy and updated blue/green on later ones; the deploy returns
once it is ``InService``. Every step looks before it creates: a retried deploy creates nothing twice.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from include.lifecycle.spec import AwsSpec, Spec
from include.lifecycle.store import Store
from ml_lifecycle.aws.common import (
    botocore_config,
    describe_or_none,
    fail,
    provider_kwargs,
    require_aws,
    sagemaker_hook,
    slug,
    wait_attempts,
)
from ml_lifecycle.aws.store import s3_uri, sse_kwargs

# An endpoint update is blue/green: SageMaker brings up the new fleet, shifts all traffic at once
# when it is healthy, and keeps the old fleet 10 minutes before terminating it (a quick way back).
BLUE_GREEN_UPDATE = {
    "BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
        "TerminationWaitInSeconds": 600,
    }
}
ENDPOINT_WAIT_SECONDS = 3600  # how long deploy_model waits for the endpoint to be InService
VERSION_KEY = "ml_lifecycle_version"  # the registry version in a model package's metadata


def champion_model_name(spec: Spec, version: int) -> str:
    """The SageMaker model (and endpoint config) of registry version ``version``."""
    return f"{slug(spec.name)[:50]}-v{version}"


def model_exists(hook: Any, model: str) -> bool:
    return describe_or_none(hook.describe_model, model) is not None


def upload_model(problem: Store, spec: Spec, version: int) -> str:
    """``model.tar.gz`` of registry version ``version`` (once: a retry finds it); returns its URI."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from include.lifecycle.registry import ModelRegistry

    aws = require_aws(spec)
    rel = f"sagemaker/models/v{version}/model.tar.gz"
    if not problem.exists(rel):
        registry = ModelRegistry(problem, spec.name)
        files = registry.load(version) | {
            "manifest.json": json.dumps(registry.manifest(version), sort_keys=True).encode(),
            # the serving container checks rows with the spec's schema rules (serving.py --model-dir)
            "spec.json": json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True).encode(),
        }
        hook = sagemaker_hook(aws)
        # the hook's uploads encrypted like every object of the store
        hook.s3_hook = S3Hook(
            aws_conn_id=aws.conn_id, region_name=aws.region, extra_args=sse_kwargs(aws), config=botocore_config()
        )
        with tempfile.TemporaryDirectory(prefix="model-") as tmp:
            for name, data in files.items():
                Path(tmp, name).parent.mkdir(parents=True, exist_ok=True)
                Path(tmp, name).write_bytes(data)
            bucket, _, key = problem.path(rel).partition("/")
            hook.tar_and_s3_upload(tmp, key, bucket)
    return s3_uri(problem, rel)


def find_model_package(hook: Any, group: str, version: int) -> str | None:
    """The ARN of the package version registered for registry version ``version`` (every page)."""
    pages = hook.conn.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group)
    for page in pages:
        for summary in page["ModelPackageSummaryList"]:
            desc = hook.conn.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            if (desc.get("CustomerMetadataProperties") or {}).get(VERSION_KEY) == str(version):
                return summary["ModelPackageArn"]
    return None


def register_model_package(
    context: Any, spec: Spec, container: dict[str, str], version: int, *, run_id: str, hook: Any
) -> str:
    """The approved model package version of registry version ``version`` in group ``<problem>``."""
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerRegisterModelVersionOperator
    from airflow.providers.amazon.aws.utils.sagemaker import ApprovalStatus

    group = slug(spec.name)[:63]
    found = find_model_package(hook, group, version)
    if found:
        return found
    return SageMakerRegisterModelVersionOperator(
        image_uri=container["Image"],
        model_url=container["ModelDataUrl"],
        package_group_name=group,
        package_group_desc=spec.title[:1024],
        package_desc=f"{spec.name} registry version {version} (run {run_id})"[:1024],
        model_approval=ApprovalStatus.APPROVED,
        extras={
            "InferenceSpecification": {
                "Containers": [container],
                "SupportedContentTypes": ["text/csv", "application/json"],
                "SupportedResponseMIMETypes": ["application/json", "text/csv"],
            },
            "CustomerMetadataProperties": {VERSION_KEY: str(version), "ml_lifecycle_run_id": run_id[:256]},
        },
        **provider_kwargs(require_aws(spec), context["ti"].task_id),
    ).execute(context)


def point_endpoint(
    context: Any, aws: AwsSpec, endpoint: str, model: str, container: dict[str, str], *, hook: Any
) -> str:
    """Create the endpoint on endpoint config ``model`` or update it to that config (with the model
    and config created first where missing); returns created, updated or unchanged."""
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerEndpointOperator

    current = describe_or_none(hook.describe_endpoint, endpoint)
    if current and current["EndpointConfigName"] == model:
        return "unchanged"
    config: dict[str, Any] = {"Endpoint": {"EndpointName": endpoint, "EndpointConfigName": model}}
    if not model_exists(hook, model):
        config["Model"] = {"ModelName": model, "PrimaryContainer": container, "ExecutionRoleArn": aws.role_arn}
    if describe_or_none(hook.describe_endpoint_config, model) is None:
        variant = {
            "VariantName": "AllTraffic",
            "ModelName": model,
            "InstanceType": aws.serving_instance_type,
            "InitialInstanceCount": aws.serving_instance_count,
        }
        config["EndpointConfig"] = {"EndpointConfigName": model, "ProductionVariants": [variant]} | (
            {"KmsKeyId": aws.kms_key_id} if aws.kms_key_id else {}
        )
    if current:
        config["Endpoint"]["DeploymentConfig"] = BLUE_GREEN_UPDATE
    SageMakerEndpointOperator(
        config=config,
        operation="update" if current else "create",
        wait_for_completion=False,  # the caller waits, also for an endpoint an earlier try changed
        deferrable=False,
        **provider_kwargs(aws, context["ti"].task_id),
    ).execute(context)
    return "updated" if current else "created"


def wait_in_service(aws: AwsSpec, endpoint: str, *, hook: Any) -> None:
    """Return once the endpoint is InService; fail when it ends Failed or does not get there in time."""
    from botocore.exceptions import WaiterError

    try:
        hook.get_waiter("endpoint_in_service").wait(
            EndpointName=endpoint,
            WaiterConfig={
                "Delay": aws.poll_seconds,
                "MaxAttempts": wait_attempts(ENDPOINT_WAIT_SECONDS, aws.poll_seconds),
            },
        )
    except WaiterError as exc:
        fail(f"SageMaker endpoint {endpoint} is not InService: {exc}")


def publish_champion(rc: Any, version: int, *, log: Any) -> dict[str, Any]:
    """Register registry version ``version`` as an approved model package and point the endpoint at it."""
    from airflow.sdk import get_current_context

    spec = rc.spec
    aws = require_aws(spec)
    context = get_current_context()
    hook = sagemaker_hook(aws)
    container = {"Image": aws.serving_image, "ModelDataUrl": upload_model(rc.store, spec, version)}
    package_arn = register_model_package(context, spec, container, version, run_id=rc.run_id, hook=hook)
    model = champion_model_name(spec, version)
    endpoint = slug(spec.deploy.endpoint_name or spec.name)[:63]
    action = point_endpoint(context, aws, endpoint, model, container, hook=hook)
    wait_in_service(aws, endpoint, hook=hook)
    log(f"deploy_model: model package {package_arn}; endpoint {endpoint} {action} -> {model} (InService)")
    return {"model_package_arn": package_arn, "model_name": model, "endpoint_name": endpoint, "endpoint": action}
