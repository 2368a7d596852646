"""A corpus of bad input for the collect-and-label ETL (include/lifecycle/collect.py), issue 13.

Each case starts from three clean days of a small card problem (and a chargeback feed), breaks
it in one way and asserts the outcome: the rows quarantined with their rule, or a clear error
(its class, the file and what is wrong); and for every run that ends, the accounting
(rows in = curated + quarantined, per partition and in total; label rows in = used + quarantined
+ unmatched) and the input files counted. Card numbers are planted in the PII column (and in an
undeclared column, a CSV line, a header); the last test scans every file the corpus wrote (Parquet
read back, JSON, anything else as bytes) and every error message for them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.lifecycle.collect import (
    EmptyInputError,
    InputFileError,
    SchemaError,
    collect_and_label,
    mask_digits,
)
from include.lifecycle.spec import Spec, parse_spec
from include.lifecycle.store import Store

KEY = b"bad-input-corpus-pii-key-0123456789"
AS_OF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
DAYS = ["2026-10-29", "2026-10-30", "2026-10-31"]
ROWS_PER_DAY = 4
CARDS = [f"4{n:015d}" for n in range(7_000_000_000_000, 7_000_000_000_040)]  # planted PII, 16 digits
ROOTS: list[Path] = []  # every artifact root the corpus wrote, for the final scan
MESSAGES: list[str] = []  # every error message and log line of the corpus
CASES: dict[str, Callable[[Env], None]] = {}


def case(fn: Callable[[Env], None]) -> Callable[[Env], None]:
    CASES[fn.__name__.removeprefix("case_")] = fn
    return fn


def spec_for(
    fmt: str = "parquet", layout: str = "partitioned", *, labelled: bool = True, pii_key: bool = False, **data: Any
) -> Spec:
    """The corpus's problem: a label feed (``labelled``), or the rows' own ``kind`` as the target."""
    feed = {"labels": {"source": "unused", "key": "tx", "arrived_at": "reported_at"}} if labelled else {}
    target = {"target": "is_fraud"} if labelled else {"target": "kind", "positive_label": "pos"}
    return parse_spec(
        {
            "name": "bad_input",
            "title": "Bad input corpus",
            "goal": {"statement": "Catch fraud early enough to matter.", "metric": "auprc", "target": 0.5},
            "problem": {"type": "binary_classification", **target},
            "data": {
                "source": "unused",
                "format": fmt,
                "layout": layout,
                "key": "tx",
                "time_column": "ts",
                "entity_column": "card",
                "lookback_days": 3,
                **feed,
                **data,
            },
            "schema": {
                "columns": [
                    {"name": "tx", "dtype": "string", "nullable": False, "pii": pii_key},
                    {"name": "ts", "dtype": "timestamp", "nullable": False},
                    {"name": "card", "dtype": "string", "nullable": False, "pii": True},
                    {"name": "amount", "dtype": "float", "nullable": False, "min": 0.01, "max": 1000},
                    {"name": "kind", "dtype": "category", "allowed": ["pos", "ecom"]},
                    {"name": "items", "dtype": "int"},
                ]
            },
            "features": {"initial": ["raw"], "groups": [{"name": "raw", "kind": "raw", "columns": ["amount"]}]},
            "training": {"candidates": [{"family": "logistic"}]},
        },
        "bad_input.yaml",
    )


def day_frame(ds: str) -> pd.DataFrame:
    """The clean rows of one day: ids t<day>-<i>, a planted card each, amounts 10, 11, ..."""
    d = int(ds[-2:])
    i = np.arange(ROWS_PER_DAY)
    return pd.DataFrame(
        {
            "tx": [f"t{d}-{k}" for k in i],
            "ts": pd.to_datetime([f"{ds}T{9 + k:02d}:00:00Z" for k in i], utc=True),
            "card": [CARDS[(d % 10) * ROWS_PER_DAY + k] for k in i],
            "amount": (10.0 + i).astype("float64"),
            "kind": ["pos", "ecom"] * (ROWS_PER_DAY // 2),
            "items": (1 + i).astype("int64"),
        }
    )


class Env:
    """A landing zone of three clean days and a chargeback feed, an artifact root, the log."""

    def __init__(self, root: Path, fmt: str = "parquet") -> None:
        self.root = root
        self.fmt = fmt
        self.tx = root / "landing" / "tx"
        self.cb = root / "landing" / "cb"
        self.art = root / "art"
        self.spec = spec_for(fmt)
        self.log: list[str] = []
        ROOTS.append(self.art)
        for ds in DAYS:
            self.write(ds, day_frame(ds))
        # two chargebacks, reported on the last day: t29-0 and t30-1 are fraud
        self.write_labels(
            "2026-10-31",
            pd.DataFrame(
                {"tx": ["t29-0", "t30-1"], "reported_at": pd.to_datetime(["2026-10-31T08:00Z"] * 2, utc=True)}
            ),
        )

    def file(self, ds: str, name: str | None = None) -> Path:
        return self.tx / f"ds={ds}" / (name or f"part-0.{self.fmt}")

    def write(self, ds: str, df: pd.DataFrame, name: str | None = None) -> Path:
        path = self.file(ds, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".csv":
            df.to_csv(path, index=False)
        else:
            df.to_parquet(path, index=False)
        return path

    def write_bytes(self, rel: str, data: bytes, base: Path | None = None) -> Path:
        path = (base or self.tx) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def write_labels(self, ds: str, df: pd.DataFrame, name: str = "part-0.parquet") -> Path:
        path = self.cb / f"ds={ds}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)
        return path

    def replace_day(self, ds: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
        return self.write(ds, change(day_frame(ds)))

    def run(self, spec: Spec | None = None, *, lookback: int = 3, source: Path | None = None, run: str = "r1") -> dict:
        spec = spec or self.spec
        summary = collect_and_label(
            spec,
            problem=Store.from_uri(str(self.art)),
            run_dir=f"runs/{run}",
            as_of=AS_OF,
            lookback_days=lookback,
            pii_key=KEY,
            source_uri=str(source or self.tx),
            labels_uri=str(self.cb) if spec.data.labels else None,
            log=self.log.append,
        )
        MESSAGES.extend(self.log)
        MESSAGES.append(json.dumps(summary, default=str))
        check_accounting(summary, self.art)
        return summary

    def fails(self, exc: type[Exception], *expected: str, spec: Spec | None = None, lookback: int = 3) -> str:
        with pytest.raises(exc) as err:
            self.run(spec, lookback=lookback)
        msg = str(err.value)
        MESSAGES.append(msg)
        MESSAGES.extend(self.log)
        for part in expected:
            assert part in msg, f"{part!r} not in {msg!r}"
        assert not any(c in msg for c in CARDS), msg
        return msg

    def quarantine(self, ds: str) -> pd.DataFrame:
        path = self.art / "quarantine" / f"ds={ds}" / "part-0.parquet"
        return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=["_rule"])

    def dataset(self, s: dict) -> pd.DataFrame:
        return pd.read_parquet(self.art / s["dataset_rel"])


def check_accounting(s: dict, art: Path) -> None:
    """Rows and label rows add up, per partition and in total, and every data file is listed."""
    assert s["rows_in"] == s["rows_curated"] + s["rows_quarantined"], s
    assert sum(s["by_rule"].values()) == s["rows_quarantined"], s
    assert sum(p["rows_in"] for p in s["partitions"]) == s["rows_in"]
    for p in s["partitions"]:
        assert p["rows_in"] == p["rows_curated"] + p["rows_quarantined"], p
        assert sum(f["rows"] for f in p["files"]) == p["rows_in"], p
        cur = pd.read_parquet(art / "curated" / f"ds={p['ds']}" / "part-0.parquet")
        assert len(cur) == p["rows_curated"] + p.get("cross_partition_duplicates", 0)
        qpath = art / "quarantine" / f"ds={p['ds']}" / "part-0.parquet"
        in_file = len(pd.read_parquet(qpath)) if qpath.exists() else 0
        assert in_file == p["rows_quarantined"] - p.get("cross_partition_duplicates", 0), p
    data_files = [f for f in s["files"] if f["source"] == "data" and f["outcome"] != "ignored"]
    assert sum(f["rows"] for f in data_files) == s["rows_in"]
    assert len(data_files) == sum(len(p["files"]) for p in s["partitions"])
    if s.get("label_rows_in") is not None:
        assert s["label_rows_in"] == s["label_rows_used"] + s["label_rows_quarantined"] + s["label_rows_unmatched"]
        assert s["label_rows_read"] == s["label_rows_in"] + s["label_rows_not_yet_arrived"]
        label_files = [f for f in s["files"] if f["source"] == "labels" and f["outcome"] != "ignored"]
        assert sum(f["rows"] for f in label_files) == s["label_rows_read"]


def n_files(s: dict, outcome: str = "read", source: str = "data") -> int:
    return sum(1 for f in s["files"] if f["source"] == source and f["outcome"] == outcome)


def parquet_bytes(df: pd.DataFrame | pa.Table, **options: Any) -> bytes:
    buf = io.BytesIO()
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, buf, **options)
    return buf.getvalue()


def with_invalid_utf8(df: pd.DataFrame, column: str, row: int, raw: bytes) -> pa.Table:
    """``df`` as a table whose text ``column`` holds the bytes ``raw`` (not UTF-8) at ``row``."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    values = [v.encode() for v in df[column]]
    values[row] = raw
    offsets = np.cumsum([0] + [len(v) for v in values]).astype(np.int32)
    arr = pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values)))
    return table.set_column(table.schema.get_field_index(column), column, arr)


def uri(path: Path) -> str:
    return f"file://{path}"


# --- files and partitions --------------------------------------------------------------------------
@case
def case_csv_file_in_a_parquet_source(env: Env) -> None:
    path = env.file("2026-10-30")
    path.unlink()
    day_frame("2026-10-30").to_csv(path.with_suffix(".csv"), index=False)
    env.fails(InputFileError, uri(path.with_suffix(".csv")), "a .csv file in a parquet source")


@case
def case_a_second_file_of_another_format(env: Env) -> None:
    extra = env.write_bytes("ds=2026-10-30/part-1.json", b'{"tx": "t30-9"}')
    env.fails(InputFileError, uri(extra), "a .json file in a parquet source")


@case
def case_a_file_without_an_extension(env: Env) -> None:
    extra = env.write_bytes("ds=2026-10-30/part-00001", parquet_bytes(day_frame("2026-10-30")))
    env.fails(InputFileError, uri(extra), "without the .parquet extension")


@case
def case_a_day_folder_without_zero_padding(env: Env) -> None:
    env.write("2026-10-6", day_frame("2026-10-06"))  # outside the window too: still an error
    env.fails(InputFileError, "ds=2026-10-6", "is not a YYYY-MM-DD date")


@case
def case_a_partition_key_other_than_ds(env: Env) -> None:
    path = env.tx / "dt=2026-10-17" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    day_frame("2026-10-17").to_parquet(path)
    env.fails(InputFileError, "dt=2026-10-17", "the key is 'dt', not 'ds'")


@case
def case_a_partition_folder_with_a_trailing_blank(env: Env) -> None:
    os.rename(env.tx / "ds=2026-10-30", env.tx / "ds=2026-10-30 ")
    env.fails(InputFileError, "ds=2026-10-30 ", "blanks around it")


@case
def case_a_partition_of_a_date_that_does_not_exist(env: Env) -> None:
    env.write("2026-10-32", day_frame("2026-10-31"))
    env.fails(InputFileError, "ds=2026-10-32", "2026-10-32 is not a real date")


@case
def case_a_data_file_directly_under_the_source(env: Env) -> None:
    loose = env.write_bytes("part-0.parquet", parquet_bytes(day_frame("2026-10-30")))
    env.fails(InputFileError, uri(loose), "must lie in ds=YYYY-MM-DD folders")


@case
def case_a_nested_folder_inside_a_partition(env: Env) -> None:
    env.write_bytes("ds=2026-10-30/hour=01/part-0.parquet", parquet_bytes(day_frame("2026-10-30")))
    env.fails(InputFileError, "ds=2026-10-30/hour=01", "a folder inside partition")


@case
def case_hidden_files_are_listed_as_ignored(env: Env) -> None:
    env.write_bytes("_SUCCESS", b"")
    env.write_bytes("ds=2026-10-30/.part-0.parquet.crc", b"crc")
    env.write_bytes("ds=2026-10-30/_committed", b"{}")
    s = env.run()
    ignored = {f["path"] for f in s["files"] if f["outcome"] == "ignored"}
    assert ignored == {"_SUCCESS", "ds=2026-10-30/.part-0.parquet.crc", "ds=2026-10-30/_committed"}
    assert s["rows_in"] == 12 and n_files(s) == 3


@case
def case_an_empty_file_does_not_replace_a_curated_day(env: Env) -> None:
    assert env.run()["rows_curated"] == 12
    env.write("2026-10-30", day_frame("2026-10-30").iloc[:0])
    msg = env.fails(EmptyInputError, "ds=2026-10-30", "0 rows", "holds 4 input rows", "_manifest.json")
    assert "delete" in msg
    cur = pd.read_parquet(env.art / "curated" / "ds=2026-10-30" / "part-0.parquet")
    assert len(cur) == 4  # the good day is still there


@case
def case_an_empty_file_of_a_new_day_is_a_warning(env: Env) -> None:
    env.write("2026-10-30", day_frame("2026-10-30").iloc[:0])
    s = env.run()
    assert s["rows_in"] == 8 and n_files(s) == 2 and n_files(s, "empty") == 1
    assert any("ds=2026-10-30/part-0.parquet: the file holds 0 rows" in w for w in s["warnings"])


@case
def case_an_empty_partition_folder_is_a_warning(env: Env) -> None:
    env.file("2026-10-30").unlink()
    s = env.run()
    assert s["rows_in"] == 8 and n_files(s) == 2
    assert any("ds=2026-10-30: the partition folder holds no data files" in w for w in s["warnings"])


@case
def case_a_missing_day_is_reported(env: Env) -> None:
    env.file("2026-10-30").unlink()
    env.file("2026-10-30").parent.rmdir()
    s = env.run()
    assert s["missing_days"] == ["2026-10-30"] and len(s["partitions"]) == 2
    assert any("have no partition" in w for w in s["warnings"])


# --- the curated cache ---------------------------------------------------------------------------------
@case
def case_amounts_overwritten_in_place_with_the_same_size(env: Env) -> None:
    first = env.run()
    path = env.file("2026-10-30")
    size = path.stat().st_size
    for delta in range(1, 500):  # other amounts that happen to give a file of the same size
        env.replace_day("2026-10-30", lambda d, delta=delta: d.assign(amount=d["amount"] + delta))
        if path.stat().st_size == size:
            break
    assert path.stat().st_size == size  # same name, same size: only the content tells
    log_before = len(env.log)
    second = env.run(run="r2")
    assert sum("re-used" in m for m in env.log[log_before:]) == 2  # the other two days
    ds = env.dataset(second).set_index("tx")
    assert ds.loc["t30-0", "amount"] == 10.0 + delta and first["rows_in"] == second["rows_in"]


@case
def case_a_corrupted_file_of_the_same_size(env: Env) -> None:
    env.run()
    path = env.file("2026-10-30")
    data = bytearray(path.read_bytes())
    meta = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(0).column(0)
    start = meta.dictionary_page_offset or meta.data_page_offset
    for at in range(start + 25, start + meta.total_compressed_size - 5):
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))  # the same name and size, other bytes
    env.fails(InputFileError, f"{uri(path)}: corrupt compressed data")


@case
def case_a_touched_file_is_still_re_used(env: Env) -> None:
    env.run()
    path = env.file("2026-10-30")
    os.utime(path, (1e9, 1e9))
    env.log.clear()
    env.run(run="r2")
    assert sum("re-used" in m for m in env.log) == 3


# --- values that must not crash the run ----------------------------------------------------------------
@case
def case_inf_in_an_int_column(env: Env) -> None:
    df = day_frame("2026-10-30").astype({"items": "float64"})
    df.loc[1, "items"] = np.inf
    env.write("2026-10-30", df)
    s = env.run()
    q = env.quarantine("2026-10-30")
    assert s["by_rule"] == {"dtype:int": 1} and q["_column"].tolist() == ["items"]
    assert "not a finite number" in q["_reason"].item()


@case
def case_a_fraction_in_a_nullable_int_column(env: Env) -> None:
    df = day_frame("2026-10-30").astype({"items": "float64"})
    df.loc[0, "items"] = np.nan
    df.loc[2, "items"] = 2.5
    env.write("2026-10-30", df)
    s = env.run()
    assert s["by_rule"] == {"dtype:int": 1} and s["rows_curated"] == 11
    cur = pd.read_parquet(env.art / "curated" / "ds=2026-10-30" / "part-0.parquet")
    assert str(cur["items"].dtype) == "Int64" and cur["items"].isna().sum() == 1


@case
def case_an_int_beyond_the_int64_range(env: Env) -> None:
    df = day_frame("2026-10-30").astype({"items": "float64"})
    df.loc[3, "items"] = 1e20
    env.write("2026-10-30", df)
    s = env.run()
    assert s["by_rule"] == {"dtype:int": 1}
    assert "outside the int64 range" in env.quarantine("2026-10-30")["_reason"].item()


@case
def case_inf_in_a_float_column(env: Env) -> None:
    env.replace_day("2026-10-30", lambda d: d.assign(amount=[10.0, -np.inf, 12.0, 13.0]))
    assert env.run()["by_rule"] == {"dtype:float": 1}


@case
def case_a_nan_amount_is_missing_and_not_null_breaks(env: Env) -> None:
    env.replace_day("2026-10-30", lambda d: d.assign(amount=[10.0, np.nan, 12.0, 13.0]))
    assert env.run()["by_rule"] == {"not_null": 1}


@case
def case_non_utf8_bytes_in_a_parquet_text_column(env: Env) -> None:
    table = with_invalid_utf8(day_frame("2026-10-30"), "kind", 2, b"caf\xe9")
    env.write_bytes("ds=2026-10-30/part-0.parquet", parquet_bytes(table))
    s = env.run()
    q = env.quarantine("2026-10-30")
    assert s["by_rule"] == {"encoding": 1} and q["_column"].tolist() == ["kind"]
    assert q["_reason"].item().startswith("kind='caf\\\\xe9' breaks rule encoding")


@case
def case_non_utf8_bytes_in_the_pii_column(env: Env) -> None:
    table = with_invalid_utf8(day_frame("2026-10-30"), "card", 1, CARDS[-1].encode() + b"\xff")
    env.write_bytes("ds=2026-10-30/part-0.parquet", parquet_bytes(table))
    s = env.run()
    q = env.quarantine("2026-10-30")
    assert s["by_rule"] == {"encoding": 1}
    assert q["_reason"].item() == "card=<pii> breaks rule encoding (bytes that are not UTF-8, shown as \\x escapes)"
    assert re.fullmatch(r"[0-9a-f]{24}", q["card"].item())  # tokenised like every card


@case
def case_an_unreadable_timestamp(env: Env) -> None:
    df = day_frame("2026-10-30").astype({"ts": "str"})
    df.loc[1, "ts"] = "yesterday-ish"
    df.loc[2, "ts"] = "99999-01-01T00:00:00Z"
    env.write("2026-10-30", df)
    assert env.run()["by_rule"] == {"dtype:timestamp": 2}


@case
def case_amounts_out_of_range_and_unknown_kinds(env: Env) -> None:
    env.replace_day(
        "2026-10-30", lambda d: d.assign(amount=[-1.0, 5000.0, 12.0, 13.0], kind=["pos", "pos", "fax", None])
    )
    assert env.run()["by_rule"] == {"min:0.01": 1, "max:1000": 1, "allowed": 1}


@case
def case_a_missing_key_and_a_duplicate_key(env: Env) -> None:
    env.replace_day("2026-10-30", lambda d: d.assign(tx=[None, "t30-1", "t30-1", "t30-3"]))
    s = env.run()
    assert s["by_rule"] == {"not_null": 1, "duplicate_key": 1}


@case
def case_numbers_stored_as_text_and_text_as_numbers(env: Env) -> None:
    df = day_frame("2026-10-30").astype({"amount": "str", "items": "str"})
    df.loc[1, "amount"] = "twelve"
    env.write("2026-10-30", df)
    s = env.run()
    assert s["by_rule"] == {"dtype:float": 1}
    cur = pd.read_parquet(env.art / "curated" / "ds=2026-10-30" / "part-0.parquet")
    assert cur["amount"].dtype == np.float64 and cur["items"].dtype == np.int64


@case
def case_a_missing_declared_column(env: Env) -> None:
    env.replace_day("2026-10-30", lambda d: d.drop(columns=["amount"]))
    env.fails(SchemaError, uri(env.file("2026-10-30")), "['amount']", "every schema column must be present")


@case
def case_an_undeclared_column_holding_card_numbers(env: Env) -> None:
    env.replace_day("2026-10-30", lambda d: d.assign(pan_copy=d["card"], amount=[-1.0, -2.0, -3.0, -4.0]))
    s = env.run()
    q = env.quarantine("2026-10-30")
    assert s["by_rule"] == {"min:0.01": 4} and "pan_copy" not in q.columns
    assert s["partitions"][1]["dropped_columns"] == ["pan_copy"]


@case
def case_text_stored_as_binary_and_as_dictionary(env: Env) -> None:
    df = day_frame("2026-10-30")
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.set_column(0, "tx", table.column("tx").cast(pa.binary()))
    table = table.set_column(4, "kind", table.column("kind").dictionary_encode())
    env.write_bytes("ds=2026-10-30/part-0.parquet", parquet_bytes(table))
    s = env.run()
    assert s["rows_quarantined"] == 0 and "t30-2" in set(env.dataset(s)["tx"])


@case
def case_a_column_of_a_nested_type(env: Env) -> None:
    table = pa.Table.from_pandas(day_frame("2026-10-30"), preserve_index=False)
    table = table.set_column(3, "amount", pa.array([[1.0]] * 4))
    env.write_bytes("ds=2026-10-30/part-0.parquet", parquet_bytes(table))
    env.fails(SchemaError, uri(env.file("2026-10-30")), "column 'amount' holds ndarray values", "cast to float")


# --- unreadable files --------------------------------------------------------------------------------
@case
def case_a_zero_byte_parquet_file(env: Env) -> None:
    path = env.write_bytes("ds=2026-10-30/part-0.parquet", b"")
    env.fails(InputFileError, f"{uri(path)}: empty file (0 bytes)")


@case
def case_a_truncated_parquet_file(env: Env) -> None:
    data = env.file("2026-10-30").read_bytes()
    path = env.write_bytes("ds=2026-10-30/part-0.parquet", data[: len(data) // 2])
    env.fails(InputFileError, f"{uri(path)}: not a Parquet file (magic bytes not found in footer")


@case
def case_a_text_file_named_parquet(env: Env) -> None:
    path = env.write_bytes("ds=2026-10-30/part-0.parquet", day_frame("2026-10-30").to_csv(index=False).encode())
    env.fails(InputFileError, f"{uri(path)}: not a Parquet file")


@case
def case_corrupt_snappy_data(env: Env) -> None:
    data = bytearray(parquet_bytes(day_frame("2026-10-30"), compression="snappy"))
    meta = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(0).column(0)
    start = meta.dictionary_page_offset or meta.data_page_offset
    for at in range(start + 25, start + meta.total_compressed_size - 5):
        data[at] ^= 0xFF
    path = env.write_bytes("ds=2026-10-30/part-0.parquet", bytes(data))
    env.fails(InputFileError, f"{uri(path)}: ", "Parquet")


@case
def case_duplicate_column_names(env: Env) -> None:
    table = pa.Table.from_pandas(day_frame("2026-10-30"), preserve_index=False)
    table = table.append_column("amount", pa.array([1.0] * 4))
    path = env.write_bytes("ds=2026-10-30/part-0.parquet", parquet_bytes(table))
    env.fails(InputFileError, uri(path), "['amount'] appear more than once")


# --- CSV -------------------------------------------------------------------------------------------------
def csv_env(tmp: Path) -> Env:
    return Env(tmp, fmt="csv")


def csv_text(ds: str) -> str:
    return day_frame(ds).to_csv(index=False)


@case
def case_csv_clean_days_curate_like_parquet(env: Env) -> None:
    parquet = env.run()
    other = csv_env(env.root / "csv")
    s = other.run(spec_for("csv"))
    assert s["rows_curated"] == parquet["rows_curated"] == 12 and n_files(s) == 3
    a, b = env.dataset(parquet), other.dataset(s)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


@case
def case_csv_in_latin_1(env: Env) -> None:
    env = csv_env(env.root / "csv")
    text = csv_text("2026-10-30").replace("ecom", "caf\u00e9")
    path = env.write_bytes("ds=2026-10-30/part-0.csv", text.encode("latin-1"))
    env.fails(InputFileError, f"{uri(path)}: not UTF-8 text (byte 0xe9 on line 3)", spec=spec_for("csv"))


@case
def case_csv_with_broken_quoting(env: Env) -> None:
    env = csv_env(env.root / "csv")
    lines = csv_text("2026-10-30").splitlines()
    lines[2] = lines[2].replace("t30-1", '"t30-1')
    path = env.write_bytes("ds=2026-10-30/part-0.csv", ("\n".join(lines) + "\n").encode())
    env.fails(InputFileError, uri(path), "broken CSV quoting", spec=spec_for("csv"))


@case
def case_csv_with_another_delimiter(env: Env) -> None:
    env = csv_env(env.root / "csv")
    path = env.write_bytes("ds=2026-10-30/part-0.csv", csv_text("2026-10-30").replace(",", ";").encode())
    msg = env.fails(SchemaError, uri(path), "['tx', 'ts', 'card', 'amount', 'kind', 'items']", spec=spec_for("csv"))
    assert "found ['tx;ts;card;amount;kind;items']" in msg


@case
def case_csv_of_blank_lines_only(env: Env) -> None:
    env = csv_env(env.root / "csv")
    path = env.write_bytes("ds=2026-10-30/part-0.csv", b"\n\n\n")
    env.fails(InputFileError, f"{uri(path)}: no columns", spec=spec_for("csv"))


@case
def case_csv_of_zero_bytes(env: Env) -> None:
    env = csv_env(env.root / "csv")
    path = env.write_bytes("ds=2026-10-30/part-0.csv", b"")
    env.fails(InputFileError, f"{uri(path)}: empty file (0 bytes)", spec=spec_for("csv"))


@case
def case_csv_row_with_an_extra_field_holding_a_card_number(env: Env) -> None:
    env = csv_env(env.root / "csv")
    lines = csv_text("2026-10-30").splitlines()
    lines[2] += f",{CARDS[-2]}"
    env.write_bytes("ds=2026-10-30/part-0.csv", ("\n".join(lines) + "\n").encode())
    s = env.run(spec_for("csv"))
    q = env.quarantine("2026-10-30")
    assert s["by_rule"] == {"malformed_row": 1} and s["rows_in"] == 12
    assert q["_reason"].item() == "row 3 has 7 fields where the header has 6: not parsed, its text is not copied"
    assert q.drop(columns=["_rule", "_column", "_reason", "_source"]).isna().all().all()


@case
def case_csv_row_with_a_missing_field(env: Env) -> None:
    env = csv_env(env.root / "csv")
    lines = csv_text("2026-10-30").splitlines()
    lines[4] = lines[4].rsplit(",", 1)[0]
    env.write_bytes("ds=2026-10-30/part-0.csv", ("\n".join(lines) + "\n").encode())
    s = env.run(spec_for("csv"))
    assert s["by_rule"] == {"malformed_row": 1} and s["partitions"][1]["files"][0]["rows"] == 4


@case
def case_csv_without_its_header_line(env: Env) -> None:
    env = csv_env(env.root / "csv")
    path = env.write_bytes("ds=2026-10-30/part-0.csv", "\n".join(csv_text("2026-10-30").splitlines()[1:]).encode())
    msg = env.fails(SchemaError, uri(path), "every schema column must be present", spec=spec_for("csv"))
    assert "************" in msg  # the card number taken for a column name is masked


@case
def case_csv_quoted_fields_with_commas_and_newlines(env: Env) -> None:
    env = csv_env(env.root / "csv")
    df = day_frame("2026-10-30").astype({"ts": "str"})
    df["tx"] = ["t30-0", "t30,1", "t30\n2", 't30"3']
    env.write("2026-10-30", df)
    s = env.run(spec_for("csv"))
    assert s["rows_quarantined"] == 0 and {"t30,1", "t30\n2", 't30"3'} <= set(env.dataset(s)["tx"])


@case
def case_single_csv_file_with_broken_rows(env: Env) -> None:
    spec = spec_for("csv", layout="single_file", labelled=False)
    lines = pd.concat([day_frame(d) for d in DAYS]).to_csv(index=False).splitlines()
    lines[3] += ",extra"
    lines.append(f"t99-0,2027-06-01T00:00:00Z,{CARDS[0]},10.0,pos,1")
    path = env.write_bytes("single/all.csv", ("\n".join(lines) + "\n").encode(), base=env.root)
    s = env.run(spec, source=path)
    assert s["by_rule"] == {"malformed_row": 1, "future_time": 1} and s["rows_in"] == 13
    assert s["files"][0]["path"] == uri(path) and s["files"][0]["rows"] == 13


# --- the label feed ----------------------------------------------------------------------------------
def labels(tx: list[Any], reported: list[Any]) -> pd.DataFrame:
    return pd.DataFrame({"tx": tx, "reported_at": reported})


@case
def case_chargebacks_dated_before_their_transaction(env: Env) -> None:
    env.write_labels("2026-10-29", labels(["t31-0", "t31-1"], pd.to_datetime(["2026-10-29T10:00Z"] * 2, utc=True)))
    s = env.run()
    assert s["positives"] == 2 and s["label_by_rule"] == {"label_before_event": 2}
    q = pd.read_parquet(env.art / s["label_quarantine_rel"])
    assert "before the row's ts 2026-10-31T09:00:00+00:00" in q["_reason"].iloc[0]


@case
def case_an_unreadable_reported_at(env: Env) -> None:
    env.write_labels("2026-10-30", labels(["t29-1", "t29-2", "t29-3"], ["2026-10-30T10:00Z", "soon", None]))
    s = env.run()
    assert s["label_by_rule"] == {"dtype:timestamp": 1, "not_null": 1} and s["label_rows_in"] == 5
    assert s["positives"] == 3 and s["label_rows_used"] == 3


@case
def case_a_label_file_without_its_key_column(env: Env) -> None:
    path = env.write_labels("2026-10-30", labels(["t29-1"], ["2026-10-30T10:00Z"]).rename(columns={"tx": "id"}))
    env.fails(SchemaError, uri(path), "label column 'tx' is missing")


@case
def case_a_label_file_without_its_arrival_column(env: Env) -> None:
    path = env.write_labels("2026-10-30", labels(["t29-1"], ["x"]).drop(columns=["reported_at"]))
    env.fails(SchemaError, uri(path), "label column 'reported_at' is missing")


@case
def case_duplicate_and_keyless_labels(env: Env) -> None:
    env.write_labels("2026-10-30", labels(["t29-0", None, "  "], pd.to_datetime(["2026-10-30T10:00Z"] * 3, utc=True)))
    s = env.run()
    assert s["label_by_rule"] == {"duplicate_key": 1, "not_null": 2} and s["positives"] == 2
    q = pd.read_parquet(env.art / s["label_quarantine_rel"])
    dup = q[q["_rule"] == "duplicate_key"]
    assert dup["reported_at"].item().startswith("2026-10-31 08:00")  # the later one of t29-0


@case
def case_labels_of_rows_outside_the_window_are_unmatched(env: Env) -> None:
    env.write_labels("2026-10-30", labels(["t01-0", "t29-3"], pd.to_datetime(["2026-10-30T10:00Z"] * 2, utc=True)))
    s = env.run()
    assert s["label_rows_unmatched"] == 1 and s["label_rows_used"] == 3


@case
def case_labels_not_yet_arrived(env: Env) -> None:
    env.write_labels("2026-11-01", labels(["t29-3"], pd.to_datetime(["2026-11-01T00:00Z"], utc=True)))
    s = env.run()
    assert s["label_rows_not_yet_arrived"] == 1 and s["positives"] == 2


@case
def case_a_pii_key_joins_its_labels_by_token(env: Env) -> None:
    env.write_labels("2026-10-30", labels(["t29-3", "t29-3"], pd.to_datetime(["2026-10-30T10:00Z"] * 2, utc=True)))
    s = env.run(spec_for(pii_key=True))
    assert s["positives"] == 3 and s["label_rows_used"] == 3 and s["label_by_rule"] == {"duplicate_key": 1}
    q = pd.read_parquet(env.art / s["label_quarantine_rel"])
    assert q["_reason"].item().startswith("tx=<pii> breaks rule duplicate_key")
    assert re.fullmatch(r"[0-9a-f]{24}", q["tx"].item())


@case
def case_a_label_partition_with_an_invalid_name(env: Env) -> None:
    path = env.cb / "ds=2026-10-3" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    labels(["t29-1"], pd.to_datetime(["2026-10-30"], utc=True)).to_parquet(path)
    env.fails(InputFileError, "ds=2026-10-3", "data.labels.source")


@case
def case_a_label_file_of_another_format(env: Env) -> None:
    path = env.write_bytes("ds=2026-10-30/part-0.csv", b"tx,reported_at\nt29-1,2026-10-30\n", base=env.cb)
    env.fails(InputFileError, uri(path), "data.labels.format is parquet")


@case
def case_an_unreadable_label_file(env: Env) -> None:
    path = env.write_bytes("ds=2026-10-30/part-0.parquet", b"PAR1 not really", base=env.cb)
    env.fails(InputFileError, f"{uri(path)}: not a Parquet file")


# --- across partitions ----------------------------------------------------------------------------------
@case
def case_the_same_ids_delivered_on_two_days(env: Env) -> None:
    env.replace_day("2026-10-31", lambda d: d.assign(tx=["t30-0", "t30-1", "t31-2", "t31-3"]))
    s = env.run()
    assert s["by_rule"] == {"duplicate_key": 2} and s["cross_partition"]["duplicate_key"] == 2
    assert s["rows_curated"] == 10 == s["dataset_rows"]
    q = pd.read_parquet(env.art / s["cross_partition"]["quarantine_rel"])
    assert q["_reason"].tolist() == [
        f"tx='t30-{i}' breaks rule duplicate_key (first delivered in ds=2026-10-30)" for i in (0, 1)
    ]
    assert set(q["_ds"]) == {"2026-10-31"} and s["partitions"][2]["cross_partition_duplicates"] == 2


@case
def case_an_id_curated_before_the_window(env: Env) -> None:
    env.write("2026-10-20", day_frame("2026-10-20"))
    env.run(lookback=12, run="wide")  # curates 2026-10-20 too
    env.replace_day("2026-10-31", lambda d: d.assign(tx=["t20-0", "t31-1", "t31-2", "t31-3"]))
    s = env.run(run="r2")
    assert s["cross_partition"] == {
        "duplicate_key": 1,
        "history_partitions": 1,
        "quarantine_rel": "runs/r2/quarantine/cross_partition.parquet",
    }
    q = pd.read_parquet(env.art / s["cross_partition"]["quarantine_rel"])
    assert q["_reason"].item().endswith("(first delivered in ds=2026-10-20)")


@case
def case_rows_dated_long_before_their_partition(env: Env) -> None:
    env.replace_day(
        "2026-10-30",
        lambda d: d.assign(ts=pd.to_datetime(["2026-09-01T10:00Z"] * 2 + ["2026-10-30T10:00Z"] * 2, utc=True)),
    )
    s = env.run()
    assert s["by_rule"] == {"outside_partition": 2}
    assert "outside partition ds=2026-10-30 widened by 3 h" in env.quarantine("2026-10-30")["_reason"].iloc[0]
    assert (env.dataset(s)["ts"] >= pd.Timestamp("2026-10-29", tz="UTC")).all()


@case
def case_rows_dated_in_the_future(env: Env) -> None:
    env.replace_day(
        "2026-10-30", lambda d: d.assign(ts=pd.to_datetime(["2027-06-01T10:00Z"] + ["2026-10-30T10:00Z"] * 3, utc=True))
    )
    assert env.run()["by_rule"] == {"outside_partition": 1}


@case
def case_rows_within_the_tolerance_are_kept(env: Env) -> None:
    times = ["2026-10-29T22:00Z", "2026-10-31T02:59Z", "2026-10-30T10:00Z", "2026-10-31T03:00Z"]
    env.replace_day("2026-10-30", lambda d: d.assign(ts=pd.to_datetime(times, utc=True)))
    s = env.run()
    assert s["by_rule"] == {"outside_partition": 1} and s["partition_tolerance_hours"] == 3
    strict = env.run(spec_for(partition_tolerance_hours=0), run="r2")
    assert strict["by_rule"] == {"outside_partition": 3}


# --- the quarantine itself --------------------------------------------------------------------------------
@case
def case_a_rebuilt_day_without_bad_rows_leaves_no_stale_quarantine(env: Env) -> None:
    env.replace_day("2026-10-30", lambda d: d.assign(amount=[-1.0, 11.0, 12.0, 13.0]))
    env.run()
    assert len(env.quarantine("2026-10-30")) == 1
    env.write("2026-10-30", day_frame("2026-10-30"))
    s = env.run(run="r2")
    assert s["rows_quarantined"] == 0
    assert not (env.art / "quarantine" / "ds=2026-10-30" / "part-0.parquet").exists()


@case
def case_a_quarantined_pii_value_is_tokenised_and_never_in_a_reason(env: Env) -> None:
    env.replace_day(
        "2026-10-30", lambda d: d.assign(card=[CARDS[0], None, "  ", CARDS[1]], amount=[10.0, 11.0, 12.0, 0.0])
    )
    s = env.run()
    q = env.quarantine("2026-10-30")
    assert s["by_rule"] == {"not_null": 2, "min:0.01": 1}
    assert all("<pii>" in r or "card" not in r for r in q["_reason"])
    assert re.fullmatch(r"[0-9a-f]{24}", q.loc[q["_rule"] == "min:0.01", "card"].item())


# --- running the corpus ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, tmp_path: Path) -> None:
    CASES[name](Env(tmp_path))


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


def test_mask_digits_keeps_the_last_four() -> None:
    assert mask_digits(f"card {CARDS[0]} and 4111 1111 1111 1111") == "card ************0000 and **** **** **** 1111"
    assert mask_digits("tx20261001-000180 on 2026-10-01") == "tx20261001-000180 on 2026-10-01"


def test_no_planted_card_number_in_anything_the_corpus_wrote(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not ROOTS:  # run on its own: run the corpus first (the cases' own test reports their failures)
        for name, fn in CASES.items():
            with contextlib.suppress(Exception):
                fn(Env(tmp_path_factory.mktemp(name)))
    planted = set(CARDS)
    scanned = 0
    for root in ROOTS:
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if not path.is_file():
                continue
            scanned += 1
            if path.suffix == ".parquet":
                df = pd.read_parquet(path)
                text = " ".join(map(str, df.columns)) + " " + df.astype(str).to_csv()
                text += str(pq.read_schema(path).metadata)
            else:
                text = path.read_bytes().decode("utf-8", "replace")
            leaked = {c for c in planted if c in text}
            assert not leaked, f"planted card numbers {sorted(leaked)[:2]} in {path}"
    assert scanned > 100
    for msg in MESSAGES:
        assert not any(c in msg for c in planted), msg
