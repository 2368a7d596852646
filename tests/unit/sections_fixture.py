"""Tiny inputs for the section tests (tests/unit/test_sections.py): a daily-partitioned CSV source,
a problem spec written where ``$ML_PROBLEMS_DIR`` points, and the Airflow context a task gets.

The source holds ``DAYS`` days of ``ROWS_PER_DAY`` rows before ``AS_OF``: ``x`` carries the label
(``x > 0``, a little noise), ``n1`` is noise. On the days ``INVERTED_DAYS`` back the relation is
reversed, and those are exactly the training days of round 1 (lookback 8: 4 training days, then 2
validation and 2 test days). So round 1 fits the reversed relation and misses the goal with a wide
train/validation gap (the diagnosis: augment_data); round 2 re-collects 16 days, where the usual
relation wins, and meets the goal. Everything is seeded and dated: nothing depends on today.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

NAME = "unit_sections"
AS_OF = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)  # the data interval end of a nightly run
RUN_ID = "scheduled__2026-03-01T00:00:00+00:00"
DAYS = 24
ROWS_PER_DAY = 25
INVERTED_DAYS = range(5, 9)  # days back from AS_OF whose label relation is reversed
SOURCE = "unit_sections/daily"  # relative to $ML_DATA_ROOT


def day_frame(day: dt.date, rng: np.random.Generator, *, inverted: bool) -> pd.DataFrame:
    n = ROWS_PER_DAY
    x = rng.uniform(-1, 1, n)
    signal = x + rng.normal(0, 0.2, n)
    label = (signal < 0 if inverted else signal > 0).astype(int)
    seconds = np.sort(rng.integers(0, 86_400, n))
    start = dt.datetime.combine(day, dt.time())
    return pd.DataFrame(
        {
            "row_id": [f"{day.isoformat()}-{i}" for i in range(n)],
            "ts": [(start + dt.timedelta(seconds=int(s))).isoformat() for s in seconds],
            "x": x.round(5),
            "n1": rng.normal(0, 1, n).round(5),
            "label": label,
        }
    )


def write_source(data_root: Path, *, seed: int = 5) -> Path:
    """``<data_root>/unit_sections/daily/ds=YYYY-MM-DD/part-0.csv`` for the ``DAYS`` days before ``AS_OF``."""
    rng = np.random.default_rng(seed)
    folder = data_root / SOURCE
    for back in range(1, DAYS + 1):
        day = AS_OF.date() - dt.timedelta(days=back)
        part = folder / f"ds={day.isoformat()}"
        part.mkdir(parents=True, exist_ok=True)
        day_frame(day, rng, inverted=back in INVERTED_DAYS).to_csv(part / "part-0.csv", index=False)
    return folder


def spec_dict(name: str = NAME) -> dict[str, Any]:
    return {
        "name": name,
        "title": "Section unit tests",
        "schedule": None,
        "max_rounds": 3,
        "goal": {"statement": "Rank the positive rows first.", "metric": "roc_auc", "target": 0.8},
        "problem": {"type": "binary_classification", "target": "label", "positive_label": 1},
        "data": {
            "source": SOURCE,
            "format": "csv",
            "layout": "partitioned",
            "key": "row_id",
            "time_column": "ts",
            "lookback_days": 8,
            "max_lookback_days": 16,
        },
        "schema": {
            "columns": [
                {"name": "row_id", "dtype": "string", "nullable": False},
                {"name": "ts", "dtype": "timestamp", "nullable": False},
                {"name": "x", "dtype": "float", "nullable": False},
                {"name": "n1", "dtype": "float", "nullable": False},
                {"name": "label", "dtype": "int", "nullable": False},
            ]
        },
        "quality": {"min_rows": 100, "min_positives": 20, "max_drift_psi": 50.0},
        "features": {"initial": ["xn"], "groups": [{"name": "xn", "kind": "raw", "columns": ["x", "n1"]}]},
        "training": {
            "seed": 3,
            "initial_candidates": ["logistic"],
            "trials_per_candidate": 2,
            "max_trials": 4,
            "split": {"validation_days": 2, "test_days": 2},
            "candidates": [
                {"family": "logistic", "params": {"C": 1.0}, "search": {"C": [0.01, 0.1, 10.0]}},
                {"family": "random_forest", "params": {"n_estimators": 10, "max_depth": 3}},
            ],
        },
        "diagnosis": {"max_gap": 0.3, "min_train_positives": 10},
    }


def single_file_spec(name: str, source: str, positive_label: Any) -> dict[str, Any]:
    """A static CSV problem (no time column): what formulate_problem checks for a single file."""
    spec = spec_dict(name)
    spec["data"] = {"source": source, "format": "csv", "layout": "single_file", "key": "row_id"}
    spec["schema"]["columns"] = [c for c in spec["schema"]["columns"] if c["name"] != "ts"]
    spec["problem"]["positive_label"] = positive_label
    spec["training"]["split"] = {"validation_share": 0.2, "test_share": 0.2}
    return spec


def variant(name: str, **changes: dict[str, Any]) -> dict[str, Any]:
    """The test spec under another name, with some sections updated (``quality={"min_rows": 1}``)."""
    spec = copy.deepcopy(spec_dict(name))
    for section, values in changes.items():
        spec[section] = {**spec.get(section, {}), **values}
    return spec


def write_spec(folder: Path, spec: dict[str, Any]) -> Path:
    """``<folder>/<name>.yaml``, checked by the project's own loader."""
    from include.lifecycle.spec import load_spec

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    load_spec(path)
    return path


class TiStub:
    """The task instance methods a section uses: ``get_task_states`` (the execution API), which
    answers ``states`` or raises ``error``; ``try_number``. Records what it was asked."""

    def __init__(self, states: dict[str, str] | None = None, error: Exception | None = None) -> None:
        self.states = states or {}
        self.error = error
        self.try_number = 1
        self.calls: list[dict[str, Any]] = []

    def get_task_states(self, *, dag_id: str, run_ids: list[str]) -> dict[str, dict[str, str]]:
        self.calls.append({"dag_id": dag_id, "run_ids": run_ids})
        if self.error is not None:
            raise self.error
        return {run_ids[0]: dict(self.states)}


def context(
    *,
    run_id: str = RUN_ID,
    as_of: dt.datetime = AS_OF,
    params: dict[str, Any] | None = None,
    ti: Any = None,
) -> dict[str, Any]:
    """The part of the Airflow context the sections and operators read."""
    return {
        "run_id": run_id,
        "data_interval_end": as_of,
        "logical_date": as_of,
        "params": dict(params or {}),
        "ti": ti if ti is not None else TiStub(),
    }
