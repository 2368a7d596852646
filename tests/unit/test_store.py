"""Unit tests of include/lifecycle/store.py: atomic writes, idempotent overwrites, round trips,
path-safe run ids and JSON encoding, on the local filesystem and on fsspec's in-memory one."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from include.lifecycle import store as store_module
from include.lifecycle.store import Store, safe_run_id, sha256_bytes, tables_to_pandas, to_json

FRAME = pd.DataFrame(
    {
        "id": ["a", "b", "c"],
        "amount": [1.5, 2.0, np.nan],
        "n": [1, 2, 3],
        "ts": pd.to_datetime(["2026-11-01", "2026-11-02", "2026-11-03"], utc=True),
    }
)


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def local(tmp_path: Path) -> Store:
    return Store.from_uri(str(tmp_path / "root"))


@pytest.fixture
def memory() -> Store:
    # the memory filesystem is process-global: a fresh root per test keeps tests apart
    return Store.from_uri(f"memory://store-tests/{uuid.uuid4().hex}")


# --- safe_run_id ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "run_id",
    [
        "manual__2026-11-24T12:45:44.839050+00:00",
        "scheduled__2026-11-01T02:00:00+00:00",
        "backfill__2026-10-01T02:00:00+00:00",
        "asset_triggered__2026-11-24T12:45:44.839050+00:00",
        "my run / with spaces\\and:colons",
        "../../etc/passwd",
    ],
)
def test_safe_run_id_is_one_portable_path_segment(run_id: str) -> None:
    safe = safe_run_id(run_id)
    assert safe
    assert all(ch.isalnum() or ch in "._=-" for ch in safe), safe
    assert "/" not in safe and "\\" not in safe and ":" not in safe and "+" not in safe
    assert not safe.startswith(".") and safe not in {".", ".."}
    assert safe == safe_run_id(run_id)  # deterministic: a retry writes to the same folder
    assert safe_run_id(safe) == safe  # already safe ids are left alone


def test_safe_run_id_of_an_airflow_manual_run_keeps_the_timestamp_readable() -> None:
    safe = safe_run_id("manual__2026-11-24T12:45:44.839050+00:00")
    assert safe == "manual__2026-11-24T12_45_44.839050_00_00"


def test_safe_run_id_keeps_distinct_runs_apart() -> None:
    ids = [f"manual__2026-11-24T12:45:{s:02d}.000000+00:00" for s in range(10)]
    ids += ["scheduled__2026-11-24T12:45:00+00:00", "backfill__2026-11-24T12:45:00+00:00"]
    assert len({safe_run_id(i) for i in ids}) == len(ids)


@pytest.mark.parametrize("run_id", ["", ".", "..", "///", "::"])
def test_safe_run_id_never_yields_an_empty_or_dot_segment(run_id: str) -> None:
    assert safe_run_id(run_id) == "run"


def test_safe_run_id_segment_stays_inside_the_store(local: Store) -> None:
    rel = f"runs/{safe_run_id('../../escape')}/x.json"
    target = Path(local.write_json(rel, {"ok": True}))
    assert target.resolve().is_relative_to(Path(local.root).resolve() / "runs")


# --- JSON ------------------------------------------------------------------------------------------
def test_to_json_encodes_numpy_dates_and_sets_with_sorted_keys() -> None:
    obj = {
        "b": np.int64(3),
        "a": np.float32(0.5),
        "when": dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC),
        "day": dt.date(2026, 11, 1),
        "ts": pd.Timestamp("2026-11-01T00:00:00Z"),
        "tags": {"z", "a"},
        "flag": np.bool_(True),
    }
    text = to_json(obj)
    back = json.loads(text)
    assert back == {
        "a": 0.5,
        "b": 3,
        "day": "2026-11-01",
        "flag": True,
        "tags": ["a", "z"],
        "ts": "2026-11-01T00:00:00+00:00",
        "when": "2026-11-01T02:00:00+00:00",
    }
    assert list(back) == sorted(back)
    assert to_json(obj) == text  # stable text: equal inputs give equal files


def test_to_json_refuses_nan_and_unknown_objects() -> None:
    with pytest.raises(ValueError):
        to_json({"score": float("nan")})
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        to_json({"x": object()})


# --- local store: atomic, idempotent, round trips --------------------------------------------------
def test_bytes_text_and_json_round_trip(local: Store) -> None:
    local.write_bytes("a/b/blob.bin", b"\x00\x01binary\xff")
    local.write_text("a/note.txt", "héllo\nworld")
    local.write_json("a/b/c/meta.json", {"rows": np.int64(5), "ok": True})
    assert local.read_bytes("a/b/blob.bin") == b"\x00\x01binary\xff"
    assert local.read_text("a/note.txt") == "héllo\nworld"
    assert local.read_json("a/b/c/meta.json") == {"ok": True, "rows": 5}
    assert local.read_json_or("a/missing.json", {"default": 1}) == {"default": 1}
    assert local.read_json_or("a/missing.json") is None
    assert local.exists("a", "b", "blob.bin") and not local.exists("a/nope")


def test_atomic_writes_leave_no_temp_files(local: Store) -> None:
    for i in range(3):
        local.write_bytes("out/blob.bin", bytes([i]) * 100)
        local.write_json("out/meta.json", {"i": i})
        local.write_parquet("out/part-0.parquet", FRAME.assign(i=i))
    root = Path(local.root)
    assert _all_files(root) == ["out/blob.bin", "out/meta.json", "out/part-0.parquet"]
    assert not [p for p in root.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert local.read_json("out/meta.json") == {"i": 2}
    assert local.read_parquet("out/part-0.parquet")["i"].tolist() == [2, 2, 2]


def test_overwrite_with_the_same_content_is_idempotent(local: Store) -> None:
    local.write_parquet("d/part-0.parquet", FRAME)
    local.write_json("d/m.json", {"k": [1, 2]})
    first = {rel: sha256_bytes(local.read_bytes(rel)) for rel in ("d/part-0.parquet", "d/m.json")}
    local.write_parquet("d/part-0.parquet", FRAME)
    local.write_json("d/m.json", {"k": [1, 2]})
    again = {rel: sha256_bytes(local.read_bytes(rel)) for rel in ("d/part-0.parquet", "d/m.json")}
    assert again == first
    assert _all_files(Path(local.root)) == ["d/m.json", "d/part-0.parquet"]


@pytest.mark.parametrize("kind", ["bytes", "parquet"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(
    local: Store, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    write = (
        (lambda v: local.write_bytes("x/target", v.encode()))
        if kind == "bytes"
        else (lambda v: local.write_parquet("x/target", pd.DataFrame({"v": [v]})))
    )
    read = (
        (lambda: local.read_bytes("x/target").decode())
        if kind == "bytes"
        else (lambda: local.read_parquet("x/target")["v"].iloc[0])
    )
    write("old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write("new")
    monkeypatch.undo()
    assert read() == "old"
    assert _all_files(Path(local.root)) == ["x/target"]


def test_parquet_round_trip_keeps_values_and_types(local: Store) -> None:
    local.write_parquet("p/one.parquet", FRAME)
    back = local.read_parquet("p/one.parquet")
    pd.testing.assert_frame_equal(back, FRAME, check_dtype=False)
    assert str(back["ts"].dtype).startswith("datetime64") and back["ts"].dt.tz is not None
    assert back["n"].dtype == np.int64
    assert local.read_parquet("p/one.parquet", columns=["id"]).columns.tolist() == ["id"]


def test_read_parquet_concatenates_files_and_promotes_schemas(local: Store) -> None:
    local.write_parquet("p/a.parquet", pd.DataFrame({"id": ["a"], "x": [1.0]}))
    local.write_parquet("p/b.parquet", pd.DataFrame({"id": ["b"], "x": [2.0], "extra": ["e"]}))
    both = local.read_parquet(["p/a.parquet", "p/b.parquet"])
    assert both["id"].tolist() == ["a", "b"]
    assert both["x"].tolist() == [1.0, 2.0]
    assert both["extra"].isna().tolist() == [True, False]
    with pytest.raises(FileNotFoundError):
        local.read_parquet([])


def test_write_parquet_accepts_an_arrow_table(local: Store) -> None:
    table = pa.table({"k": ["x", "y"], "v": [1, 2]})
    local.write_parquet("t.parquet", table)
    assert local.read_parquet("t.parquet").to_dict("list") == {"k": ["x", "y"], "v": [1, 2]}


def test_read_table_and_tables_to_pandas_match_read_parquet(local: Store) -> None:
    local.write_parquet("p/a.parquet", pd.DataFrame({"id": ["a"], "x": [1.0]}))
    local.write_parquet("p/b.parquet", pd.DataFrame({"id": ["b"], "x": [2.0], "extra": ["e"]}))
    tables = [local.read_table("p/a.parquet"), local.read_table("p/b.parquet")]
    assert isinstance(tables[0], pa.Table) and local.read_table("p/b.parquet", ["x"]).column_names == ["x"]
    pd.testing.assert_frame_equal(tables_to_pandas(tables), local.read_parquet(["p/a.parquet", "p/b.parquet"]))
    with pytest.raises(FileNotFoundError):
        tables_to_pandas([])


def test_parquet_dictionary_pages_only_for_non_float_columns(local: Store) -> None:
    import pyarrow.parquet as pq

    local.write_parquet("d.parquet", FRAME.assign(f32=np.float32(0.5)))
    meta = pq.ParquetFile(local.path("d.parquet")).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert any("DICTIONARY" in e for e in encodings["id"])
    assert not any("DICTIONARY" in e for e in encodings["amount"] + encodings["f32"])
    pd.testing.assert_frame_equal(local.read_parquet("d.parquet"), FRAME.assign(f32=np.float32(0.5)), check_dtype=False)


def test_paths_uris_listing_and_sub_stores(local: Store, tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    assert local.root == root and local.is_local
    assert local.path("a", "/b/", "c.json") == f"{root}/a/b/c.json"
    assert local.uri("a", "c.json") == f"file://{root}/a/c.json"
    assert local.ls("nothing/here") == []
    for name in ("ds=2026-11-02", "ds=2026-11-01", "_manifest"):
        local.write_text(f"src/{name}/f.txt", name)
    assert local.ls("src") == ["_manifest", "ds=2026-11-01", "ds=2026-11-02"]
    sub = local.sub("src", "ds=2026-11-01")
    assert sub.read_text("f.txt") == "ds=2026-11-01"
    assert sub.root == f"{root}/src/ds=2026-11-01"
    # a file:// URI and a plain path name the same store
    assert Store.from_uri(f"file://{root}").read_text("src/_manifest/f.txt") == "_manifest"


def test_copy_in_download_and_checksums(local: Store, tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(b"model-bytes" * 1000)
    local.copy_in(str(src), "models/1/model.bin")
    expected = hashlib.sha256(src.read_bytes()).hexdigest()
    assert sha256_bytes(local.read_bytes("models/1/model.bin")) == expected == sha256_bytes(src.read_bytes())
    out = tmp_path / "dl" / "nested" / "model.bin"
    local.download("models/1/model.bin", str(out))
    assert out.read_bytes() == src.read_bytes()
    assert src.read_bytes() == b"model-bytes" * 1000  # the source is untouched


# --- object-store path (fsspec memory filesystem stands in for S3) ---------------------------------
def test_non_local_store_round_trips_through_put(memory: Store) -> None:
    assert not memory.is_local
    memory.write_json("runs/r1/summary.json", {"decision": "deploy"})
    memory.write_parquet("runs/r1/dataset.parquet", FRAME)
    memory.write_parquet("runs/r1/dataset.parquet", FRAME)  # overwrite in place
    assert memory.read_json("runs/r1/summary.json") == {"decision": "deploy"}
    pd.testing.assert_frame_equal(memory.read_parquet("runs/r1/dataset.parquet"), FRAME, check_dtype=False)
    assert memory.ls("runs/r1") == ["dataset.parquet", "summary.json"]
    assert memory.uri("runs/r1/summary.json").startswith("memory://")
    assert memory.uri("runs/r1/summary.json").endswith("/runs/r1/summary.json")
