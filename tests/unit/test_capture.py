"""Data capture (include/lifecycle/capture.py): the captured row's columns with the PII tokenised,
one file per flush and day, flushes by size, by age and on stop, a bounded buffer, and a failing
store that loses (and counts) captured rows without ever raising into the request path."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from include.lifecycle.capture import CAPTURED_AT, CaptureWriter, capture_frame
from include.lifecycle.scoring import tokenise_pii
from include.lifecycle.spec import PROJECT_ROOT, Spec, load_spec
from include.lifecycle.store import Store
from tests.unit.test_bundle import _transactions

KEY = b"capture-test-key"


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(PROJECT_ROOT / "include" / "problems" / "card_fraud.yaml")


def _rows(n: int, start: str = "2026-03-01", seed: int = 3) -> pd.DataFrame:
    """Typed request rows (as validate_rows returns them), over ``n`` seconds... to 10 days."""
    return _transactions(n, seed=seed, start=start).drop(columns=["is_fraud"])


def _scored(rows: pd.DataFrame, version: int = 4) -> pd.DataFrame:
    """What score_frame returns for ``rows``: key, score, decision, model version."""
    scores = np.linspace(0, 1, len(rows))
    return pd.DataFrame(
        {
            "transaction_id": rows["transaction_id"].to_numpy(),
            "score": scores,
            "decision": pd.array((scores >= 0.5).astype("int8"), dtype="Int8"),
            "model_version": np.int64(version),
        }
    )


def _captured(root: Path) -> pd.DataFrame:
    files = sorted(root.glob("captures/ds=*/*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def _wait(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_a_captured_row_has_key_time_inputs_answer_and_tokens_not_pii(spec: Spec) -> None:
    rows = _rows(50)
    at = pd.Timestamp("2026-03-05 12:00", tz="UTC")
    frame = capture_frame(spec, rows, _scored(rows), pii_key=KEY, captured_at=at)
    assert list(frame.columns) == [
        "transaction_id", "ts", "card_number", "merchant_id", "merchant_category", "amount", "channel", "country",
        "score", "decision", "model_version", CAPTURED_AT,
    ]  # fmt: skip
    assert frame["transaction_id"].tolist() == rows["transaction_id"].tolist()
    assert frame["card_number"].tolist() == tokenise_pii(rows, spec, KEY)["card_number"].tolist()
    assert not set(frame["card_number"]) & set(rows["card_number"])
    assert frame["amount"].tolist() == rows["amount"].tolist() and frame["merchant_category"].dtype == "category"
    assert (frame[CAPTURED_AT] == at).all() and frame["model_version"].eq(4).all()
    # without the key the PII columns are left out, never written raw
    bare = capture_frame(spec, rows, _scored(rows), pii_key=None)
    assert "card_number" not in bare.columns and CAPTURED_AT not in bare.columns
    # batch scoring's curated rows carry their tokens already: kept as they are
    curated = tokenise_pii(rows, spec, KEY)
    assert capture_frame(spec, curated, _scored(rows), pii_key=None, tokenised=True)["card_number"].equals(
        frame["card_number"]
    )


def test_the_writer_writes_one_file_per_flush_and_day_and_the_rest_on_stop(tmp_path: Path, spec: Spec) -> None:
    store = Store.from_uri(tmp_path.as_uri())
    writer = CaptureWriter(store, spec, pii_key=KEY, flush_rows=10_000, flush_seconds=3600, writer="w").start()
    rows = _rows(400)  # ten days, 2026-03-01..10
    for chunk in np.array_split(np.arange(len(rows)), 8):
        assert writer.add(rows.iloc[chunk].reset_index(drop=True), _scored(rows.iloc[chunk]))
    assert writer.status()["buffered"] == 400 and not list(tmp_path.glob("captures/*"))  # nothing due yet
    writer.stop()
    got = _captured(tmp_path).sort_values("transaction_id").reset_index(drop=True)
    want = rows.sort_values("transaction_id").reset_index(drop=True)
    assert got["transaction_id"].tolist() == want["transaction_id"].tolist()  # every row, once
    days = sorted(p.name for p in tmp_path.glob("captures/ds=*"))
    assert days == [f"ds={d.date()}" for d in pd.date_range("2026-03-01", "2026-03-10")]
    for folder in tmp_path.glob("captures/ds=*"):  # a row is filed under its own day
        day = pd.read_parquet(folder)["ts"].dt.strftime("%Y-%m-%d")
        assert (day == folder.name.removeprefix("ds=")).all()
        assert [f.name for f in folder.iterdir()] == [f"w-{int(f.name[2:8]):06d}.parquet" for f in folder.iterdir()]
    assert not any(str(c) in set(got["card_number"]) for c in rows["card_number"])
    st = writer.status()
    assert (st["rows_captured"], st["rows_written"], st["files"], st["buffered"]) == (400, 400, 10, 0)
    assert writer.rows_missing == 0


def test_the_writer_flushes_by_size_and_by_age_without_a_stop(tmp_path: Path, spec: Spec) -> None:
    store = Store.from_uri(tmp_path.as_uri())
    rows = _rows(30, start="2026-04-01")
    by_size = CaptureWriter(store, spec, pii_key=KEY, flush_rows=20, flush_seconds=3600, writer="size").start()
    try:
        by_size.add(rows.head(10), _scored(rows.head(10)))
        time.sleep(0.3)
        assert by_size.status()["rows_written"] == 0  # 10 < 20 rows, and young
        by_size.add(rows.iloc[10:30], _scored(rows.iloc[10:30]))
        _wait(lambda: by_size.status()["rows_written"] == 30)
    finally:
        by_size.stop()
    by_age = CaptureWriter(store, spec, pii_key=KEY, flush_rows=1000, flush_seconds=0.2, writer="age").start()
    try:
        by_age.add(rows.head(5), _scored(rows.head(5)))
        _wait(lambda: by_age.status()["rows_written"] == 5)
    finally:
        by_age.stop()


def test_a_full_buffer_drops_and_counts_instead_of_growing(tmp_path: Path, spec: Spec) -> None:
    writer = CaptureWriter(Store.from_uri(tmp_path.as_uri()), spec, pii_key=KEY, flush_rows=50, max_rows=100)
    rows = _rows(60)  # no thread started: nothing is written meanwhile
    assert writer.add(rows, _scored(rows))
    assert not writer.add(rows, _scored(rows))  # 60 + 60 > 100
    st = writer.status()
    assert (st["buffered"], st["rows_captured"], st["rows_dropped"]) == (60, 60, 60)
    assert writer.rows_missing == 60
    writer.stop()
    assert len(_captured(tmp_path)) == 60


class BrokenStore:
    """A store whose writes fail (a full disk, a revoked bucket)."""

    def write_parquet(self, rel: str, df: Any) -> str:
        raise OSError(28, "No space left on device")

    def uri(self, *parts: str) -> str:
        return "file:///broken/" + "/".join(parts)


def test_a_failing_store_loses_rows_counted_and_logged_never_raising(
    spec: Spec, caplog: pytest.LogCaptureFixture
) -> None:
    writer = CaptureWriter(BrokenStore(), spec, pii_key=KEY, flush_rows=10, flush_seconds=0.1).start()  # type: ignore[arg-type]
    rows = _rows(25)
    assert writer.add(rows, _scored(rows))  # queued: the request path does not see the store
    _wait(lambda: writer.status()["failures"] >= 1)
    writer.stop()
    st = writer.status()
    assert st["rows_lost"] == 25 and st["rows_written"] == 0 and "No space left" in st["last_error"]
    assert writer.rows_missing == 25
    assert "capture failed, 25 rows not recorded" in caplog.text
    # a broken request (no frame at all) is counted too, and does not raise
    assert writer.add(None, None) is False  # type: ignore[arg-type]
    assert writer.status()["failures"] == 2
