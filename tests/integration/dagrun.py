"""Run a DAG of dags/ end to end in-process with ``dag.test()`` and read what it wrote."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_dag(
    dag_id: str,
    logical_date: dt.datetime,
    *,
    problems_dir: Path | None = None,
    conf: dict[str, Any] | None = None,
) -> tuple[str, str, Path]:
    """(state, run_id, run folder) of one whole-DAG run (``devtools.run_dag``: ``dag.test()`` of
    dags/ with ``ML_PROBLEMS_DIR`` pointing at ``problems_dir``; default: the shipped specs)."""
    from include.lifecycle.store import safe_run_id
    from ml_lifecycle.devtools import run_dag as run_whole_dag

    state, run_id = run_whole_dag(dag_id, logical_date, problems_dir=problems_dir, conf=conf)
    return state, run_id, artifacts(dag_id) / "runs" / safe_run_id(run_id)


def artifacts(problem: str) -> Path:
    return Path(os.environ["ML_ARTIFACT_ROOT"]) / problem


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def content_hash(df) -> str:
    """Order- and encoding-independent hash of a frame's content."""
    import pandas as pd

    df = df.sort_values(list(df.columns)).reset_index(drop=True)
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()


def write_spec(folder: Path, spec: dict[str, Any]) -> Path:
    """Write a problem spec as ``<folder>/<name>.yaml``; the test's own spec must be valid."""
    import yaml

    from include.lifecycle.spec import load_spec

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    load_spec(path)
    return path
