"""The batch-scoring DAG on SageMaker: a batch transform job (the provider's
``SageMakerTransformOperator``) on the champion's SageMaker model.

The task curates the day and its history (quarantine, PII tokens) and writes CSV input files of
at most ``TRANSFORM_SHARD_ROWS`` day rows, each with the earlier rows of its entities first (one
file is one ``/invocations`` request, ``SplitType: None``, so the per-entity features see the same
past as in training); the day's predictions from ``<file>.out`` become the local backend's scores.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

from include.lifecycle.layout import SCORES
from include.lifecycle.spec import Spec
from include.lifecycle.store import Store, safe_run_id
from ml_lifecycle.aws.common import fail, job_tags, provider_kwargs, require_aws, sagemaker_hook, slug, wait_attempts
from ml_lifecycle.aws.deploy import champion_model_name, model_exists
from ml_lifecycle.aws.operators import TransformJob
from ml_lifecycle.aws.store import kms_encrypted, s3_uri

TRANSFORM_SHARD_ROWS = 20_000  # rows of one input file = one /invocations request (MaxPayloadInMB 6)


def transform_job_name(problem: str, run_id: str, ds: str, attempt: int = 1) -> str:
    """Deterministic, unique per (problem, run, day), <= 63 characters."""
    digest = hashlib.sha256(f"{problem}|{run_id}|{ds}".encode()).hexdigest()[:10]
    tail = f"-score-{ds.replace('-', '')}-{digest}" + (f"-a{attempt}" if attempt > 1 else "")
    return f"{slug(problem)[: 63 - len(tail)].rstrip('-')}{tail}"


def transform_folder(run_id: str, ds: str) -> str:
    return f"{SCORES}/_transform/ds={ds}/{safe_run_id(run_id)}"


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
        champion = load_champion(ModelRegistry(rc.store, spec.name), spec.name)
    except NoChampion as exc:
        fail(f"cannot score ds={ds}: {exc}")
    model = champion_model_name(spec, champion.version)
    if not model_exists(sagemaker_hook(require_aws(spec)), model):
        fail(
            f"champion v{champion.version} has no SageMaker model {model!r}: deploy it with backend aws "
            "(deploy_model creates the model, the endpoint config and the endpoint)"
        )
    source = rc.input_store(resolve_source(spec.data.source))
    try:
        rows, context, counts, history = curate_for_scoring(spec, source=source, ds=ds, pii_key=pii_key)
    except FileNotFoundError as exc:
        fail(str(exc))
    key, entity, time_col = spec.data.key, spec.data.entity_column, spec.data.time_column
    if not key:
        fail(f"{spec.name}: batch transform needs data.key to match predictions to rows")
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
    kept = [c for c in (key, time_col) if c]
    if spec.serving.capture:  # the scores file carries the model's inputs (curated: PII as tokens)
        from include.lifecycle.capture import input_columns

        kept += [c for c in input_columns(spec, rows.columns) if c not in kept]
    rc.store.write_parquet(f"{folder}/rows.parquet", rows[kept])
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


def transform_config(spec: Spec, problem: Store, *, model: str, folder: str, run_id: str) -> dict[str, Any]:
    """The transform job of ``folder``'s input files (its name is set by the operator, attempt by attempt)."""
    aws = require_aws(spec)
    output, resources = kms_encrypted(
        aws,
        {"S3OutputPath": s3_uri(problem, f"{folder}/output"), "Accept": "text/csv", "AssembleWith": "None"},
        {"InstanceType": aws.transform_instance_type, "InstanceCount": aws.transform_instance_count},
    )
    return {
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
        "Tags": job_tags(spec, run_id),
    }


def transform_job(rc: Any, task_id: str, ds: str, *, try_number: int, pii_key: bytes, log: Any) -> TransformJob:
    """The transform job of day ``ds`` as the provider operator of our task, its input prepared
    (once per run); names for attempts 1..``try_number``."""
    aws = require_aws(rc.spec)
    prepared = prepare_transform(rc, ds, pii_key=pii_key, log=log)
    folder = transform_folder(rc.run_id, ds)
    max_seconds = aws.training_max_runtime_seconds + 600
    return TransformJob(
        config=transform_config(rc.spec, rc.store, model=prepared["model_name"], folder=folder, run_id=rc.run_id),
        names=[transform_job_name(rc.spec.name, rc.run_id, ds, a) for a in range(1, try_number + 1)],
        deferrable=aws.deferrable,
        check_interval=aws.poll_seconds,
        max_attempts=wait_attempts(max_seconds, aws.poll_seconds),
        max_ingestion_time=max_seconds,
        **provider_kwargs(aws, task_id),
    )


def transform_result(
    rc: Any, ds: str, result: dict[str, Any], *, log: Any
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """What the transform job's provider operator returned (``{"Model", "Transform"}``) as the
    predictions of the day's rows (the context rows' are dropped) in the local backend's shape,
    the accounting ``rows_in = rows_scored + rows_quarantined`` and the manifest's extras."""
    import pandas as pd

    from include.lifecycle.scoring import finish_scores

    name = TransformJob.completed(result["Transform"])["TransformJobName"]
    folder = transform_folder(rc.run_id, ds)
    prepared = rc.store.read_json(f"{folder}/prepare.json")
    key = rc.spec.data.key
    rows = rc.store.read_parquet(f"{folder}/rows.parquet")
    preds = []
    for i in range(prepared["shards"]):
        out = f"{folder}/output/part-{i:04d}.csv.out"
        if not rc.store.exists(out):
            fail(f"transform job {name} wrote no {rc.store.uri(out)}")
        preds.append(pd.read_csv(io.BytesIO(rc.store.read_bytes(out)), dtype={"id": str}))
    pred = pd.concat(preds, ignore_index=True).drop_duplicates("id", keep="last").set_index("id")
    ids = rows[key].astype(str)
    missing = int((~ids.isin(pred.index)).sum())
    if missing:
        fail(f"transform job {name}: {missing} of {len(rows)} rows of ds={ds} have no prediction")
    got = pred.loc[ids.to_numpy()]
    scored = pd.DataFrame({key: rows[key].to_numpy(), "score": got["score"].to_numpy(dtype="float64")})
    scored["decision"] = pd.array(got["decision"].to_numpy(), dtype="Int8")
    scored["model_version"] = got["model_version"].to_numpy(dtype="int64")
    log(f"score_new_data: transform job {name}: {len(scored)} predictions for ds={ds}")
    scores, summary = finish_scores(
        rc.spec, rows, scored, prepared["counts"], ds=ds, version=prepared["version"],
        threshold=prepared["threshold"], history=prepared["history"], history_rows=prepared["history_rows"],
    )  # fmt: skip
    extra = {k: prepared[k] for k in ("source_uri", "champion_deployed_at", "model_name")}
    return scores, summary, extra | {"transform_job_name": name}
