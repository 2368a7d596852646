"""The local SageMaker-style endpoint (include/lifecycle/serving.py) on a free loopback port:
/ping, scoring CSV and JSON exactly as ModelBundle.score does, a champion swap under load with
no failed request, a tampered version refused, and every kind of bad request answered with a
clear 4xx JSON error while the server keeps serving."""

from __future__ import annotations

import http.client
import io
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from include.lifecycle.bundle import ModelBundle
from include.lifecycle.registry import ModelRegistry
from include.lifecycle.scoring import tokenise_pii, validate_rows
from include.lifecycle.serving import ServingServer, make_server
from include.lifecycle.spec import PROJECT_ROOT, Spec, load_spec
from include.lifecycle.store import Store
from tests.registry_store import mlflow_db_in, version_file
from tests.unit.test_bundle import _build_bundle_files, _transactions

PROBLEM = "card_fraud"
MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(PROJECT_ROOT / "include" / "problems" / "card_fraud.yaml")


@pytest.fixture(scope="module")
def requests_frame() -> pd.DataFrame:
    """New transactions as a client sends them (no label)."""
    return _transactions(300, seed=5, start="2024-03-11").drop(columns=["is_fraud"])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, spec: Spec) -> Path:
    """An artifact root whose registry holds two versions (logistic, xgboost); none is champion yet."""
    root = tmp_path_factory.mktemp("serving-artifacts")
    train = _transactions(3000, seed=1)
    registry = _registry(root)
    for family, params, threshold in (
        ("logistic", {"C": 1.0}, 0.6),
        ("xgboost", {"n_estimators": 40, "max_depth": 3, "learning_rate": 0.2}, 0.2),
    ):
        work = tmp_path_factory.mktemp(family)
        files, _, _ = _build_bundle_files(spec, train, family, params, work, threshold=threshold)
        registry.register(files, {"problem": PROBLEM, "family": family})
    assert registry.versions() == [1, 2]
    return root


def _registry(root: Path) -> ModelRegistry:
    """The registered model card_fraud of the MLflow store in artifact root ``root``."""
    mlflow_db_in(root)
    return ModelRegistry(Store.from_uri(f"file://{root}/{PROBLEM}"))


def _bundle(root: Path, version: int, tmp: Path) -> ModelBundle:
    return ModelBundle.load(_registry(root).materialise(version, tmp / f"v{version}"))


def _start(root: Path, spec: Spec, **options: Any) -> ServingServer:
    opts = {"max_body_bytes": MAX_BODY, "timeout_seconds": 1.0, "poll_seconds": 0.1, **options}
    server = make_server(PROBLEM, artifact_root=str(root), spec=spec, host="127.0.0.1", port=0, **opts)
    server.start()
    return server


@pytest.fixture(scope="module")
def served(root: Path, spec: Spec) -> Iterator[ServingServer]:
    """A server whose champion is version 1 (promoted before it starts)."""
    registry = _registry(root)
    if registry.champion() is None:
        registry.promote(1, run_id="test-v1", expected_champion=None)
    server = _start(root, spec)
    try:
        yield server
    finally:
        server.stop()


def request(
    server: ServingServer, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def invoke(server: ServingServer, body: bytes, content_type: str, **headers: str) -> tuple[int, Any]:
    status, hdrs, data = request(server, "POST", "/invocations", body, {"Content-Type": content_type, **headers})
    if hdrs.get("content-type") == "application/json":
        return status, json.loads(data)
    return status, data.decode()


def csv_body(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def wait_for(condition: Any, seconds: float = 20.0) -> None:
    """Wait until ``condition()`` holds (the poller works in the background); fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


# --- the contract ------------------------------------------------------------------------------
def test_ping_is_503_until_a_champion_is_deployed_then_200(tmp_path: Path, root: Path, spec: Spec) -> None:
    empty = tmp_path / "artifacts"
    registry = _registry(empty)
    src = _registry(root)
    server = _start(empty, spec)
    try:
        status, _, body = request(server, "GET", "/ping")
        assert status == 503 and json.loads(body)["status"] == "no champion"
        status, doc = invoke(server, b"a,b\n1,2\n", "text/csv")
        assert status == 503 and "no champion" in doc["message"]
        # deploy: register a copy of version 1 and promote it; the poller loads it without a restart
        files = {n: d for n, d in src.load(1).items() if n not in ("manifest.json", "metadata.json")}
        registry.promote(registry.register(files, {}), run_id="deploy-1", expected_champion=None)
        wait_for(lambda: request(server, "GET", "/ping")[0] == 200)
        assert json.loads(request(server, "GET", "/ping")[2]) == {"status": "ok", "model_version": 1}
    finally:
        server.stop()


def test_csv_scores_equal_the_bundle_scores(
    served: ServingServer, spec: Spec, root: Path, tmp_path: Path, requests_frame: pd.DataFrame
) -> None:
    bundle = _bundle(root, 1, tmp_path)
    status, doc = invoke(served, csv_body(requests_frame), "text/csv")
    assert status == 200, doc
    assert doc["model_version"] == 1 and doc["threshold"] == 0.6
    preds = doc["predictions"]
    assert [p["id"] for p in preds] == requests_frame["transaction_id"].tolist()
    expected = bundle.score(requests_frame)
    scores = np.array([p["score"] for p in preds])
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-9)
    assert [p["decision"] for p in preds] == (expected >= 0.6).astype(int).tolist()
    assert 0 < sum(p["decision"] for p in preds) < len(preds)  # the threshold separates rows
    assert "ignored_columns" not in doc


def test_json_object_list_and_instances_score_the_same(
    served: ServingServer, root: Path, tmp_path: Path, requests_frame: pd.DataFrame
) -> None:
    bundle = _bundle(root, 1, tmp_path)
    rows = json.loads(requests_frame.head(20).to_json(orient="records", date_format="iso", date_unit="us"))
    expected = bundle.score(requests_frame.head(20))
    for payload in (rows, {"instances": rows}):
        status, doc = invoke(served, json.dumps(payload).encode(), "application/json; charset=utf-8")
        assert status == 200, doc
        np.testing.assert_allclose([p["score"] for p in doc["predictions"]], expected, rtol=1e-6, atol=1e-9)
    # one object on its own: scored alone (it has no earlier rows of its card in the request)
    status, doc = invoke(served, json.dumps(rows[3]).encode(), "application/json")
    assert status == 200 and len(doc["predictions"]) == 1
    alone = bundle.score(requests_frame.iloc[[3]])
    assert doc["predictions"][0] == {
        "id": rows[3]["transaction_id"],
        "score": pytest.approx(float(alone[0]), rel=1e-6),
        "decision": int(alone[0] >= 0.6),
    }


def test_csv_answer_when_asked_and_extra_columns_are_ignored(
    served: ServingServer, requests_frame: pd.DataFrame
) -> None:
    frame = requests_frame.head(5).assign(note="x", is_fraud=0)
    status, doc = invoke(served, csv_body(frame), "text/csv")
    assert status == 200 and doc["ignored_columns"] == ["note", "is_fraud"]
    status, text = invoke(served, csv_body(requests_frame.head(5)), "text/csv", Accept="text/csv")
    assert status == 200
    out = pd.read_csv(io.StringIO(text))
    assert list(out.columns) == ["id", "score", "decision", "model_version"]
    assert out["id"].tolist() == requests_frame["transaction_id"].head(5).tolist()
    np.testing.assert_allclose(out["score"], [p["score"] for p in doc["predictions"]], rtol=1e-9)
    assert set(out["model_version"]) == {1}


def test_the_row_key_is_optional(served: ServingServer, requests_frame: pd.DataFrame) -> None:
    status, doc = invoke(served, csv_body(requests_frame.head(3).drop(columns="transaction_id")), "text/csv")
    assert status == 200 and len(doc["predictions"]) == 3
    assert all(set(p) == {"score", "decision"} for p in doc["predictions"])


# --- bad requests --------------------------------------------------------------------------------
def _rows(frame: pd.DataFrame, n: int = 3) -> list[dict[str, Any]]:
    return json.loads(frame.head(n).to_json(orient="records", date_format="iso"))


def test_bad_requests_get_clear_4xx_answers_and_the_server_keeps_serving(
    served: ServingServer, requests_frame: pd.DataFrame
) -> None:
    good = csv_body(requests_frame.head(3))
    rows = _rows(requests_frame)
    no_amount = csv_body(requests_frame.head(3).drop(columns=["amount", "channel"]))
    wrong_type = requests_frame.head(3).astype({"amount": "object"})
    wrong_type.loc[1, "amount"] = "twelve"
    not_allowed = requests_frame.head(3).astype({"channel": "object"})
    not_allowed.loc[2, "channel"] = "carrier-pigeon"
    card_missing = [dict(r) for r in rows]
    card_missing[0]["card_number"] = None
    cases: list[tuple[str, bytes, str, int, str]] = [
        ("wrong content type", good, "text/plain", 415, "text/plain"),
        ("no content type", good, "", 415, "not supported"),
        ("empty body", b"", "text/csv", 400, "empty body"),
        ("blank body", b"  \n", "application/json", 400, "empty body"),
        ("malformed JSON", b'{"amount": 1,', "application/json", 400, "malformed JSON"),
        ("JSON scalar", b"42", "application/json", 400, "object"),
        ("JSON list of scalars", b"[1, 2]", "application/json", 400, "object"),
        ("empty JSON list", b"[]", "application/json", 400, "no rows"),
        ("JSON object without fields", b"[{}]", "application/json", 400, "missing column(s)"),
        ("malformed CSV", b'a,b\n"unterminated,1\n', "text/csv", 400, "malformed CSV"),
        ("CSV too many fields", csv_body(requests_frame.head(2)) + b"1,2,3,4,5,6,7,8,9,10\n", "text/csv", 400, "CSV"),
        ("header only", csv_body(requests_frame.head(0)), "text/csv", 400, "no rows"),
        ("not UTF-8", b"amount\n\xff\xfe\n", "text/csv", 400, "UTF-8"),
        ("missing columns", no_amount, "text/csv", 400, "missing column(s) ['amount', 'channel']"),
        ("wrong type", csv_body(wrong_type), "text/csv", 400, "row 1 column 'amount' breaks rule dtype:float"),
        ("value not allowed", csv_body(not_allowed), "text/csv", 400, "column 'channel' breaks rule allowed"),
        ("object as a value", json.dumps([{**rows[0], "amount": {"v": 1}}]).encode(), "application/json", 400,
         "'amount' must hold float values"),
        ("null in a required column", json.dumps(card_missing).encode(), "application/json", 400,
         "row 0 column 'card_number' breaks rule not_null"),
        ("oversized", b"amount\n" + b"1.0\n" * (MAX_BODY // 4 + 1), "text/csv", 413, "over the limit"),
    ]  # fmt: skip
    for name, body, ctype, want_status, want_text in cases:
        status, doc = invoke(served, body, ctype)
        assert status == want_status, (name, status, doc)
        assert isinstance(doc, dict) and doc["status"] == want_status, name
        assert want_text in doc["message"], (name, doc["message"])
    # the error names the column and rule and never echoes a PII value
    status, doc = invoke(served, json.dumps(card_missing).encode(), "application/json")
    assert doc["errors"][0] == {"row": 0, "column": "card_number", "rule": "not_null"}
    status, doc = invoke(served, csv_body(wrong_type), "text/csv")
    assert doc["errors"] == [{"row": 1, "column": "amount", "rule": "dtype:float", "value": "twelve"}]
    # unknown routes and methods
    assert request(served, "GET", "/nope")[0] == 404
    assert request(served, "POST", "/nope", b"{}", {"Content-Type": "application/json"})[0] == 404
    # and the server still answers
    assert invoke(served, good, "text/csv")[0] == 200
    assert request(served, "GET", "/ping")[0] == 200


def _raw_socket(server: ServingServer) -> socket.socket:
    return socket.create_connection(server.server_address[:2], timeout=10)


def _answer(sock: socket.socket) -> tuple[int, str]:
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return resp.status, resp.read().decode()


def test_missing_length_and_slow_clients_do_not_stall_the_server(
    served: ServingServer, requests_frame: pd.DataFrame
) -> None:
    with _raw_socket(served) as s:  # no Content-Length: no body
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n\r\n")
        status, answer = _answer(s)
        assert status == 400 and "empty body" in answer
    with _raw_socket(served) as s:  # a chunked body is refused
        s.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        status, answer = _answer(s)
        assert status == 411 and "send Content-Length" in answer
    slow = _raw_socket(served)
    try:  # promises 1000 bytes, sends 10 and stalls
        slow.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 1000\r\n\r\n")
        slow.sendall(b"amount\n1.0")
        # meanwhile other clients are served
        assert invoke(served, csv_body(requests_frame.head(2)), "text/csv")[0] == 200
        assert request(served, "GET", "/ping")[0] == 200
        # the server gives up on the slow client after its deadline (1 s here): 408, then it closes
        slow.settimeout(10)
        status, answer = _answer(slow)
        assert status == 408 and "within 1 s" in answer
        assert slow.recv(65536) == b""
    finally:
        slow.close()
    assert request(served, "GET", "/ping")[0] == 200


def test_deeply_nested_json_is_400_never_500(served: ServingServer, requests_frame: pd.DataFrame) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000  # json.loads would raise RecursionError (was a 500)
    for body in (deep, b'{"instances": ' + deep + b"}", b"[" * 33 + b"]" * 33, b"[" * 100_000):
        status, doc = invoke(served, body, "application/json")
        assert status == 400, (status, doc)
        assert "nested deeper than 32 levels" in doc["message"]
    status, doc = invoke(served, b"[" * 32 + b"]" * 32, "application/json")  # at the limit: parsed, then refused
    assert status == 400 and "one object per row" in doc["message"]
    # brackets inside strings are text, not nesting
    row = {**_rows(requests_frame, 1)[0], "note": "[" * 1000 + '\\"{' * 100}
    status, doc = invoke(served, json.dumps({"instances": [row]}).encode(), "application/json")
    assert status == 200 and doc["ignored_columns"] == ["note"]
    assert request(served, "GET", "/ping")[0] == 200


def test_a_slow_loris_client_is_cut_off_at_the_request_deadline(served: ServingServer) -> None:
    """One byte every 0.2 s never trips a per-read timeout (1 s); the whole request has 1 s."""
    head = b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100 + b"\r\n\r\n"  # 20 s at this pace
    with _raw_socket(served) as s:
        t0 = time.monotonic()
        for i in range(len(head)):
            s.sendall(head[i : i + 1])
            readable, _, _ = select.select([s], [], [], 0.2)
            if readable:  # the server answered: stop sending
                break
        elapsed = time.monotonic() - t0
        status, answer = _answer(s)
        assert status == 408 and "did not arrive within 1 s" in answer
        assert 0.9 <= elapsed < 3.0, elapsed
        assert s.recv(65536) == b""  # and closed
    assert request(served, "GET", "/ping")[0] == 200


def _handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def test_a_burst_of_64_new_connections_waits_in_the_backlog_and_none_is_reset(
    served: ServingServer, root: Path, spec: Spec, requests_frame: pd.DataFrame
) -> None:
    """64 clients connect at the same moment to a server that handles 4 connections at a time:
    the other 60 wait in the listen backlog (it was 5: a burst like this got resets)."""
    server = _start(root, spec, poll_seconds=None, max_connections=4)  # `served` has deployed a champion
    body = csv_body(requests_frame.head(1))
    host, port = server.server_address[:2]
    start = threading.Barrier(64)
    outcomes: list[Any] = []
    most_threads = 0
    done = threading.Event()

    def client(k: int) -> None:
        start.wait()
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            if k % 2:
                conn.request("GET", "/ping")
            else:
                conn.request("POST", "/invocations", body=body, headers={"Content-Type": "text/csv"})
            resp = conn.getresponse()
            resp.read()
            outcomes.append(resp.status)
        except Exception as exc:  # recorded, so the assert below shows it
            outcomes.append(repr(exc))
        finally:
            conn.close()

    def sample() -> None:
        nonlocal most_threads
        while not done.is_set():
            most_threads = max(most_threads, _handler_threads())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(64)]
    try:
        assert json.loads(request(server, "GET", "/status")[2])["connections"]["backlog"] >= 64
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        done.set()
        sampler.join()
        server.stop()
    assert outcomes == [200] * 64, [o for o in outcomes if o != 200][:5]
    assert 1 <= most_threads <= 4  # never more handler threads than connection slots


def test_a_waiting_client_gets_the_slot_of_a_keepalive_connection(
    served: ServingServer, root: Path, spec: Spec
) -> None:
    """With one connection slot: a keep-alive connection is closed after its next answer when
    another client waits, and an idle one after the keep-alive time (quietly, no 408)."""
    server = _start(root, spec, poll_seconds=None, max_connections=1, keepalive_seconds=0.5)
    host, port = server.server_address[:2]
    try:
        a = http.client.HTTPConnection(host, port, timeout=10)
        a.request("GET", "/ping")
        first = a.getresponse()
        first.read()
        assert first.status == 200 and first.getheader("Connection") is None  # kept alive
        with _raw_socket(server) as b:  # waits in the backlog: a holds the only slot
            b.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.1)
            a.request("GET", "/ping")
            second = a.getresponse()
            second.read()
            assert second.status == 200 and second.getheader("Connection") == "close"  # gives way to b
            assert _answer(b)[0] == 200
        a.close()
        with _raw_socket(server) as idle:  # connects, sends nothing: closed after 0.5 s, no answer
            t0 = time.monotonic()
            assert idle.recv(65536) == b""
            assert time.monotonic() - t0 < 3.0
        assert request(server, "GET", "/ping")[0] == 200
    finally:
        server.stop()


# --- hot swap ------------------------------------------------------------------------------------
def test_champion_swap_under_load_fails_no_request(
    served: ServingServer, root: Path, tmp_path: Path, requests_frame: pd.DataFrame
) -> None:
    registry = _registry(root)
    assert registry.champion()["version"] == 1
    body = csv_body(requests_frame.head(50))
    expected = {v: _bundle(root, v, tmp_path).score(requests_frame.head(50)) for v in (1, 2)}
    results: list[tuple[int, Any]] = []
    stop = threading.Event()

    def client() -> None:
        host, port = served.server_address[:2]
        conn = http.client.HTTPConnection(host, port, timeout=10)  # one keep-alive connection
        while not stop.is_set():
            try:
                conn.request("POST", "/invocations", body=body, headers={"Content-Type": "text/csv"})
                resp = conn.getresponse()
                results.append((resp.status, json.loads(resp.read())))
            except Exception as exc:  # recorded, so the assert below shows it
                results.append((-1, repr(exc)))
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(results) >= 10)
        registry.promote(2, run_id="test-v2", expected_champion=1)
        status, _, answer = request(served, "POST", "/reload", b"", {"Content-Type": "application/json"})
        assert status == 200
        assert json.loads(answer)["model_version"] == 2
        n_at_swap = len(results)
        wait_for(lambda: len(results) >= n_at_swap + 10)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    failed = [r for r in results if r[0] != 200]
    assert failed == [], failed[:3]
    versions = [doc["model_version"] for _, doc in results]
    assert {1, 2} <= set(versions)
    for _, doc in results:  # every answer is wholly one version's: the version it names scored it
        v = doc["model_version"]
        np.testing.assert_allclose([p["score"] for p in doc["predictions"]], expected[v], rtol=1e-6, atol=1e-9)
        assert doc["threshold"] == {1: 0.6, 2: 0.2}[v]
    # a second reload is a no-op
    assert json.loads(request(served, "POST", "/reload", b"")[2]) == {
        "previous": 2,
        "model_version": 2,
        "changed": False,
        "error": None,
    }


def test_a_tampered_version_is_refused_and_the_old_champion_keeps_serving(
    tmp_path: Path, root: Path, spec: Spec, requests_frame: pd.DataFrame
) -> None:
    own = tmp_path / "artifacts"
    registry = _registry(own)
    src = _registry(root)
    for v in (1, 2):
        files = {n: d for n, d in src.load(v).items() if n not in ("manifest.json", "metadata.json")}
        assert registry.register(files, {}) == v
    registry.promote(1, run_id="r1", expected_champion=None)
    server = _start(own, spec, poll_seconds=None)
    try:
        assert json.loads(request(server, "GET", "/ping")[2])["model_version"] == 1
        model = version_file(registry, 2, "model.ubj")
        model.write_bytes(model.read_bytes() + b" ")
        registry.promote(2, run_id="r2", expected_champion=1)
        status, _, answer = request(server, "POST", "/reload", b"")
        doc = json.loads(answer)
        assert status == 200 and doc["model_version"] == 1 and doc["changed"] is False
        assert "ChecksumError" in doc["error"] and "model.ubj" in doc["error"]
        status, scored = invoke(server, csv_body(requests_frame.head(3)), "text/csv")
        assert status == 200 and scored["model_version"] == 1
        st = json.loads(request(server, "GET", "/status")[2])
        assert st["model_version"] == 1 and "ChecksumError" in st["last_error"]
    finally:
        server.stop()


def _rollback(root: Path, *args: str) -> subprocess.CompletedProcess:
    """``make rollback``'s command, as a person runs it (no endpoint URL configured: the endpoint polls)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ML_SERVING_URL", "AIRFLOW_VAR_ML_SERVING_URL")}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "plugins")])
    cmd = [sys.executable, "-m", "ml_lifecycle.devtools", "rollback", PROBLEM, "--artifact-root", str(root), *args]
    return subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)


def test_a_rollback_is_served_by_the_running_endpoint_within_its_poll_interval(
    tmp_path: Path, root: Path, spec: Spec, requests_frame: pd.DataFrame
) -> None:
    own = tmp_path / "artifacts"
    registry = _registry(own)
    src = _registry(root)
    for v in (1, 2):
        assert registry.register(src.load(v), {}) == v
    registry.promote(1, run_id="r1", expected_champion=None)
    registry.promote(2, run_id="r2", expected_champion=1)
    poll = 0.5
    server = _start(own, spec, poll_seconds=poll)
    body = csv_body(requests_frame.head(20))
    expected = {v: _bundle(root, v, tmp_path).score(requests_frame.head(20)) for v in (1, 2)}

    def served_version() -> int:
        status, scored = invoke(server, body, "text/csv")
        assert status == 200
        v = scored["model_version"]
        np.testing.assert_allclose([p["score"] for p in scored["predictions"]], expected[v], rtol=1e-6, atol=1e-9)
        return v

    try:
        assert served_version() == 2
        done = _rollback(own, "--by", "on-call", "--reason", "v2 alerts too often")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "the alias champion moved from version 2 to version 1" in done.stdout
        moved = time.monotonic()
        wait_for(lambda: served_version() == 1, seconds=10)
        assert time.monotonic() - moved < poll + 5  # the poll interval, plus loading the bundle
        tags = registry.tags(1)
        assert (tags["rollback.from"], tags["rollback.by"]) == ("2", "on-call")
        assert registry.champion()["reason"] == "v2 alerts too often"
        # no previous champion left before version 1: refused, nothing moves
        again = _rollback(own)
        assert again.returncode == 1 and "has no previous champion: give the version" in again.stderr
        # forward again to a given version (make rollback VERSION=2)
        assert _rollback(own, "--version", "2").returncode == 0
        wait_for(lambda: served_version() == 2, seconds=10)
    finally:
        server.stop()


def test_validate_rows_casts_csv_text_like_the_curated_data(spec: Spec, root: Path, tmp_path: Path) -> None:
    bundle = _bundle(root, 1, tmp_path)
    frame = _transactions(5, seed=9).drop(columns=["is_fraud"])
    raw = pd.read_csv(io.StringIO(frame.to_csv(index=False)), dtype=str)
    typed, extra = validate_rows(raw, spec, bundle)
    assert extra == []
    assert str(typed["ts"].dtype) == "datetime64[us, UTC]" and typed["amount"].dtype == "float64"
    pd.testing.assert_series_equal(typed["ts"], frame["ts"].reset_index(drop=True), check_names=False)


def test_history_context_gives_single_rows_their_cards_past(tmp_path: Path, root: Path, spec: Spec) -> None:
    key = b"serving-test-pii-key"
    own = tmp_path / "artifacts"
    registry = _registry(own)
    files = {n: d for n, d in _registry(root).load(1).items() if n not in ("manifest.json", "metadata.json")}
    registry.promote(registry.register(files, {}), run_id="r1", expected_champion=None)
    # ten curated days (PII tokenised, as collect_and_label writes them) of the same 150 cards
    past = tokenise_pii(_transactions(2000, seed=7, start="2024-03-01").drop(columns=["is_fraud"]), spec, key)
    problem = Store.from_uri(f"file://{own}/{PROBLEM}")
    for day, rows in past.groupby(past["ts"].dt.strftime("%Y-%m-%d")):
        problem.write_parquet(f"curated/ds={day}/part-0.parquet", rows)
    new = _transactions(40, seed=8, start="2024-03-11").drop(columns=["is_fraud"])
    bundle = _bundle(own, 1, tmp_path)
    with_past = bundle.score(pd.concat([past, tokenise_pii(new, spec, key)], ignore_index=True))[-len(new) :]
    alone = bundle.score(new)
    assert not np.allclose(with_past, alone, rtol=1e-3)  # the cards' past changes their velocity features

    server = _start(own, spec, poll_seconds=None, history_days=30, pii_key=key)
    try:
        st = json.loads(request(server, "GET", "/status")[2])
        assert st["history"]["rows"] == len(past) and len(st["history"]["days"]) == 10
        status, doc = invoke(server, csv_body(new), "text/csv")
        assert status == 200, doc
        np.testing.assert_allclose([p["score"] for p in doc["predictions"]], with_past, rtol=1e-6, atol=1e-9)
        assert [p["id"] for p in doc["predictions"]] == new["transaction_id"].tolist()  # the key is not tokenised
        for i in range(3):  # one row on its own is scored after its card's past too
            row = new.iloc[[i]]
            want = bundle.score(pd.concat([past, tokenise_pii(row, spec, key)], ignore_index=True))[-1]
            rec = json.loads(row.to_json(orient="records", date_format="iso", date_unit="us"))[0]
            status, doc = invoke(server, json.dumps(rec).encode(), "application/json")
            assert status == 200 and doc["predictions"][0]["score"] == pytest.approx(float(want), rel=1e-6)
        # a new curated day is picked up by the next refresh
        problem.write_parquet("curated/ds=2024-03-12/part-0.parquet", tokenise_pii(new.head(5), spec, key))
        server.holder.refresh_history()
        assert json.loads(request(server, "GET", "/status")[2])["history"]["rows"] == len(past) + 5
    finally:
        server.stop()


# --- the SageMaker container: one fixed model from an unpacked model.tar.gz ----------------------
def _model_dir(root: Path, spec: Spec, version: int, folder: Path) -> Path:
    """What deploy_model on aws packs into model.tar.gz: the version's files, manifest and spec."""
    registry = _registry(root)
    folder.mkdir(parents=True)
    for name, data in registry.load(version).items():
        (folder / name).write_bytes(data)
    (folder / "manifest.json").write_text(json.dumps(registry.manifest(version)))
    (folder / "spec.json").write_text(json.dumps(spec.model_dump(mode="json", by_alias=True)))
    return folder


def test_model_dir_server_serves_the_unpacked_model_and_never_reloads(
    root: Path, spec: Spec, tmp_path: Path, requests_frame: pd.DataFrame
) -> None:
    from include.lifecycle.serving import make_model_dir_server

    server = make_model_dir_server(_model_dir(root, spec, 2, tmp_path / "model"), port=0)
    server.start()
    try:
        status, _, body = request(server, "GET", "/ping")
        assert status == 200 and json.loads(body)["model_version"] == 2
        status, answer = invoke(server, csv_body(requests_frame), "text/csv", Accept="text/csv")
        assert status == 200
        got = pd.read_csv(io.StringIO(answer))
        assert got["id"].tolist() == requests_frame["transaction_id"].tolist()
        expected = _bundle(root, 2, tmp_path).score(requests_frame)
        np.testing.assert_allclose(got["score"].to_numpy(), expected, rtol=1e-6, atol=1e-9)
        assert set(got["model_version"]) == {2}
        assert server.holder.reload()["changed"] is False and server.holder.current.version == 2
    finally:
        server.stop()


def test_model_dir_with_a_tampered_file_is_refused(root: Path, spec: Spec, tmp_path: Path) -> None:
    from include.lifecycle.registry import ChecksumError
    from include.lifecycle.serving import load_model_dir

    folder = _model_dir(root, spec, 1, tmp_path / "model")
    (folder / "threshold.json").write_text('{"threshold": 0.0}')
    with pytest.raises(ChecksumError, match="threshold.json"):
        load_model_dir(folder)


# --- data capture (spec serving.capture; include/lifecycle/capture.py) ----------------------------
def _champion_root(src: Path, dest: Path) -> Path:
    """An artifact root of its own whose champion is a copy of ``src``'s version 1."""
    registry, source = _registry(dest), _registry(src)
    files = {n: d for n, d in source.load(1).items() if n not in ("manifest.json", "metadata.json")}
    registry.promote(registry.register(files, {}), run_id="deploy-1", expected_champion=None)
    return dest


def _captures(root: Path) -> pd.DataFrame:
    files = sorted((root / PROBLEM).glob("captures/ds=*/*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def test_the_endpoint_captures_every_answered_row_with_the_pii_tokenised(
    root: Path, spec: Spec, tmp_path: Path, requests_frame: pd.DataFrame
) -> None:
    from include.lifecycle.collect import tokenise

    artifacts = _champion_root(root, tmp_path / "artifacts")
    key = b"capture-key-of-the-curated-data"
    server = _start(artifacts, spec, pii_key=key, capture_options={"flush_rows": 100, "flush_seconds": 3600})
    answered: dict[str, dict] = {}
    try:
        status, doc = invoke(server, csv_body(requests_frame.head(150)), "text/csv")
        assert status == 200
        rows = json.loads(requests_frame.iloc[150:155].to_json(orient="records", date_format="iso", date_unit="us"))
        status, more = invoke(server, json.dumps(rows).encode(), "application/json")
        assert status == 200
        answered = {p["id"]: p for p in doc["predictions"] + more["predictions"]}
        bad = requests_frame.head(3).assign(amount="lots")
        assert invoke(server, csv_body(bad), "text/csv")[0] == 400  # not answered: not captured
        status = json.loads(request(server, "GET", "/status")[2])["capture"]
        assert status["enabled"] and status["rows_captured"] == 155 and status["failures"] == 0
        assert status["where"].endswith(f"{PROBLEM}/captures")
    finally:
        server.stop()  # writes the rows still waiting
    got = _captures(artifacts)
    assert sorted(got["transaction_id"]) == sorted(answered) and got["transaction_id"].is_unique
    assert list(got.columns) == [
        "transaction_id", "ts", "card_number", "merchant_id", "merchant_category", "amount", "channel", "country",
        "score", "decision", "model_version", "captured_at",
    ]  # fmt: skip
    for row in got.itertuples():
        assert row.score == pytest.approx(answered[row.transaction_id]["score"], rel=1e-9)
        assert row.decision == answered[row.transaction_id]["decision"] and row.model_version == 1
    # the card numbers as the curated data's tokens, never raw
    sent = requests_frame.head(155).set_index("transaction_id")
    want = tokenise(sent.loc[got["transaction_id"], "card_number"].reset_index(drop=True), key)
    assert got["card_number"].tolist() == want.tolist()
    raw_cards = set(sent["card_number"])
    for f in (artifacts / PROBLEM).glob("captures/ds=*/*.parquet"):
        assert not raw_cards & set(pd.read_parquet(f)["card_number"]), f
        # each file under the day of its rows' time
        assert (pd.read_parquet(f)["ts"].dt.strftime("ds=%Y-%m-%d") == f.parent.name).all()
    assert got["captured_at"].notna().all()


def test_a_capture_failure_never_fails_a_prediction_and_shows_in_ping_and_status(
    root: Path, spec: Spec, tmp_path: Path, requests_frame: pd.DataFrame
) -> None:
    from tests.unit.test_capture import BrokenStore

    artifacts = _champion_root(root, tmp_path / "artifacts")
    server = _start(artifacts, spec, capture_options={"flush_rows": 10, "flush_seconds": 0.1})
    server.capture.store = BrokenStore()  # the artifact store fails under the running server
    bundle = _bundle(artifacts, 1, tmp_path)
    try:
        for i in range(3):
            part = requests_frame.iloc[i * 20 : (i + 1) * 20]
            status, doc = invoke(server, csv_body(part), "text/csv")
            assert status == 200
            np.testing.assert_allclose([p["score"] for p in doc["predictions"]], bundle.score(part), rtol=1e-6)
        wait_for(lambda: server.capture.status()["rows_lost"] == 60)
        status, _, body = request(server, "GET", "/ping")
        assert status == 200 and json.loads(body) == {"status": "ok", "model_version": 1, "capture_lost_rows": 60}
        capture = json.loads(request(server, "GET", "/status")[2])["capture"]
        assert capture["failures"] >= 1 and "No space left" in capture["last_error"] and capture["rows_written"] == 0
    finally:
        server.stop()
    assert not (artifacts / PROBLEM / "captures").exists()


def test_capture_off_writes_nothing(root: Path, spec: Spec, tmp_path: Path, requests_frame: pd.DataFrame) -> None:
    artifacts = _champion_root(root, tmp_path / "artifacts")
    off = spec.model_copy(update={"serving": spec.serving.model_copy(update={"capture": False})})
    for server in (_start(artifacts, off), _start(artifacts, spec, capture=False)):
        try:
            assert invoke(server, csv_body(requests_frame.head(10)), "text/csv")[0] == 200
            assert json.loads(request(server, "GET", "/status")[2])["capture"] == {"enabled": False}
        finally:
            server.stop()
    assert not (artifacts / PROBLEM / "captures").exists()
