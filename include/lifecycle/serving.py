"""A local inference endpoint that speaks the SageMaker hosting contract, serving the champion.

    python -m include.lifecycle.serving --problem card_fraud [--port 8081] [--artifact-root URI]
    python -m include.lifecycle.serving --model-dir /opt/ml/model --host 0.0.0.0 --port 8080

The second form is the SageMaker serving container's entry point (endpoints and batch
transform): it serves the one model unpacked from ``model.tar.gz`` (deploy_model on aws packs
the registry version with its ``manifest.json`` and the problem's ``spec.json``), checks every
file against the manifest's sha256 first, and never reloads.

    GET  /ping          200 {"status": "ok", "model_version": n} with a champion loaded, else 503
    POST /invocations   text/csv (header row) or application/json (an object, a list of
                        objects, or {"instances": [...]}); answers JSON (or CSV with
                        ``Accept: text/csv``): one prediction per row with its score, the
                        decision at the champion's threshold and the model version
    POST /reload        re-read the registered model's alias ``champion`` now (loopback clients only)
    GET  /status        problem, model version, when it was loaded, the last reload error, capture counts

Rows go in raw (as in the landing data); they are cast and checked with the spec's schema
rules (:func:`include.lifecycle.scoring.validate_rows`) and scored with the champion's saved
preprocessing (:class:`~include.lifecycle.bundle.ModelBundle`).

Per-entity features (card velocity, history) need the entity's past. With the PII key
(``$ML_PII_HASH_KEY``, the key of the curated data) the server keeps the last
``--history-days`` curated partitions (default: the spec's lookback) in memory, indexed by
the tokenised entity, and scores each request's rows after the earlier rows of their cards,
as the batch DAG and the training do; it re-reads them when a new curated partition lands
(collect_and_label writes them, so the context lags by up to a day, and the requests
themselves are not added). Without the key the rows of the request are the only context:
send a card's recent transactions in the same request.

Bad requests get a JSON error and a 4xx status and never take the server down: 400 for an
empty body, malformed CSV/JSON, missing columns (named), wrong types or values (row, column,
rule); 411 for a chunked body (send Content-Length); 413 above ``--max-body-bytes`` or
``--max-rows``; 415 for a content type other than text/csv and application/json.
Extra columns are ignored and listed in the answer (``ignored_columns``). A JSON body nested
deeper than ``MAX_JSON_DEPTH`` (32) levels is refused with 400 before it is parsed.

Load: the listen backlog is ``--backlog`` (1024, capped by the kernel's somaxconn), so a burst of
new connections waits in the kernel instead of being reset; at most ``--max-connections`` (32)
connections are handled at once, each by its own thread (the rest wait in the backlog, and a
keep-alive connection is closed after its answer when others are waiting). A request must
arrive whole (request line, headers and body) within ``--timeout`` seconds of its first byte,
however slowly it trickles in: past that it gets 408 and the connection is closed (a slow
client cannot hold a thread); an idle keep-alive connection is closed after ``--keepalive``
seconds. The scoring itself runs ``--scoring-threads`` (1) requests at a time, which is faster
than letting every connection's thread fight over the GIL.

A new champion is picked up without a restart: a background thread polls the MLflow registered
model's alias ``champion`` (``--poll-seconds``) and ``POST /reload`` (sent by deploy_model) reloads
at once; a rollback (``make rollback``) moves the alias back and is picked up the same way. The new
bundle is loaded and checksum-verified beside the old one, then swapped in with one reference
assignment; a request uses the champion it started with, so in-flight requests are unaffected.
A version that fails to load (checksum, missing file) is refused and the old one keeps serving.

Data capture (spec ``serving.capture``, default on; ``--capture on|off`` overrides it): every
answered row is recorded for the monitor under ``<artifact root>/<problem>/captures/ds=<day>/``
(key, time, the model's inputs with the PII columns tokenised by the PII key - left out without
it -, score, decision, model version, ``captured_at``) by a
:class:`~include.lifecycle.capture.CaptureWriter`: a request only appends to a bounded buffer
(``--capture-max-rows``), a background thread writes one Parquet file per flush (every
``--capture-flush-rows`` rows or ``--capture-flush-seconds``) and stopping the server (SIGTERM,
Ctrl-C, :meth:`ServingServer.stop`) writes the rest. A capture failure never fails a prediction:
the lost rows are logged and counted in ``/status`` (``capture``) and ``/ping`` (``capture_lost_rows``).
The model-dir form (the SageMaker container) captures nothing: there SageMaker's own data capture
is the counterpart.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import select
import signal
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pandas as pd

from include.lifecycle.capture import (
    DEFAULT_FLUSH_ROWS,
    DEFAULT_FLUSH_SECONDS,
    DEFAULT_MAX_ROWS,
    CaptureWriter,
)
from include.lifecycle.collect import list_partitions
from include.lifecycle.registry import ModelRegistry
from include.lifecycle.scoring import (
    Champion,
    EntityHistory,
    InvalidRows,
    NoChampion,
    champion_version,
    load_champion,
    load_history,
    score_frame,
    score_with_context,
    tokenise_pii,
    validate_rows,
)
from include.lifecycle.spec import PROJECT_ROOT, Spec, load_spec, spec_path
from include.lifecycle.store import Store

log = logging.getLogger("ml_lifecycle.serving")

DEFAULT_PORT = 8081
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 10.0  # to receive a whole request, from its first byte
DEFAULT_KEEPALIVE_SECONDS = 5.0  # an idle keep-alive connection is closed after this
DEFAULT_BACKLOG = 1024  # listen backlog (the kernel caps it at net.core.somaxconn)
DEFAULT_MAX_CONNECTIONS = 32  # connections handled at once (one thread each); the rest wait in the backlog
MAX_JSON_DEPTH = 32  # {"instances": [{...}]} is 3 deep
DEFAULT_POLL_SECONDS = 5.0
PII_KEY_ENV = "ML_PII_HASH_KEY"  # the key of the curated data (the Airflow variable ml_pii_hash_key)
DRAIN_FACTOR = 4  # an oversized body up to this many times the limit is read and dropped before the 413
CSV_TYPES = {"text/csv"}
JSON_TYPES = {"application/json"}


class RequestDeadline(Exception):
    """The request did not arrive whole within its deadline (not a TimeoutError, so that
    http.server does not swallow it: the client gets a 408)."""


class RequestError(Exception):
    """An answer other than 200: the status and a message for the client."""

    def __init__(self, status: HTTPStatus, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []


# --- payloads --------------------------------------------------------------------------------
def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKETS = re.compile(r"[^\[\]{}]+")


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays/objects deeper than ``limit``, found without parsing
    (the parser recurses: a 100k-deep ``[[[...]]]`` would be a RecursionError). Brackets inside
    strings do not count."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _JSON_BRACKETS.sub("", _JSON_STRING.sub("", text))
    depth = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def parse_payload(body: bytes, content_type: str | None) -> pd.DataFrame:
    """The request body as a frame of raw values (CSV: all text, as the landing data)."""
    kind = media_type(content_type)
    if kind not in CSV_TYPES | JSON_TYPES:
        raise RequestError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"content type {kind or '(none)'!r} is not supported: send text/csv (with a header row) or application/json",
        )
    if not body.strip():
        raise RequestError(HTTPStatus.BAD_REQUEST, "empty body: send at least one row")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"body is not UTF-8: {exc}") from exc
    if kind in CSV_TYPES:
        try:
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"malformed CSV: {str(exc).strip()[:200]}") from exc
        unnamed = [c for c in df.columns if str(c).startswith("Unnamed:")]
        if unnamed:
            raise RequestError(HTTPStatus.BAD_REQUEST, "malformed CSV: the header row has empty column names")
        return df
    too_deep = RequestError(
        HTTPStatus.BAD_REQUEST,
        f"JSON nested deeper than {MAX_JSON_DEPTH} levels: send an object, a list of objects "
        'or {"instances": [objects]} with plain values',
    )
    if json_depth_exceeds(text):
        raise too_deep
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"malformed JSON: {exc}") from exc
    except RecursionError as exc:  # not reached after the depth check; never a 500
        raise too_deep from exc
    if isinstance(doc, dict) and "instances" in doc:
        doc = doc["instances"]
    records = [doc] if isinstance(doc, dict) else doc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            'JSON must be an object, a list of objects or {"instances": [objects]} (one object per row)',
        )
    if not records:
        raise RequestError(HTTPStatus.BAD_REQUEST, "no rows to score")
    df = pd.DataFrame.from_records(records)
    return df if len(df.columns) else pd.DataFrame(index=range(len(records)))  # [{}]: rows without columns


def predictions_json(champion: Champion, scored: pd.DataFrame, key: str | None, ignored: list[str]) -> dict[str, Any]:
    scores = scored["score"].tolist()
    decisions = [None if pd.isna(d) else int(d) for d in scored["decision"].tolist()]
    if key and key in scored.columns:  # tolist(): plain Python values, whatever the key's dtype
        ids = scored[key].tolist()
        preds = [{"id": i, "score": s, "decision": d} for i, s, d in zip(ids, scores, decisions, strict=True)]
    else:
        preds = [{"score": s, "decision": d} for s, d in zip(scores, decisions, strict=True)]
    return {
        "model_version": champion.version,
        "threshold": champion.threshold,
        "predictions": preds,
        **({"ignored_columns": ignored} if ignored else {}),
    }


def predictions_csv(scored: pd.DataFrame, key: str | None) -> bytes:
    cols = [c for c in (key, "score", "decision", "model_version") if c and c in scored.columns]
    return scored[cols].rename(columns={key: "id"} if key else {}).to_csv(index=False).encode()


# --- the loaded champion -----------------------------------------------------------------------
class ChampionHolder:
    """Holds the current champion; reloads replace it with one atomic reference assignment."""

    def __init__(
        self,
        registry: ModelRegistry | None,
        spec: Spec,
        *,
        problem: Store | None = None,
        history_days: int = 0,
        pii_key: bytes | None = None,
    ) -> None:
        self.registry = registry
        self.spec = spec
        self.problem = problem
        self.history_days = history_days if (problem is not None and pii_key and spec.data.entity_column) else 0
        self.pii_key = pii_key
        self.current: Champion | None = None
        self.history: EntityHistory | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self._reload_lock = threading.Lock()  # one load at a time; readers never wait for it

    def refresh_history(self) -> None:
        """Re-read the recent curated partitions when a new one has landed (never raises)."""
        with self._reload_lock:
            self._refresh_history(self.current)

    def _refresh_history(self, champion: Champion | None, *, force: bool = False) -> None:
        if not self.history_days or champion is None or self.problem is None:
            return
        try:
            days = tuple(list_partitions(self.problem.sub("curated"))[-self.history_days :])
            if force or self.history is None or self.history.days != days:
                cols = champion.bundle.input_columns
                self.history = load_history(self.problem, self.spec, cols, self.history_days)
                if self.history is not None:
                    log.info(
                        "history context: %s rows of %s entities, curated days %s..%s",
                        len(self.history.rows),
                        len(self.history.positions),
                        days[0],
                        days[-1],
                    )
        except Exception as exc:  # keep the old context
            log.error("cannot refresh the history context: %s: %s", type(exc).__name__, exc)

    def reload(self) -> dict[str, Any]:
        """Load the registry's champion if it is not the one loaded. Never raises."""
        with self._reload_lock:
            before = self.current.version if self.current else None
            if self.registry is None:  # a fixed model (--model-dir): nothing to reload
                return {"previous": before, "model_version": before, "changed": False, "error": self.last_error}
            try:
                wanted = champion_version(self.registry)
                if wanted is None:
                    raise NoChampion(f"no champion deployed for {self.spec.name!r} yet")
                if wanted != before:
                    champion = load_champion(self.registry, self.spec.name, version=wanted)
                    self._refresh_history(champion, force=True)  # the new champion's columns, before it serves
                    self.current = champion
                    self.reloads += 1
                    log.info("serving model version %s of %s (was %s)", wanted, self.spec.name, before)
                else:
                    self._refresh_history(self.current)
                self.last_error = None
            except Exception as exc:  # keep serving the old champion, say why
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("reload failed, still serving version %s: %s", before, self.last_error)
            after = self.current.version if self.current else None
            return {"previous": before, "model_version": after, "changed": before != after, "error": self.last_error}

    def status(self) -> dict[str, Any]:
        c = self.current
        return {
            "problem": self.spec.name,
            "model_version": c.version if c else None,
            "threshold": c.threshold if c else None,
            "loaded_at": c.loaded_at if c else None,
            "reloads": self.reloads,
            "last_error": self.last_error,
            "history": {"rows": len(h.rows), "days": list(h.days)} if (h := self.history) else None,
        }

    def score(self, champion: Champion, rows: pd.DataFrame) -> pd.DataFrame:
        """Score validated rows; with a history context, the recent rows of their entities are
        the past their per-entity features are computed from."""
        key = self.spec.data.key
        history = self.history  # this request's context, whatever a refresh does meanwhile
        if history is None or self.pii_key is None:
            return score_frame(champion, rows, key=key)
        tokens = tokenise_pii(rows, self.spec, self.pii_key)
        scored = score_with_context(champion, tokens, history.context_for(tokens[history.entity_column]), key=key)
        return scored


# --- HTTP ------------------------------------------------------------------------------------
class DeadlineReader(io.RawIOBase):
    """The connection's reads, with one deadline per request instead of one timeout per read.

    Waiting for a request's first byte is the keep-alive idle time (``idle_seconds``; when it
    runs out the connection ends as if the client had closed it). From the first byte on, the
    rest of the request (line, headers, body) must arrive within ``request_seconds`` however
    slowly it trickles in; past that :class:`RequestDeadline` is raised."""

    def __init__(self, sock: socket.socket, idle_seconds: float, request_seconds: float) -> None:
        super().__init__()
        self.sock = sock
        self.idle_seconds = idle_seconds
        self.request_seconds = request_seconds
        self.deadline: float | None = None  # None: between requests

    def readable(self) -> bool:
        return True

    def next_request(self) -> None:
        self.deadline = None

    def start_request(self) -> None:
        """The request has begun (its first byte may already be buffered)."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.request_seconds

    def readinto(self, buffer: Any) -> int:
        if self.deadline is None:
            wait = self.idle_seconds
        else:
            wait = self.deadline - time.monotonic()
            if wait <= 0:
                raise RequestDeadline(f"the request did not arrive within {self.request_seconds:g} s")
        self.sock.settimeout(wait)
        try:
            n = self.sock.recv_into(buffer)
        except TimeoutError:
            if self.deadline is None:
                return 0  # idle keep-alive connection: end it quietly
            raise RequestDeadline(f"the request did not arrive within {self.request_seconds:g} s") from None
        if n:
            self.start_request()
        return n


class ServingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client may send many requests on one connection
    server_version = "ml-lifecycle-serving/1"
    server: ServingServer

    def setup(self) -> None:
        super().setup()
        # small answers go out at once (Nagle + the client's delayed ACK would add ~40 ms to each)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = DeadlineReader(self.connection, self.server.keepalive_seconds, self.server.timeout_seconds)
        self.rfile.close()
        self.rfile = io.BufferedReader(self.reader, 65536)

    def handle_one_request(self) -> None:
        self.reader.next_request()
        try:  # wait (keep-alive idle time) for the request's first byte, maybe already buffered
            first = self.rfile.peek(1)
        except OSError:
            first = b""
        if not first:  # the client closed, or stayed idle too long
            self.close_connection = True
            return
        self.reader.start_request()  # from here the whole request has timeout_seconds
        try:
            super().handle_one_request()
        except RequestDeadline as exc:  # too slow: 408, then close
            self.close_connection = True
            self._request_timeout(str(exc))

    def _request_timeout(self, message: str) -> None:
        log.info("%s: %s, connection closed", self.client_address[0], message)
        body = json.dumps({"error": "Request Timeout", "status": 408, "message": message}).encode()
        head = (
            "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        try:
            self.connection.settimeout(1.0)
            self.wfile.write(head.encode() + body)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # answers
    def _send(self, status: HTTPStatus, body: bytes, content_type: str, *, close: bool = False) -> None:
        self.connection.settimeout(self.server.timeout_seconds)  # writing the answer: a timeout per write
        if not close and not self.close_connection and self.server.others_waiting():
            close = True  # give the connection slot to a client waiting in the backlog
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, doc: dict[str, Any], *, close: bool = False) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", close=close)

    def _error(self, err: RequestError, *, close: bool = False) -> None:
        doc: dict[str, Any] = {"error": err.status.phrase, "status": int(err.status), "message": str(err)}
        if err.errors:
            doc["errors"] = err.errors
        self._json(err.status, doc, close=close)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not supported: send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:  # HTTP/1.1: no length and not chunked means no body
            return b""
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}") from exc
        limit = self.server.max_body_bytes
        if n > limit:
            if n <= DRAIN_FACTOR * limit:
                # read and drop it (bounded, within the request's deadline): closing with unread bytes makes
                # the kernel reset the connection, and the client might never see the 413
                while n > 0 and (chunk := self.rfile.read(min(n, 65536))):
                    n -= len(chunk)
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes is over the limit of {limit}"
            )
        return self.rfile.read(n) if n else b""

    # routes
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        holder = self.server.holder
        if path == "/ping":
            c = holder.current
            if c is None:
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "no champion", "error": holder.last_error})
            else:
                doc: dict[str, Any] = {"status": "ok", "model_version": c.version}
                if self.server.capture is not None and self.server.capture.rows_missing:
                    doc["capture_lost_rows"] = self.server.capture.rows_missing  # scoring works, capture does not
                self._json(HTTPStatus.OK, doc)
        elif path in ("/status", "/"):
            capture = self.server.capture.status() if self.server.capture else {"enabled": False}
            self._json(HTTPStatus.OK, holder.status() | {"connections": self.server.limits(), "capture": capture})
        else:
            self._error(RequestError(HTTPStatus.NOT_FOUND, f"no route {path}: GET /ping, POST /invocations"))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            body = self._read_body()
        except RequestError as err:  # the body was not read: this connection cannot be reused
            self._error(err, close=True)
            return
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if path == "/invocations":
            self._invocations(body)
        elif path == "/reload":
            if not ip_address(self.client_address[0]).is_loopback:
                self._error(RequestError(HTTPStatus.FORBIDDEN, "/reload is only answered on loopback"))
                return
            self._json(HTTPStatus.OK, self.server.holder.reload())
        else:
            self._error(RequestError(HTTPStatus.NOT_FOUND, f"no route {path}: GET /ping, POST /invocations"))

    def _invocations(self, body: bytes) -> None:
        champion = self.server.holder.current  # this request's champion, whatever a reload does meanwhile
        spec = self.server.holder.spec
        try:
            if champion is None:
                raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, f"no champion loaded for {spec.name!r}")
            raw = parse_payload(body, self.headers.get("Content-Type"))
            if len(raw) > self.server.max_rows:
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{len(raw)} rows is over the limit of {self.server.max_rows}"
                )
            # CPU-bound pandas/sklearn work: one request at a time does more per second than
            # several threads fighting over the GIL; reading and answering stay concurrent
            with self.server.scoring_slot:
                try:
                    rows, ignored = validate_rows(raw, spec, champion.bundle)
                except InvalidRows as exc:
                    raise RequestError(HTTPStatus.BAD_REQUEST, str(exc), exc.errors) from exc
                scored = self.server.holder.score(champion, rows)
        except RequestError as err:
            self._error(err)
            return
        except Exception as exc:  # a bug must not take the server down: answer 500 and log it
            log.exception("scoring failed")
            self._error(RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, f"scoring failed: {type(exc).__name__}"))
            return
        if self.server.capture is not None:  # queued for the writer thread; never raises
            self.server.capture.add(rows, scored)
        if "text/csv" in (self.headers.get("Accept") or ""):
            self._send(HTTPStatus.OK, predictions_csv(scored, spec.data.key), "text/csv")
        else:
            self._json(HTTPStatus.OK, predictions_json(champion, scored, spec.data.key, ignored))


def somaxconn() -> int | None:
    """The kernel's cap on a listen backlog (Linux), if readable."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return None


class ServingServer(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` at once: the accept loop waits for a
    free slot before it accepts, so further connections wait in the listen backlog (``backlog``)
    rather than each getting a thread that fights over the cores."""

    daemon_threads = True  # a stuck connection never blocks shutdown
    block_on_close = False  # ... nor does stop() wait for the connection threads
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        holder: ChampionHolder,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_rows: int = 100_000,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
        poll_seconds: float | None = DEFAULT_POLL_SECONDS,
        scoring_threads: int = 1,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        backlog: int = DEFAULT_BACKLOG,
        capture: CaptureWriter | None = None,
    ) -> None:
        if max_connections < 1 or backlog < 1 or timeout_seconds <= 0 or keepalive_seconds <= 0:
            raise ValueError("max_connections, backlog, timeout_seconds and keepalive_seconds must be positive")
        self.holder = holder
        self.capture = capture
        self.max_body_bytes = max_body_bytes
        self.max_rows = max_rows
        self.timeout_seconds = timeout_seconds
        self.keepalive_seconds = keepalive_seconds
        self.poll_seconds = poll_seconds
        self.scoring_slot = threading.Semaphore(scoring_threads)
        self.max_connections = max_connections
        self.request_queue_size = backlog  # listen(backlog) in server_activate
        self._slots = threading.BoundedSemaphore(max_connections)
        self._active = 0  # connections being handled (holding a slot)
        self._active_lock = threading.Lock()
        self._stop = threading.Event()
        super().__init__(address, ServingHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def backlog(self) -> int:
        """The listen backlog in effect (the kernel caps the one asked for at somaxconn)."""
        cap = somaxconn()
        return min(self.request_queue_size, cap) if cap else self.request_queue_size

    # connection slots: taken before accept(), given back when the connection is closed
    def get_request(self) -> tuple[socket.socket, Any]:
        while not self._slots.acquire(timeout=0.25):
            if self._stop.is_set():
                raise OSError("the server is stopping")
        try:
            conn, addr = self.socket.accept()
        except BaseException:
            self._slots.release()
            raise
        with self._active_lock:
            self._active += 1
        return conn, addr

    def shutdown_request(self, request: Any) -> None:  # once per accepted connection, whatever happened
        try:
            super().shutdown_request(request)
        finally:
            with self._active_lock:
                self._active -= 1
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        client = client_address[0] if client_address else "?"
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client went away (reset, broken pipe): no traceback
            log.info("connection from %s ended: %s: %s", client, type(exc).__name__, exc)
        else:
            log.exception("connection from %s failed", client)

    def limits(self) -> dict[str, Any]:
        return {
            "active": self._active,
            "max": self.max_connections,
            "backlog": self.backlog,
            "request_timeout_seconds": self.timeout_seconds,
            "keepalive_seconds": self.keepalive_seconds,
        }

    def others_waiting(self) -> bool:
        """Every slot is taken and a connection waits in the backlog to be accepted."""
        if self._active < self.max_connections:
            return False
        try:
            poller = select.poll()
            poller.register(self.socket, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError, AttributeError):  # closed socket, or no poll() here
            return False

    def _stopped_during(self, seconds: float) -> bool:
        """Wait ``seconds`` in short relative sleeps; True as soon as the server stops.

        Not ``Event.wait(seconds)``: CPython turns its timeout into an absolute CLOCK_MONOTONIC
        deadline (sem_clockwait), which clock-shifting tools such as libfaketime (used to test a
        moved system date) do not translate, so the poller would sleep for years there."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.1))
        return True

    def _poll(self) -> None:
        if self.holder.registry is None:
            return
        while not self._stopped_during(self.poll_seconds):
            c = self.holder.current
            try:
                wanted = champion_version(self.holder.registry)
            except Exception as exc:  # the store may be briefly unreadable: try again next time
                log.warning("cannot read the champion pointer: %s", exc)
                continue
            if wanted is not None and (c is None or c.version != wanted):
                self.holder.reload()
            else:
                self.holder.refresh_history()

    def load_and_poll(self) -> None:
        """Load the champion now, start the thread that watches for a new one (and the capture's writer)."""
        if self.capture is not None:
            self.capture.start()
        self.holder.reload()
        if self.poll_seconds:
            threading.Thread(target=self._poll, name="champion-poll", daemon=True).start()

    def start(self) -> threading.Thread:
        """Load the champion, start polling and serve in a background thread (tests, bench)."""
        self.load_and_poll()
        thread = threading.Thread(target=self.serve_forever, name="serving", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
        self.shutdown()
        self.server_close()
        self.stop_capture()

    def stop_capture(self) -> None:
        """Write the captured rows still waiting (after the last request was answered)."""
        if self.capture is not None:
            self.capture.stop()


def registry_for(artifact_root: str, problem: str) -> ModelRegistry:
    """The registered model ``problem`` of the MLflow store of ``artifact_root`` (its files in
    ``<artifact root>/<problem>``'s store)."""
    uri = artifact_root if "://" in artifact_root else Path(artifact_root).resolve().as_uri()
    return ModelRegistry(Store.from_uri(uri.rstrip("/") + f"/{problem}"), problem)


def make_server(
    problem: str,
    *,
    artifact_root: str | None = None,
    spec: Spec | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    history_days: int | None = None,
    pii_key: bytes | None = None,
    capture: bool | None = None,
    capture_options: dict[str, Any] | None = None,
    **options: Any,
) -> ServingServer:
    """A server for the champion of ``problem`` in ``artifact_root``'s registry; ``capture``
    (default: the spec's ``serving.capture``) records the answered rows in the problem's store
    (``capture_options``: :class:`~include.lifecycle.capture.CaptureWriter`'s flush_rows,
    flush_seconds, max_rows)."""
    root = artifact_root or os.environ.get("ML_ARTIFACT_ROOT") or str(PROJECT_ROOT / "artifacts")
    spec = spec or load_spec(spec_path(problem))
    registry = registry_for(root, problem)
    problem_store = registry.store
    if history_days is None:  # the window the model was trained on
        history_days = spec.data.lookback_days if pii_key else 0
    holder = ChampionHolder(registry, spec, problem=problem_store, history_days=history_days, pii_key=pii_key)
    writer = None
    if spec.serving.capture if capture is None else capture:
        writer = CaptureWriter(problem_store, spec, pii_key=pii_key, **(capture_options or {}))
    return ServingServer((host, port), holder, capture=writer, **options)


def load_model_dir(model_dir: str | Path) -> tuple[Spec, Champion]:
    """The spec and the model of an unpacked ``model.tar.gz``, every file checked against the
    manifest's sha256 (a mismatch raises :class:`~include.lifecycle.registry.ChecksumError`)."""
    from include.lifecycle.bundle import ModelBundle
    from include.lifecycle.registry import ChecksumError
    from include.lifecycle.spec import parse_spec
    from include.lifecycle.store import sha256_bytes

    folder = Path(model_dir)
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        digest = sha256_bytes((folder / name).read_bytes())
        if digest != entry["sha256"]:
            raise ChecksumError(f"{folder / name}: sha256 {digest[:12]}... does not match the manifest")
    spec = parse_spec(json.loads((folder / "spec.json").read_text()))
    bundle = ModelBundle.load(folder)
    record = {"version": manifest["version"], "source": str(folder)}
    return spec, Champion(problem=spec.name, version=int(manifest["version"]), bundle=bundle, record=record)


def make_model_dir_server(
    model_dir: str | Path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, **options: Any
) -> ServingServer:
    """A server for one fixed model (the SageMaker container): no registry, no reload, no history
    context (a request's rows are their own context: batch transform sends an entity's past first)."""
    spec, champion = load_model_dir(model_dir)
    holder = ChampionHolder(None, spec)
    holder.current = champion
    return ServingServer((host, port), holder, **(options | {"poll_seconds": None}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problem", default="card_fraud")
    p.add_argument("--model-dir", default=None, help="serve this unpacked model.tar.gz (the SageMaker container)")
    p.add_argument("--artifact-root", default=None, help="default: $ML_ARTIFACT_ROOT, else <project>/artifacts")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback only)")
    p.add_argument("--port", type=int, default=int(os.environ.get("ML_SERVING_PORT", DEFAULT_PORT)))
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--max-rows", type=int, default=100_000)
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="seconds to receive a whole request (line, headers, body) from its first byte; then 408",
    )
    p.add_argument(
        "--keepalive",
        type=float,
        default=DEFAULT_KEEPALIVE_SECONDS,
        help="seconds an idle keep-alive connection is kept",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="connections handled at once (a thread each); the rest wait in the listen backlog",
    )
    p.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG, help="listen backlog (capped by somaxconn)")
    p.add_argument("--poll-seconds", type=float, default=DEFAULT_POLL_SECONDS, help="0: reload only on POST /reload")
    p.add_argument("--scoring-threads", type=int, default=1, help="requests scored at the same time (GIL-bound)")
    p.add_argument(
        "--capture",
        choices=["spec", "on", "off"],
        default="spec",
        help="record the answered rows under <artifact root>/<problem>/captures/ (default: the spec's serving.capture)",
    )
    p.add_argument(
        "--capture-flush-rows", type=int, default=DEFAULT_FLUSH_ROWS, help="write captured rows this many at a time"
    )
    p.add_argument(
        "--capture-flush-seconds", type=float, default=DEFAULT_FLUSH_SECONDS, help="... or when the oldest is this old"
    )
    p.add_argument(
        "--capture-max-rows",
        type=int,
        default=DEFAULT_MAX_ROWS,
        help="captured rows kept in memory at most (more are dropped and counted)",
    )
    p.add_argument(
        "--history-days",
        type=int,
        default=None,
        help="curated days kept as per-entity context (default: the spec's lookback_days when a PII key is set; 0: off)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    limits = {
        "max_body_bytes": args.max_body_bytes,
        "max_rows": args.max_rows,
        "timeout_seconds": args.timeout,
        "keepalive_seconds": args.keepalive,
        "max_connections": args.max_connections,
        "backlog": args.backlog,
    }
    if args.model_dir:
        server = make_model_dir_server(args.model_dir, host=args.host, port=args.port, **limits)
        log.info("serving %s version %s from %s on %s", server.holder.spec.name, server.holder.current.version,
                 args.model_dir, server.url)  # fmt: skip
        return _serve(server)
    server = make_server(
        args.problem,
        artifact_root=args.artifact_root,
        host=args.host,
        port=args.port,
        **limits,
        poll_seconds=args.poll_seconds or None,
        scoring_threads=args.scoring_threads,
        history_days=args.history_days,
        pii_key=(os.environ.get(PII_KEY_ENV) or "").encode() or None,
        capture={"spec": None, "on": True, "off": False}[args.capture],
        capture_options={
            "flush_rows": args.capture_flush_rows,
            "flush_seconds": args.capture_flush_seconds,
            "max_rows": args.capture_max_rows,
        },
    )
    server.load_and_poll()
    st = server.holder.status()
    log.info(
        "serving %s on %s (model version %s%s); POST /invocations, GET /ping",
        args.problem,
        server.url,
        st["model_version"],
        f", {st['last_error']}" if st["last_error"] else "",
    )
    return _serve(server)


def _serve(server: ServingServer) -> int:
    # SIGTERM (docker stop, kill, a supervisor) ends the loop like Ctrl-C, so the capture is flushed
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._stop.set()
        server.server_close()
        server.stop_capture()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
