"""Data capture: every scored row recorded for the monitor (spec ``serving.capture``, default on).

A captured row is the row key, the row's time, the model's inputs as the model saw them (typed by
the schema rules, the PII columns replaced by the curated data's keyed tokens), the score, the
decision at the champion's threshold and the model version; the endpoint adds ``captured_at``
(when it answered). :func:`capture_frame` builds it, for both writers:

* batch scoring keeps it in its day file ``scores/ds=<day>/part-0.parquet`` (one atomic write per
  run, replaced by a re-run: see ``scoring.finish_scores``);
* the endpoint hands each answered request to a :class:`CaptureWriter`, which buffers in memory
  and writes from a background thread, by size (``flush_rows``) or age (``flush_seconds``) and
  on stop, one file per flush and day: ``captures/ds=<day>/<writer>-<seq>.parquet``
  (``layout.capture_file``; the day is the row's time, so the monitor finds a row under the day
  it happened, whenever it was answered). A file is written whole (write-then-rename) and never
  rewritten; ``<writer>`` names the server process, so several servers never collide.

The request path only appends a reference to a bounded buffer (``max_rows``): tokenising,
framing and Parquet writing happen in the writer's thread. Capture never fails a prediction: a
full buffer drops the request's rows, a failed write drops that flush's rows, and both are
logged and counted (:meth:`CaptureWriter.status`, shown by the endpoint's ``/status``, and
``/ping`` while rows were lost).

Nothing here imports airflow.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from include.lifecycle.layout import capture_file
from include.lifecycle.spec import Spec
from include.lifecycle.store import Store

log = logging.getLogger("ml_lifecycle.capture")

SCORE_COLUMNS = ("score", "decision", "model_version")
"""What the model answered, in every captured (and scored) row."""
CAPTURED_AT = "captured_at"
"""When the endpoint answered (UTC); batch-scored rows have none."""
RESERVED = frozenset({*SCORE_COLUMNS, CAPTURED_AT})

DEFAULT_FLUSH_ROWS = 5_000
DEFAULT_FLUSH_SECONDS = 10.0
DEFAULT_MAX_ROWS = 200_000
TOKEN_CACHE_SIZE = 500_000
"""Distinct PII values whose tokens the writer remembers (then it starts afresh): bounded memory."""


def input_columns(spec: Spec, columns: Iterable[str]) -> list[str]:
    """The model inputs among ``columns`` worth capturing: the schema's columns but the target, the
    key and the time column (those have their own place), in schema order."""
    have = set(columns)
    skip = {spec.problem.target, spec.data.key, spec.data.time_column} | RESERVED
    return [c.name for c in spec.schema_.columns if c.name in have and c.name not in skip]


def capture_frame(
    spec: Spec,
    rows: pd.DataFrame,
    scored: pd.DataFrame,
    *,
    pii_key: bytes | None,
    tokenised: bool = False,
    captured_at: pd.Timestamp | np.ndarray | None = None,
    token_cache: dict[str, str] | None = None,
) -> pd.DataFrame:
    """``scored`` (one row per row of ``rows``, in order: the key if any, score, decision, model
    version) with the time column and the model's inputs of ``rows`` beside it: ``key, time,
    inputs..., score, decision, model_version[, captured_at]``.

    The PII columns are tokenised with ``pii_key`` (unless ``tokenised``: batch scoring's rows
    are curated already); without a key they are left out, never written raw. ``captured_at`` is one
    time or one per row (UTC ``datetime64``); ``token_cache`` carries tokens across calls."""
    from include.lifecycle.collect import tokenise

    d = spec.data
    inputs = input_columns(spec, rows.columns)
    pii = [c for c in spec.pii_columns if c in inputs]
    if pii and not tokenised and not pii_key:
        inputs = [c for c in inputs if c not in pii]
    frame = rows[[c for c in (d.time_column,) if c and c in rows.columns] + inputs].reset_index(drop=True)
    frame = frame.copy()
    if pii and not tokenised and pii_key:
        for col in pii:
            frame[col] = tokenise(frame[col], pii_key, token_cache)
    source = scored if d.key and d.key in scored.columns else rows
    if d.key and d.key in source.columns:
        frame.insert(0, d.key, source[d.key].to_numpy())
    for col in SCORE_COLUMNS:
        if col in scored.columns:
            frame[col] = scored[col].array
    if captured_at is not None:
        if isinstance(captured_at, pd.Timestamp):
            captured_at = np.full(len(frame), captured_at.tz_convert(None).to_datetime64().astype("datetime64[us]"))
        frame[CAPTURED_AT] = pd.Series(captured_at, dtype="datetime64[us]").dt.tz_localize("UTC")
    return frame


def _writer_name() -> str:
    """This process, as a file-name prefix: host, pid and start time (no two servers share it)."""
    host = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in socket.gethostname())[:40] or "host"
    return f"endpoint-{host}-{os.getpid()}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"


class CaptureWriter:
    """Buffers the endpoint's answered rows and writes them in a background thread.

    :param store: the problem's store (``<artifact root>/<problem>``)
    :param spec: the problem spec (key, time column, schema, PII columns)
    :param pii_key: the curated data's PII key (without it the PII columns are not captured)
    :param flush_rows: write once this many rows wait
    :param flush_seconds: ... or once the oldest waiting row is this old
    :param max_rows: at most this many rows wait in memory; beyond, a request's rows are dropped
        (and counted) rather than growing the buffer or slowing the answer
    """

    def __init__(
        self,
        store: Store,
        spec: Spec,
        *,
        pii_key: bytes | None,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        max_rows: int = DEFAULT_MAX_ROWS,
        writer: str | None = None,
    ) -> None:
        if flush_rows < 1 or flush_seconds <= 0 or max_rows < flush_rows:
            raise ValueError("flush_rows and flush_seconds must be positive and max_rows >= flush_rows")
        self.store = store
        self.spec = spec
        self.pii_key = pii_key
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_rows = max_rows
        self.writer = writer or _writer_name()
        self._pending: list[tuple[pd.DataFrame, pd.DataFrame, np.datetime64]] = []
        self._tokens: dict[str, str] = {}  # PII value -> token, across flushes (bounded: see flush)
        self._pending_rows = 0
        self._oldest: float | None = None  # monotonic time of the oldest waiting request
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time (the thread, stop())
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.counts = {"rows_captured": 0, "rows_written": 0, "files": 0, "rows_dropped": 0, "rows_lost": 0}
        self.failures = 0
        self.last_error: str | None = None
        if spec.pii_columns and not pii_key:
            log.warning("capture: no PII key, the PII columns %s are left out of the captured rows", spec.pii_columns)

    # --- the request path: cheap, never raises ---------------------------------------------------
    def add(self, rows: pd.DataFrame, scored: pd.DataFrame) -> bool:
        """Queue one request's rows and answers; False (counted, logged) when they were dropped."""
        try:
            n = len(scored)
            now = np.datetime64(time.time_ns() // 1000, "us")  # UTC
            with self._lock:
                if self._pending_rows + n > self.max_rows:
                    self.counts["rows_dropped"] += n
                    dropped = self.counts["rows_dropped"]
                else:
                    self._pending.append((rows, scored, now))
                    self._pending_rows += n
                    self.counts["rows_captured"] += n
                    if self._oldest is None:
                        self._oldest = time.monotonic()
                    dropped = 0
                    full = self._pending_rows >= self.flush_rows
            if dropped:
                if dropped == n or dropped % 10_000 < n:  # the first drop, then every 10k rows
                    log.error("capture: buffer full (%d rows): %d rows dropped so far", self.max_rows, dropped)
                return False
            if full:
                self._wake.set()
            return True
        except Exception as exc:  # capture must never fail a prediction
            self._failed(f"queueing {type(exc).__name__}: {exc}", len(scored) if scored is not None else 0)
            return False

    # --- the writer thread -----------------------------------------------------------------------
    def start(self) -> CaptureWriter:
        import pyarrow.parquet  # noqa: F401 - imported now, not inside the first flush while requests wait

        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
            self._thread.start()
        return self

    def _due(self) -> bool:
        with self._lock:
            if not self._pending_rows:
                return False
            return self._pending_rows >= self.flush_rows or time.monotonic() - self._oldest >= self.flush_seconds

    def _run(self) -> None:
        while not self._stop.is_set():
            # short waits, not one long one: a clock-shifting test tool (libfaketime) would stretch it
            self._wake.wait(0.1)
            self._wake.clear()
            if self._due():
                self.flush()

    def flush(self) -> int:
        """Write what waits now; the rows written (0 on failure: they are counted as lost)."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending, n = self._pending, [], self._pending_rows
                self._pending_rows, self._oldest = 0, None
            if not batch:
                return 0
            try:
                # one frame per flush, not per request: the PII of all its rows tokenised at once
                rows = pd.concat([r for r, _, _ in batch], ignore_index=True) if len(batch) > 1 else batch[0][0]
                scored = pd.concat([s for _, s, _ in batch], ignore_index=True) if len(batch) > 1 else batch[0][1]
                at = np.repeat(np.array([a for _, _, a in batch]), [len(s) for _, s, _ in batch])
                if len(self._tokens) > TOKEN_CACHE_SIZE:
                    self._tokens.clear()
                frame = capture_frame(
                    self.spec, rows, scored, pii_key=self.pii_key, captured_at=at, token_cache=self._tokens
                )
                written = self._write(frame)
            except Exception as exc:
                self._failed(f"{type(exc).__name__}: {exc}", n)
                return 0
            with self._lock:
                self.counts["rows_written"] += written
            return written

    def _write(self, frame: pd.DataFrame) -> int:
        from include.lifecycle.evaluate_data.labels import _utc

        time_col = self.spec.data.time_column
        when = _utc(frame[time_col]) if time_col and time_col in frame.columns else frame[CAPTURED_AT]
        # a row without a time goes under the day it was answered
        day = when.dt.floor("D").fillna(frame[CAPTURED_AT].dt.floor("D")).dt.tz_convert(None).to_numpy()
        for d in np.unique(day):
            part = frame if (day == d).all() else frame.loc[day == d].reset_index(drop=True)
            self._seq += 1
            self.store.write_parquet(capture_file(str(d)[:10], self.writer, self._seq), part)
            with self._lock:
                self.counts["files"] += 1
        return len(frame)

    def _failed(self, error: str, rows: int) -> None:
        with self._lock:
            self.failures += 1
            self.counts["rows_lost"] += rows
            self.last_error = error[:300]
        log.error("capture failed, %d rows not recorded (predictions unaffected): %s", rows, error)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread and write what still waits (never raises)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.flush()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "enabled": True,
                **self.counts,
                "buffered": self._pending_rows,
                "failures": self.failures,
                "last_error": self.last_error,
                "where": self.store.uri("captures"),
                "flush_rows": self.flush_rows,
                "flush_seconds": self.flush_seconds,
                "max_rows": self.max_rows,
            }

    @property
    def rows_missing(self) -> int:
        """Rows answered but never recorded (dropped by a full buffer or lost by a failed write)."""
        return self.counts["rows_dropped"] + self.counts["rows_lost"]
