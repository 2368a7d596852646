"""Unit tests of section 2, collect and label (include/lifecycle/collect.py and the job entry point
include/jobs/collect_and_label.py): casting, de-duplication, quarantine with the rule as reason,
keyed PII tokens, the as-of label join, row accounting, read-only input and idempotent re-runs."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from include.jobs import collect_and_label as job
from include.lifecycle import collect as collect_module
from include.lifecycle import synth
from include.lifecycle.collect import (
    SchemaError,
    cast_and_validate,
    collect_and_label,
    collect_labels,
    curate_partition,
    join_labels,
    key_fingerprint,
    list_partitions,
    read_single_source,
    sort_curated,
    tokenise,
    tokenise_many,
    validate_partition,
    window_dates,
)
from include.lifecycle.spec import DEFAULT_PROBLEMS_DIR, SchemaSpec, Spec, load_spec, parse_spec
from include.lifecycle.store import Store

KEY = b"unit-test-pii-key-0123456789abcdef"
OTHER_KEY = b"another-pii-key-fedcba9876543210"
END = dt.date(2026, 11, 1)
AS_OF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
SYNTH_DAYS = 16
DIGITS16 = re.compile(r"\d{16}")


# --- helpers ---------------------------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and modification time of every file under ``root``."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()
    }


def _checksums(root: Path, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob(pattern))}


def _schema(*columns: dict[str, Any], extra: str = "drop") -> SchemaSpec:
    return SchemaSpec(columns=list(columns), extra_columns=extra)


def _mini_spec(**changes: Any) -> Spec:
    """A small partitioned problem with a label feed, like card_fraud but with five columns."""
    data: dict[str, Any] = {
        "name": "mini_fraud",
        "title": "Mini fraud",
        "goal": {"statement": "Catch fraud early enough to matter.", "metric": "auprc", "target": 0.5},
        "problem": {"type": "binary_classification", "target": "is_fraud", "positive_label": 1},
        "data": {
            "source": "unused",
            "format": "parquet",
            "layout": "partitioned",
            "key": "tx",
            "time_column": "ts",
            "entity_column": "card",
            "lookback_days": 3,
            "labels": {"source": "unused", "key": "tx", "arrived_at": "reported_at", "maturity_days": 0},
        },
        "schema": {
            "columns": [
                {"name": "tx", "dtype": "string", "nullable": False},
                {"name": "ts", "dtype": "timestamp", "nullable": False},
                {"name": "card", "dtype": "string", "nullable": False, "pii": True},
                {"name": "amount", "dtype": "float", "nullable": False, "min": 0.01, "max": 1000},
                {"name": "kind", "dtype": "category", "allowed": ["pos", "ecom"]},
            ]
        },
        "features": {"initial": ["raw"], "groups": [{"name": "raw", "kind": "raw", "columns": ["amount", "kind"]}]},
        "training": {"candidates": [{"family": "logistic"}]},
    }
    for path, value in changes.items():
        node = data
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return parse_spec(data, "mini_fraud.yaml")


def _tx_frame(day: str, rows: list[tuple[str, str, str, float, str | None]]) -> pd.DataFrame:
    """Transactions of one day from (tx, hh:mm, card, amount, kind) tuples."""
    return pd.DataFrame(
        {
            "tx": [r[0] for r in rows],
            "ts": pd.to_datetime([f"{day}T{r[1]}:00Z" for r in rows], utc=True),
            "card": [r[2] for r in rows],
            "amount": [r[3] for r in rows],
            "kind": [r[4] for r in rows],
        }
    )


def _run(
    spec: Spec,
    art: Path | Store,
    source: Path,
    labels: Path | None = None,
    *,
    as_of: dt.datetime = AS_OF,
    lookback: int | None = None,
    key: bytes = KEY,
    run_dir: str = "runs/r1",
    log: list[str] | Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """collect_and_label into ``art`` (a folder or a Store); ``log``: a list to fill or a callable."""
    return collect_and_label(
        spec,
        problem=art if isinstance(art, Store) else Store.from_uri(str(art)),
        run_dir=run_dir,
        as_of=as_of,
        lookback_days=lookback or spec.data.lookback_days,
        pii_key=key,
        source_uri=str(source),
        labels_uri=str(labels) if labels else None,
        log=log.append if isinstance(log, list) else (log or print),
    )


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def card_fraud() -> Spec:
    return load_spec(DEFAULT_PROBLEMS_DIR / "card_fraud.yaml")


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic card transactions and chargebacks, with a high defect rate to exercise quarantine."""
    root = tmp_path_factory.mktemp("landing")
    synth.generate(root, end=END, days=SYNTH_DAYS, tx_per_day=300, seed=11, n_merchants=60, defect_rate=0.05)
    return root


@pytest.fixture(scope="module")
def raw_window(landing: Path) -> pd.DataFrame:
    """The raw transactions of the whole synthetic window, read independently of the code under test."""
    parts = []
    for p in sorted((landing / "transactions").glob("ds=*/part-0.parquet")):
        parts.append(pd.read_parquet(p).assign(ds=p.parent.name.removeprefix("ds=")))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, landing: Path, card_fraud: Spec) -> dict[str, Any]:
    """One collect_and_label run of card_fraud over the whole synthetic window."""
    art = tmp_path_factory.mktemp("artifacts")
    before = _snapshot(landing)
    messages: list[str] = []
    summary = _run(
        card_fraud,
        art,
        landing / "transactions",
        landing / "chargebacks",
        lookback=SYNTH_DAYS,
        log=messages,
    )
    return {"art": art, "summary": summary, "before": before, "after": _snapshot(landing), "log": messages}


# --- small pure pieces -----------------------------------------------------------------------------
def test_window_dates_end_at_the_interval_end() -> None:
    assert window_dates(dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC), 3) == ("2026-10-29", "2026-11-01")
    assert window_dates(dt.datetime(2026, 3, 1, tzinfo=dt.UTC), 1) == ("2026-02-28", "2026-03-01")


def test_list_partitions_keeps_only_ds_folders(tmp_path: Path) -> None:
    for name in ("ds=2026-10-02", "ds=2026-10-01", "_tmp", "ds=latest", ".ds=2026-10-03"):
        (tmp_path / name).mkdir()
    (tmp_path / "README.txt").write_text("x")
    assert list_partitions(Store.from_uri(str(tmp_path))) == ["2026-10-01", "2026-10-02"]
    assert list_partitions(Store.from_uri(str(tmp_path / "missing"))) == []


def test_tokenise_is_keyed_stable_and_keeps_missing() -> None:
    cards = pd.Series(["4111111111111111", "5500000000000004", "4111111111111111", None])
    tokens = tokenise(cards, KEY)
    assert tokens[0] == tokens[2] != tokens[1]
    assert pd.isna(tokens[3])
    assert all(len(t) == 24 and int(t, 16) >= 0 for t in tokens[:3])  # 96-bit hex
    assert tokenise(cards, KEY).equals(tokens)  # same key, same tokens: joins across runs still work
    other = tokenise(cards, OTHER_KEY)
    assert not set(other[:3]) & set(tokens[:3])  # another key gives unrelated tokens
    assert tokens[0] == hashlib.blake2b(b"4111111111111111", key=KEY, digest_size=12).hexdigest()
    assert not any("4111" in str(t) for t in tokens)


def test_tokenise_many_gives_each_piece_the_tokens_of_tokenise() -> None:
    a = pd.Series(["4111111111111111", None, "5500000000000004"], index=[7, 8, 9], dtype="str")
    b = pd.Series(["5500000000000004", "340000000000009"], dtype="string")  # quarantine holds "string"
    c = pd.Series([4111111111111111, 42], dtype=object)  # not text: tokens of str(value)
    cache: dict[str, str] = {}
    out = tokenise_many([a, b, c], KEY, cache)
    for piece, tokens in zip([a, b, c], out, strict=True):
        assert tokens.dtype == "str" and tokens.index.equals(piece.index)
        assert tokens.equals(tokenise(piece, KEY))
    assert out[0][7] == out[2][0] and out[0][9] == out[1][0]
    assert len(cache) == 4  # each distinct value hashed once
    assert tokenise_many([], KEY) == []


def test_tokenise_refuses_an_empty_key() -> None:
    with pytest.raises(ValueError, match="ml_pii_hash_key"):
        tokenise(pd.Series(["4111111111111111"]), b"")


def test_key_fingerprint_identifies_the_key_without_revealing_it() -> None:
    fp = key_fingerprint(KEY)
    assert fp == key_fingerprint(KEY) != key_fingerprint(OTHER_KEY)
    assert KEY.hex() not in fp and KEY.decode() not in fp


# --- casting ---------------------------------------------------------------------------------------
def test_cast_to_the_declared_schema() -> None:
    schema = _schema(
        {"name": "id", "dtype": "string"},
        {"name": "n", "dtype": "int"},
        {"name": "n_missing", "dtype": "int"},
        {"name": "x", "dtype": "float"},
        {"name": "flag", "dtype": "bool"},
        {"name": "ts", "dtype": "timestamp"},
        {"name": "day", "dtype": "date"},
        {"name": "cat", "dtype": "category"},
    )
    raw = pd.DataFrame(
        {
            "id": ["  a ", "b", "c"],
            "n": [" 42", "7", "-3"],
            "n_missing": ["1", "", "3"],
            "x": ["1.5", "2", "-0.25"],
            "flag": ["Yes", "false", "1"],
            "ts": ["2026-11-01T01:00:00+01:00", "2026-11-01 12:30:00", "2026-11-02T00:00:00Z"],
            "day": ["2026-11-01T15:30:00Z", "2026-11-02", "2026-11-03"],
            "cat": ["pos", "ecom", ""],
        }
    )
    res = cast_and_validate(raw, schema, source="f.csv", key=None)
    cur = res.curated
    assert res.quarantined.empty and res.by_rule == {}
    assert cur["id"].tolist() == ["a", "b", "c"]
    assert cur["n"].dtype == np.int64 and cur["n"].tolist() == [42, 7, -3]
    assert str(cur["n_missing"].dtype) == "Int64" and cur["n_missing"].isna().tolist() == [False, True, False]
    assert cur["x"].dtype == np.float64 and cur["x"].tolist() == [1.5, 2.0, -0.25]
    assert cur["flag"].tolist() == [True, False, True]
    assert str(cur["ts"].dtype) == "datetime64[us, UTC]"
    assert cur["ts"].tolist() == [
        pd.Timestamp("2026-11-01T00:00:00Z"),
        pd.Timestamp("2026-11-01T12:30:00Z"),
        pd.Timestamp("2026-11-02T00:00:00Z"),
    ]
    assert cur["day"].tolist() == [pd.Timestamp(d, tz="UTC") for d in ("2026-11-01", "2026-11-02", "2026-11-03")]
    assert cur["cat"].tolist()[:2] == ["pos", "ecom"] and pd.isna(cur["cat"].iloc[2])  # blank is missing


def test_cast_keeps_typed_parquet_columns_and_reads_float_codes_as_text() -> None:
    schema = _schema(
        {"name": "code", "dtype": "category"},
        {"name": "ts", "dtype": "timestamp"},
        {"name": "naive", "dtype": "timestamp"},
        {"name": "ok", "dtype": "bool"},
    )
    raw = pd.DataFrame(
        {
            "code": [1.0, 2.5, np.nan],
            "ts": pd.to_datetime(["2026-11-01T01:00:00+01:00"] * 3),
            "naive": pd.to_datetime(["2026-11-01 00:00"] * 3),
            "ok": [True, False, True],
        }
    )
    cur = cast_and_validate(raw, schema, source="f.parquet", key=None).curated
    assert cur["code"].tolist()[:2] == ["1", "2.5"] and pd.isna(cur["code"].iloc[2])
    assert (cur["ts"] == pd.Timestamp("2026-11-01T00:00:00Z")).all()
    assert (cur["naive"] == pd.Timestamp("2026-11-01T00:00:00Z")).all()  # naive times are UTC
    assert cur["ok"].tolist() == [True, False, True]


# --- quarantine: every rule, with its reason ---------------------------------------------------------
@pytest.mark.parametrize(
    ("column", "bad", "rule"),
    [
        pytest.param({"name": "v", "dtype": "string", "nullable": False}, None, "not_null", id="not_null-none"),
        pytest.param({"name": "v", "dtype": "float", "nullable": False}, "  ", "not_null", id="not_null-blank"),
        pytest.param({"name": "v", "dtype": "float"}, "twelve", "dtype:float", id="dtype-float"),
        pytest.param({"name": "v", "dtype": "int"}, "1.5", "dtype:int", id="dtype-int-fraction"),
        pytest.param({"name": "v", "dtype": "int"}, "7x", "dtype:int", id="dtype-int-text"),
        pytest.param({"name": "v", "dtype": "bool"}, "maybe", "dtype:bool", id="dtype-bool"),
        pytest.param({"name": "v", "dtype": "timestamp"}, "not a time", "dtype:timestamp", id="dtype-timestamp"),
        pytest.param({"name": "v", "dtype": "date"}, "2026-13-45", "dtype:date", id="dtype-date"),
        pytest.param({"name": "v", "dtype": "float", "min": 0.01}, "0", "min:0.01", id="min"),
        pytest.param({"name": "v", "dtype": "int", "max": 10}, "11", "max:10", id="max"),
        pytest.param({"name": "v", "dtype": "category", "allowed": ["pos", "ecom"]}, "fax", "allowed", id="allowed"),
    ],
)
def test_each_rule_quarantines_the_row_with_its_reason(column: dict[str, Any], bad: str | None, rule: str) -> None:
    good = {"float": "5", "int": "5", "bool": "true", "timestamp": "2026-11-01", "date": "2026-11-01"}.get(
        column["dtype"], "pos"
    )
    raw = pd.DataFrame({"id": ["r0", "r1", "r2"], "v": [good, bad, good]}, dtype=object)
    schema = _schema({"name": "id", "dtype": "string"}, column)
    res = cast_and_validate(raw, schema, source="landing/ds=2026-11-01/part-0.csv", key="id")
    assert res.curated["id"].tolist() == ["r0", "r2"]
    assert len(res.quarantined) == 1
    q = res.quarantined.iloc[0]
    assert (q["id"], q["_rule"], q["_column"]) == ("r1", rule, "v")
    assert q["_source"] == "landing/ds=2026-11-01/part-0.csv"
    assert q["_reason"] == f"v={bad!r} breaks rule {rule}"
    assert res.by_rule == {rule: 1}
    assert len(res.curated) + len(res.quarantined) == len(raw)


def test_duplicate_key_keeps_the_first_row_and_quarantines_the_rest() -> None:
    raw = pd.DataFrame({"id": ["a", "b", "a", "c", "a"], "v": ["1", "2", "3", "4", "5"]})
    schema = _schema({"name": "id", "dtype": "string"}, {"name": "v", "dtype": "int"})
    res = cast_and_validate(raw, schema, source="f.csv", key="id")
    assert res.curated.to_dict("list") == {"id": ["a", "b", "c"], "v": [1, 2, 4]}
    assert res.quarantined["v"].tolist() == ["3", "5"]
    assert set(res.quarantined["_rule"]) == {"duplicate_key"}
    assert res.quarantined["_reason"].tolist() == ["id='a' breaks rule duplicate_key"] * 2
    assert res.by_rule == {"duplicate_key": 2}


def test_a_broken_row_does_not_count_as_the_first_of_its_key() -> None:
    # the first 'a' is broken, so the second 'a' is the one kept, not a duplicate
    raw = pd.DataFrame({"id": ["a", "a"], "v": ["-1", "1"]})
    schema = _schema({"name": "id", "dtype": "string"}, {"name": "v", "dtype": "int", "min": 0})
    res = cast_and_validate(raw, schema, source="f.csv", key="id")
    assert res.curated["v"].tolist() == [1]
    assert res.quarantined["_rule"].tolist() == ["min:0"]


def test_the_first_broken_rule_is_recorded_once_per_row() -> None:
    schema = _schema(
        {"name": "a", "dtype": "float", "nullable": False, "min": 0},
        {"name": "b", "dtype": "category", "allowed": ["x"]},
    )
    raw = pd.DataFrame({"a": [None, "-1", "1"], "b": ["y", "y", "x"]})
    res = cast_and_validate(raw, schema, source="f.csv", key=None)
    assert res.quarantined[["_rule", "_column"]].values.tolist() == [["not_null", "a"], ["min:0", "a"]]
    assert res.by_rule == {"min:0": 1, "not_null": 1}
    assert len(res.curated) == 1


@pytest.mark.parametrize("missing", [None, "", "  ", float("nan")])
def test_a_row_without_a_target_value_is_quarantined_not_read_as_negative(missing: Any) -> None:
    schema = _schema({"name": "id", "dtype": "string"}, {"name": "y", "dtype": "int"})
    raw = pd.DataFrame({"id": ["r0", "r1", "r2"], "y": ["1", missing, "0"]}, dtype=object)
    res = cast_and_validate(raw, schema, source="f.csv", key="id", target="y")
    assert res.curated.to_dict("list") == {"id": ["r0", "r2"], "y": [1, 0]}
    q = res.quarantined.iloc[0]
    assert (q["id"], q["_rule"], q["_column"]) == ("r1", "target_missing", "y")
    assert q["_reason"] == f"y={missing!r} breaks rule target_missing"
    assert res.by_rule == {"target_missing": 1}
    assert len(res.curated) + len(res.quarantined) == len(raw)
    # without a target (a labels feed labels the rows) a missing value of a nullable column stays
    assert len(cast_and_validate(raw, schema, source="f.csv", key="id").curated) == 3


def test_target_missing_comes_before_not_null_on_the_target() -> None:
    schema = _schema({"name": "y", "dtype": "category", "nullable": False}, {"name": "v", "dtype": "float", "min": 0})
    raw = pd.DataFrame({"y": [None, "No", "Yes"], "v": ["-1", "-1", "1"]})
    res = cast_and_validate(raw, schema, source="f.csv", key=None, target="y")
    assert res.quarantined["_rule"].tolist() == ["target_missing", "min:0"]  # the first broken rule of a row
    assert res.by_rule == {"target_missing": 1, "min:0": 1}


def test_missing_values_in_nullable_columns_are_kept() -> None:
    schema = _schema({"name": "a", "dtype": "float"}, {"name": "b", "dtype": "string"})
    raw = pd.DataFrame({"a": ["", None, "2"], "b": [None, "", "z"]})
    res = cast_and_validate(raw, schema, source="f.csv", key=None)
    assert res.quarantined.empty
    assert res.curated["a"].isna().tolist() == [True, True, False]
    assert res.curated["b"].isna().tolist() == [True, True, False]


def test_a_missing_declared_column_names_file_column_and_rule() -> None:
    schema = _schema({"name": "id", "dtype": "string"}, {"name": "amount", "dtype": "float"})
    raw = pd.DataFrame({"id": ["a"], "amt": ["1"]})
    with pytest.raises(SchemaError) as err:
        cast_and_validate(raw, schema, source="s3://bucket/landing/ds=2026-11-01/part-0.csv", key=None)
    msg = str(err.value)
    assert msg.startswith("s3://bucket/landing/ds=2026-11-01/part-0.csv:")
    assert "['amount']" in msg and "rule: every schema column must be present" in msg and "'amt'" in msg


def test_undeclared_columns_are_dropped_or_kept_as_declared() -> None:
    raw = pd.DataFrame({"id": ["a", "b"], "score": ["1.5", ""], "note": ["x", "7"], "n": [1, 2]})
    schema_drop = _schema({"name": "id", "dtype": "string"})
    dropped = cast_and_validate(raw, schema_drop, source="f.csv", key=None)
    assert dropped.curated.columns.tolist() == ["id"]
    assert dropped.dropped_columns == ["score", "note", "n"]
    schema_keep = _schema({"name": "id", "dtype": "string"}, extra="keep")
    kept = cast_and_validate(raw, schema_keep, source="f.csv", key=None, extra_columns="keep")
    cur = kept.curated
    assert kept.dropped_columns == []
    assert cur["score"].dtype == np.float64 and cur["score"].iloc[0] == 1.5 and pd.isna(cur["score"].iloc[1])
    assert cur["note"].tolist() == ["x", "7"]  # not every value is a number: stays text
    assert cur["n"].tolist() == [1, 2]


def test_pii_values_never_reach_the_quarantine() -> None:
    spec = _mini_spec(
        schema__columns=[
            {"name": "tx", "dtype": "string", "nullable": False},
            {"name": "ts", "dtype": "timestamp", "nullable": False},
            {"name": "card", "dtype": "int", "nullable": False, "pii": True},
            {"name": "amount", "dtype": "float", "nullable": False, "min": 0.01, "max": 1000},
            {"name": "kind", "dtype": "category", "allowed": ["pos", "ecom"]},
        ]
    )
    raw = pd.DataFrame(
        {
            "tx": ["t1", "t2", "t3"],
            "ts": ["2026-10-31T10:00:00Z"] * 3,
            "card": ["4111111111111111", "4111x11111111112", "5500000000000004"],
            "amount": ["10", "20", "-5"],
            "kind": ["pos", "pos", "pos"],
        }
    )
    cur, qua, counts = curate_partition([("f.csv", raw)], spec, pii_key=KEY)
    assert counts["by_rule"] == {"dtype:int": 1, "min:0.01": 1}
    text = qua.astype(str).to_csv() + cur.astype(str).to_csv()
    for card in raw["card"]:
        assert card not in text
    assert qua.loc[qua["_rule"] == "dtype:int", "_reason"].item() == "card=<pii> breaks rule dtype:int"
    assert qua.loc[qua["_rule"] == "min:0.01", "card"].item() == tokenise(pd.Series(["5500000000000004"]), KEY)[0]


# --- one partition -----------------------------------------------------------------------------------
def test_curate_partition_dedupes_across_files_tokenises_and_sorts() -> None:
    spec = _mini_spec()
    a = _tx_frame(
        "2026-10-31",
        [("t2", "12:00", "4111111111111111", 10.0, "pos"), ("t1", "09:00", "5500000000000004", 5.0, "ecom")],
    )
    b = _tx_frame(
        "2026-10-31", [("t1", "09:00", "5500000000000004", 5.0, "ecom"), ("t3", "08:00", "4111111111111111", 2.0, None)]
    )
    cur, qua, counts = curate_partition([("a.parquet", a), ("b.parquet", b)], spec, pii_key=KEY)
    assert cur["tx"].tolist() == ["t3", "t1", "t2"]  # by time
    assert counts == {
        "rows_in": 4,
        "rows_curated": 3,
        "rows_quarantined": 1,
        "by_rule": {"duplicate_key": 1},
        "dropped_columns": [],
    }
    dup = qua.iloc[0]
    assert (dup["tx"], dup["_rule"], dup["_column"], dup["_source"]) == ("t1", "duplicate_key", "tx", "b.parquet")
    assert dup["_reason"] == "tx='t1' breaks rule duplicate_key"
    tokens = dict(zip(cur["tx"], cur["card"], strict=True))
    assert tokens["t2"] == tokens["t3"] != tokens["t1"]
    assert dup["card"] == tokens["t1"]
    assert "4111111111111111" not in cur["card"].tolist() + qua["card"].tolist()


def test_one_file_partition_dedupes_on_cast_keys_after_the_broken_rows() -> None:
    spec = _mini_spec()
    raw = _tx_frame(
        "2026-10-31",
        [
            ("t1", "09:00", "4111111111111111", -1.0, "pos"),  # broken: not the first of t1
            (" t1", "10:00", "5500000000000004", 5.0, "ecom"),  # the first valid t1 (key is stripped)
            ("t1 ", "11:00", "5500000000000004", 6.0, "pos"),  # a duplicate of the cast key "t1"
            ("t2", "12:00", "4111111111111111", 7.0, "fax"),
            ("t3", "13:00", "4111111111111111", 8.0, None),
        ],
    )
    before = raw.copy(deep=True)
    cur, qua, counts = validate_partition([("a.parquet", raw)], spec)
    pd.testing.assert_frame_equal(raw, before)  # the input is not modified
    assert cur["tx"].tolist() == ["t1", "t3"] and cur["amount"].tolist() == [5.0, 8.0]
    assert cur.index.equals(pd.RangeIndex(2)) and cur["tx"].dtype == "str"
    assert counts["by_rule"] == {"allowed": 1, "min:0.01": 1, "duplicate_key": 1}
    assert qua["_rule"].tolist() == ["min:0.01", "allowed", "duplicate_key"]  # duplicates come last
    assert qua["_reason"].tolist()[-1] == "tx='t1' breaks rule duplicate_key"
    assert (qua["_source"] == "a.parquet").all() and qua["tx"].dtype == "string"
    # the same as the partition split into one file per row group of the same rows
    cur2, qua2, counts2 = validate_partition([("a.parquet", raw.iloc[:2]), ("a.parquet", raw.iloc[2:])], spec)
    pd.testing.assert_frame_equal(cur, cur2)
    pd.testing.assert_frame_equal(qua, qua2)
    assert counts == counts2


@pytest.mark.parametrize("dtype", ["str", "string", "string[python]", object])
def test_text_is_cast_alike_from_arrow_backed_and_python_text(dtype: Any) -> None:
    schema = _schema(
        {"name": "id", "dtype": "string", "nullable": False},
        {"name": "kind", "dtype": "category", "allowed": ["pos", "ecom", "ä"]},
        {"name": "code", "dtype": "string"},
    )
    raw = pd.DataFrame(
        {
            "id": ["a", " b ", "", "  ", None, "\tc\n", "d", "e\u00a0", "f", "g"],
            "kind": ["pos", " ecom", "POS", "", "ecom", "ä ", "\u2003pos", "fax", None, "pos "],
            "code": ["x", " ", None, "y", "z", "", "\x1fq", "w", "v", "u"],
        }
    ).astype(dtype)
    res = cast_and_validate(raw, schema, source="f", key="id")
    ref = cast_and_validate(raw.astype(object), schema, source="f", key="id")
    pd.testing.assert_frame_equal(res.curated, ref.curated)
    pd.testing.assert_frame_equal(
        res.quarantined.drop(columns=["id", "kind", "code"]), ref.quarantined.drop(columns=["id", "kind", "code"])
    )
    assert res.by_rule == ref.by_rule == {"allowed": 1, "not_null": 3}  # "e\u00a0" is "e": fax
    assert res.curated["id"].tolist() == ["a", "b", "c", "d", "f", "g"]
    assert res.curated["kind"].tolist()[:4] == ["pos", "ecom", "ä", "pos"] and pd.isna(res.curated["kind"].iloc[4])
    assert all(str(res.curated[c].dtype) == "str" for c in ("id", "kind", "code"))


def test_duplicate_keys_of_arrow_text_are_found_like_pandas_finds_them() -> None:
    rng = np.random.default_rng(5)
    keys = pd.Series(rng.choice(["a", "b", " a", "ä", "", None, "c", "b "], 400), dtype=object)
    schema = _schema({"name": "id", "dtype": "string"}, {"name": "v", "dtype": "int", "min": 0})
    raw = pd.DataFrame({"id": keys, "v": rng.integers(-1, 5, 400)})
    ref = cast_and_validate(raw, schema, source="f", key="id")  # Python text: pandas de-duplicates
    res = cast_and_validate(raw.astype({"id": "str"}), schema, source="f", key="id")
    pd.testing.assert_frame_equal(res.curated, ref.curated)
    assert res.by_rule == ref.by_rule and res.by_rule["duplicate_key"] > 0
    assert res.quarantined["_rule"].tolist() == ref.quarantined["_rule"].tolist()
    assert res.curated["id"].isna().sum() == 1  # missing keys are duplicates of each other


def test_tokenise_many_gives_python_text_the_tokens_of_arrow_text() -> None:
    arrow = pd.Series(["4111111111111111", None, "5500000000000004", "4111111111111111"], dtype="str")
    python = pd.Series(["5500000000000004", None, "340000000000009"], dtype="string[python]")
    out = tokenise_many([arrow, python], KEY)
    assert out[0].tolist()[::2] == [tokenise(pd.Series([v]), KEY)[0] for v in arrow.tolist()[::2]]
    assert out[0][2] == out[1][0] and pd.isna(out[0][1]) and pd.isna(out[1][1])
    assert out[1].equals(tokenise(python.astype(object), KEY))


def test_sort_curated_orders_by_time_then_key_like_pandas() -> None:
    spec = _mini_spec()
    rng = np.random.default_rng(3)
    n = 500
    cur = pd.DataFrame(
        {
            "tx": pd.Series(rng.choice(["b", "a", "ä", "B", "aa", None], n), dtype="str"),
            "ts": pd.to_datetime(rng.integers(0, 5, n), unit="h", utc=True).astype("datetime64[us, UTC]"),
            "amount": rng.random(n),
        }
    )
    cur.loc[::37, "ts"] = pd.NaT
    want = cur.sort_values(["ts", "tx"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(sort_curated(cur, spec), want)
    keyless = spec.model_copy(update={"data": spec.data.model_copy(update={"key": None})})
    pd.testing.assert_frame_equal(
        sort_curated(cur, keyless), cur.sort_values(["ts"], kind="stable").reset_index(drop=True)
    )
    mixed = cur.assign(tx=pd.Series([1, "x"] * (n // 2), dtype=object))  # Arrow cannot sort it: pandas does
    pd.testing.assert_frame_equal(
        sort_curated(mixed, spec), mixed.sort_values(["ts", "tx"], kind="stable").reset_index(drop=True)
    )


def test_partitions_tokenised_in_batches_give_the_same_files(
    first_run: dict[str, Any], landing: Path, card_fraud: Spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collect_module, "TOKENISE_BATCH_ROWS", 1)  # one partition per batch
    messages: list[str] = []
    _run(card_fraud, tmp_path, landing / "transactions", landing / "chargebacks", lookback=SYNTH_DAYS, log=messages)
    for pattern in ("curated/ds=*/*", "quarantine/ds=*/*", "runs/r1/dataset.parquet"):
        assert _checksums(tmp_path, pattern) == _checksums(first_run["art"], pattern), pattern
    assert messages[:-1] == first_run["log"][:-1]  # the last line names the artifact folder


def test_log_lines_come_in_partition_order_after_their_writes(
    first_run: dict[str, Any], landing: Path, card_fraud: Spec, tmp_path: Path
) -> None:
    log = first_run["log"]
    parts = [m for m in log if m.startswith("partition ")]
    assert [int(m.split()[1].split("/")[0]) for m in parts] == list(range(1, SYNTH_DAYS + 1))
    assert log[0].startswith("window") and log[-1].startswith("collect_and_label:")
    assert log.index(parts[-1]) < min(i for i, m in enumerate(log) if m.startswith("labels:"))
    # a partition's line is written once its files are: the files exist when the line is logged
    art = tmp_path / "art"
    seen: list[bool] = []

    def check(msg: str) -> None:
        if msg.startswith("partition "):
            ds = msg.split()[2].rstrip(":")
            seen.append((art / "curated" / ds / "_manifest.json").exists())

    _run(card_fraud, art, landing / "transactions", landing / "chargebacks", lookback=SYNTH_DAYS, log=check)
    assert seen == [True] * SYNTH_DAYS


def test_a_failed_write_stops_the_run_with_its_error(landing: Path, card_fraud: Spec, tmp_path: Path) -> None:
    store = Store.from_uri(str(tmp_path))
    real = store.write_parquet

    def failing(rel: str, df: Any) -> str:
        if "ds=2026-10-20" in rel:
            raise OSError("disk full")
        return real(rel, df)

    store.write_parquet = failing  # type: ignore[method-assign]
    messages: list[str] = []
    with pytest.raises(OSError, match="disk full"):
        _run(card_fraud, store, landing / "transactions", landing / "chargebacks", lookback=SYNTH_DAYS, log=messages)
    manifests = sorted(p.parent.name for p in tmp_path.glob("curated/ds=*/_manifest.json"))
    assert manifests and manifests[-1] < "ds=2026-10-20"  # nothing written after the failure
    assert not any("ds=2026-10-20" in m or "collect_and_label:" in m for m in messages)
    assert not (tmp_path / "runs/r1/dataset.parquet").exists()


# --- the whole step on synthetic partitions ------------------------------------------------------------
def test_rows_in_equal_rows_curated_plus_quarantined(first_run: dict[str, Any], raw_window: pd.DataFrame) -> None:
    s = first_run["summary"]
    assert s["rows_in"] == len(raw_window)
    assert s["rows_in"] == s["rows_curated"] + s["rows_quarantined"]
    assert s["rows_quarantined"] == sum(s["by_rule"].values()) > 0
    assert len(s["partitions"]) == SYNTH_DAYS
    art = first_run["art"]
    for part in s["partitions"]:
        assert part["rows_in"] == part["rows_curated"] + part["rows_quarantined"]
        cur = pd.read_parquet(art / f"curated/ds={part['ds']}/part-0.parquet")
        assert len(cur) == part["rows_curated"]
        qpath = art / f"quarantine/ds={part['ds']}/part-0.parquet"
        assert (len(pd.read_parquet(qpath)) if qpath.exists() else 0) == part["rows_quarantined"]
        assert part["rows_in"] == (raw_window["ds"] == part["ds"]).sum()


def test_quarantine_holds_each_defect_with_rule_column_and_file(
    first_run: dict[str, Any], raw_window: pd.DataFrame
) -> None:
    art = first_run["art"]
    qua = pd.concat([pd.read_parquet(p) for p in sorted(art.glob("quarantine/ds=*/part-0.parquet"))], ignore_index=True)
    # synth injects these defects: non-positive amounts, an unknown channel, a missing merchant, duplicates
    assert set(qua["_rule"]) == {"min:0.01", "allowed", "not_null", "duplicate_key"}
    assert set(qua.loc[qua["_rule"] == "allowed", "_column"]) == {"channel"}
    assert set(qua.loc[qua["_rule"] == "not_null", "_column"]) == {"merchant_id"}
    assert set(qua.loc[qua["_rule"] == "min:0.01", "_column"]) == {"amount"}
    for _, row in qua.iterrows():
        assert row["_reason"].startswith(f"{row['_column']}=") and row["_reason"].endswith(
            f"breaks rule {row['_rule']}"
        )
        assert row["_source"].startswith("file://") and "/transactions/ds=" in row["_source"]
    # every raw duplicate of a transaction id is exactly one duplicate_key row
    raw_dups = raw_window.duplicated(["ds", "transaction_id"]).sum()
    assert (qua["_rule"] == "duplicate_key").sum() == raw_dups > 0
    assert first_run["summary"]["by_rule"] == qua["_rule"].value_counts().to_dict()


def test_curated_data_is_typed_clean_and_unique(first_run: dict[str, Any], card_fraud: Spec) -> None:
    art = first_run["art"]
    cur = pd.concat([pd.read_parquet(p) for p in sorted(art.glob("curated/ds=*/part-0.parquet"))], ignore_index=True)
    assert cur.columns.tolist() == card_fraud.schema_.names
    assert str(cur["ts"].dtype) == "datetime64[us, UTC]" and cur["amount"].dtype == np.float64
    assert cur["transaction_id"].is_unique
    assert (cur["amount"] >= 0.01).all() and (cur["amount"] <= 50000).all()
    assert set(cur["channel"]) <= {"pos", "ecom", "contactless", "atm"}
    assert cur[["transaction_id", "ts", "card_number", "merchant_id"]].notna().all().all()
    for p in sorted(art.glob("curated/ds=*/part-0.parquet")):
        ds = p.parent.name.removeprefix("ds=")
        part = pd.read_parquet(p)
        assert (part["ts"].dt.strftime("%Y-%m-%d") == ds).all()
        assert part["ts"].is_monotonic_increasing


def test_card_numbers_are_tokenised_everywhere(first_run: dict[str, Any], raw_window: pd.DataFrame) -> None:
    art = first_run["art"]
    cards = set(raw_window["card_number"].dropna())
    for p in sorted(art.rglob("*.parquet")):
        df = pd.read_parquet(p)
        for col in df.columns:
            values = set(df[col].dropna().astype(str))
            assert not values & cards, f"raw card numbers in {p.relative_to(art)} column {col}"
            embedded = {m for v in values for m in DIGITS16.findall(v)}
            assert not embedded & cards, f"raw card numbers inside {p.relative_to(art)} column {col}"
    for p in sorted(art.rglob("*.json")):
        text = p.read_text()
        assert not any(c in text for c in cards), p
    # a card keeps one token everywhere, and different cards get different tokens
    cur = pd.concat([pd.read_parquet(p) for p in sorted(art.glob("curated/ds=*/part-0.parquet"))], ignore_index=True)
    raw = raw_window.drop_duplicates("transaction_id")[["transaction_id", "card_number"]]
    pairs = cur[["transaction_id", "card_number"]].merge(raw, on="transaction_id", suffixes=("_token", "_raw"))
    assert len(pairs) == len(cur)
    assert (pairs.groupby("card_number_raw")["card_number_token"].nunique() == 1).all()
    assert (pairs.groupby("card_number_token")["card_number_raw"].nunique() == 1).all()


def test_input_files_are_never_modified(first_run: dict[str, Any]) -> None:
    before, after = first_run["before"], first_run["after"]
    assert after.keys() == before.keys()
    for rel, (data, mtime) in before.items():
        assert after[rel][0] == data, rel
        assert after[rel][1] == mtime, rel


def test_labels_join_as_of_with_maturity(first_run: dict[str, Any], landing: Path, card_fraud: Spec) -> None:
    s = first_run["summary"]
    art = first_run["art"]
    ds = pd.read_parquet(art / s["dataset_rel"])
    cb = pd.concat([pd.read_parquet(p) for p in sorted((landing / "chargebacks").glob("ds=*/*.parquet"))])
    arrived = set(cb.loc[cb["reported_at"] < pd.Timestamp(AS_OF), "transaction_id"])
    cutoff = pd.Timestamp(AS_OF) - pd.Timedelta(days=card_fraud.data.labels.maturity_days)
    cur = pd.concat([pd.read_parquet(p) for p in sorted(art.glob("curated/ds=*/part-0.parquet"))], ignore_index=True)
    assert s["immature_rows_left_out"] == (cur["ts"] >= cutoff).sum() > 0
    assert s["dataset_rows"] == len(ds) == (cur["ts"] < cutoff).sum()
    assert (ds["ts"] < cutoff).all()
    expected = ds["transaction_id"].isin(arrived).astype(int)
    assert ds["is_fraud"].tolist() == expected.tolist()
    assert s["positives"] == int(expected.sum()) > 0
    # every label row that had arrived is used (it marks a row of the data set), quarantined or unmatched
    assert s["label_rows_in"] == len(cb[cb["reported_at"] < pd.Timestamp(AS_OF)])
    assert s["label_rows_used"] == s["positives"]
    assert s["label_rows_in"] == s["label_rows_used"] + s["label_rows_quarantined"] + s["label_rows_unmatched"]
    assert s["label_rows_quarantined"] == 0 and s["label_rows_unmatched"] > 0  # the immature rows' labels
    assert s["label_rows_read"] == s["label_rows_in"] + s["label_rows_not_yet_arrived"]


def test_rerun_reuses_curated_partitions_unchanged(
    first_run: dict[str, Any], landing: Path, card_fraud: Spec, tmp_path: Path
) -> None:
    art = first_run["art"]
    # a copy, so this test does not disturb the module's artifacts
    copy_art = tmp_path / "art"
    shutil.copytree(art, copy_art)
    before = _snapshot(copy_art / "curated")
    messages: list[str] = []
    again = _run(
        card_fraud, copy_art, landing / "transactions", landing / "chargebacks", lookback=SYNTH_DAYS, log=messages
    )
    assert _snapshot(copy_art / "curated") == before  # neither rewritten nor touched
    assert sum("re-used" in m for m in messages) == SYNTH_DAYS
    for k in ("rows_in", "rows_curated", "rows_quarantined", "by_rule", "dataset_rows", "positives"):
        assert again[k] == first_run["summary"][k], k
    assert _checksums(copy_art, "runs/r1/dataset.parquet") == _checksums(art, "runs/r1/dataset.parquet")


def test_rerun_from_scratch_gives_identical_files(
    first_run: dict[str, Any], landing: Path, card_fraud: Spec, tmp_path: Path
) -> None:
    art = first_run["art"]
    fresh = tmp_path / "fresh"
    _run(card_fraud, fresh, landing / "transactions", landing / "chargebacks", lookback=SYNTH_DAYS, log=[])
    for pattern in ("curated/ds=*/*", "quarantine/ds=*/*", "runs/r1/dataset.parquet"):
        assert _checksums(fresh, pattern) == _checksums(art, pattern), pattern
        assert _checksums(fresh, pattern)
    # removing one manifest forces that partition to be recomputed: the same bytes come out
    one = sorted(fresh.glob("curated/ds=*"))[3]
    (one / "_manifest.json").unlink()
    messages: list[str] = []
    _run(card_fraud, fresh, landing / "transactions", landing / "chargebacks", lookback=SYNTH_DAYS, log=messages)
    assert sum("re-used" in m for m in messages) == SYNTH_DAYS - 1
    assert _checksums(fresh, "curated/ds=*/*") == _checksums(art, "curated/ds=*/*")


def test_another_pii_key_recurates_with_other_tokens(
    first_run: dict[str, Any], landing: Path, card_fraud: Spec, tmp_path: Path
) -> None:
    art = tmp_path / "art"
    shutil.copytree(first_run["art"], art)
    messages: list[str] = []
    _run(card_fraud, art, landing / "transactions", None, lookback=SYNTH_DAYS, key=OTHER_KEY, log=messages)
    assert not any("re-used" in m for m in messages)  # the key is part of the fingerprint
    old = pd.read_parquet(first_run["art"] / "curated" / f"ds={END - dt.timedelta(days=1)}" / "part-0.parquet")
    new = pd.read_parquet(art / "curated" / f"ds={END - dt.timedelta(days=1)}" / "part-0.parquet")
    assert old["transaction_id"].tolist() == new["transaction_id"].tolist()
    assert not set(old["card_number"]) & set(new["card_number"])


def test_the_window_covers_only_the_lookback_days(landing: Path, card_fraud: Spec, tmp_path: Path) -> None:
    as_of = dt.datetime(2026, 10, 28, 2, 0, tzinfo=dt.UTC)
    s = _run(card_fraud, tmp_path / "art", landing / "transactions", landing / "chargebacks", as_of=as_of, lookback=3)
    assert [p["ds"] for p in s["partitions"]] == ["2026-10-25", "2026-10-26", "2026-10-27"]
    assert s["window"] == {
        "start": "2026-10-25",
        "end": "2026-10-28",
        "as_of": "2026-10-28T02:00:00+00:00",
        "lookback_days": 3,
    }
    assert sorted(p.name for p in (tmp_path / "art" / "curated").iterdir()) == [
        "ds=2026-10-25",
        "ds=2026-10-26",
        "ds=2026-10-27",
    ]


def test_a_window_without_partitions_gives_an_empty_data_set(landing: Path, card_fraud: Spec, tmp_path: Path) -> None:
    s = _run(
        card_fraud,
        tmp_path / "art",
        landing / "transactions",
        landing / "chargebacks",
        as_of=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        lookback=5,
    )
    assert s["rows_in"] == s["dataset_rows"] == 0 and s["partitions"] == []
    assert len(pd.read_parquet(tmp_path / "art" / s["dataset_rel"])) == 0


# --- labels on hand-made partitions --------------------------------------------------------------------
@pytest.fixture
def mini_landing(tmp_path: Path) -> Path:
    src = Store.from_uri(str(tmp_path / "landing"))
    src.write_parquet(
        "tx/ds=2026-10-29/part-0.parquet",
        _tx_frame(
            "2026-10-29",
            [("a1", "10:00", "4111111111111111", 10.0, "pos"), ("a2", "11:00", "5500000000000004", 20.0, "ecom")],
        ),
    )
    src.write_parquet(
        "tx/ds=2026-10-30/part-0.parquet",
        _tx_frame(
            "2026-10-30",
            [("b1", "10:00", "4111111111111111", 30.0, "pos"), ("b2", "23:00", "4012888888881881", 5.0, "pos")],
        ),
    )
    src.write_parquet(
        "tx/ds=2026-10-31/part-0.parquet",
        _tx_frame("2026-10-31", [("c1", "10:00", "5500000000000004", 40.0, "ecom")]),
    )
    src.write_parquet(
        "tx/ds=2026-10-20/part-0.parquet", _tx_frame("2026-10-20", [("old", "10:00", "4111111111111111", 1.0, "pos")])
    )
    labels = pd.DataFrame(
        {
            "tx": ["a1", "b1", "c1", "old"],
            "reported_at": pd.to_datetime(
                ["2026-10-30T08:00Z", "2026-10-31T12:00Z", "2026-11-01T00:00Z", "2026-10-29T00:00Z"], utc=True
            ),
        }
    )
    # each chargeback lands in the partition of its report day
    for day, grp in labels.groupby(labels["reported_at"].dt.strftime("%Y-%m-%d")):
        src.write_parquet(f"cb/ds={day}/part-0.parquet", grp.reset_index(drop=True))
    return tmp_path / "landing"


def test_collect_labels_reads_only_the_key_and_arrival_columns(tmp_path: Path) -> None:
    src = Store.from_uri(str(tmp_path))
    feed = pd.DataFrame(
        {"tx": ["a", "b"], "reported_at": pd.to_datetime(["2026-10-30", "2026-11-02"], utc=True), "note": ["x", "y"]}
    )
    src.write_parquet("ds=2026-10-30/part-0.parquet", feed)
    labels = collect_labels(_mini_spec(), src, "2026-10-01", "2026-11-05", AS_OF).usable
    assert list(labels.columns) == ["tx", "reported_at"] and labels["tx"].tolist() == ["a"]


def test_only_labels_that_arrived_before_as_of_are_positive(mini_landing: Path, tmp_path: Path) -> None:
    s = _run(_mini_spec(), tmp_path / "art", mini_landing / "tx", mini_landing / "cb")
    ds = pd.read_parquet(tmp_path / "art" / s["dataset_rel"])
    # c1's chargeback arrives exactly at the interval end: not yet known to this run
    assert dict(zip(ds["tx"], ds["is_fraud"], strict=True)) == {"a1": 1, "a2": 0, "b1": 1, "b2": 0, "c1": 0}
    assert s["positives"] == 2 and s["label_rows_used"] == 2
    assert s["label_rows_in"] == 3 and s["label_rows_unmatched"] == 1  # 'old' arrived, but its row is out of the window
    assert s["label_rows_not_yet_arrived"] == 1  # c1's
    # a later run (a day on) sees c1's chargeback
    later = _run(
        _mini_spec(),
        tmp_path / "art",
        mini_landing / "tx",
        mini_landing / "cb",
        as_of=dt.datetime(2026, 11, 1, 0, 1, tzinfo=dt.UTC),
        run_dir="runs/r2",
    )
    ds2 = pd.read_parquet(tmp_path / "art" / later["dataset_rel"])
    assert ds2.loc[ds2["tx"] == "c1", "is_fraud"].item() == 1


def test_maturity_days_leave_out_rows_whose_labels_may_still_come(mini_landing: Path, tmp_path: Path) -> None:
    spec = _mini_spec(data__labels__maturity_days=2)
    s = _run(spec, tmp_path / "art", mini_landing / "tx", mini_landing / "cb")
    ds = pd.read_parquet(tmp_path / "art" / s["dataset_rel"])
    assert ds["tx"].tolist() == ["a1", "a2"]  # before 2026-10-30T00:00Z
    assert s["immature_rows_left_out"] == 3 and s["dataset_rows"] == 2


def test_maturity_leaves_out_rows_delivered_out_of_order_across_days(tmp_path: Path) -> None:
    """Rows come by day, then time; a day may hold a row a little past its end (within the
    partition tolerance) and the next day one a little before its start. So the mature rows are not
    always the first ones: each is kept or left out by its own time."""
    src = Store.from_uri(str(tmp_path / "landing"))
    early = _tx_frame("2026-10-29", [("a1", "10:00", "4111111111111111", 10.0, "pos")])
    late = _tx_frame("2026-10-30", [("a2", "00:30", "5500000000000004", 20.0, "ecom")])  # delivered on the 29th
    src.write_parquet("tx/ds=2026-10-29/part-0.parquet", pd.concat([early, late], ignore_index=True))
    before = _tx_frame("2026-10-29", [("b0", "23:30", "4012888888881881", 5.0, "pos")])  # delivered on the 30th
    day = _tx_frame("2026-10-30", [("b1", "10:00", "4111111111111111", 30.0, "pos")])
    src.write_parquet("tx/ds=2026-10-30/part-0.parquet", pd.concat([before, day], ignore_index=True))
    feed = pd.DataFrame({"tx": ["a1"], "reported_at": pd.to_datetime(["2026-10-30T08:00Z"], utc=True)})
    src.write_parquet("cb/ds=2026-10-30/part-0.parquet", feed)
    spec = _mini_spec(data__labels__maturity_days=2)  # rows before 2026-10-30T00:00Z are mature
    s = _run(spec, tmp_path / "art", tmp_path / "landing" / "tx", tmp_path / "landing" / "cb")
    assert s["rows_curated"] == 4 and s["rows_quarantined"] == 0  # within the partitions' tolerance
    ds = pd.read_parquet(tmp_path / "art" / s["dataset_rel"])
    assert ds["tx"].tolist() == ["a1", "b0"] and ds["is_fraud"].tolist() == [1, 0]
    assert s["immature_rows_left_out"] == 2 and s["dataset_rows"] == 2 and s["label_rows_used"] == 1


def test_custom_label_values(mini_landing: Path, tmp_path: Path) -> None:
    spec = _mini_spec(
        data__labels__label_value="fraud", data__labels__negative_value="legit", problem__positive_label="fraud"
    )
    s = _run(spec, tmp_path / "art", mini_landing / "tx", mini_landing / "cb")
    ds = pd.read_parquet(tmp_path / "art" / s["dataset_rel"])
    assert ds["is_fraud"].tolist() == ["fraud", "legit", "fraud", "legit", "legit"]
    assert s["positives"] == 2


def test_a_naive_as_of_is_taken_as_utc(mini_landing: Path, tmp_path: Path) -> None:
    spec = _mini_spec(data__labels__maturity_days=2)
    aware = _run(spec, tmp_path / "a", mini_landing / "tx", mini_landing / "cb")
    naive = _run(spec, tmp_path / "b", mini_landing / "tx", mini_landing / "cb", as_of=AS_OF.replace(tzinfo=None))
    assert _checksums(tmp_path / "a", "runs/r1/dataset.parquet") == _checksums(
        tmp_path / "b", "runs/r1/dataset.parquet"
    )
    assert naive["positives"] == aware["positives"] and naive["dataset_rows"] == aware["dataset_rows"]


def test_a_label_feed_without_its_key_column_is_a_named_error(mini_landing: Path, tmp_path: Path) -> None:
    spec = _mini_spec()
    bad = Store.from_uri(str(tmp_path / "badcb"))
    bad.write_parquet(
        "ds=2026-10-30/part-0.parquet", pd.DataFrame({"transaction": ["a1"], "reported_at": ["2026-10-30"]})
    )
    with pytest.raises(SchemaError) as err:
        collect_labels(spec, bad, "2026-10-29", "2026-11-02", AS_OF)
    msg = str(err.value)
    assert str(tmp_path / "badcb") in msg and "'tx'" in msg and "rule: labels.key" in msg


def test_join_labels_marks_keys_found_in_the_feed() -> None:
    spec = _mini_spec()
    curated = pd.DataFrame({"tx": ["x", "y", "z"]})
    out = join_labels(curated, pd.DataFrame({"tx": ["z", "q"], "reported_at": [0, 0]}), spec)
    assert out["is_fraud"].tolist() == [0, 0, 1]
    assert "is_fraud" not in curated.columns  # the input frame is not modified


# --- a single CSV file through the job entry point ------------------------------------------------------
CHURN_CSV = """customer_id,signup,plan,monthly_fee,tenure,phone,region,notes,churned
c1,2024-01-03,basic,10.5,12,+49 151 1111,north,ok,Yes
c2,2024-02-10,pro,,3,+49 151 2222,south,,No
c3,2024-03-01,basic,12.0,,+49 151 3333,,late payer,No
c4,2024-03-05,gold,99,7,+49 151 4444,east,x,Yes
c2,2024-02-10,pro,20,3,+49 151 2222,south,,No
c5,not a date,basic,10,2,+49 151 5555,north,,No
c6,2024-04-01,basic,-1,2,+49 151 6666,north,,No
c7,2024-04-02,basic,10,2,,north,,Maybe
c8, 2024-04-03 ,pro,7.25,1,+49 151 8888,west,3,Yes
"""

CHURN_SPEC: dict[str, Any] = {
    "name": "churn",
    "title": "Customer churn",
    "schedule": None,
    "goal": {
        "statement": "Find customers about to leave so retention can call them.",
        "metric": "roc_auc",
        "target": 0.7,
    },
    "problem": {"type": "binary_classification", "target": "churned", "positive_label": "Yes"},
    "data": {"source": "churn.csv", "format": "csv", "layout": "single_file", "key": "customer_id"},
    "schema": {
        "extra_columns": "keep",
        "columns": [
            {"name": "customer_id", "dtype": "string", "nullable": False},
            {"name": "signup", "dtype": "date"},
            {"name": "plan", "dtype": "category", "allowed": ["basic", "pro"]},
            {"name": "monthly_fee", "dtype": "float", "min": 0},
            {"name": "tenure", "dtype": "int"},
            {"name": "phone", "dtype": "string", "pii": True},
            {"name": "churned", "dtype": "category", "nullable": False, "allowed": ["Yes", "No"]},
        ],
    },
    "features": {"initial": ["base"], "groups": [{"name": "base", "kind": "raw", "columns": ["plan", "region"]}]},
    "training": {"candidates": [{"family": "logistic"}]},
}


@pytest.fixture
def churn(tmp_path: Path) -> dict[str, Path]:
    import yaml

    data = tmp_path / "data"
    data.mkdir()
    (data / "churn.csv").write_text(CHURN_CSV)
    spec = tmp_path / "churn.yaml"
    spec.write_text(yaml.safe_dump(CHURN_SPEC, sort_keys=False))
    return {"data": data, "csv": data / "churn.csv", "spec": spec, "art": tmp_path / "art"}


def _job_args(churn: dict[str, Path], run_dir: str = "runs/manual_1", spec: str | None = None) -> list[str]:
    return [
        "--spec", spec or str(churn["spec"]),
        "--artifact-root", str(churn["art"]),
        "--run-dir", run_dir,
        "--as-of", "2026-01-01T00:00:00+00:00",
        "--lookback-days", "30",
        "--source", str(churn["csv"]),
        "--JOB_NAME", "glue-adds-its-own-args",
    ]  # fmt: skip


def test_single_csv_with_yes_no_labels_missing_values_and_mixed_columns(churn: dict[str, Path]) -> None:
    before = _snapshot(churn["data"])
    summary = job.main(_job_args(churn), pii_key=KEY, log=lambda _: None)
    assert _snapshot(churn["data"]) == before  # the input file is untouched
    assert summary["rows_in"] == 9 == summary["rows_curated"] + summary["rows_quarantined"]
    assert summary["by_rule"] == {"allowed": 2, "dtype:date": 1, "min:0": 1, "duplicate_key": 1}
    assert summary["window"]["start"] is None and summary["partitions"][0]["ds"] == "all"

    art = churn["art"]
    ds = pd.read_parquet(art / summary["dataset_rel"])
    assert ds["customer_id"].tolist() == ["c1", "c2", "c3", "c8"]  # c2's second row is the duplicate
    assert ds["churned"].tolist() == ["Yes", "No", "No", "Yes"]
    assert summary["positives"] == 2


def test_yes_no_labels_declared_as_bool(churn: dict[str, Path]) -> None:
    spec = copy.deepcopy(CHURN_SPEC)
    spec["schema"]["columns"][-1] = {"name": "churned", "dtype": "bool", "nullable": False}
    spec["problem"]["positive_label"] = True
    summary = job.main(_job_args(churn, spec=json.dumps(spec)), pii_key=KEY, log=lambda _: None)
    ds = pd.read_parquet(churn["art"] / summary["dataset_rel"]).set_index("customer_id")
    assert str(ds["churned"].dtype) in {"bool", "boolean"}
    assert ds["churned"].to_dict() == {"c1": True, "c2": False, "c3": False, "c8": True}  # c4 has plan 'gold'
    assert summary["positives"] == 2
    assert summary["by_rule"] == {"allowed": 1, "dtype:bool": 1, "dtype:date": 1, "min:0": 1, "duplicate_key": 1}


def test_a_single_file_row_without_a_label_is_quarantined(churn: dict[str, Path]) -> None:
    spec = copy.deepcopy(CHURN_SPEC)
    spec["schema"]["columns"][-1] = {"name": "churned", "dtype": "category", "allowed": ["Yes", "No"]}
    churn["csv"].write_text(CHURN_CSV + "c9,2024-04-04,pro,7,1,,west,,\nc10,2024-04-04,pro,7,1,,west,, \n")
    summary = job.main(_job_args(churn, spec=json.dumps(spec)), pii_key=KEY, log=lambda _: None)
    assert summary["rows_in"] == 11 == summary["rows_curated"] + summary["rows_quarantined"]
    assert summary["by_rule"]["target_missing"] == 2
    qua = pd.read_parquet(churn["art"] / "quarantine/ds=all/part-0.parquet").set_index("customer_id")
    assert qua.loc["c9", "_rule"] == qua.loc["c10", "_rule"] == "target_missing"
    assert qua.loc["c9", "_column"] == "churned" and "churned=" in qua.loc["c9", "_reason"]
    ds = pd.read_parquet(churn["art"] / summary["dataset_rel"])
    assert "c9" not in set(ds["customer_id"]) and ds["churned"].notna().all()
    assert summary["positives"] == 2


def test_positives_are_counted_by_the_shared_label_rule(churn: dict[str, Path]) -> None:
    spec = copy.deepcopy(CHURN_SPEC)
    spec["problem"]["positive_label"] = " yes"  # the data says "Yes": case and blanks do not matter
    summary = job.main(_job_args(churn, spec=json.dumps(spec)), pii_key=KEY, log=lambda _: None)
    assert summary["positives"] == 2


def test_curation_of_self_labelled_rows_is_redone_when_the_target_changes(churn: dict[str, Path]) -> None:
    job.main(_job_args(churn, run_dir="runs/a"), pii_key=KEY, log=lambda _: None)
    manifest = json.loads((churn["art"] / "curated/ds=all/_manifest.json").read_text())
    assert manifest["fingerprint"]["target"] == "churned"


def test_the_job_writes_its_summary_and_quarantine(churn: dict[str, Path]) -> None:
    summary = job.main(_job_args(churn), pii_key=KEY, log=lambda _: None)
    art = churn["art"]
    assert json.loads((art / "runs/manual_1/collect_summary.json").read_text()) == json.loads(
        json.dumps(summary, default=str)
    )
    qua = pd.read_parquet(art / "quarantine/ds=all/part-0.parquet")
    reasons = dict(zip(qua["customer_id"], qua["_reason"], strict=True))
    assert reasons["c4"] == "plan='gold' breaks rule allowed"
    assert reasons["c5"] == "signup='not a date' breaks rule dtype:date"
    assert reasons["c6"] == "monthly_fee='-1' breaks rule min:0"
    assert reasons["c7"] == "churned='Maybe' breaks rule allowed"
    assert reasons["c2"] == "customer_id='c2' breaks rule duplicate_key"
    assert set(qua["_source"]) == {f"file://{churn['csv']}"}
    phones = {ln.split(",")[5] for ln in CHURN_CSV.splitlines()[1:]} - {""}
    assert not phones & set(qua["phone"].dropna()), "raw phone numbers in quarantine"


def test_csv_values_are_cast_and_extra_columns_inferred(churn: dict[str, Path]) -> None:
    summary = job.main(_job_args(churn), pii_key=KEY, log=lambda _: None)
    ds = pd.read_parquet(churn["art"] / summary["dataset_rel"]).set_index("customer_id")
    assert ds["monthly_fee"].dtype == np.float64 and pd.isna(ds.loc["c2", "monthly_fee"])
    assert ds.loc["c8", "monthly_fee"] == 7.25
    assert str(ds["tenure"].dtype) == "Int64" and pd.isna(ds.loc["c3", "tenure"]) and ds.loc["c1", "tenure"] == 12
    assert ds.loc["c8", "signup"] == pd.Timestamp("2024-04-03", tz="UTC")  # blanks around the date are stripped
    assert pd.isna(ds.loc["c3", "region"]) and ds.loc["c1", "region"] == "north"
    assert ds.loc["c8", "notes"] == "3" and ds.loc["c3", "notes"] == "late payer"  # mixed column stays text
    phones = {ln.split(",")[5] for ln in CHURN_CSV.splitlines()[1:]} - {""}
    assert not phones & set(ds["phone"].dropna())
    assert ds.loc["c1", "phone"] == tokenise(pd.Series(["+49 151 1111"]), KEY)[0]
    assert summary["positives"] == int((ds["churned"] == "Yes").sum())


def test_the_job_accepts_the_spec_as_json_and_reads_the_key_from_env(
    churn: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from_file = job.main(_job_args(churn, run_dir="runs/a"), pii_key=KEY, log=lambda _: None)
    monkeypatch.setenv("TEST_PII_KEY", KEY.decode())
    from_json = job.main(
        [*_job_args(churn, run_dir="runs/b", spec=json.dumps(CHURN_SPEC)), "--pii-key-env", "TEST_PII_KEY"],
        log=lambda _: None,
    )
    art = churn["art"]
    assert from_json["rows_curated"] == from_file["rows_curated"]
    assert list(_checksums(art, "runs/a/*.parquet").values()) == list(_checksums(art, "runs/b/*.parquet").values())


def test_the_job_refuses_to_run_without_a_pii_key(churn: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ML_PII_HASH_KEY", raising=False)
    with pytest.raises(ValueError, match="PII hash key is empty"):
        job.main(_job_args(churn), log=lambda _: None)


def test_the_job_reruns_to_identical_files(churn: dict[str, Path]) -> None:
    job.main(_job_args(churn, run_dir="runs/a"), pii_key=KEY, log=lambda _: None)
    first = _checksums(churn["art"], "**/*.parquet")
    messages: list[str] = []
    job.main(_job_args(churn, run_dir="runs/a"), pii_key=KEY, log=messages.append)
    assert any("re-used" in m for m in messages)
    assert _checksums(churn["art"], "**/*.parquet") == first


def test_a_csv_missing_a_declared_column_names_file_column_and_rule(churn: dict[str, Path]) -> None:
    churn["csv"].write_text("customer_id,signup,plan,fee,tenure,phone,churned\nc1,2024-01-01,basic,1,1,x,Yes\n")
    with pytest.raises(SchemaError) as err:
        job.main(_job_args(churn), pii_key=KEY, log=lambda _: None)
    msg = str(err.value)
    assert str(churn["csv"]) in msg and "['monthly_fee']" in msg and "every schema column must be present" in msg


def test_read_single_source_reads_sklearn_and_refuses_unknown_loaders() -> None:
    name, frame = read_single_source("sklearn:load_iris", "sklearn")
    assert name == "sklearn:load_iris" and len(frame) == 150 and "target" in frame.columns
    for bad in ("sklearn:load_nothing", "sklearn:fetch_covtype"):
        with pytest.raises(SchemaError, match="not a bundled scikit-learn data set"):
            read_single_source(bad, "sklearn")


def test_read_single_source_reads_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    frame.to_parquet(tmp_path / "f.parquet")
    name, back = read_single_source(str(tmp_path / "f.parquet"), "parquet")
    assert name == f"file://{tmp_path}/f.parquet"
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


# --- the store helpers the input accounting uses ---------------------------------------------------------
def test_store_entries_content_id_and_remove(tmp_path: Path) -> None:
    local = Store.from_uri(str(tmp_path))
    local.write_bytes("ds=2026-10-01/part-0.parquet", b"abc")
    local.write_bytes("_SUCCESS", b"")
    assert local.entries() == [("_SUCCESS", False), ("ds=2026-10-01", True)]
    assert local.entries("missing") == []
    sha = hashlib.sha256(b"abc").hexdigest()
    assert local.content_id("ds=2026-10-01/part-0.parquet") == f"sha256:{sha}"  # the local store hashes content
    assert local.content_id("ds=2026-10-01/part-0.parquet", b"abc") == f"sha256:{sha}"
    assert local.remove("_SUCCESS") and not local.remove("_SUCCESS") and not (tmp_path / "_SUCCESS").exists()
    memory = Store.from_uri(f"memory://{tmp_path.name}/landing")  # another filesystem without ETags: hashed too
    memory.write_bytes("ds=2026-10-01/part-0.parquet", b"abc")
    assert memory.entries("ds=2026-10-01") == [("part-0.parquet", False)]
    assert memory.content_id("ds=2026-10-01/part-0.parquet") == f"sha256:{sha}"


def test_an_object_store_file_is_identified_by_its_etag(tmp_path: Path) -> None:
    store = Store.from_uri(f"memory://{tmp_path.name}/s3like")
    store.write_bytes("a.parquet", b"abc")
    real_info = store.fs.info

    def info(path: str, **kw: Any) -> dict[str, Any]:
        return {**real_info(path, **kw), "ETag": '"9a0364b9e99bb480dd25e1f0284c8555"'}

    store.fs.info = info  # type: ignore[method-assign]
    assert store.content_id("a.parquet") == "etag:9a0364b9e99bb480dd25e1f0284c8555"  # no download


def test_scan_partitions_names_what_is_not_a_partition(tmp_path: Path) -> None:
    from include.lifecycle.collect import InputFileError, scan_partitions

    for name in ("ds=2026-10-02", "ds=2026-10-01", "_tmp", ".ds=2026-10-03"):
        (tmp_path / name).mkdir()
    scan = scan_partitions(Store.from_uri(str(tmp_path)))
    assert scan.partitions == ["2026-10-01", "2026-10-02"]
    assert [e["path"] for e in scan.ignored] == [".ds=2026-10-03", "_tmp"]
    for bad, why in [
        ("ds=latest", "'latest' is not a YYYY-MM-DD date"),
        ("ds=2026-02-30", "2026-02-30 is not a real date"),
        ("date=2026-10-04", "the key is 'date', not 'ds'"),
        ("README.txt", "data files must lie in ds=YYYY-MM-DD folders"),
    ]:
        path = tmp_path / bad
        path.write_text("x") if bad.endswith(".txt") else path.mkdir()
        with pytest.raises(InputFileError) as err:
            scan_partitions(Store.from_uri(str(tmp_path)))
        assert str(err.value).startswith(f"file://{path}: ") and why in str(err.value), str(err.value)
        path.unlink() if path.is_file() else path.rmdir()
    assert not scan_partitions(Store.from_uri(str(tmp_path / "missing"))).exists
