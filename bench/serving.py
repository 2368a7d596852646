"""Benchmark: serving the flagship champion (run by `make bench-serving`, never by `make test`).

Starts the endpoint (``python -m include.lifecycle.serving``) as a subprocess on a free
loopback port with the champion of ``--problem`` from the artifact root (run `make run` first),
sends real rows of the last landing partition and prints a table:

* single-row latency (p50 / p99 / mean) over one keep-alive connection, JSON and CSV;
* single-row requests from several concurrent clients (requests/s);
* load: 8, 64 and 200 clients starting at the same moment, each opening a new connection for
  every request (the accept backlog and the connection slots at work) for a few seconds, and 8
  keep-alive clients: requests, errors by kind (connection reset, refused, timeout, HTTP 4xx/5xx),
  p50 / p99 latency of the answered requests;
* batch requests of 1,000 and 10,000 CSV rows (rows/s);
* in-process: ``ModelBundle.score`` on a whole day and on 100k rows, and the batch DAG's
  ``score_partition`` (one day plus the lookback days as per-card history) in rows/s;
* data capture's cost: the same loads (8 keep-alive clients of single-row JSON requests, and
  batches of 1,000 CSV rows) against the server with ``--capture off`` and ``--capture on`` (PII
  tokenised), alternating over ``--capture-rounds`` rounds, a scratch artifact root holding a copy
  of the champion and the captures; throughput with capture over without (the issue's bar:
  capture costs at most 10 %), and the captured rows counted against the answered ones.

The numbers go to ``bench/results/serving-<date>.json``.

    .venv/bin/python bench/serving.py [--problem card_fraud] [--requests 1000] [--load-seconds 5]
    .venv/bin/python bench/serving.py --load-only     # only the load runs (merged into today's file)
    .venv/bin/python bench/serving.py --capture-only  # only capture on/off (merged into today's file)
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import http.client
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from include.lifecycle.collect import curate_partition, list_partitions, read_partition_files  # noqa: E402
from include.lifecycle.scoring import load_champion, score_partition  # noqa: E402
from include.lifecycle.serving import registry_for  # noqa: E402
from include.lifecycle.spec import load_spec, resolve_source, spec_path  # noqa: E402
from include.lifecycle.store import Store  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    problem: str,
    artifact_root: str,
    port: int,
    history_days: int,
    pii_key: bytes | None = None,
    capture: str = "off",
) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "include.lifecycle.serving", "--problem", problem, "--artifact-root", artifact_root]
    cmd += ["--port", str(port), "--poll-seconds", "0", "--max-body-bytes", str(64 * 1024 * 1024)]
    cmd += ["--history-days", str(history_days), "--capture", capture]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ML_PII_HASH_KEY": pii_key.decode() if pii_key else ""}
    # the server's log goes to a file: a pipe nobody reads would fill up and stall it under load
    log = tempfile.TemporaryFile()  # noqa: SIM115 - open as long as the server runs
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited: {log.read().decode()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            if resp.status == 200:
                return proc
            if resp.status == 503:
                proc.terminate()
                raise RuntimeError(f"no champion to serve ({body.decode()}): run `make run` first")
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("server did not start within 60 s")


def champion_files(registry: Any, version: int) -> dict[str, bytes]:
    return {n: d for n, d in registry.load(version).items() if n not in ("manifest.json", "metadata.json")}


def post(conn: http.client.HTTPConnection, body: bytes, ctype: str) -> float:
    t0 = time.perf_counter()
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": ctype})
    resp = conn.getresponse()
    data = resp.read()
    elapsed = time.perf_counter() - t0
    if resp.status != 200:
        raise RuntimeError(f"{resp.status}: {data[:300]!r}")
    return elapsed


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def single_rows(port: int, bodies: list[bytes], ctype: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for b in bodies[:20]:  # warm up
        post(conn, b, ctype)
    times = [post(conn, b, ctype) for b in bodies]
    conn.close()
    return {
        "requests": len(times),
        "p50_ms": 1000 * pct(times, 0.5),
        "p99_ms": 1000 * pct(times, 0.99),
        "mean_ms": 1000 * statistics.fmean(times),
        "rows_per_s": len(times) / sum(times),
    }


def concurrent(port: int, bodies: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    times: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = k
        while time.monotonic() < stop:
            t = post(conn, bodies[i % len(bodies)], "application/json")
            with lock:
                times.append(t)
            i += clients
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "requests": len(times),
        "p50_ms": 1000 * pct(times, 0.5),
        "p99_ms": 1000 * pct(times, 0.99),
        "rows_per_s": len(times) / wall,
    }


def error_kind(exc: BaseException) -> str:
    """A failed request by what the client saw (RemoteDisconnected, a closed connection with no
    answer, is a kind of ConnectionResetError and counts as a reset)."""
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


def load(port: int, bodies: list[bytes], clients: int, seconds: float, *, new_connections: bool) -> dict[str, Any]:
    """``clients`` threads released at the same moment send single-row JSON requests for ``seconds``
    (requests in flight then are finished and counted); with ``new_connections`` every request opens
    its own connection, so the first round is a burst of ``clients`` simultaneous connects."""
    times: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    first_round: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop = 0.0

    def once(conn: http.client.HTTPConnection, body: bytes) -> str:
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
        except Exception as exc:
            conn.close()
            return error_kind(exc)
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            return f"http_{resp.status // 100}xx"
        with lock:
            times.append(elapsed)
        return "ok"

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start.wait()
        i, first = k, True
        while first or time.monotonic() < stop:
            if new_connections:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            outcome = once(conn, bodies[i % len(bodies)])
            if new_connections:
                conn.close()
            with lock:
                if outcome != "ok":
                    errors[outcome] += 1
                    if first:
                        first_round[outcome] += 1
            i += clients
            first = False
        conn.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    stop = time.monotonic() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "new_connection_per_request": new_connections,
        "seconds": wall,
        "requests": len(times) + sum(errors.values()),
        "ok": len(times),
        "errors": sum(errors.values()),
        "resets": errors.get("reset", 0),
        "errors_by_kind": dict(errors),
        "first_round_errors": dict(first_round),  # the burst of simultaneous connects
        "p50_ms": 1000 * pct(times, 0.5) if times else None,
        "p99_ms": 1000 * pct(times, 0.99) if times else None,
        "rows_per_s": len(times) / wall,
    }


def load_runs(port: int, bodies: list[bytes], seconds: float) -> dict[str, Any]:
    runs = {f"load_{n}_new_connections": load(port, bodies, n, seconds, new_connections=True) for n in (8, 64, 200)}
    runs["load_8_keepalive"] = load(port, bodies, 8, seconds, new_connections=False)
    return runs


def batches(port: int, frame: pd.DataFrame, size: int, repeats: int) -> dict[str, Any]:
    rows = pd.concat([frame] * (size // len(frame) + 1), ignore_index=True).head(size)
    body = rows.to_csv(index=False).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    post(conn, body, "text/csv")
    times = [post(conn, body, "text/csv") for _ in range(repeats)]
    conn.close()
    return {
        "rows": size,
        "body_kb": len(body) // 1024,
        "p50_ms": 1000 * statistics.median(times),
        "rows_per_s": size / statistics.median(times),
    }


def captured_rows(root: str, problem: str) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f in Path(root, problem, "captures").glob("ds=*/*.parquet"))


def capture_overhead(
    problem: str,
    artifact_root: str,
    version: int,
    bodies: list[bytes],
    frame: pd.DataFrame,
    *,
    seconds: float,
    rounds: int,
) -> dict[str, Any]:
    """Throughput with capture on over capture off, same loads, alternating rounds (the machine's
    other load drifts: alternating spreads it over both sides); medians over the rounds."""
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    key = secrets.token_hex(32).encode()
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as scratch:
        registry = registry_for(scratch, problem)
        files = champion_files(registry_for(artifact_root, problem), version)
        registry.promote(registry.register(files, {}), run_id="bench", expected_champion=None)
        answered = 0
        for r in range(rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                port = free_port()
                proc = start_server(problem, scratch, port, history_days=0, pii_key=key, capture=mode)
                try:
                    single = load(port, bodies, 8, seconds, new_connections=False)
                    batch = batches(port, frame, 1_000, 30)  # a few seconds: flushes fall inside it
                finally:
                    proc.terminate()  # SIGTERM: the server writes the captured rows still waiting
                    proc.wait(timeout=60)
                if mode == "on":
                    answered += single["ok"] + 31 * 1_000  # batches(): one warm-up + 30 timed
                runs[mode].append({"single_rps": single["rows_per_s"], "single_p99_ms": single["p99_ms"],
                                   "batch_rows_per_s": batch["rows_per_s"]})  # fmt: skip
        written = captured_rows(scratch, problem)

    def med(mode: str, k: str) -> float:
        return statistics.median(x[k] for x in runs[mode])

    out: dict[str, Any] = {"rounds": rounds, "seconds_per_load": seconds, "runs": runs}
    for k in ("single_rps", "batch_rows_per_s"):
        out[k] = {"off": med("off", k), "on": med("on", k), "on_over_off": med("on", k) / med("off", k)}
    out["single_p99_ms"] = {"off": med("off", "single_p99_ms"), "on": med("on", "single_p99_ms")}
    out["rows_answered_with_capture"] = answered
    out["rows_captured"] = written
    out["overhead_pct"] = {k: 100 * (1 - out[k]["on_over_off"]) for k in ("single_rps", "batch_rows_per_s")}
    return out


def print_capture(c: dict[str, Any]) -> None:
    print(
        f"\ndata capture on vs off (medians of {c['rounds']} alternating rounds, {c['seconds_per_load']:g} s loads)\n"
    )
    header = f"{'load':<44} {'off':>10} {'on':>10} {'cost':>7}"
    print(header)
    print("-" * len(header))
    for name, k in (("8 keep-alive clients, single-row JSON (req/s)", "single_rps"),
                    ("batches of 1,000 CSV rows (rows/s)", "batch_rows_per_s")):  # fmt: skip
        print(f"{name:<44} {c[k]['off']:>10,.0f} {c[k]['on']:>10,.0f} {c['overhead_pct'][k]:>6.1f}%")
    print(f"rows answered with capture on: {c['rows_answered_with_capture']:,}; captured: {c['rows_captured']:,}")


def timed(fn: Any, repeats: int = 3) -> float:
    fn()
    return statistics.median([_once(fn) for _ in range(repeats)])


def _once(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="serving benchmark")
    p.add_argument("--problem", default="card_fraud")
    p.add_argument("--artifact-root", default=os.environ.get("ML_ARTIFACT_ROOT") or str(ROOT / "artifacts"))
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--load-seconds", type=float, default=5.0, help="length of each load run (8, 64, 200 clients)")
    p.add_argument("--load-only", action="store_true", help="only the load runs, merged into today's results file")
    p.add_argument("--capture-only", action="store_true", help="only capture on/off, merged into today's results file")
    p.add_argument("--capture-rounds", type=int, default=4, help="alternating capture off/on rounds")
    p.add_argument("--capture-seconds", type=float, default=8.0, help="length of each capture load run")
    args = p.parse_args(argv)
    load_before = os.getloadavg()[0]

    spec = load_spec(spec_path(args.problem))
    source = Store.from_uri(resolve_source(spec.data.source))
    days = list_partitions(source)
    if not days:
        raise SystemExit(f"no landing partitions under {source.uri()}: run `make demo-data` (or `make run`)")
    day = days[-1]
    raw = pd.concat([df for _, df in read_partition_files(source, day, spec.data.format)], ignore_index=True)
    champion = load_champion(registry_for(args.artifact_root, args.problem), args.problem)
    keep = [c for c in champion.bundle.input_columns if c in raw.columns]
    # only rows that pass the schema (the generator breaks a few on purpose); CSV/JSON text as a client sends
    good = raw[keep].dropna()
    good = good[good["amount"].astype(float) >= 0.01] if "amount" in good.columns else good
    frame = good.astype({c: "string" for c in good.columns if c != "amount"}).reset_index(drop=True)
    records = json.loads(frame.to_json(orient="records", date_format="iso"))
    json_bodies = [json.dumps(r).encode() for r in records[: args.requests]]
    csv_bodies = [frame.iloc[[i]].to_csv(index=False).encode() for i in range(min(args.requests, len(frame)))]

    results: dict[str, Any] = {}
    if args.capture_only:
        results["capture"] = capture_overhead(args.problem, args.artifact_root, champion.version, json_bodies, frame,
                                              seconds=args.capture_seconds, rounds=args.capture_rounds)  # fmt: skip
        print_capture(results["capture"])
        write_results(args.problem, champion, day, results, load_before, merge=True)
        return 0
    port = free_port()
    proc = start_server(args.problem, args.artifact_root, port, history_days=0)  # rows of the request only
    try:
        if not args.load_only:
            results |= {
                "single_json": single_rows(port, json_bodies, "application/json"),
                "single_csv": single_rows(port, csv_bodies, "text/csv"),
                "concurrent_json": concurrent(port, json_bodies, args.clients, seconds=5.0),
                "batch_1k": batches(port, frame, 1_000, 5),
                "batch_10k": batches(port, frame, 10_000, 3),
            }
        results |= load_runs(port, json_bodies, args.load_seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if args.load_only:
        print_load(results, args.problem, champion.version, load_before)
        write_results(args.problem, champion, day, results, load_before, merge=True)
        return 0
    # the server with the lookback days before ds as per-card context: a scratch artifact root
    # with a copy of the champion and those days curated under a throwaway PII key
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as scratch:
        key = secrets.token_hex(32).encode()
        registry = registry_for(scratch, args.problem)
        files = champion_files(registry_for(args.artifact_root, args.problem), champion.version)
        registry.promote(registry.register(files, {}), run_id="bench", expected_champion=None)
        problem_store = Store.from_uri(Path(scratch, args.problem).as_uri())
        for p in days[-spec.data.lookback_days - 1 : -1]:
            cur, _, _ = curate_partition(read_partition_files(source, p, spec.data.format), spec, pii_key=key)
            problem_store.write_parquet(f"curated/ds={p}/part-0.parquet", cur)
        port = free_port()
        proc = start_server(args.problem, scratch, port, spec.data.lookback_days, pii_key=key)
        try:
            results["single_json_history"] = single_rows(port, json_bodies, "application/json")
            results["batch_1k_history"] = batches(port, frame, 1_000, 5)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    typed = frame.astype({"amount": "float64"})
    typed["ts"] = pd.to_datetime(typed["ts"], utc=True)
    big = pd.concat([typed] * (100_000 // len(typed) + 1), ignore_index=True).head(100_000)
    t_day = timed(lambda: champion.bundle.score(typed))
    t_big = timed(lambda: champion.bundle.score(big), repeats=2)
    key = secrets.token_bytes(32)  # any key: the batch path curates its own context
    out: dict[str, Any] = {}

    def run_partition() -> None:
        out["scores"], out["summary"] = score_partition(spec, champion, source=source, ds=day, pii_key=key)

    t_part = timed(run_partition, repeats=2)
    s = out["summary"]
    results["in_process_day"] = {"rows": len(typed), "seconds": t_day, "rows_per_s": len(typed) / t_day}
    results["in_process_100k"] = {"rows": len(big), "seconds": t_big, "rows_per_s": len(big) / t_big}
    results["batch_partition"] = {
        "rows": s["rows_scored"],
        "history_rows": s["history_rows"],
        "seconds": t_part,
        "rows_per_s": s["rows_scored"] / t_part,
    }

    print(
        f"\nserving benchmark: {args.problem} champion version {champion.version} ({type(champion.bundle.model).__name__}),"
    )
    print(
        f"rows of ds={day}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}\n"
    )
    header = f"{'measurement':<52} {'p50 ms':>9} {'p99 ms':>9} {'rows/s':>10}"
    print(header)
    print("-" * len(header))
    rows = [
        ("HTTP single row, JSON (1 client, keep-alive)", results["single_json"]),
        ("HTTP single row, CSV (1 client, keep-alive)", results["single_csv"]),
        (f"HTTP single row, JSON ({args.clients} clients)", results["concurrent_json"]),
        ("HTTP batch of 1,000 CSV rows", results["batch_1k"]),
        ("HTTP batch of 10,000 CSV rows", results["batch_10k"]),
        *(
            [
                (
                    f"HTTP single row, JSON, {spec.data.lookback_days} days of card history",
                    results["single_json_history"],
                ),
                (
                    f"HTTP batch of 1,000 rows, {spec.data.lookback_days} days of card history",
                    results["batch_1k_history"],
                ),
            ]
            if "single_json_history" in results
            else []
        ),
        (f"in-process ModelBundle.score, {len(typed):,} rows", results["in_process_day"]),
        ("in-process ModelBundle.score, 100,000 rows", results["in_process_100k"]),
        (f"batch DAG score_partition, 1 day + {s['history_rows']:,} history rows", results["batch_partition"]),
    ]
    for name, r in rows:
        p50 = r.get("p50_ms", 1000 * r.get("seconds", float("nan")))
        p99 = r.get("p99_ms")
        p99_text = f"{p99:.1f}" if p99 is not None else "-"
        print(f"{name:<52} {p50:>9.1f} {p99_text:>9} {r['rows_per_s']:>10,.0f}")
    print_load(results, args.problem, champion.version, load_before)
    results["capture"] = capture_overhead(args.problem, args.artifact_root, champion.version, json_bodies, frame,
                                          seconds=args.capture_seconds, rounds=args.capture_rounds)  # fmt: skip
    print_capture(results["capture"])
    write_results(args.problem, champion, day, results, load_before, merge=False)
    return 0


def print_load(results: dict[str, Any], problem: str, version: int, load_before: float) -> None:
    print(f"\nendpoint load, {problem} champion version {version}, single-row JSON requests")
    print(f"({os.cpu_count()} CPUs shared by the clients and the server; load average before: {load_before:.2f})\n")
    header = f"{'clients':<34} {'requests':>8} {'errors':>6} {'resets':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>6}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        if not name.startswith("load_"):
            continue
        how = "new connection per request" if r["new_connection_per_request"] else "keep-alive"
        p50, p99 = (f"{r[k]:.0f}" if r[k] is not None else "-" for k in ("p50_ms", "p99_ms"))
        label = f"{r['clients']}, {how}"
        print(
            f"{label:<34} {r['requests']:>8,} {r['errors']:>6} {r['resets']:>6} {p50:>8} {p99:>8} {r['rows_per_s']:>6.0f}"
        )
        if r["errors_by_kind"]:
            print(f"{'':<34} errors: {r['errors_by_kind']}, in the first burst: {r['first_round_errors']}")


def write_results(
    problem: str, champion: Any, day: str, results: dict[str, Any], load_before: float, *, merge: bool
) -> None:
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    target = results_dir / f"serving-{dt.date.today().isoformat()}.json"
    doc = {
        "problem": problem,
        "model_version": champion.version,
        "model": type(champion.bundle.model).__name__,
        "ds": day,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": load_before,
        "results": results,
    }
    if merge and target.exists():  # --load-only: keep the other figures of the day
        old = json.loads(target.read_text())
        if old.get("model_version") == champion.version:
            doc = old | {"results": old.get("results", {}) | results, "load_average_before_load": load_before}
    with tempfile.NamedTemporaryFile("w", dir=results_dir, delete=False, suffix=".tmp") as fh:
        json.dump(doc, fh, indent=2)
    os.replace(fh.name, target)
    print(f"\nwritten to {target.relative_to(ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())
