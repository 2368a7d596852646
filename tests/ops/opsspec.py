"""A small partitioned card-fraud problem for operations tests: synthetic daily partitions with a
late label feed, one round, one logistic trial, so a run takes seconds and every date of a
backfill sees its own window."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from include.lifecycle import synth

REFERENCE_END = dt.date(2026, 11, 1)
"""The data is always generated for the window ending on this day, then moved in time."""


def make_data(data_root: Path, end: dt.date, days: int = 40, per_day: int = 2500) -> Path:
    """``days`` daily partitions of transactions (and their chargebacks) ending the day before ``end``.

    The generator seeds each day from its date, so data generated for another ``end`` would be
    other data: a test that must use today's date (the real scheduler creates today's run) would
    pass on some days and fail on others. The content is therefore always the one generated for
    ``REFERENCE_END``, moved by whole days to end at ``end``: the same rows, the same frauds, the
    same outcome, on any calendar day."""
    landing = data_root / "ops_fraud" / "landing"
    if (landing / ".generated").exists():
        return landing
    shift = dt.timedelta(days=(end - REFERENCE_END).days)
    with tempfile.TemporaryDirectory() as tmp:
        generated = Path(tmp) / "landing" if shift else landing
        synth.generate(
            str(generated), end=REFERENCE_END, days=days, tx_per_day=per_day, seed=11, n_merchants=300, log=None
        )
        if shift:
            for dataset, column in (("transactions", "ts"), ("chargebacks", "reported_at")):
                for part in sorted((generated / dataset).glob("ds=*")):
                    day = dt.date.fromisoformat(part.name.removeprefix("ds=")) + shift
                    for f in sorted(part.glob("*.parquet")):
                        table = pq.read_table(f)
                        moved = pc.add(table[column], pa.scalar(shift, type=pa.duration("us")))
                        table = table.set_column(table.schema.get_field_index(column), column, moved)
                        out = landing / dataset / f"ds={day.isoformat()}" / f.name
                        out.parent.mkdir(parents=True, exist_ok=True)
                        pq.write_table(table, out)
    (landing / ".generated").write_text(end.isoformat())
    return landing


def ops_spec(name: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "title": f"Card fraud, small ({name})",
        "owner": "ops-test",
        "tags": ["ops-test"],
        "schedule": "@daily",
        "max_active_runs": 2,
        "max_rounds": 1,
        "goal": {
            "statement": "Rank fraudulent card payments above legitimate ones (small operations test).",
            "metric": "roc_auc",
            "target": 0.55,
            "champion_margin": 1.0,  # any candidate that meets the goal may replace the champion
            "value": {"true_positive": 50.0, "false_positive": -1.0, "false_negative": 0.0},
        },
        "problem": {"type": "binary_classification", "target": "is_fraud", "positive_label": 1},
        "data": {
            "source": "ops_fraud/landing/transactions",
            "format": "parquet",
            "layout": "partitioned",
            "key": "transaction_id",
            "time_column": "ts",
            "entity_column": "card_number",
            "amount_column": "amount",
            "lookback_days": 21,
            "max_lookback_days": 30,
            "labels": {
                "source": "ops_fraud/landing/chargebacks",
                "format": "parquet",
                "key": "transaction_id",
                "arrived_at": "reported_at",
                "maturity_days": 3,
            },
        },
        "schema": {
            "max_quarantine_share": 0.05,
            "columns": [
                {"name": "transaction_id", "dtype": "string", "nullable": False},
                {"name": "ts", "dtype": "timestamp", "nullable": False},
                {"name": "card_number", "dtype": "string", "nullable": False, "pii": True},
                {"name": "merchant_id", "dtype": "string", "nullable": False},
                {"name": "merchant_category", "dtype": "category", "nullable": False},
                {"name": "amount", "dtype": "float", "nullable": False, "min": 0.01, "max": 50000},
                {"name": "channel", "dtype": "category", "nullable": False},
                {"name": "country", "dtype": "category", "nullable": False},
            ],
        },
        "quality": {"min_rows": 500, "min_positives": 5, "max_missing_share": 0.2, "max_drift_psi": 5.0},
        "features": {
            # the card's recent activity is what gives the synthetic fraud away: with it the model
            # meets the goal on any window of this data, so the tests exercise operations, not luck
            "initial": ["transaction", "card_velocity"],
            "groups": [
                {
                    "name": "transaction",
                    "kind": "raw",
                    "columns": ["amount", "merchant_category", "channel", "country"],
                },
                {
                    "name": "card_velocity",
                    "kind": "velocity",
                    "columns": ["amount"],
                    "params": {"windows": ["1h", "24h", "7d"]},
                },
            ],
        },
        "training": {
            "seed": 42,
            "trials_per_candidate": 1,
            "split": {"validation_days": 4, "test_days": 4},
            "candidates": [{"family": "logistic", "params": {"C": 1.0}, "search": {"C": [1.0]}}],
        },
        "diagnosis": {"max_gap": 0.5, "min_train_positives": 5},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def write_spec(folder: Path, spec: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
