"""Parity of the row curation across engines: collect.py (``collect_and_label``, pandas/Arrow)
against the one Ibis definition (include/lifecycle/curate_ibis.py) on DuckDB and on PySpark in
local mode. The same landing files give the same curated rows (every column, PII tokens
included), the same quarantine (rule, column, source, partition and the text columns of each
row) and the same labelled data set, row for row after sorting.

The inputs: hand-made partitions with a row for every rule and for their precedence (a row that
breaks several rules, duplicates within a file, across the files of a partition, across days of
the window and against earlier curated days, a broken first row of a key), Parquet with typed
columns and CSV with text (blank strings, NaN and inf, out-of-range and fractional ints, bad
numbers and times), a label feed with labels that arrive late, before their event, twice or
broken; a single file with labels in its rows (target_missing, future_time); and a few days of
the demo generator's card data (include/lifecycle/synth.py) with its defects.

The Ibis path runs with the stage cached (``curate(..., cache=True)``) as a run would; one DuckDB
test runs without. The PySpark leg needs Java (Spark 3.5: Java 8, 11 or 17): without it the test fails, saying how
to install it. One small Spark session (local[1], no UI) serves the whole module.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ibis
import numpy as np
import pandas as pd
import pytest

from include.lifecycle import synth
from include.lifecycle.collect import (
    _history_keys,
    collect_and_label,
    frame_from_bytes,
    list_partitions,
    partition_files,
    window_dates,
)
from include.lifecycle.curate_ibis import curate
from include.lifecycle.layout import RunLayout
from include.lifecycle.spec import Spec, parse_spec
from include.lifecycle.store import Store
from tests.unit import engines

KEY = b"unit-test-pii-key-0123456789abcdef"
RUN = "runs/r2"
D = "2024-03-0"  # days 1..7 of March 2024


def _spec(fmt: str = "parquet", columns: tuple[dict, ...] = (), **data: Any) -> Spec:
    raw: dict[str, Any] = {
        "name": "mini_fraud",
        "title": "Mini fraud",
        "goal": {"statement": "Catch fraud early enough to matter.", "metric": "auprc", "target": 0.5},
        "problem": {"type": "binary_classification", "target": "is_fraud", "positive_label": 1},
        "data": {
            "source": "unused",
            "format": fmt,
            "layout": "partitioned",
            "key": "tx",
            "time_column": "ts",
            "entity_column": "card",
            "lookback_days": 3,
            "labels": {"source": "unused", "key": "tx", "arrived_at": "reported_at", "maturity_days": 1},
            **data,
        },
        "schema": {
            "columns": [
                {"name": "tx", "dtype": "string", "nullable": False},
                {"name": "ts", "dtype": "timestamp", "nullable": False},
                {"name": "card", "dtype": "string", "nullable": False, "pii": True},
                {"name": "amount", "dtype": "float", "nullable": False, "min": 0.01, "max": 1000},
                {"name": "kind", "dtype": "category", "allowed": ["pos", "ecom"]},
                {"name": "qty", "dtype": "int", "min": 1, "max": 100},
                *columns,
            ]
        },
        "features": {"initial": ["raw"], "groups": [{"name": "raw", "kind": "raw", "columns": ["amount", "kind"]}]},
        "training": {"candidates": [{"family": "logistic"}]},
    }
    return parse_spec(raw, "mini_fraud.yaml")


NAN, INF = float("nan"), float("inf")
# (tx, ts, card, amount, kind, qty): ts "3T01" is 2024-03-03 01:00 UTC, None is missing
OK = ("pos", 1.0)
W1_A: list[tuple] = [
    ("a1", "3T01", "c1", 10.0, *OK),
    ("a2", "3T01", "c2", 10.0, " ecom ", 2.0),  # blanks around an allowed value are stripped
    ("  ", "3T01", "c1", 10.0, *OK),  # a blank key: not_null
    ("a4", None, "c1", 10.0, *OK),  # not_null ts
    ("a5", "3T01", " \t ", 10.0, *OK),  # blank PII: not_null
    ("a6", "3T01", "c1", NAN, *OK),  # NaN in a float column is missing: not_null
    ("a7", "3T01", "c1", INF, *OK),  # dtype:float (not a finite number)
    ("a8", "3T01", "c1", 0.0, *OK),  # min:0.01
    ("a9", "3T01", "c1", 5000.0, *OK),  # max:1000
    ("a10", "3T01", "c1", 10.0, "cash", 1.0),  # allowed
    ("a11", "3T01", "c1", 10.0, None, None),  # nullable columns may be missing
    ("a12", "3T01", "c1", 10.0, "pos", 1.5),  # dtype:int (a fraction)
    ("a13", "3T01", "c1", 10.0, "pos", 1e19),  # dtype:int (outside int64)
    ("a14", "3T01", "c1", 10.0, "pos", 0.0),  # min:1
    ("a15", "3T01", "c1", 10.0, "pos", 101.0),  # max:100
    ("a16", "3T01", "c1", 10.0, "pos", -INF),  # dtype:int (not finite)
    ("a17", "2T20:59", "c1", 10.0, *OK),  # outside_partition: 3h01 before the day
    ("a18", "2T21", "c1", 10.0, *OK),  # exactly 3h before the day: inside
    ("a19", "4T03", "c1", 10.0, *OK),  # exactly 3h after the day: outside
    ("a20", "4T02:59", "c1", 10.0, *OK),
    ("a21", None, "  ", NAN, "cash", 1.5),  # many rules: the first column's wins (not_null ts)
    ("a22", "1T00", "c1", 5000.0, *OK),  # max (a column rule) before outside_partition
    ("a23", "3T01", "c1", -1.0, "cash", 1.5),  # min on amount before allowed and dtype:int
    ("a24", "3T01", "c1", 10.0, "cash", 1e19),  # allowed before dtype:int
    ("d1", "3T02", "c1", 10.0, *OK),
    ("d1", "3T01", "c3", 11.0, *OK),  # duplicate in the file (the later row, though earlier in time)
    ("d2", "3T02", "c1", -5.0, *OK),  # broken first row of d2: it does not compete
    ("d2", "3T03", "c1", 12.0, *OK),  # so this one is kept
    (" d3 ", "3T04", "c1", 10.0, *OK),
    ("d3", "3T04", "c1", 10.0, *OK),  # the same key once stripped: duplicate
    ("l1", "3T10", "c4", 10.0, *OK),  # labelled once before and once after its event: positive
    ("l2", "3T10", "c4", 10.0, *OK),  # labelled only before its event: negative
    ("l3", "3T10", "c4", 10.0, *OK),  # its label arrives after as_of: negative
    ("l4", "3T10", "c4", 10.0, *OK),  # its label has no arrival time: negative
    ("l5", "3T10", "c4", 10.0, *OK),  # labelled twice: positive
]
W1_B: list[tuple] = [
    ("d1", "3T05", "c1", 10.0, *OK),  # duplicate of part-0's d1: across the files of one partition
    ("d5", "3T05", "c5", 10.0, *OK),  # delivered again on the next day
    ("h1", "3T05", "c1", 10.0, *OK),  # delivered on an earlier, curated day: duplicate (source: the folder)
    ("e1", "3T05", "c1", 10.0, *OK),
]
W2: list[tuple] = [
    ("d5", "4T01", "c5", 10.0, *OK),  # first delivered on ds=03-03 (source: this file)
    ("d6", "4T01", "c6", 10.0, *OK),
    ("d6", "4T02", "c6", 10.0, *OK),
    ("d7", "4T02", "c7", 5000.0, *OK),  # broken: the valid d7 of the next day is kept
    ("a1", "4T03", "c1", 10.0, *OK),  # a window key again
    ("h2", "4T03", "c1", 10.0, *OK),  # a key of the second history day
    ("hx", "4T03", "c1", 10.0, *OK),  # broken in history: not delivered there
    ("l6", "4T23", "c2", 10.0, *OK),
    (None, "4T05", "c1", 10.0, *OK),  # a null key
]
W3: list[tuple] = [
    ("d7", "5T01", "c7", 10.0, *OK),
    ("m1", "5T05:59", "c1", 10.0, *OK),  # mature (as_of 03-06 06:00, maturity 1 day)
    ("m2", "5T06", "c1", 10.0, *OK),  # exactly 1 day old: immature, left out of the data set
    ("m3", "5T12", "c1", 10.0, *OK),  # labelled, but immature
]
H1: list[tuple] = [("h1", "1T05", "c1", 10.0, *OK), ("hx", "1T05", "c1", -1.0, *OK)]
H2: list[tuple] = [("h2", "2T05", "c1", 10.0, *OK)]
# text rows of a CSV file: what only text can hold
W1_TEXT: list[tuple] = [
    ("t1", "2024-03-03T01:00:00Z", "c1", "nan", "pos", "1"),  # dtype:float (not missing: the text is there)
    ("t2", "2024-03-03T01:00:00Z", "c1", "abc", "pos", "1"),  # dtype:float
    ("t3", "2024-03-03T01:00:00Z", "c1", " 1e2 ", "pos", " 7 "),  # numbers with blanks: valid
    ("t4", "2024-03-03T01:00:00Z", "c1", "inf", "pos", "1"),  # dtype:float (not finite)
    ("t5", "2024-03-03T01:00:00Z", "c1", "10", "pos", "99999999999999999999"),  # dtype:int (outside int64)
    ("t6", "2024-03-03T01:00:00Z", "c1", "10", "pos", "2.5"),  # dtype:int (a fraction)
    ("t7", "2024-03-03T01:00:00Z", "c1", "10", "pos", "x"),  # dtype:int
    ("t8", "not a time", "c1", "10", "pos", "1"),  # dtype:timestamp
    ("t9", "2024-03-03 02:00:00", "c1", "10", "pos", "4.0"),  # a naive time is UTC; a whole float is an int
    ("t10", "2024-03-03T01:00:00Z", "c1", "   ", "pos", "1"),  # blank: not_null
    ("t11", "2024-03-03T01:00:00Z", "c1", "10", "  ", "  "),  # blank nullable values: missing, valid
]
# (tx, reported_at, ds of the label partition)
LABELS: list[tuple] = [
    ("l1", "3T09", "3"),  # before its event (3T10)
    ("l1", "4T00", "4"),  # after it: l1 is positive
    ("l2", "3T09", "3"),
    ("l3", "6T07", "6"),  # at or after as_of (6T06): not yet arrived
    ("l4", None, "4"),  # no arrival time
    ("l5", "4T00", "4"),
    ("l5", "5T00", "5"),
    ("  ", "4T00", "4"),  # no key
    ("zz", "4T00", "4"),  # a key that is not in the data
    ("m3", "5T13", "5"),  # immature row
    ("d5", "4T09", "4"),  # a duplicate row's key: the kept row (ds=03-03) is positive
    ("h1", "4T00", "4"),  # a key quarantined as delivered on an earlier day
    ("l6", "6T01", "6"),  # arrived on the as_of's day, before as_of
    ("a1", "2T00", "2"),  # a partition before the window: not read
]
AS_OF = dt.datetime(2024, 3, 6, 6, 0, tzinfo=dt.UTC)
HISTORY_AS_OF = dt.datetime(2024, 3, 3, tzinfo=dt.UTC)


def _ts(v: str | None) -> pd.Timestamp | None:
    if v is None:
        return None
    day, _, hm = v.partition("T")
    return pd.Timestamp(f"{D}{day}T{hm if ':' in hm else hm + ':00'}:00Z")


def _typed_frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tx": pd.Series([r[0] for r in rows], dtype="str"),
            "ts": pd.Series([_ts(r[1]) for r in rows], dtype="datetime64[us, UTC]"),
            "card": pd.Series([r[2] for r in rows], dtype="str"),
            "amount": pd.Series([r[3] for r in rows], dtype="float64"),
            "kind": pd.Series([r[4] for r in rows], dtype="str"),
            "qty": pd.Series([np.nan if r[5] is None else r[5] for r in rows], dtype="float64"),
        }
    )


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    return str(v)


def _csv_text(rows: list[tuple]) -> list[tuple]:
    return [(r[0], _text(_ts(r[1])), r[2], _text(r[3]), _text(r[4]), _text(r[5])) for r in rows]


def _write(path: Path, rows: list[tuple], fmt: str, text_rows: list[tuple] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        _typed_frame(rows).to_parquet(path, index=False)
        return
    frame = pd.DataFrame([*_csv_text(rows), *text_rows], columns=["tx", "ts", "card", "amount", "kind", "qty"])
    frame.to_csv(path, index=False)


def _landing(root: Path, fmt: str) -> tuple[Path, Path]:
    src, lab = root / "transactions", root / "chargebacks"
    for day, parts in {
        "01": [H1],
        "02": [H2],
        "03": [W1_A, W1_B],
        "04": [W2],
        "05": [W3],
    }.items():
        for i, rows in enumerate(parts):
            extra = W1_TEXT if fmt == "csv" and day == "03" and i == 0 else ()
            _write(src / f"ds=2024-03-{day}" / f"part-{i}.{fmt}", rows, fmt, extra)
    for ds in sorted({r[2] for r in LABELS}):
        rows = [r for r in LABELS if r[2] == ds]
        path = lab / f"ds=2024-03-0{ds}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {
                "tx": pd.Series([r[0] for r in rows], dtype="str"),
                "reported_at": pd.Series([_ts(r[1]) for r in rows], dtype="datetime64[us, UTC]"),
            }
        ).to_parquet(path, index=False)
    return src, lab


# ------------------------------------------------------------------------------------------------
# the two paths
# ------------------------------------------------------------------------------------------------
def _collect(spec: Spec, art: Path, source: Path, labels: Path | None, as_of: dt.datetime, run: str) -> dict:
    return collect_and_label(
        spec,
        problem=Store.from_uri(str(art)),
        run_dir=run,
        as_of=as_of,
        lookback_days=spec.data.lookback_days,
        pii_key=KEY,
        source_uri=str(source),
        labels_uri=str(labels) if labels else None,
        log=lambda _: None,
    )


def _read_raw(source: Store, dss: list[str], fmt: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The raw rows of partitions ``dss`` as collect.py's reader gives them, with _ds/_source/_row."""
    frames = []
    for ds in dss:
        names, _ = partition_files(source, ds, fmt)
        for name in names:
            rel = f"ds={ds}/{name}"
            df = frame_from_bytes(source.read_bytes(rel), source.uri(rel), fmt, columns)
            df = df[columns] if columns else df
            frames.append(df.assign(_ds=ds, _source=source.uri(rel), _row=np.arange(len(df), dtype=np.int64)))
    return pd.concat(frames, ignore_index=True)


@dataclass
class Case:
    """One landing zone curated by collect.py, and the inputs of the Ibis path (Parquet files)."""

    spec: Spec
    as_of: dt.datetime
    raw: str
    history: str | None
    labels: str | None
    curated: pd.DataFrame  # the run's rows (curated partitions less the earlier days' duplicates), with _ds
    quarantine: pd.DataFrame  # every quarantined data row, with _ds
    dataset: pd.DataFrame
    summary: dict[str, Any]


def _case(tmp: Path, spec: Spec, source: Path, labels: Path | None, history_as_of: dt.datetime | None) -> Case:
    art = tmp / "art"
    if history_as_of is not None:  # curate the earlier days first: they are the run's history
        _collect(spec, art, source, labels, history_as_of, "runs/r1")
    summary = _collect(spec, art, source, labels, AS_OF, RUN)
    problem = Store.from_uri(str(art))
    fmt = spec.data.format
    if spec.data.layout == "partitioned":
        start, end = window_dates(AS_OF, spec.data.lookback_days)
        store = Store.from_uri(str(source))
        dss = [ds for ds in list_partitions(store) if start <= ds < end]
        raw = _read_raw(store, dss, fmt)
        keys = _history_keys(spec, problem, start, end, KEY)
        key = spec.data.key
        history = pd.concat(
            [pd.DataFrame({"_ds": ds, key: pd.Series(v.to_pandas(), dtype="str")}) for ds, v in keys]
            or [pd.DataFrame({"_ds": pd.Series(dtype="str"), key: pd.Series(dtype="str")})],
            ignore_index=True,
        )
    else:
        start, dss = "0000", ["all"]
        parent = Store.from_uri(str(source.parent))
        df = frame_from_bytes(parent.read_bytes(source.name), parent.uri(source.name), fmt)
        raw = df.assign(_ds="all", _source=parent.uri(source.name), _row=np.arange(len(df), dtype=np.int64))
        history = None
    paths: dict[str, str | None] = {"raw": str(tmp / "raw.parquet"), "history": None, "labels": None}
    raw.to_parquet(paths["raw"], index=False)
    if history is not None:
        paths["history"] = str(tmp / "history.parquet")
        history.to_parquet(paths["history"], index=False)
    if labels is not None:
        assert spec.data.labels is not None
        lab_store = Store.from_uri(str(labels))
        lab_end = (AS_OF.date() + dt.timedelta(days=1)).isoformat()
        lab_dss = [ds for ds in list_partitions(lab_store) if start <= ds < lab_end]
        cols = [spec.data.labels.key, spec.data.labels.arrived_at]
        paths["labels"] = str(tmp / "labels.parquet")
        _read_raw(lab_store, lab_dss, spec.data.labels.format, cols).to_parquet(paths["labels"], index=False)
    # collect.py's outputs
    curated, quarantine = [], []
    for ds in dss:
        curated.append(problem.read_table(f"curated/ds={ds}/part-0.parquet").to_pandas().assign(_ds=ds))
        if problem.exists(f"quarantine/ds={ds}/part-0.parquet"):
            quarantine.append(problem.read_table(f"quarantine/ds={ds}/part-0.parquet").to_pandas().assign(_ds=ds))
    cur = pd.concat(curated, ignore_index=True)
    cross_rel = summary["cross_partition"]["quarantine_rel"]
    if cross_rel:
        cross = problem.read_table(cross_rel).to_pandas()
        quarantine.append(cross)
        dropped = set(zip(cross["_ds"], cross[spec.data.key], strict=True))
        cur = cur[[(d, k) not in dropped for d, k in zip(cur["_ds"], cur[spec.data.key], strict=True)]]
    dataset = problem.read_table(RunLayout.dataset_in(RUN)).to_pandas()
    return Case(
        spec,
        AS_OF,
        paths["raw"],
        paths["history"],
        paths["labels"],
        cur.reset_index(drop=True),
        pd.concat(quarantine, ignore_index=True),
        dataset,
        summary,
    )


def _norm(v: Any) -> Any:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        if math.isnan(v):
            return None
        return int(v) if v.is_integer() and abs(v) < 2**53 else v
    if isinstance(v, pd.Timestamp | dt.datetime):
        ts = pd.Timestamp(v)
        return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).isoformat()
    return v


def _rows(df: pd.DataFrame, columns: list[str], *, ordered: bool = False) -> list[tuple]:
    rows = [tuple(_norm(v) for v in row) for row in zip(*(df[c].tolist() for c in columns), strict=True)]
    return rows if ordered else sorted(rows, key=repr)


def _text_columns(spec: Spec) -> list[str]:
    return [c.name for c in spec.schema_.columns if c.dtype in ("string", "category")]


Result = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]


def _ibis(con: ibis.BaseBackend, case: Case, *, cached: bool = True) -> Result:
    """The Ibis path on ``con``; ``cached``: the stage is materialised once (``Table.cache``), as a
    run would do it, instead of being computed again for each output."""
    out = curate(
        con.read_parquet(case.raw),
        case.spec,
        as_of=case.as_of,
        pii_key=KEY,
        history=con.read_parquet(case.history) if case.history else None,
        labels=con.read_parquet(case.labels) if case.labels else None,
        cache=cached,
    )
    dataset = con.to_pandas(out.dataset) if out.dataset is not None else None
    return con.to_pandas(out.curated), con.to_pandas(out.quarantine), dataset


def _assert_same(got: Result, case: Case) -> None:
    spec = case.spec
    cur, qua, dataset = got
    names = spec.schema_.names
    assert _rows(cur, [*names, "_ds"]) == _rows(case.curated, [*names, "_ds"])
    shown = ["_rule", "_column", "_source", "_ds", *_text_columns(spec)]
    assert _rows(qua, shown) == _rows(case.quarantine, shown)
    if spec.data.labels is None:
        assert dataset is None
        return
    assert dataset is not None
    columns = [*names, spec.problem.target]
    assert _rows(dataset, columns, ordered=True) == _rows(case.dataset, columns, ordered=True)


# single file, labels in the rows: (tx, ts, card, amount, kind, qty, is_fraud)
SINGLE: list[tuple] = [
    ("s1", "3T01", "c1", 10.0, "pos", 1.0, 1.0),
    ("s2", "3T01", "c1", 10.0, "pos", 1.0, NAN),  # target_missing
    ("s3", "7T00", "c1", 10.0, "pos", 1.0, 0.0),  # future_time
    ("s4", "6T06", "c1", 10.0, "pos", 1.0, 0.0),  # exactly as_of: future_time
    ("s5", "6T05:59", "c1", 10.0, "pos", 1.0, 0.0),
    ("s1", "3T02", "c1", 10.0, "pos", 1.0, 0.0),  # duplicate
    ("s6", None, "c1", 10.0, "pos", 1.0, NAN),  # not_null ts comes before target_missing (column order)
    ("s7", "7T00", "c1", 5000.0, "pos", 1.0, 0.0),  # max before future_time
    ("s8", "1T00", "c1", 10.0, "pos", 1.0, 0.0),  # a single file has no partition bounds
    ("s9", "3T01", "c1", 10.0, "pos", 1.0, 2.0),  # the target is not validated beyond being present
]


def _synth_spec() -> Spec:
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "include/problems/card_fraud.yaml").read_text())
    raw["data"]["lookback_days"] = 3
    raw["data"]["labels"]["maturity_days"] = 1
    return parse_spec(raw, "card_fraud.yaml")


def _build(kind: str, tmp: Path) -> Case:
    if kind in ("parquet", "csv"):
        src, lab = _landing(tmp / "landing", kind)
        return _case(tmp, _spec(kind), src, lab, HISTORY_AS_OF)
    if kind == "single":
        spec = _spec(
            columns=({"name": "is_fraud", "dtype": "int", "nullable": False},), layout="single_file", labels=None
        )
        path = tmp / "landing" / "rows.parquet"
        path.parent.mkdir(parents=True)
        _typed_frame(SINGLE).assign(is_fraud=[r[6] for r in SINGLE]).to_parquet(path, index=False)
        return _case(tmp, spec, path, None, None)
    # a few days of the demo card data, defects included (duplicates, bad amounts, unknown channels ...)
    end = AS_OF.date()
    synth.generate(tmp / "landing", end=end, days=5, tx_per_day=800, seed=3, defect_rate=0.03, n_cards=300)
    spec = _synth_spec()
    src, lab = tmp / "landing" / "transactions", tmp / "landing" / "chargebacks"
    return _case(tmp, spec, src, lab, dt.datetime.combine(end - dt.timedelta(days=3), dt.time(), dt.UTC))


CASES = ("parquet", "csv", "single", "synth")


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    return {kind: _build(kind, tmp_path_factory.mktemp(kind)) for kind in CASES}


# ------------------------------------------------------------------------------------------------
# engines
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spark_con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ibis.BaseBackend]:
    conf = {
        "spark.sql.shuffle.partitions": "1",
        # tiny inputs: compiling whole-stage code and re-planning cost more than they save
        "spark.sql.codegen.wholeStage": "false",
        "spark.sql.adaptive.enabled": "false",
    }
    with engines.spark_backend(tmp_path_factory.mktemp("spark"), "curate-engines-parity", conf) as con:
        yield con


@pytest.fixture(scope="module")
def duckdb_con() -> Iterator[ibis.BaseBackend]:
    with engines.duckdb_backend() as con:
        yield con


ENGINES: dict[str, str] = {"duckdb": "duckdb_con", "pyspark": "spark_con"}


@pytest.fixture(scope="module", params=list(ENGINES))
def engine(request: pytest.FixtureRequest) -> Callable[[Case], Result]:
    con = request.getfixturevalue(ENGINES[request.param])
    return lambda case: _ibis(con, case)


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", CASES)
def test_same_curation_as_collect(kind: str, cases: dict[str, Case], engine: Callable[[Case], Result]) -> None:
    _assert_same(engine(cases[kind]), cases[kind])


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_uncached_stage_gives_the_same(kind: str, cases: dict[str, Case], duckdb_con: ibis.BaseBackend) -> None:
    """Every output computed from the raw rows again (no ``cache``): the same results."""
    _assert_same(_ibis(duckdb_con, cases[kind], cached=False), cases[kind])


PARQUET_RULES = {
    ("  ", "not_null", "tx"),
    ("a4", "not_null", "ts"),
    ("a5", "not_null", "card"),
    ("a6", "not_null", "amount"),
    ("a7", "dtype:float", "amount"),
    ("a8", "min:0.01", "amount"),
    ("a9", "max:1000", "amount"),
    ("a10", "allowed", "kind"),
    ("a12", "dtype:int", "qty"),
    ("a13", "dtype:int", "qty"),
    ("a14", "min:1", "qty"),
    ("a15", "max:100", "qty"),
    ("a16", "dtype:int", "qty"),
    ("a17", "outside_partition", "ts"),
    ("a19", "outside_partition", "ts"),
    ("a21", "not_null", "ts"),
    ("a22", "max:1000", "amount"),
    ("a23", "min:0.01", "amount"),
    ("a24", "allowed", "kind"),
    ("d2", "min:0.01", "amount"),
    ("d7", "max:1000", "amount"),
    (None, "not_null", "tx"),
}
PARQUET_DUPLICATES = [  # (tx, file or folder the quarantine names, ds)
    ("a1", "ds=2024-03-04/part-0.parquet", "2024-03-04"),
    ("d1", "ds=2024-03-03/part-0.parquet", "2024-03-03"),
    ("d1", "ds=2024-03-03/part-1.parquet", "2024-03-03"),
    ("d3", "ds=2024-03-03/part-0.parquet", "2024-03-03"),
    ("d5", "ds=2024-03-04/part-0.parquet", "2024-03-04"),
    ("d6", "ds=2024-03-04/part-0.parquet", "2024-03-04"),
    ("h1", "ds=2024-03-03", "2024-03-03"),
    ("h2", "ds=2024-03-04/part-0.parquet", "2024-03-04"),
]


def test_rules_by_hand(cases: dict[str, Case], duckdb_con: ibis.BaseBackend) -> None:
    """The rule of every quarantined row of the hand-made inputs, read off the rows above, so a
    mistake shared by both paths (or a rule that neither applies) shows too."""
    cur, qua, dataset = _ibis(duckdb_con, cases["parquet"])
    broken = qua[qua["_rule"] != "duplicate_key"]
    assert {(_norm(t), r, c) for t, r, c in zip(broken["tx"], broken["_rule"], broken["_column"], strict=True)} == (
        PARQUET_RULES
    )
    assert len(broken) == len(PARQUET_RULES)
    dups = qua[qua["_rule"] == "duplicate_key"]
    root = str(cases["parquet"].raw).rsplit("/", 1)[0] + "/landing/transactions/"
    got = sorted((t, s.split(root, 1)[1], d) for t, s, d in zip(dups["tx"], dups["_source"], dups["_ds"], strict=True))
    assert got == PARQUET_DUPLICATES
    assert dataset is not None
    assert sorted(dataset.loc[dataset["is_fraud"] == 1, "tx"]) == ["d5", "l1", "l5", "l6"]
    assert {"m1", "a18", "a20", "d2", "hx", "d7"} <= set(dataset["tx"]) and not {"m2", "m3"} & set(dataset["tx"])
    assert cur.set_index("tx").loc["a2", "kind"] == "ecom" and "d3" in set(cur["tx"])

    cur, qua, _ = _ibis(duckdb_con, cases["csv"])
    rules = {t: (r, c) for t, r, c in zip(qua["tx"], qua["_rule"], qua["_column"], strict=True) if str(t)[:1] == "t"}
    assert rules == {
        "t1": ("dtype:float", "amount"),
        "t2": ("dtype:float", "amount"),
        "t4": ("dtype:float", "amount"),
        "t5": ("dtype:int", "qty"),
        "t6": ("dtype:int", "qty"),
        "t7": ("dtype:int", "qty"),
        "t8": ("dtype:timestamp", "ts"),
        "t10": ("not_null", "amount"),
    }
    rows = cur.set_index("tx")
    assert rows.loc["t3", "amount"] == 100.0 and rows.loc["t3", "qty"] == 7 and rows.loc["t9", "qty"] == 4
    assert _norm(rows.loc["t9", "ts"]) == "2024-03-03T02:00:00+00:00"
    assert _norm(rows.loc["t11", "kind"]) is None and _norm(rows.loc["t11", "qty"]) is None

    cur, qua, _ = _ibis(duckdb_con, cases["single"])
    rules = {(t, r, c) for t, r, c in zip(qua["tx"], qua["_rule"], qua["_column"], strict=True)}
    assert rules == {
        ("s1", "duplicate_key", "tx"),
        ("s2", "target_missing", "is_fraud"),
        ("s3", "future_time", "ts"),
        ("s4", "future_time", "ts"),
        ("s6", "not_null", "ts"),
        ("s7", "max:1000", "amount"),
    }
    assert sorted(cur["tx"]) == ["s1", "s5", "s8", "s9"]
