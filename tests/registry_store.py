"""An empty MLflow store for tests of the model registry (include/lifecycle/registry.py).

Creating MLflow's SQLite schema takes seconds (its migrations); a test that needs a fresh store
gets a copy of one made once per test process: ``mlflow_db_in(artifact_root)`` puts it where
``include/lifecycle/mlflow_env.py`` looks (``<artifact root>/mlflow.db``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

_TEMPLATE: Path | None = None


def mlflow_db_in(artifact_root: Path) -> Path:
    """``<artifact_root>/mlflow.db``: an empty, migrated MLflow store (an existing one is kept)."""
    global _TEMPLATE
    from include.lifecycle import mlflow_env

    target = Path(artifact_root) / "mlflow.db"
    if target.exists():
        return target
    if _TEMPLATE is None:
        folder = Path(tempfile.mkdtemp(prefix="mlflow-template-"))
        atexit.register(shutil.rmtree, folder, True)
        saved = os.environ.pop(mlflow_env.ENV, None)
        try:
            mlflow_env.client(str(folder)).search_experiments()
        finally:
            if saved is not None:
                os.environ[mlflow_env.ENV] = saved
        _TEMPLATE = folder / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(_TEMPLATE, target)
    return target


def version_file(registry: Any, version: int, name: str = "") -> Path:
    """Where file ``name`` of a registered version lives in a local artifact store (to damage it)."""
    return Path(registry.store.root).parent / registry.tags(version)["bundle_path"] / name


def registry_of(problem: str, artifact_root: Path | str | None = None) -> Any:
    """The registered model ``problem`` of the artifact root (default ``$ML_ARTIFACT_ROOT``, as the DAGs use)."""
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.store import Store

    root = Path(artifact_root or os.environ["ML_ARTIFACT_ROOT"])
    return ModelRegistry(Store.from_uri((root / problem).resolve().as_uri()), problem)
