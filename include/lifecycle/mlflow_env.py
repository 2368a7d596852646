"""Where the MLflow tracking store and model registry live, and the client to reach them.

* Local (default): a SQLite store inside the artifact root, ``sqlite:///<artifact root>/mlflow.db``,
  with the runs' artifacts under ``<artifact root>/mlflow-artifacts/<problem>``. Every test or
  checkout with its own artifact root gets its own store.
* Anywhere else: ``$MLFLOW_TRACKING_URI`` (MLflow's own variable) wins: an ``http(s)://`` tracking
  server, or on AWS the ARN of a SageMaker managed MLflow tracking server
  (``arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>``), which needs the
  ``sagemaker-mlflow`` plugin installed next to mlflow (it is not pinned here). An ``s3://``
  artifact root without ``$MLFLOW_TRACKING_URI`` is an error: SQLite cannot live in S3.

mlflow is imported inside the functions (it takes about 2 s to import): DAG files never pay it.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV = "MLFLOW_TRACKING_URI"


class TrackingConfigError(ValueError):
    """The tracking store cannot be placed: the artifact root is remote and no tracking URI is set."""


def _artifact_root(artifact_root: str | None = None) -> str:
    """The artifact root as a URI: the argument, else ``$ML_ARTIFACT_ROOT``, else ``<project>/artifacts``
    (an Airflow connection id in an ``s3://conn@bucket/...`` URI is dropped)."""
    root = artifact_root or os.environ.get("ML_ARTIFACT_ROOT") or str(PROJECT_ROOT / "artifacts")
    if "://" not in root:
        return Path(root).resolve().as_uri().rstrip("/")
    scheme, _, rest = root.partition("://")
    bucket, sep, key = rest.partition("/")
    # Airflow's ObjectStoragePath names its connection in the URI (s3://aws_default@bucket/...): MLflow
    # and boto3 know only s3://bucket/...
    return f"{scheme}://{bucket.rsplit('@', 1)[-1]}{sep}{key}".rstrip("/") if scheme != "file" else root.rstrip("/")


def tracking_uri(artifact_root: str | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else the SQLite store inside the (local) artifact root."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    root = _artifact_root(artifact_root)
    if not root.startswith("file://"):
        raise TrackingConfigError(
            f"the artifact root {root} is not local, so the MLflow store cannot default to SQLite inside it: set "
            f"{ENV} to a tracking server (on AWS the ARN of a SageMaker managed MLflow tracking server, "
            "arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>, with the sagemaker-mlflow "
            "plugin installed)"
        )
    folder = Path(root.removeprefix("file://"))
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def artifact_location(artifact_root: str | None = None) -> str:
    """``<artifact root>/mlflow-artifacts``: where the experiments' run artifacts go (file or s3)."""
    return f"{_artifact_root(artifact_root)}/mlflow-artifacts"


def client(artifact_root: str | None = None) -> Any:
    """An ``mlflow.MlflowClient`` on the tracking store and model registry.

    A SQLite store is opened under an exclusive lock (``mlflow.db.lock`` beside it): the first
    open creates the schema with MLflow's migrations, and two processes that do it at once (two
    runs starting together on a fresh checkout) break it, one of them failing in alembic. Opening
    a store that exists costs ~0.1 s, so waiting for another opener is short."""
    from mlflow import MlflowClient

    uri = tracking_uri(artifact_root)
    with _opening(uri):
        made = MlflowClient(tracking_uri=uri, registry_uri=uri)
        made._get_registry_client().store  # noqa: B018 - the registry's store is opened lazily: now, locked
    return made


@contextmanager
def _opening(uri: str) -> Generator[None]:
    """Exclusive, inter-process, while a ``sqlite:///`` store is opened; nothing for other stores."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    try:
        lock = open(f"{uri.removeprefix('sqlite:///')}.lock", "a+b")  # noqa: SIM115 - closed below
    except OSError:  # a folder this process may not write to: it cannot create the schema either
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        yield


def experiment_id(mlflow_client: Any, problem: str, artifact_root: str | None = None) -> str:
    """The id of the experiment named after ``problem``, created (with its artifact location) if
    missing; safe when two processes create it at once (the loser reads the winner's)."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(problem)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(
            mlflow_client.create_experiment(problem, artifact_location=f"{artifact_location(artifact_root)}/{problem}")
        )
    except MlflowException:
        found = mlflow_client.get_experiment_by_name(problem)
        if found is None:
            raise
        return str(found.experiment_id)
